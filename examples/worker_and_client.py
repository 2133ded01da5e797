"""Distributed shape in one process: worker threads run what a client submits.

    python examples/worker_and_client.py

The client only stores instances (status ``pending``); workers claim them from the
shared SQLite file, run them and checkpoint every step. In production the workers are
separate processes or machines pointed at the same database; here two worker threads
stand in for them. ``shutdown()`` lets running steps finish and releases their claims.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sayiir_core import Flow, SqliteBackend, Worker, WorkflowClient, task


@task
def resize(image: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.05)  # sync tasks run in the worker's thread pool
    return {**image, "size": "800x600"}


@task
async def tag(image: dict[str, Any]) -> dict[str, Any]:
    return {**image, "tags": ["cat"]}


image_flow = Flow("images").then(resize).then(tag).build()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "app.db"
        workers = [
            Worker(f"worker-{n}", SqliteBackend(db), poll_interval=0.1, concurrency=2).start(
                [image_flow]
            )
            for n in (1, 2)
        ]
        client = WorkflowClient(SqliteBackend(db))
        ids = [f"img-{n}" for n in range(6)]
        for instance_id in ids:
            status = client.submit(image_flow, instance_id, {"file": f"{instance_id}.jpg"})
        print(f"submitted {len(ids)} instances (last one {status.status})")

        for instance_id in ids:
            status = client.wait(instance_id, timeout=30)  # until a worker has finished it
            history = client.history(instance_id)
            ran_on = sorted({e.worker_id for e in history if e.kind == "task_completed"})
            print(f"{instance_id}: {status.status} {status.output['size']} on {ran_on}")

        completed = client.list_instances(status="completed", workflow_id="images")
        print(f"{len(completed)} completed")

        for handle in workers:
            handle.shutdown()
        for handle in workers:
            handle.join(timeout=10)
        print("workers stopped:", not any(handle.is_alive() for handle in workers))
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
