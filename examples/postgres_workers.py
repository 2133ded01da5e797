"""Two ``sayiir worker`` processes share one PostgreSQL; a client submits, they run.

    python examples/postgres_workers.py

The shape of a deployment that has outgrown one process: a web process submits with a
``WorkflowClient`` and returns at once; worker processes, on this machine or others,
claim the instances (``FOR UPDATE SKIP LOCKED``), wake on ``LISTEN/NOTIFY`` the moment
one is submitted, checkpoint every step, share the branches of each order's fork (one
runs in the worker that owns the order, the other in whichever worker is free), and on
SIGTERM finish their running steps and release their claims before exiting 0.

Needs the ``postgres`` extra and a PostgreSQL server: ``SAYIIR_TEST_POSTGRES_URL``, by
default ``postgresql://postgres@127.0.0.1:5432/postgres``. Everything lives in a
throwaway schema that is dropped at the end. Without asyncpg or a reachable server it
says so and exits 0 (1 when ``SAYIIR_REQUIRE_SERVICES=1``, as on CI).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from sayiir_core import BackendError, Flow, WorkflowClient, task

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ORDERS = 12


@task
def reserve(order: dict[str, Any]) -> dict[str, Any]:
    return {**order, "reserved": True}


@task
async def charge(order: dict[str, Any]) -> int:
    await asyncio.sleep(0.02)  # async tasks run on the worker's event loop
    return int(order["amount"])


@task
def pack(order: dict[str, Any]) -> str:
    time.sleep(0.02)  # sync tasks run in the worker's thread pool
    return f"{order['items']} items"


@task
def ship(parts: dict[str, Any]) -> str:
    return f"shipped {parts['pack']}, charged {parts['charge']}"


# The workers import this module ("postgres_workers:fulfil") to find the workflow.
fulfil = Flow("fulfil").then(reserve).fork().branch(charge).branch(pack).join(ship).build()


def skip(reason: str) -> int:
    """Without a server there is nothing to show: exit 0, unless services are required."""
    print(f"skipped: {reason}")
    return 1 if os.environ.get("SAYIIR_REQUIRE_SERVICES") == "1" else 0


def start_worker(url: str, worker_id: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``sayiir worker postgres_workers:fulfil --db URL`` as a child process."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "sayiir_core.cli", "worker", "postgres_workers:fulfil"]
    command += ["--db", url, "--id", worker_id, "--concurrency", "4", "--claim-ttl", "30"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)


def wait_until_started(log: Path, worker_ids: list[str], timeout: float = 30.0) -> None:
    """Wait for each worker's "started" log line: from then on SIGTERM stops it gracefully."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        if all(f"worker {worker_id} started" in text for worker_id in worker_ids):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not start in time:\n{text}")
        time.sleep(0.02)


def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def main() -> int:
    try:
        from sayiir_core.backends.postgres import PostgresBackend
    except ImportError:
        return skip("asyncpg is not installed: pip install 'sayiir-py[postgres]'")

    url = os.environ.get("SAYIIR_TEST_POSTGRES_URL", DEFAULT_URL)
    schema = f"example_{secrets.token_hex(4)}"
    # The same schema for the workers, as a URL option (what --db and
    # backend_from_url take).
    worker_url = f"{url}{'&' if '?' in url else '?'}schema={schema}"

    # Handed over to the client (owns_backend=True): client.close() closes it.
    client = WorkflowClient(PostgresBackend(url, schema=schema), owns_backend=True)
    try:
        # The first use opens the backend: it connects, creates the schema and migrates.
        client.list_instances(limit=1)
    except BackendError as error:
        client.close()
        return skip(str(error))

    workers: list[subprocess.Popen[bytes]] = []
    # The workers log to stderr; both append to one file that this process reads.
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "workers.log", "ab") as log:
        try:
            worker_ids = ["worker-1", "worker-2"]
            workers = [start_worker(worker_url, worker_id, log) for worker_id in worker_ids]
            wait_until_started(Path(log.name), worker_ids)
            ids = [f"order-{n}" for n in range(ORDERS)]
            started = time.perf_counter()
            for n, instance_id in enumerate(ids):
                client.submit(fulfil, instance_id, {"amount": 10 * n, "items": n % 3 + 1})
            print(f"submitted {len(ids)} orders; the web process is free again")

            for instance_id in ids:  # woken by NOTIFY as each one finishes
                client.wait(instance_id, timeout=60)
            elapsed = time.perf_counter() - started
            ran_on: Counter[str] = Counter()
            spread = 0  # orders whose two branches ran on different workers
            for instance_id in ids:
                history = client.history(instance_id)
                ran_on.update(e.worker_id for e in history if e.kind == "completed" and e.worker_id)
                branches = {
                    e.worker_id
                    for e in history
                    if e.kind == "task_completed" and e.step_key in ("charge", "pack")
                }
                spread += len(branches) > 1
            print(client.result("order-5"))
            done = client.list_instances(status="completed", workflow_id="fulfil", limit=100)
            print(f"{len(done)} completed in {elapsed * 1000:.0f} ms")
            print("completed by:", ", ".join(f"{w} {n}" for w, n in sorted(ran_on.items())))
            print(f"orders whose fork ran on both workers: {spread} of {len(ids)}")

            for worker in workers:  # what a deploy or `kubectl delete pod` sends
                worker.send_signal(signal.SIGTERM)
            codes = [worker.wait(timeout=30) for worker in workers]
            print(f"workers stopped on SIGTERM: exit codes {codes}")
            if codes != [0, 0]:
                print(Path(log.name).read_text(errors="replace"), file=sys.stderr)
                return 1
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            client.close()
            drop_schema(url, schema)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
