"""The step counters (``sayiir.steps.*``): counted per thread without a lock, summed at
collection (``StepCounts`` in sayiir_core/telemetry/instruments.py), read through the
SDK's ``InMemoryMetricReader`` (tests/telemetry_capture.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from opentelemetry.metrics import CallbackOptions
from telemetry_capture import installed

from sayiir_core import Flow, RetryPolicy, run_workflow, task
from sayiir_core.telemetry.instruments import COMPLETED, STARTED, StepCounts

RUNS_PER_THREAD = 20
KEY = ("wf", "step")


def bump(value: int) -> int:
    return value + 1


THREE_STEPS = Flow("three").then(bump, name="a").then(bump, name="b").then(bump, name="c").build()

failures_left = {"flaky": 0}


@task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.0))
def flaky(value: int) -> int:
    if failures_left["flaky"] > 0:
        failures_left["flaky"] -= 1
        raise RuntimeError("not yet")
    return value


FLAKY = Flow("flaky").then(flaky).build()


def test_runs_from_several_threads_are_all_counted() -> None:
    with installed() as captured:
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(
                pool.map(lambda n: run_workflow(THREE_STEPS, n), range(3 * RUNS_PER_THREAD))
            )
        started = captured.total("sayiir.steps.started", **{"sayiir.workflow.id": "three"})
        completed = captured.total("sayiir.steps.completed", **{"sayiir.task.id": "b"})
        failed = captured.total("sayiir.steps.failed")

    assert results == [n + 3 for n in range(3 * RUNS_PER_THREAD)]
    assert started == 3 * 3 * RUNS_PER_THREAD
    assert completed == 3 * RUNS_PER_THREAD
    assert failed == 0


def test_failures_and_retries_are_counted_in_their_own_series() -> None:
    failures_left["flaky"] = 2
    with installed() as captured:
        assert run_workflow(FLAKY, 7) == 7
        by_name = {
            name: captured.total(f"sayiir.steps.{name}", **{"sayiir.task.id": "flaky"})
            for name in ("started", "completed", "failed", "retried")
        }

    assert by_name == {"started": 3, "completed": 1, "failed": 2, "retried": 2}


def test_each_thread_counts_in_its_own_row_and_a_collection_sums_them() -> None:
    counts = StepCounts()
    rows: list[list[int]] = []

    def count_here(times: int) -> None:
        row = counts.row(KEY)
        rows.append(row)
        for _ in range(times):
            row[STARTED] += 1
        row[COMPLETED] += 1

    threads = [threading.Thread(target=count_here, args=(times,)) for times in (3, 4)]
    for thread in threads:
        thread.start()
        thread.join()  # one after the other: a second thread may reuse the first's id
    count_here(5)

    started = list(counts.observer(STARTED)(CallbackOptions()))
    completed = list(counts.observer(COMPLETED)(CallbackOptions()))
    assert [(point.value, dict(point.attributes or {})) for point in started] == [
        (12, {"sayiir.workflow.id": "wf", "sayiir.task.id": "step"})
    ]
    assert [point.value for point in completed] == [3]
    assert len({id(row) for row in rows}) >= 2  # this thread's row is not the others'
