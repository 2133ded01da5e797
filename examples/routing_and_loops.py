"""Control flow: route by key, fork/join, a loop with ``LoopResult``, a child flow.

    python examples/routing_and_loops.py

Each composite step is checkpointed like any other: the route's key, every branch step,
every loop iteration (``halve_until_small#0``, ``#1``, ...) and the child flow's steps.
"""

from __future__ import annotations

from typing import Any

from sayiir_core import Flow, LoopResult, run_workflow, task

# -- route: one branch chosen by a key ------------------------------------------------


@task
def ticket_kind(ticket: dict[str, Any]) -> str:
    return str(ticket["kind"])


@task
def refund(ticket: dict[str, Any]) -> str:
    return f"refund {ticket['amount']} EUR"


@task
def escalate(ticket: dict[str, Any]) -> str:
    return "page the on-call engineer"


@task
def reply_faq(ticket: dict[str, Any]) -> str:
    return "send the FAQ link"


@task
def log_outcome(routed: dict[str, Any]) -> str:
    # The step after a route receives {"branch": key, "result": branch output}.
    return f"[{routed['branch']}] {routed['result']}"


support_flow = (
    Flow("support")
    .route(ticket_kind, keys=["billing", "outage", "question"])
    .branch("billing", refund)
    .branch("outage", escalate)
    .default_branch(reply_faq)  # "question" and any unknown key
    .done()
    .then(log_outcome)
    .build()
)

# -- loop: repeat a step until it says done ---------------------------------------


@task
def halve_until_small(value: int) -> LoopResult[int]:
    if value <= 10:
        return LoopResult.done(value)
    return LoopResult.again(value // 2)  # each iteration is its own checkpoint


shrink_flow = Flow("shrink").loop(halve_until_small, max_iterations=20).build()

# -- fork/join and a child flow ---------------------------------------------------


@task
def price(order: dict[str, Any]) -> float:
    return float(order["qty"] * 12.5)


@task
def stock(order: dict[str, Any]) -> bool:
    return bool(order["qty"] <= 5)


@task
def combine(parts: dict[str, Any]) -> dict[str, Any]:
    # The join receives {first task id of each branch: branch output}.
    return {"total": parts["price"], "in_stock": parts["stock"]}


@task
def add_vat(quote: dict[str, Any]) -> dict[str, Any]:
    return {**quote, "total": round(quote["total"] * 1.2, 2)}


vat_flow = Flow("vat").then(add_vat).build()
quote_flow = Flow("quote").fork([price, stock]).join(combine).then_flow(vat_flow).build()


def main() -> int:
    for ticket in (
        {"kind": "billing", "amount": 30},
        {"kind": "outage"},
        {"kind": "question"},
        {"kind": "unknown-kind"},
    ):
        print(f"support {ticket['kind']:>12}: {run_workflow(support_flow, ticket)}")

    print(f"shrink 1000 -> {run_workflow(shrink_flow, 1000)}")
    quote = run_workflow(quote_flow, {"qty": 4})
    print(f"quote for 4 -> {quote}")
    assert quote == {"total": 60.0, "in_stock": True}
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
