"""Workflows of the test app, found by sayiir_django's autodiscovery."""

from __future__ import annotations

import os
import time
from typing import Any

from django.conf import settings

from sayiir_core import Flow, get_task_context, task
from sayiir_django_testproject.shop.models import Receipt


@task
def double(n: int) -> int:
    return n * 2


@task
def add_one(n: int) -> int:
    return n + 1


def _pause() -> None:
    # Tests that kill workers mid-run slow each step down through the environment.
    time.sleep(float(os.environ.get("SAYIIR_TEST_STEP_SECONDS", "0")))


@task
def price(order: dict[str, Any]) -> int:
    _pause()
    return int(order["items"]) * 10


@task
def shipping(order: dict[str, Any]) -> int:
    _pause()
    return 5


@task
def tax(order: dict[str, Any]) -> int:
    _pause()
    return int(order["items"])


@task
def total(parts: dict[str, int]) -> int:
    return sum(parts.values())


@task
def write_receipt(amount: int) -> int:
    context = get_task_context()
    assert context is not None
    receipt = Receipt.objects.using(settings.SAYIIR["DATABASE"]).create(
        order=int(context.instance_id.rsplit("-", 1)[-1]),
        amount=amount,
        written_by=f"pid {os.getpid()}",
    )
    return int(receipt.pk)


doubling = Flow("doubling").then(double).then(add_one).build()
checkout = (
    Flow("checkout")
    .fork()
    .branch(price)
    .branch(shipping)
    .branch(tax)
    .join(total)
    .then(write_receipt)
    .build()
)
approval = Flow("approval").then(double).wait_for_signal("approve").then(add_one).build()
