"""Durable workflows on a Celery fleet: start two worker processes, submit five orders.

    python examples/celery_bridge/run.py

Needs Redis and PostgreSQL on 127.0.0.1 (see ``tasks.py``). Every step of every order
is run by a Celery task of whichever worker process takes its message (``ship``, the
one step the join makes ready, by the task of a branch that ran before it: chain
continuation); the fork's two branches spread over both; each checkpoint lands in
PostgreSQL, so a worker killed mid-step loses nothing (the step runs again after its
lease).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tasks import bridge, checkout  # noqa: E402


def main() -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    command = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--concurrency=2"]
    command += ["--loglevel=WARNING", "--without-gossip", "--without-mingle"]
    worker = subprocess.Popen(command, cwd=HERE, env=env)
    try:
        run = uuid.uuid4().hex[:6]
        ids = [f"order-{run}-{n}" for n in range(5)]
        for n, order_id in enumerate(ids):
            order = {"id": order_id, "customer": f"customer-{n}", "total": 10 * (n + 1)}
            bridge.client.submit(checkout, order_id, order)
        started = time.monotonic()
        for order_id in ids:
            print(order_id, "->", bridge.client.result(order_id, timeout=60))
        print(f"{len(ids)} orders completed in {time.monotonic() - started:.2f} s")
    finally:
        worker.terminate()  # a warm shutdown: running steps finish first
        worker.wait(timeout=30)
        bridge.client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
