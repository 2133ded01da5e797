"""The checkout: found by sayiir_django's autodiscovery, run by ``manage.py sayiir worker``.

Each step is checkpointed: a worker killed after ``charge`` resumes at ``ship``, and
never charges twice.
"""

from __future__ import annotations

from typing import Any

from sayiir_core import Flow, get_task_context, task
from shop.models import Order

PRICE_PER_ITEM = 12


@task(retries=3, timeout="30s")
def reserve(order_id: int) -> dict[str, Any]:
    order = Order.objects.get(pk=order_id)
    Order.objects.filter(pk=order_id).update(status="reserved")
    return {"order": order_id, "items": order.items}


@task(retries=3, timeout="30s")
def charge(reservation: dict[str, Any]) -> dict[str, Any]:
    context = get_task_context()
    # A payment API takes this key, so a retried charge is still charged once.
    key = context.idempotency_key if context is not None else None
    amount = reservation["items"] * PRICE_PER_ITEM
    Order.objects.filter(pk=reservation["order"]).update(status="paid")
    return {**reservation, "amount": amount, "payment_key": key}


@task
def ship(payment: dict[str, Any]) -> dict[str, Any]:
    Order.objects.filter(pk=payment["order"]).update(status="shipped")
    return {"order": payment["order"], "charged": payment["amount"], "shipped": True}


checkout = Flow("checkout").then(reserve).then(charge).then(ship).build()
