"""A step whose output is over the backend's payload limit fails, once, with a clear error."""

from __future__ import annotations

import pytest

from sayiir_core import (
    Flow,
    RetryPolicy,
    SerializationError,
    run_durable_workflow,
    run_workflow,
    task,
)
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.runtime.loop_thread import run_sync

from .helpers import Calls

pytestmark = pytest.mark.postgres


def test_an_oversized_output_fails_the_step_without_retrying(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    backend = PostgresBackend(url, schema=schema, max_payload_bytes=1_000)
    calls = Calls()

    @task("blow_up", retries=RetryPolicy(max_retries=3, initial_delay_secs=0))
    def blow_up(n: int) -> str:
        calls.items.append(n)
        return "x" * 5_000

    @task("after")
    def after(text: str) -> int:
        calls.items.append(-1)
        return len(text)

    workflow = Flow("too-big").then(blow_up).then(after).build()
    try:
        status = run_durable_workflow(workflow, "big-1", 1, backend=backend)

        assert status.is_failed()
        assert status.error_type == "PayloadTooLargeError"
        assert status.failed_task_id == "blow_up"
        assert "max_payload_bytes=1,000" in (status.error or "")
        assert calls.items == [1]  # one attempt, and the next step never ran
        with pytest.raises(SerializationError, match="max_payload_bytes"):
            run_workflow(workflow, 1, instance_id="big-2", backend=backend)
    finally:
        run_sync(backend.close())
