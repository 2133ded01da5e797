"""A FastAPI shop whose checkout is a durable workflow, with the REST API and dashboard.

Serve it (the database defaults to ``shop.db`` in the working directory)::

    pip install "sayiir-py[fastapi]" uvicorn
    uvicorn examples.fastapi_app:app
    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"id": 42, "sku": "A1", "amount": 19.9}'
    curl -H 'x-staff-token: let-me-in' 'localhost:8000/sayiir/instances/order-42/result?timeout=10'
    open http://localhost:8000/sayiir/ui/   # the dashboard (send the x-staff-token header)

``python examples/fastapi_app.py`` runs the same app once in process (with httpx, on a
temporary database) and prints what a client sees.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from sayiir_core import Flow, get_task_context, task
from sayiir_fastapi import Sayiir, WorkflowClientDep


class Order(BaseModel):
    id: int
    sku: str
    amount: float = Field(gt=0)


@task(retries=2, timeout="10s")
def charge(order: Order) -> dict[str, Any]:
    context = get_task_context()
    # A payment API would receive this key, so a retried charge is not charged twice.
    key = context.idempotency_key if context is not None else None
    return {"order": order.id, "sku": order.sku, "charged": order.amount, "payment_key": key}


@task
async def reserve(receipt: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.01)  # a call to the warehouse
    return {**receipt, "reserved": True}


@task
def confirm(receipt: dict[str, Any]) -> str:
    return f"order {receipt['order']} confirmed ({receipt['sku']}, {receipt['charged']:.2f})"


checkout = Flow("checkout").then(charge).then(reserve).then(confirm).build()


def require_staff(x_staff_token: Annotated[str | None, Header()] = None) -> None:
    """Stand-in for your real authentication: the API and dashboard are for staff only."""
    if x_staff_token != os.environ.get("STAFF_TOKEN", "let-me-in"):
        raise HTTPException(status_code=401, detail="staff only")


def create_app(database_url: str) -> FastAPI:
    sayiir = Sayiir(database_url, workflows=[checkout], workers=1)
    app = FastAPI(title="Shop", lifespan=sayiir.lifespan)
    staff_only = [Depends(require_staff)]
    app.include_router(sayiir.router(), prefix="/sayiir", dependencies=staff_only)
    app.include_router(sayiir.dashboard(), prefix="/sayiir/ui", dependencies=staff_only)

    @app.post("/orders", status_code=202)
    async def create_order(order: Order, client: WorkflowClientDep) -> dict[str, Any]:
        status = await client.submit(checkout, f"order-{order.id}", order)
        return {"instance_id": status.instance_id, "status": status.status}

    return app


app = create_app(os.environ.get("SAYIIR_DATABASE_URL", "sqlite:///shop.db"))


async def demo(database_url: str) -> None:
    import httpx  # only the demo needs it; the app does not

    shop = create_app(database_url)
    staff = {"x-staff-token": "let-me-in"}
    async with shop.router.lifespan_context(shop):
        transport = httpx.ASGITransport(app=shop)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            created = await http.post("/orders", json={"id": 42, "sku": "A1", "amount": 19.9})
            print("POST /orders ->", created.status_code, created.json())
            refused = await http.get("/sayiir/instances/order-42")
            print("without the staff token ->", refused.status_code)
            result = await http.get(
                "/sayiir/instances/order-42/result", params={"timeout": 10}, headers=staff
            )
            body = result.json()
            print(f"order-42: {body['status']} -> {body['output']}")
            bad = await http.post(
                "/sayiir/workflows/checkout/instances",
                json={"input": {"id": "x", "sku": "A1", "amount": -1}},
                headers=staff,
            )
            print("a bad input ->", bad.status_code, bad.json()["detail"])
            dashboard = await http.get("/sayiir/ui/", headers=staff)
            print("dashboard ->", dashboard.status_code, dashboard.headers["content-type"])


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(demo(f"sqlite:///{Path(directory) / 'shop.db'}"))


if __name__ == "__main__":
    main()
