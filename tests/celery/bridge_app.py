"""The Celery app the bridge tests run in real ``celery worker`` processes (``-A bridge_app``).

Configured by environment variables set by ``celery_fleet.Fleet``: the broker URL and key
prefix, the PostgreSQL URL and schema, the log file every step body appends to (one
fsynced line per event, so the log is exact even after a SIGKILL), and the files the
gate steps wait for. Every publish of any message is logged too (with the instance and
step it names), so a test can prove no message ever carried an ETA or countdown and
count the messages of an instance; so is the start of every step task (``task ...``),
so a test can tell which steps one task ran (chain continuation).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from celery import Celery, signals

from sayiir_celery import SayiirCelery
from sayiir_core import Flow, RetryPolicy, task
from sayiir_core.backends.postgres import PostgresBackend

LOG = os.environ.get("BRIDGE_LOG", "/tmp/bridge.log")
GATES = os.environ.get("BRIDGE_GATES", "/tmp")
NAME = os.environ.get("BRIDGE_WORKER", socket.gethostname())


def log(*words: object) -> None:
    line = " ".join(str(word) for word in words) + "\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def wait_for_gate(name: str, timeout: float = 60.0) -> None:
    path = os.path.join(GATES, name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {name} never opened")
        time.sleep(0.02)


def context_instance() -> str:
    from sayiir_core import get_task_context

    context = get_task_context()
    return context.instance_id if context is not None else "?"


def step(name: str) -> None:
    log(context_instance(), name, NAME, os.getpid(), "started")


@task("start")
def start(order: dict[str, Any]) -> int:
    step("start")
    return int(order["n"])


@task("left", tags=["io"])
def left(n: int) -> int:
    step("left")
    time.sleep(0.3)  # long enough for the other branch to go to another process
    return n * 10


@task("right", tags=["cpu"])
def right(n: int) -> int:
    step("right")
    time.sleep(0.3)
    return n * 100


@task("total")
def total(parts: dict[str, int]) -> int:
    step("total")
    return parts["left"] + parts["right"]


fork_join = Flow("fork_join").then(start).fork().branch(left).branch(right).join(total).build()


@task("slow")
def slow(n: int) -> int:
    step("slow")
    wait_for_gate(f"slow-{context_instance()}")
    log(context_instance(), "slow", NAME, os.getpid(), "done")
    return n + 1


@task("finish")
def finish(n: int) -> int:
    step("finish")
    return n + 1


gated = Flow("gated").then(slow).then(finish).build()


@task("flaky", retries=RetryPolicy(max_retries=2, initial_delay_secs=0.5, backoff_multiplier=2.0))
def flaky(n: int) -> int:
    step("flaky")
    marker = os.path.join(GATES, f"flaky-{context_instance()}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return n


timed = Flow("timed").then(flaky).delay("nap", 2.0).then(finish).build()


@task("first")
def first(n: int) -> int:
    step("first")
    return n


# A quick step, then the gated one: ``slow`` is reached by chain continuation.
relay = Flow("relay").then(first).then(slow).then(finish).build()
# ``left`` goes to queue ``io`` when routes are on: the chain changes queue twice.
hop = Flow("hop").then(first).then(left).then(finish).build()


@task("bump")
def bump(n: int) -> int:
    step(f"bump{n}")
    return n + 1


@task("pace")
def pace(n: int) -> int:
    step(f"pace{n}")
    time.sleep(0.4)
    return n + 1


def _chain(name: str, body: Any, prefix: str, steps: int) -> Any:
    flow = Flow(name)
    for n in range(steps):
        flow = flow.then(body, name=f"{prefix}{n}")
    return flow.build()


# Started with 0, step ``bumpN`` logs itself as ``bumpN`` (and ``paceN`` as ``paceN``).
chain10 = _chain("chain10", bump, "bump", 10)
paced = _chain("paced", pace, "pace", 6)

BACKEND = PostgresBackend(
    os.environ.get("BRIDGE_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    schema=os.environ.get("BRIDGE_PG_SCHEMA", "public"),
    max_size=4,
)
PREFIX = os.environ.get("BRIDGE_PREFIX", "sayiir-test:")
app = Celery("bridge_app", broker=os.environ.get("BRIDGE_BROKER", "redis://127.0.0.1:6379/11"))
app.conf.update(
    worker_prefetch_multiplier=1,
    accept_content=["json"],
    task_serializer="json",
    broker_connection_retry_on_startup=True,
    broker_transport_options={"global_keyprefix": PREFIX, "visibility_timeout": 3600},
    worker_hijack_root_logger=False,
    task_default_queue=os.environ.get("BRIDGE_DEFAULT_QUEUE", "celery"),
)
bridge = SayiirCelery(
    app,
    backend=BACKEND,
    workflows=[fork_join, gated, timed, relay, hop, chain10, paced],
    queues_by_tag={"io": "io", "cpu": "cpu"} if os.environ.get("BRIDGE_ROUTES") else None,
    step_lease=float(os.environ.get("BRIDGE_STEP_LEASE", "5")),
    redispatch_after=float(os.environ.get("BRIDGE_REDISPATCH", "2")),
    sweep_interval=0.2,
    # The bridge's default unless a test sets it (0: one message per step).
    continue_for=float(os.environ.get("BRIDGE_CONTINUE_FOR") or 1.0),
)


def _log_publish(
    sender: str | None = None,
    body: Any = None,
    headers: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    headers = headers or {}
    args = body[0] if isinstance(body, (list, tuple)) and body else []
    message = args[0] if args and isinstance(args[0], dict) else {}
    names = (message.get("instance", "-"), message.get("step", "-"))
    eta = ("eta", headers.get("eta"), "countdown", headers.get("countdown"))
    log("publish", sender, *names, *eta)


def _task_started(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) == "sayiir_celery.run_step":
        log("task", NAME, os.getpid())


def _ready(**_: Any) -> None:
    log("ready", NAME, os.getpid())


signals.before_task_publish.connect(_log_publish)
signals.worker_ready.connect(_ready)
signals.task_prerun.connect(_task_started)
