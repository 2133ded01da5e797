"""The peer ``sayiir==1.0.0`` (Rust core, Python tasks), through its public API.

It has no SQLite backend and no ``map``: S5 uses a static fork of one branch per item,
each picking its item from the list. Its ``Worker`` takes one step per poll, so S2 runs
several workers (in one separate process) and S6's latency follows the poll interval.
"""

from __future__ import annotations

import argparse
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
    package_version,
    run_id,
    run_sequential,
    total,
    wait_until,
)

SYSTEM = "sayiir10"
PG_DATABASE = "sayiir_bench_s10"
WORKERS = 8
_ALL = ("S1", "S2", "S3", "S4", "S5", "S6")
_IN_PROCESS_ONLY = {
    "S2": "no persistence, nothing for a worker to claim",
    "S6": "no persistence, nothing for a worker to claim",
}
_MEMORY_ONLY = {
    "S2": "its InMemoryBackend lives in one process; its worker is measured on postgres",
    "S6": "its InMemoryBackend lives in one process; its worker is measured on postgres",
}
# In-process scenarios start nothing in the background; the S2/S6 workers run in their
# own process only while those scenarios run, so one process per row leaves nothing over.
_SETUP = (
    "sayiir 1.0 defaults: run_workflow in the bench process{backend}; S2, S6: {n} Worker "
    "objects in a separate process started for them and stopped after"
)
ROWS = [
    Row(
        SYSTEM,
        "none",
        "sayiir 1.0, no persistence",
        _ALL,
        "",
        _IN_PROCESS_ONLY,
        setup="sayiir 1.0 defaults: run_workflow in the bench process, nothing stored",
    ),
    Row(
        SYSTEM,
        "memory",
        "sayiir 1.0, in-memory durable",
        _ALL,
        "",
        _MEMORY_ONLY,
        setup="sayiir 1.0 defaults: run_workflow(..., instance_id=, backend=InMemoryBackend())",
    ),
    Row(
        SYSTEM,
        "postgres",
        "sayiir 1.0, PostgreSQL",
        _ALL,
        setup=_SETUP.format(backend=" on PostgresBackend(url), its default pool", n=WORKERS),
    ),
]
S5_NOTE = "no map in 1.0: a static fork of one branch per item (each gets the whole list)"


def available() -> str:
    version = package_version("sayiir")
    if version == "not installed":
        return "sayiir==1.0.0 not installed; pip install --group bench"
    if version != "1.0.0":
        return f"sayiir {version} installed, this suite measures 1.0.0; pip install --group bench"
    return ""


def pick(index: int) -> Callable[[list[int]], int]:
    def item(items: list[int]) -> int:
        return items[index] + 1

    return item


def gather(count: int) -> Callable[[dict[str, int]], list[int]]:
    def join(parts: dict[str, int]) -> list[int]:
        return [parts[f"item_{i}"] for i in range(count)]

    return join


def build_flows(map_items: int) -> dict[str, Any]:
    from sayiir import Flow

    chain = Flow("bench_chain")
    for i in range(CHAIN_LENGTH):
        chain = chain.then(inc, name=f"step_{i}")
    fork = Flow("bench_fork").then(inc, name="start").fork()
    for i in range(FORK_WIDTH):
        fork = fork.branch(inc, name=f"branch_{i}")
    payload = Flow("bench_payload")
    for i in range(PAYLOAD_STEPS):
        payload = payload.then(bump, name=f"bump_{i}")
    fan_out = Flow("bench_map").then(lambda items: items, name="items").fork()
    for i in range(map_items):
        fan_out = fan_out.branch(pick(i), name=f"item_{i}")
    return {
        "chain": chain.build(),
        "fork": fork.join(total, name="join").build(),
        "payload": payload.build(),
        "map": fan_out.join(gather(map_items), name="join").build(),
    }


def open_backend(backend: str, settings: Settings) -> Any:
    import sayiir

    if backend == "memory":
        return sayiir.InMemoryBackend()
    if backend == "postgres":
        return sayiir.PostgresBackend(settings.pg_database_url(PG_DATABASE))
    raise ValueError(f"unknown backend {backend!r}")


def shapes_for(flows: dict[str, Any], store: Any, tag: str) -> Shapes:
    from sayiir import run_workflow

    notes = {"S5": S5_NOTE}
    if store is None:
        return Shapes(
            chain=lambda i: run_workflow(flows["chain"], 0),
            fork=lambda i: run_workflow(flows["fork"], 0),
            payload=lambda i, doc: run_workflow(flows["payload"], doc),
            mapper=lambda i, items: run_workflow(flows["map"], items),
            notes=notes,
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
        notes=notes,
    )


def run_row(row: Row, settings: Settings, reporter: Reporter) -> None:
    tag = run_id()
    flows = build_flows(settings.s5_items)
    store = None if row.backend == "none" else open_backend(row.backend, settings)
    run_sequential(reporter, settings, shapes_for(flows, store, tag))
    if {"S2", "S6"} & set(row.scenarios):
        run_worker_scenarios(row, settings, reporter, store, flows, tag)


def run_worker_scenarios(
    row: Row, settings: Settings, reporter: Reporter, store: Any, flows: dict[str, Any], tag: str
) -> None:
    from sayiir import WorkflowClient

    client = WorkflowClient(store)
    # The 1.0 Python WorkflowClient wraps no status(); its native client has one.
    native = client._inner
    note = (
        f"{WORKERS} Worker objects (poll_interval={settings.poll_interval}) in one separate "
        "process; a worker takes one step per poll"
    )

    def submit(instance_id: str) -> str:
        client.submit(flows["chain"], instance_id, 0)
        return instance_id

    def wait(instance_id: str) -> Any:
        def finished() -> bool:
            status = native.status(instance_id)
            return bool(status.is_completed() or status.is_failed() or status.is_cancelled())

        wait_until(finished, timeout=120, interval=OBSERVE_INTERVAL)
        status = native.status(instance_id)
        if not status.is_completed():
            raise RuntimeError(f"instance {instance_id} ended {status.status}: {status.error}")
        return status.output

    with worker_process(settings):
        if "S2" in row.scenarios:
            reporter.measure(
                "S2", lambda: Result(row.key, "S2", measure_s2(submit, wait, settings, tag), note)
            )
        if "S6" in row.scenarios:
            reporter.measure(
                "S6", lambda: Result(row.key, "S6", measure_s6(submit, wait, settings, tag), note)
            )


@contextmanager
def worker_process(settings: Settings) -> Iterator[subprocess.Popen[str]]:
    spec = json.dumps(settings.to_json())
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "worker", spec],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"sayiir 1.0 worker process did not start (said {line!r})")
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_worker(spec_json: str) -> None:
    """Worker process: ``WORKERS`` sayiir 1.0 workers until stdin closes."""
    from sayiir import Worker

    settings = Settings.from_json(json.loads(spec_json))
    flows = build_flows(settings.s5_items)
    handles = [
        Worker(
            f"bench-{n}",
            open_backend("postgres", settings),
            poll_interval=settings.poll_interval,
            claim_ttl=30.0,
        ).start([flows["chain"]])
        for n in range(WORKERS)
    ]
    print("ready", flush=True)
    sys.stdin.read()
    for handle in handles:
        handle.shutdown()
    for handle in handles:
        handle.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["worker"])
    parser.add_argument("spec")
    args = parser.parse_args()
    serve_worker(args.spec)
