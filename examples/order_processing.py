"""Order processing, end to end, on the embedded SQLite backend.

    python examples/order_processing.py [--db orders.db]

The workflow validates an order, then in parallel charges the card (the payment API
fails once and is retried), reserves stock and prices the shipping; it confirms the
order, waits out a durable cooling-off delay, waits for the warehouse's "packed" signal
and ships. Every step is checkpointed in SQLite: kill the script at any point and run it
again with the same --db and it carries on from the last finished step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from sayiir_core import (
    Flow,
    HistoryEvent,
    RetryPolicy,
    SqliteBackend,
    WorkflowStatus,
    get_task_context,
    resume_workflow,
    run_durable_workflow,
    send_signal,
    task,
)

INSTANCE_ID = "order-1001"


@task(timeout="5s")
def validate_order(order: dict[str, Any]) -> dict[str, Any]:
    if not order["items"]:
        raise ValueError("an order needs at least one item")
    total = sum(item["price"] * item["qty"] for item in order["items"])
    return {**order, "total": round(total, 2)}


@task(retries=RetryPolicy(max_retries=3, initial_delay_secs=0.2, backoff_multiplier=2.0))
def charge_payment(order: dict[str, Any]) -> dict[str, Any]:
    context = get_task_context()
    assert context is not None
    if context.attempt == 1:  # the payment provider times out once
        raise ConnectionError("payment gateway timed out")
    # The idempotency key is the same on every attempt: the provider charges once.
    return {"charged": order["total"], "payment_ref": context.idempotency_key[-12:]}


@task
def reserve_inventory(order: dict[str, Any]) -> dict[str, Any]:
    return {"reserved": [item["sku"] for item in order["items"]]}


@task
async def quote_shipping(order: dict[str, Any]) -> dict[str, Any]:
    weight = sum(item["qty"] for item in order["items"]) * 0.5
    return {"carrier": "parcel-post", "cost": round(4.0 + weight, 2)}


@task
def confirm_order(parts: dict[str, Any]) -> dict[str, Any]:
    return {
        **parts["charge_payment"],
        **parts["reserve_inventory"],
        "shipping": parts["quote_shipping"],
    }


@task
def ship(packed: dict[str, Any]) -> dict[str, Any]:
    return {"status": "shipped", "parcel": packed["parcel"]}


order_flow = (
    Flow("order_processing")
    .then(validate_order)
    .fork([charge_payment, reserve_inventory, quote_shipping])
    .join(confirm_order)
    .delay("cooling_off", "1s")
    .wait_for_signal("packed", timeout="1h")
    .then(ship)
    .build()
)

ORDER = {
    "customer": "ada@example.com",
    "items": [
        {"sku": "BOOK-42", "price": 12.5, "qty": 2},
        {"sku": "PEN-7", "price": 1.2, "qty": 3},
    ],
}

_SYMBOLS = {
    "task_completed": "✓",
    "task_failed": "✗",
    "retry_scheduled": "↻",
    "timer_started": "⏸",
    "timer_fired": "▶",
    "signal_received": "✉",
    "completed": "★",
    "failed": "✗",
}


def show_progress(instance_id: str, event: HistoryEvent) -> None:
    symbol = _SYMBOLS.get(event.kind)
    if symbol is None:
        return
    detail = event.detail or {}
    if event.kind == "task_completed":
        text = f"{event.step_key} (attempt {event.attempt}, {detail['duration_ms']:.1f} ms)"
    elif event.kind == "task_failed":
        text = f"{event.step_key} attempt {event.attempt}: {detail['error']}"
    elif event.kind == "retry_scheduled":
        text = f"{event.step_key} retry {event.attempt} in {detail['due'] - event.at:.1f}s"
    elif event.kind == "timer_started":
        wake = time.strftime("%X", time.localtime(detail["wake_at"]))
        text = f"{event.step_key}: durable delay until {wake}"
    elif event.kind in ("completed", "failed"):
        text = f"{instance_id} {event.kind}"
    else:
        text = f"{event.step_key}"
    print(f"  {symbol} {text}", flush=True)


def drive(backend: SqliteBackend) -> WorkflowStatus:
    """Start the order (or pick it up where a previous run stopped) and see it through."""
    status = run_durable_workflow(
        order_flow,
        INSTANCE_ID,
        ORDER,
        backend=backend,
        conflict_policy="use_existing",
        on_event=show_progress,
    )
    while status.is_in_progress():
        if status.is_waiting() and status.wake_at is not None:
            pause = max(0.0, status.wake_at.timestamp() - time.time())
            print(f"  … parked ({status.status}); resuming in {pause:.1f}s", flush=True)
            time.sleep(pause)
        elif status.is_awaiting_signal():
            print("  … parked (awaiting signal 'packed'); the warehouse sends it now", flush=True)
            send_signal(INSTANCE_ID, "packed", {"parcel": "PX-5521"}, backend)
        status = resume_workflow(order_flow, INSTANCE_ID, backend, on_event=show_progress)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary file)")
    args = parser.parse_args()
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "orders.db"
    backend = SqliteBackend(db)
    print(f"order {INSTANCE_ID} on {db}")
    status = drive(backend)
    print(f"result: {status.status} -> {status.output}")
    return 0 if status.is_completed() else 1


if __name__ == "__main__":
    raise SystemExit(main())
