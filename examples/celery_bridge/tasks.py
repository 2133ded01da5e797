"""The Celery app of the example: an ordinary Celery app, plus the bridge.

Start its workers as for any Celery app (``run.py`` does it for you)::

    celery -A tasks worker --concurrency=2

Broker and database come from ``SAYIIR_EXAMPLE_BROKER`` (default Redis on 127.0.0.1,
database 0) and ``SAYIIR_EXAMPLE_DB`` / ``SAYIIR_EXAMPLE_SCHEMA`` (PostgreSQL on
127.0.0.1, schema ``celery_example``). ``SAYIIR_EXAMPLE_KEY_PREFIX`` puts the broker's
Redis keys under a prefix, to run copies side by side (the tests do).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from sayiir_celery import SayiirCelery
from sayiir_core import Flow, RetryPolicy, task
from sayiir_core.backends.postgres import PostgresBackend

app = Celery("shop", broker=os.environ.get("SAYIIR_EXAMPLE_BROKER", "redis://127.0.0.1:6379/0"))
# What the bridge's startup check asks for: one message reserved per worker process.
app.conf.worker_prefetch_multiplier = 1
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("SAYIIR_EXAMPLE_KEY_PREFIX"):
    app.conf.broker_transport_options = {
        "global_keyprefix": os.environ["SAYIIR_EXAMPLE_KEY_PREFIX"]
    }


@task("reserve")
def reserve(order: dict[str, Any]) -> dict[str, Any]:
    return {**order, "reserved": True}


@task("charge", retries=RetryPolicy(max_retries=3, initial_delay_secs=1.0), timeout=30)
def charge(order: dict[str, Any]) -> str:
    time.sleep(0.2)  # a payment API; runs in parallel with the email on another worker
    return f"charged {order['total']} EUR"


@task("email", tags=["io"])
async def email(order: dict[str, Any]) -> str:
    return f"mailed {order['customer']}"


@task("ship")
def ship(done: dict[str, str]) -> str:
    return f"shipped ({done['charge']}, {done['email']})"


checkout = Flow("checkout").then(reserve).fork().branch(charge).branch(email).join(ship).build()

backend = PostgresBackend(
    os.environ.get("SAYIIR_EXAMPLE_DB", "postgresql://postgres@127.0.0.1:5432/postgres"),
    schema=os.environ.get("SAYIIR_EXAMPLE_SCHEMA", "celery_example"),
)
# owns_backend: the bridge's client closes the backend (run.py calls bridge.client.close()).
bridge = SayiirCelery(app, backend=backend, workflows=[checkout], owns_backend=True)
