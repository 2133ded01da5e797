"""Distributed shape in one process: worker threads run what a client submits.

    python examples/worker_and_client.py

The client only stores instances (status ``in_progress``); workers claim them from the
shared SQLite file, run them and checkpoint every step. In production the workers are
separate processes or machines pointed at the same database; here two worker threads
on the client's backend stand in for them. Leaving a worker's ``with`` block shuts it
down: running steps finish and release their claims. The client made the backend from
the URL, so closing the client closes it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sayiir_core import Flow, Worker, WorkflowClient, task


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
        with WorkflowClient.from_url(f"sqlite:///{db}") as client:
            first, second = (
                Worker(f"worker-{n}", client.backend, poll_interval=0.1, concurrency=2).start(
                    [image_flow]
                )
                for n in (1, 2)
            )
            with first, second:
                submit_and_watch(client)
            print("workers stopped:", not (first.is_alive() or second.is_alive()))
    return 0


def submit_and_watch(client: WorkflowClient) -> None:
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


if __name__ == "__main__":
    raise SystemExit(main())
