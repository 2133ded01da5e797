"""An expense that waits for a manager's approval: a durable signal on SQLite.

    python examples/approval_signal.py

The workflow parks on ``wait_for_signal``; nothing runs while it waits and the process
could exit. ``send_signal`` buffers the decision and ``resume_workflow`` (here with a
fresh backend object, as another process would) continues from the last checkpoint.
A signal sent before the workflow reaches the wait is buffered, not lost.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sayiir_core import (
    Flow,
    SqliteBackend,
    WorkflowClient,
    resume_workflow,
    run_durable_workflow,
    send_signal,
    task,
)


@task
def submit_expense(expense: dict[str, Any]) -> dict[str, Any]:
    return {**expense, "state": "submitted"}


@task
def settle(decision: dict[str, Any]) -> str:
    if decision["approved"]:
        return f"paid by {decision['by']}"
    return f"rejected by {decision['by']}"


expense_flow = (
    Flow("expense")
    .then(submit_expense)
    .wait_for_signal("approval", timeout="7d")
    .then(settle)
    .build()
)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "expenses.db"

        # 1. Start: the first step runs, then the instance parks on the signal.
        status = run_durable_workflow(expense_flow, "exp-1", {"amount": 42}, SqliteBackend(db))
        print(f"exp-1 after start: {status.status}")
        assert status.is_awaiting_signal()

        # 2. Later, maybe from a web request in another process: approve it.
        send_signal("exp-1", "approval", {"approved": True, "by": "maria"}, SqliteBackend(db))

        # 3. Resume from the last checkpoint; submit_expense does not run again.
        status = resume_workflow(expense_flow, "exp-1", SqliteBackend(db))
        print(f"exp-1 after signal: {status.status} -> {status.output}")
        assert status.output == "paid by maria"

        # A signal sent before the workflow reaches the wait is buffered.
        client = WorkflowClient.from_url(f"sqlite:///{db}")  # closed with the client
        client.submit(expense_flow, "exp-2", {"amount": 7})
        client.send_signal("exp-2", "approval", {"approved": False, "by": "omar"})
        status = resume_workflow(expense_flow, "exp-2", client.backend)
        print(f"exp-2 (signalled early): {status.status} -> {status.output}")

        kinds = [event.kind for event in client.history("exp-2")]
        print("exp-2 history:", ", ".join(kinds))
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
