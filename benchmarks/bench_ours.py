"""This project (``sayiir_core``) on every backend, through the public API.

Sync steps (``def inc(x): return x + 1``) are the main rows, as for the peers. The
``async steps`` rows run the same shapes with ``async def`` steps. On the durable rows a
sync step runs on a task thread and an async one on the event loop, so the gap between
the two rows is the cost of that thread hop. Without persistence, a chain of sync steps
runs inline on the calling thread (docs/howto/basics.md, "Which thread runs a step"), and
its row is the cheaper of the two.

Workers (S2, S6) run in their own processes, started by this module as
``python bench_ours.py worker ...`` and stopped by closing their stdin.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    run_id,
    run_sequential,
    total,
)

SYSTEM = "ours"
PG_DATABASE = "sayiir_bench"
WORKER_CONCURRENCY = 16
_IN_PROCESS = ("S1", "S3", "S4", "S5", "S7")
_NO_WORKER = {
    "S2": "no persistence, nothing for a worker to claim",
    "S6": "no persistence, nothing for a worker to claim",
}
_MEMORY_NO_WORKER = {
    "S2": "an InMemoryBackend lives in one process; workers are measured on sqlite/postgres",
    "S6": "an InMemoryBackend lives in one process; workers are measured on sqlite/postgres",
}

_ROWS = [
    Row(SYSTEM, "none", "ours, no persistence", (*_IN_PROCESS, "S2", "S6"), "", _NO_WORKER),
    Row(SYSTEM, "none", "ours, no persistence, async steps", _IN_PROCESS[:3], "async"),
    Row(
        SYSTEM,
        "memory",
        "ours, in-memory durable",
        (*_IN_PROCESS, "S2", "S6"),
        "",
        _MEMORY_NO_WORKER,
    ),
    Row(SYSTEM, "memory", "ours, in-memory durable, async steps", _IN_PROCESS[:3], "async"),
    Row(SYSTEM, "sqlite", "ours, SQLite (FULL)", (*_IN_PROCESS, "S2", "S6")),
    Row(SYSTEM, "sqlite", "ours, SQLite (FULL), async steps", _IN_PROCESS[:3], "async"),
    Row(SYSTEM, "sqlite", "ours, SQLite (FULL), 2 worker processes", ("S2",), "2procs"),
    Row(SYSTEM, "postgres", "ours, PostgreSQL", (*_IN_PROCESS, "S2", "S6")),
    Row(SYSTEM, "postgres", "ours, PostgreSQL, async steps", _IN_PROCESS[:3], "async"),
    Row(SYSTEM, "postgres", "ours, PostgreSQL, 2 worker processes", ("S2",), "2procs"),
]
_SETUP = {
    "none": "run_workflow(wf, x) in the bench process, nothing stored",
    "memory": "run_workflow(wf, x, instance_id=, backend=InMemoryBackend())",
    "sqlite": "SqliteBackend(path, synchronous='FULL'), defaults otherwise; in-process runs "
    "start no worker, S2/S6 start theirs in separate processes and stop them after",
    "postgres": "PostgresBackend(url, schema=), defaults otherwise; in-process runs start no "
    "worker, S2/S6 start theirs in separate processes and stop them after",
}
ROWS = [dataclasses.replace(row, setup=_SETUP[row.backend]) for row in _ROWS]

WORKER_NOTE = (
    "Worker(concurrency={c}, poll_interval={p}) in {n} separate process(es); "
    "client: WorkflowClient.result in the bench process (woken by NOTIFY on PostgreSQL, "
    "re-reading every 1 ms on SQLite)"
)


def available() -> str:
    try:
        import sayiir_core  # noqa: F401
    except ImportError as error:
        return f"sayiir_core not importable: {error}"
    return ""


def postgres_missing() -> str:
    """Why our PostgreSQL backend cannot be used yet, or ``""``."""
    try:
        import sayiir_core.backends.postgres  # noqa: F401
    except ImportError as error:
        return f"sayiir_core.backends.postgres not importable yet ({error})"
    return ""


# -- the shapes --------------------------------------------------------------------------


async def ainc(x: int) -> int:
    return x + 1


async def atotal(parts: dict[str, int]) -> int:
    return total(parts)


async def abump(doc: dict[str, Any]) -> dict[str, Any]:
    return bump(doc)


def build_flows(asynchronous: bool) -> dict[str, Any]:
    from sayiir_core import Flow

    step = ainc if asynchronous else inc
    join = atotal if asynchronous else total
    payload_step = abump if asynchronous else bump
    suffix = "_async" if asynchronous else ""

    chain = Flow(f"bench_chain{suffix}")
    for i in range(CHAIN_LENGTH):
        chain = chain.then(step, name=f"step_{i}")
    fork = Flow(f"bench_fork{suffix}").then(step, name="start").fork()
    for i in range(FORK_WIDTH):
        fork = fork.branch(step, name=f"branch_{i}")
    payload = Flow(f"bench_payload{suffix}")
    for i in range(PAYLOAD_STEPS):
        payload = payload.then(payload_step, name=f"bump_{i}")
    mapper = Flow(f"bench_map{suffix}").map(step, name="item")
    return {
        "chain": chain.build(),
        "fork": fork.join(join, name="join").build(),
        "payload": payload.build(),
        "map": mapper.build(),
    }


def open_backend(backend: str, settings: Settings, schema: str) -> Any:
    from sayiir_core import InMemoryBackend, SqliteBackend

    if backend == "memory":
        return InMemoryBackend()
    if backend == "sqlite":
        return SqliteBackend(Path(settings.work_dir) / f"ours-{schema}.db", synchronous="FULL")
    if backend == "postgres":
        from sayiir_core.backends.postgres import PostgresBackend

        return PostgresBackend(settings.pg_database_url(PG_DATABASE), schema=schema)
    raise ValueError(f"unknown backend {backend!r}")


def shapes_for(backend: str, flows: dict[str, Any], store: Any, tag: str) -> Shapes:
    from sayiir_core import run_workflow

    if store is None:
        return Shapes(
            chain=lambda i: run_workflow(flows["chain"], 0),
            fork=lambda i: run_workflow(flows["fork"], 0),
            payload=lambda i, doc: run_workflow(flows["payload"], doc),
            mapper=lambda i, items: run_workflow(flows["map"], items),
            wide_mapper=lambda i, items: run_workflow(flows["map"], items),
        )

    def durable(flow: str, scenario: str) -> Callable[[int, Any], Any]:
        def run(i: int, value: Any) -> Any:
            instance_id = f"{scenario}-{tag}-{i}"
            return run_workflow(flows[flow], value, instance_id=instance_id, backend=store)

        return run

    chain, fork = durable("chain", "s1"), durable("fork", "s3")
    return Shapes(
        chain=lambda i: chain(i, 0),
        fork=lambda i: fork(i, 0),
        payload=durable("payload", "s4"),
        mapper=durable("map", "s5"),
        wide_mapper=durable("map", "s7"),
        notes={
            "S5": "Flow.map: every item checkpointed on its own",
            "S7": "Flow.map: every item checkpointed on its own",
        },
    )


# -- one row -----------------------------------------------------------------------------


def run_row(row: Row, settings: Settings, reporter: Reporter) -> None:
    if row.backend == "postgres" and (why := postgres_missing()):
        for scenario in row.scenarios:
            reporter.add(Result(row.key, scenario, skipped=why))
        return
    tag = run_id()
    asynchronous = row.variant == "async"
    flows = build_flows(asynchronous)
    schema = f"bench_{row.variant or 'main'}"
    store = None if row.backend == "none" else open_backend(row.backend, settings, schema)
    run_sequential(reporter, settings, shapes_for(row.backend, flows, store, tag))
    if {"S2", "S6"} & set(row.scenarios):
        processes = 2 if row.variant == "2procs" else 1
        run_worker_scenarios(row, settings, reporter, store, schema, processes, tag)
    if store is not None:
        from sayiir_core import WorkflowClient

        WorkflowClient(store, owns_backend=True).close()  # closes the store on the loop thread


def run_worker_scenarios(
    row: Row,
    settings: Settings,
    reporter: Reporter,
    store: Any,
    schema: str,
    processes: int,
    tag: str,
) -> None:
    from sayiir_core import WorkflowClient

    flows = build_flows(asynchronous=False)
    client = WorkflowClient(store)
    note = WORKER_NOTE.format(c=WORKER_CONCURRENCY, p=settings.poll_interval, n=processes)
    # PostgreSQL wakes the waiting client by NOTIFY; SQLite's workers in other processes
    # cannot push, so its client re-reads as often as the peers' clients poll.
    poll = OBSERVE_INTERVAL if row.backend == "sqlite" else None

    def submit(instance_id: str) -> str:
        client.submit(flows["chain"], instance_id, 0)
        return instance_id

    def wait(instance_id: str) -> Any:
        return client.result(instance_id, timeout=120, poll_interval=poll)

    with worker_processes(row.backend, settings, schema, processes):
        if "S2" in row.scenarios:
            reporter.measure(
                "S2", lambda: Result(row.key, "S2", measure_s2(submit, wait, settings, tag), note)
            )
        if "S6" in row.scenarios:
            reporter.measure(
                "S6", lambda: Result(row.key, "S6", measure_s6(submit, wait, settings, tag), note)
            )


@contextmanager
def worker_processes(
    backend: str, settings: Settings, schema: str, count: int
) -> Iterator[list[subprocess.Popen[str]]]:
    spec = json.dumps({"backend": backend, "schema": schema, "settings": settings.to_json()})
    procs: list[subprocess.Popen[str]] = []
    try:
        for n in range(count):
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "worker", spec, f"bench-{n}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker process did not start (said {line!r})")
        yield procs
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()  # the worker's signal to shut down
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve_worker(spec_json: str, worker_id: str) -> None:
    """Worker process: run a ``Worker`` until stdin closes."""
    from sayiir_core import Worker

    spec = json.loads(spec_json)
    settings = Settings.from_json(spec["settings"])
    backend = open_backend(spec["backend"], settings, spec["schema"])
    worker = Worker(
        worker_id,
        backend,
        poll_interval=settings.poll_interval,
        claim_ttl=30.0,
        concurrency=WORKER_CONCURRENCY,
    )
    handle = worker.start(build_flows(asynchronous=False).values())
    print("ready", flush=True)
    sys.stdin.read()
    handle.shutdown()
    handle.join(timeout=20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["worker"])
    parser.add_argument("spec")
    parser.add_argument("worker_id")
    args = parser.parse_args()
    serve_worker(args.spec, args.worker_id)
