"""The peer DBOS Transact (``dbos``), on its PostgreSQL and SQLite system databases.

A DBOS workflow is a Python function whose ``@DBOS.step()`` calls are checkpointed.
Fan-out has no builder: S3 and S5 are async workflows that ``asyncio.gather`` one
async step per branch or item (DBOS's documented way to run steps in parallel, and the
fastest we found; child workflows per branch were about twice as slow). They run on
one long-lived event loop, as ours do. Queues (S2, S6) are served by the process that
launched DBOS, which is DBOS's deployment model.

Each scenario runs in a fresh process with a fresh ``DBOS.launch()``
(``FRESH_PROCESS_PER_SCENARIO``), configured for that scenario only: the in-process
scenarios (S1, S3, S4, S5) call the workflow directly with no queue registered, so no
queue poller runs beside them; only S2 and S6 register the queue they use. (An earlier
version launched DBOS once per row with the S2/S6 queue polling every 10 ms throughout,
which slowed S1 by a factor of two to three.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from common import (
    CHAIN_LENGTH,
    FORK_WIDTH,
    OBSERVE_INTERVAL,
    PAYLOAD_STEPS,
    Reporter,
    Result,
    Row,
    Settings,
    Shapes,
    bump,
    inc,
    measure_s2,
    measure_s6,
    package_version,
    run_id,
    run_sequential,
    total,
    versioned,
)

SYSTEM = "dbos"
PG_DATABASE = "sayiir_bench_dbos"
QUEUE_CONCURRENCY = 16
QUEUE_SCENARIOS = frozenset({"S2", "S6"})
FRESH_PROCESS_PER_SCENARIO = True
_ALL = ("S1", "S2", "S3", "S4", "S5", "S6")
_SETUP = (
    "DBOS defaults (system database on {db}, LISTEN/NOTIFY where available), one fresh "
    "process and DBOS.launch() per scenario; S1, S3, S4, S5 call the workflow directly "
    "with no queue registered; S2, S6 register one queue and nothing else"
)
ROWS = [
    Row(
        SYSTEM,
        "postgres",
        f"{versioned('dbos')}, PostgreSQL",
        _ALL,
        setup=_SETUP.format(db="PostgreSQL"),
    ),
    Row(SYSTEM, "sqlite", f"{versioned('dbos')}, SQLite", _ALL, setup=_SETUP.format(db="SQLite")),
]


def available() -> str:
    version = package_version("dbos")
    return "" if version != "not installed" else "dbos not installed; pip install --group bench"


def launch(row: Row, settings: Settings) -> dict[str, Any]:
    """Register the workflows, launch DBOS and register the queue; returns the callables."""
    from dbos import DBOS

    if row.backend == "postgres":
        url = settings.pg_database_url(PG_DATABASE)
    else:
        url = f"sqlite:///{Path(settings.work_dir) / 'dbos.sqlite'}"
    DBOS(config={"name": "sayiir-bench", "system_database_url": url, "log_level": "WARNING"})

    step_inc = DBOS.step(name="inc")(inc)
    step_bump = DBOS.step(name="bump")(bump)

    @DBOS.workflow(name="bench_chain")
    def chain(x: int) -> int:
        for _ in range(CHAIN_LENGTH):
            x = step_inc(x)
        return x

    @DBOS.step(name="ainc")
    async def step_ainc(x: int) -> int:
        return x + 1

    @DBOS.step(name="atotal")
    async def step_atotal(parts: list[int]) -> int:
        return total(parts)

    @DBOS.workflow(name="bench_fork")
    async def fork(x: int) -> int:
        x = await step_ainc(x)
        results = await asyncio.gather(*(step_ainc(x) for _ in range(FORK_WIDTH)))
        return await step_atotal(list(results))

    @DBOS.workflow(name="bench_payload")
    def payload(doc: dict[str, Any]) -> dict[str, Any]:
        for _ in range(PAYLOAD_STEPS):
            doc = step_bump(doc)
        return doc

    @DBOS.workflow(name="bench_map")
    async def fan_out(items: list[int]) -> list[int]:
        return list(await asyncio.gather(*(step_ainc(item) for item in items)))

    DBOS.launch()
    fns: dict[str, Any] = {"chain": chain, "fork": fork, "payload": payload, "map": fan_out}
    if QUEUE_SCENARIOS & set(row.scenarios):
        # Only when a queue scenario runs: a queue's poller beside S1 would slow it.
        poll = settings.poll_interval
        fns["queue"] = DBOS.register_queue(
            "bench", worker_concurrency=QUEUE_CONCURRENCY, polling_interval_sec=poll
        )
    return fns


def run_row(row: Row, settings: Settings, reporter: Reporter) -> None:
    from dbos import DBOS

    fns = launch(row, settings)
    loop = asyncio.Runner()
    try:
        notes = {
            "S3": "async workflow: asyncio.gather over 10 async steps, then a join step",
            "S5": "async workflow: asyncio.gather over one async step per item",
        }
        shapes = Shapes(
            chain=lambda i: fns["chain"](0),
            fork=lambda i: loop.run(fns["fork"](0)),
            payload=lambda i, doc: fns["payload"](doc),
            mapper=lambda i, items: loop.run(fns["map"](items)),
            notes=notes,
        )
        if "S5" in row.scenarios:
            # S5 is timed cold otherwise (a fresh process, one run of seconds): warm the
            # async workflow and its step once on a small list.
            loop.run(fns["map"](list(range(10))))
        run_sequential(reporter, settings, shapes)
        if "queue" in fns:
            run_queue_scenarios(row, settings, reporter, fns)
    finally:
        loop.close()
        DBOS.destroy()


def run_queue_scenarios(
    row: Row, settings: Settings, reporter: Reporter, fns: dict[str, Any]
) -> None:
    from dbos import SetWorkflowID

    queue = fns["queue"]
    note = (
        f"a DBOS queue (worker_concurrency={QUEUE_CONCURRENCY}, polling_interval_sec="
        f"{settings.poll_interval}) served by the bench process"
    )
    tag = run_id()

    def submit(instance_id: str) -> Any:
        with SetWorkflowID(f"{instance_id}-{tag}"):
            return queue.enqueue(fns["chain"], 0)

    def wait(handle: Any) -> Any:
        return handle.get_result(polling_interval_sec=OBSERVE_INTERVAL)

    if "S2" in row.scenarios:
        reporter.measure(
            "S2", lambda: Result(row.key, "S2", measure_s2(submit, wait, settings, tag), note)
        )
    if "S6" in row.scenarios:
        reporter.measure(
            "S6", lambda: Result(row.key, "S6", measure_s6(submit, wait, settings, tag), note)
        )
