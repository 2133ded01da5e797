"""Sayiir for FastAPI: a lifespan with in-process workers, a client dependency, a REST
router with live progress, and a dashboard.

::

    from fastapi import FastAPI
    from sayiir_fastapi import Sayiir, WorkflowClientDep

    sayiir = Sayiir("sqlite:///app.db", workflows=[checkout], workers=1)
    app = FastAPI(lifespan=sayiir.lifespan)
    app.include_router(sayiir.router(), prefix="/sayiir")

    @app.post("/orders")
    async def create_order(order: Order, client: WorkflowClientDep):
        return await client.submit(checkout, f"order-{order.id}", order)

Needs the ``fastapi`` extra (``pip install "sayiir-py[fastapi]"``).
"""

from __future__ import annotations

from sayiir_fastapi.dependencies import WorkflowClientDep, get_client
from sayiir_fastapi.integration import Sayiir

__all__ = ["Sayiir", "WorkflowClientDep", "get_client"]
