"""Workflows and an app factory shared by the FastAPI tests, in process and under uvicorn.

Loaded by ``conftest.py`` and, in the uvicorn tests, by ``served_app.py`` (uvicorn's
``--app-dir`` puts this directory on the path), so both define the same workflows.

With ``SAYIIR_TEST_RUN_LOG`` set, every step appends ``pid instance step`` to that file
when it runs, which lets a test count how often each step ran, across processes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from sayiir_core import Flow, get_task_context, task
from sayiir_fastapi import Sayiir, WorkflowClientDep

RUN_LOG_VARIABLE = "SAYIIR_TEST_RUN_LOG"
# In-process gates: a gated step waits until its test opens the gate of that name.
GATES: dict[str, asyncio.Event] = {}


def record_run() -> None:
    path = os.environ.get(RUN_LOG_VARIABLE)
    if path:
        context = get_task_context()
        assert context is not None
        line = f"{os.getpid()} {context.instance_id} {context.task_id}\n"
        with open(path, "a", encoding="utf-8") as log:  # O_APPEND: one write per line
            log.write(line)


class Order(BaseModel):
    id: int
    amount: float = Field(gt=0)


@task
def charge(order: Order) -> dict[str, Any]:
    record_run()
    return {"id": order.id, "charged": order.amount}


@task
async def pack(receipt: dict[str, Any]) -> dict[str, Any]:
    record_run()
    return {**receipt, "packed": True}


@task
def ship(receipt: dict[str, Any]) -> str:
    record_run()
    return f"order {receipt['id']} shipped"


checkout = Flow("checkout").then(charge).then(pack).then(ship).build()


@task
def prepare(request: dict[str, Any]) -> dict[str, Any]:
    return {"amount": request.get("amount", 0)}


@task
def conclude(decision: Any) -> str:
    return f"decided: {decision}"


approval = (
    Flow("approval").then(prepare).wait_for_signal("approve", name="approval").then(conclude)
).build()


@task
def explode(_: Any) -> None:
    raise ValueError("card declined")


failing = Flow("failing").then(explode).build()


@task
async def gated(spec: dict[str, Any]) -> dict[str, Any]:
    """Waits for an in-process gate, or for a file to exist (across processes)."""
    record_run()
    if "gate" in spec:
        GATES.setdefault(spec["gate"] + ".started", asyncio.Event()).set()
        await GATES.setdefault(spec["gate"], asyncio.Event()).wait()
    if "file" in spec:
        await asyncio.to_thread(Path(spec["file"] + ".started").touch)
        while not await asyncio.to_thread(Path(spec["file"]).exists):
            await asyncio.sleep(0.02)
    return spec


@task
def after_gate(spec: dict[str, Any]) -> str:
    record_run()
    return "through"


gate_flow = Flow("gate_flow").then(gated).then(after_gate).build()


@task
def validate(order: Order) -> dict[str, Any]:
    return {"id": order.id, "amount": order.amount}


@task
def reserve_stock(order: dict[str, Any]) -> str:
    return f"stock held for {order['id']}"


@task
def charge_card(order: dict[str, Any]) -> float:
    return float(order["amount"])


@task
def merge(results: dict[str, Any]) -> dict[str, Any]:
    return results


@task
def notify(dispatch: Any) -> str:
    return f"dispatched: {dispatch}"


# A richer shape for the dashboard's pictures: a fork, a join, then a signal.
fulfilment = (
    Flow("fulfilment")
    .then(validate)
    .fork()
    .branch(reserve_stock)
    .branch(charge_card)
    .join(merge)
    .wait_for_signal("dispatch", name="await_dispatch")
    .then(notify)
    .build()
)

ALL_WORKFLOWS = [checkout, approval, failing, gate_flow, fulfilment]


def make_app(
    sayiir: Sayiir,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    dashboard: bool = True,
) -> FastAPI:
    """An app like a user's: the lifespan, the router, the dashboard, one own endpoint."""
    app = FastAPI(lifespan=lifespan or sayiir.lifespan)
    app.include_router(sayiir.router(), prefix="/sayiir")
    if dashboard:
        app.include_router(sayiir.dashboard(), prefix="/sayiir/ui")

    @app.post("/orders", status_code=201)
    async def create_order(order: Order, client: WorkflowClientDep) -> dict[str, Any]:
        status = await client.submit(checkout, f"order-{order.id}", order)
        return {"instance_id": status.instance_id, "status": status.status}

    return app
