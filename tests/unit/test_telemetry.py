"""Traces and metrics through the SDK's in-memory exporters (tests/telemetry_capture.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from telemetry_capture import Captured, installed

from sayiir_core import (
    AsyncWorkflowClient,
    Flow,
    InMemoryBackend,
    RetryPolicy,
    run_workflow,
    task,
)
from sayiir_core.backends.base import HistoryEvent
from sayiir_core.runtime import DurableRunner, LocalExecutor
from sayiir_core.telemetry import TRACE_CONTEXT_KEY
from sayiir_core.telemetry.logs import InstanceLogger, get_logger


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def _trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


seen_in_task: dict[str, Any] = {}


def sync_step(value: int) -> int:
    current = trace.get_current_span()
    seen_in_task["sync"] = getattr(current, "name", None)
    with trace.get_tracer("user").start_as_current_span("user work in sync"):
        return value + 1


async def async_step(value: int) -> int:
    current = trace.get_current_span()
    seen_in_task["async"] = getattr(current, "name", None)
    with trace.get_tracer("user").start_as_current_span("user work in async"):
        return value * 2


TWO_STEPS = Flow("two").then(sync_step).then(async_step).build()


class CountingBackend(InMemoryBackend):
    """The in-memory backend, counting history reads (the read tracing adds)."""

    def __init__(self) -> None:
        super().__init__()
        self.history_reads = 0

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        self.history_reads += 1
        return await super().history(instance_id)


def test_step_spans_are_current_in_the_task_and_children_of_the_instance_span() -> None:
    seen_in_task.clear()
    with installed() as captured:
        with trace.get_tracer("test").start_as_current_span("request") as request:
            result = run_workflow(TWO_STEPS, 1, instance_id="order-1", backend=InMemoryBackend())
        assert result == 4
        spans = {span.name: span for span in captured.spans()}
    assert seen_in_task == {"sync": "step sync_step", "async": "step async_step"}
    workflow = spans["workflow two"]
    assert _parent_id(workflow) == request.get_span_context().span_id
    for name in ("step sync_step", "step async_step"):
        assert _parent_id(spans[name]) == _span_id(workflow)
        assert _trace_id(spans[name]) == request.get_span_context().trace_id
    assert _parent_id(spans["user work in sync"]) == _span_id(spans["step sync_step"])
    assert _parent_id(spans["user work in async"]) == _span_id(spans["step async_step"])
    attributes = dict(spans["step sync_step"].attributes or {})
    worker = attributes.pop("sayiir.worker.id")
    assert isinstance(worker, str)
    assert worker
    assert attributes == {
        "sayiir.workflow.id": "two",
        "sayiir.instance.id": "order-1",
        "sayiir.task.id": "sync_step",
        "sayiir.step.attempt": 1,
        "sayiir.outcome": "completed",
    }
    assert dict(workflow.attributes or {})["sayiir.outcome"] == "completed"
    assert [event.name for event in workflow.events] == ["completed"]


def split(value: int) -> list[int]:
    return [value, value + 1]


def test_a_step_key_that_says_more_than_the_task_id_is_on_its_span() -> None:
    mapped = Flow("mapped").then(split).map(sync_step).build()
    with installed() as captured:
        assert run_workflow(mapped, 1) == [2, 3]
        spans = captured.named("step ")
    keys = {
        (span.attributes or {})["sayiir.task.id"]: (span.attributes or {}).get("sayiir.step.key")
        for span in spans
    }
    items = sorted(
        str((span.attributes or {})["sayiir.step.key"])
        for span in spans
        if span.name == "step sync_step"
    )
    assert keys["split"] is None  # the same as its task id: not repeated
    assert len(items) == 2
    assert all(key.startswith("sync_step") and key != "sync_step" for key in items)


def test_in_memory_run_without_an_instance_id_gets_an_instance_span_and_duration() -> None:
    with installed() as captured:
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            assert run_workflow(TWO_STEPS, 2) == 6
        steps = captured.named("step ")
        [instance] = captured.named("workflow two")
        workflow_durations = captured.histogram_count("sayiir.workflow.duration")
        completed = captured.total("sayiir.steps.completed", **{"sayiir.workflow.id": "two"})
    assert _parent_id(instance) == caller.get_span_context().span_id
    assert len(steps) == 2
    assert {_parent_id(span) for span in steps} == {_span_id(instance)}
    attributes = dict(instance.attributes or {})
    assert attributes["sayiir.outcome"] == "completed"
    assert str(attributes["sayiir.instance.id"]).startswith("two-")
    assert "sayiir.worker.id" not in attributes
    assert [event.name for event in instance.events] == ["completed"]
    assert workflow_durations == 1
    assert completed == 2


def test_failed_in_memory_run_marks_its_instance_span_failed() -> None:
    def boom(value: int) -> int:
        raise ValueError("no")

    with installed() as captured:
        with pytest.raises(Exception, match="no"):
            run_workflow(Flow("boom").then(boom).build(), 1)
        [instance] = captured.named("workflow boom")
        failures = captured.total("sayiir.steps.failed", **{"sayiir.task.id": "boom"})
    assert dict(instance.attributes or {})["sayiir.outcome"] == "failed"
    assert instance.status.status_code.name == "ERROR"
    assert failures == 1


attempts_seen: list[int] = []


@task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.0))
def flaky(value: int) -> int:
    attempts_seen.append(value)
    if len(attempts_seen) < 3:
        raise ValueError(f"attempt {len(attempts_seen)} fails")
    return value


async def test_retries_are_failed_step_spans_and_instance_span_events_and_counts_match() -> None:
    attempts_seen.clear()
    workflow = Flow("retrying").then(flaky).build()
    backend = InMemoryBackend()
    with installed() as captured:
        runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="w-1")
        status = await runner.run(workflow, "r-1", 7)
        assert status.is_completed()
        history = await backend.history("r-1")
        steps = captured.named("step flaky")
        instance = captured.named("workflow retrying")[0]
        started = captured.total("sayiir.steps.started", **{"sayiir.task.id": "flaky"})
        completed = captured.total("sayiir.steps.completed")
        failed = captured.total("sayiir.steps.failed")
        retried = captured.total("sayiir.steps.retried")
        durations = captured.histogram_count("sayiir.step.duration")
        workflow_durations = captured.histogram_count("sayiir.workflow.duration")
    kinds = [event.kind for event in history]
    assert started == kinds.count("task_started") == 3
    assert completed == kinds.count("task_completed") == 1
    assert failed == kinds.count("task_failed") == 2
    assert retried == kinds.count("retry_scheduled") == 2
    assert durations == 3
    assert workflow_durations == 1
    outcomes = sorted(
        (dict(span.attributes or {})["sayiir.step.attempt"], span.status.status_code.name)
        for span in steps
    )
    assert outcomes == [(1, "ERROR"), (2, "ERROR"), (3, "UNSET")]
    assert [event.name for event in instance.events] == [
        "retry_scheduled",
        "retry_scheduled",
        "completed",
    ]
    retry = instance.events[0].attributes or {}
    assert retry["sayiir.step.key"] == "flaky"
    assert retry["sayiir.step.attempt"] == 2


async def test_submit_stores_the_trace_context_in_the_started_event() -> None:
    backend = InMemoryBackend()
    client = AsyncWorkflowClient(backend)
    with installed(), trace.get_tracer("test").start_as_current_span("request") as request:
        await client.submit(TWO_STEPS, "s-1", 1)
    started = (await backend.history("s-1"))[0]
    assert started.kind == "started"
    assert started.detail is not None
    context = request.get_span_context()
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert started.detail[TRACE_CONTEXT_KEY] == {"traceparent": traceparent}


async def test_with_tracing_off_nothing_is_stored_and_no_history_is_read() -> None:
    backend = CountingBackend()
    client = AsyncWorkflowClient(backend)
    await client.submit(TWO_STEPS, "off-1", 1)
    runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="w-off")
    status = await runner.resume(TWO_STEPS, "off-1")
    assert status.output == 4
    assert backend.history_reads == 0
    assert (await backend.history("off-1"))[0].detail is None


async def test_a_resumed_instance_continues_the_submitters_trace() -> None:
    backend = CountingBackend()
    client = AsyncWorkflowClient(backend)
    with installed() as captured:
        with trace.get_tracer("test").start_as_current_span("request") as request:
            await client.submit(TWO_STEPS, "c-1", 1)
        # Run outside the request's span: only the stored context links the two.
        runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="w-2")
        resumed = asyncio.create_task(runner.resume(TWO_STEPS, "c-1"))
        assert (await resumed).output == 4
        spans = {span.name: span for span in captured.spans()}
    assert backend.history_reads == 1
    assert _parent_id(spans["workflow two"]) == request.get_span_context().span_id
    assert _trace_id(spans["step async_step"]) == request.get_span_context().trace_id
    assert dict(spans["workflow two"].attributes or {})["sayiir.worker.id"] == "w-2"


async def test_delays_and_pause_are_events_and_each_run_is_a_sibling_span() -> None:
    workflow = Flow("delayed").then(sync_step).delay("nap", 0.05).then(async_step).build()
    backend = InMemoryBackend()
    with installed() as captured:
        with trace.get_tracer("test").start_as_current_span("request") as request:
            await AsyncWorkflowClient(backend).submit(workflow, "d-1", 1)
        runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="w-3")
        first = await runner.resume(workflow, "d-1")
        assert first.status == "waiting"
        await asyncio.sleep(0.06)
        assert (await runner.resume(workflow, "d-1")).output == 4
        runs = captured.named("workflow delayed")
    assert len(runs) == 2
    assert {_parent_id(run) for run in runs} == {request.get_span_context().span_id}
    assert [event.name for event in runs[0].events] == ["timer_started"]
    assert dict(runs[0].attributes or {})["sayiir.outcome"] == "waiting"
    assert [event.name for event in runs[1].events] == ["timer_fired", "completed"]
    wake_at = (runs[0].events[0].attributes or {})["sayiir.wake_at"]
    assert isinstance(wake_at, float)


async def test_cancel_is_an_event_on_the_instance_span() -> None:
    cancel_now = asyncio.Event()

    async def waits(value: int) -> int:
        cancel_now.set()
        await asyncio.sleep(30)
        return value

    workflow = Flow("cancelled").then(waits, name="waits").build()
    backend = InMemoryBackend()
    client = AsyncWorkflowClient(backend)
    with installed() as captured:
        runner = DurableRunner(backend, executor=LocalExecutor(), owner_id="w-4")
        run = asyncio.create_task(runner.run(workflow, "x-1", 1))
        await cancel_now.wait()
        await client.cancel("x-1", reason="test")
        status = await run
        assert status.is_cancelled()
        instance = captured.named("workflow cancelled")[0]
        step = captured.named("step waits")[0]
    assert [event.name for event in instance.events] == ["cancelled"]
    assert dict(instance.attributes or {})["sayiir.outcome"] == "cancelled"
    assert dict(step.attributes or {})["sayiir.outcome"] == "cancelled"


def test_metrics_alone_need_no_tracer_provider() -> None:
    with installed(traces=False) as captured:
        assert run_workflow(TWO_STEPS, 1) == 4
        assert captured.total("sayiir.steps.completed", **{"sayiir.workflow.id": "two"}) == 2
    assert captured.spans() == []


def test_instance_logger_puts_the_ids_on_every_record(caplog: pytest.LogCaptureFixture) -> None:
    log = InstanceLogger(get_logger("engine"), "i-9", workflow_id="wf", task_id="charge")
    with caplog.at_level(logging.INFO, logger="sayiir"):
        log.info("hello %s", "there", extra={"more": 1})
    record = caplog.records[0]
    assert record.name == "sayiir.engine"
    assert record.getMessage() == "hello there"
    ids = tuple(record.__dict__[name] for name in ("instance_id", "workflow_id", "task_id"))
    assert ids == ("i-9", "wf", "charge")
    assert record.__dict__["more"] == 1


def test_telemetry_off_after_the_providers_are_reset(captured_off: None) -> None:
    from sayiir_core.telemetry import otel

    assert otel.tracer() is None
    assert otel.meter() is None
    assert not otel.any_on()


@pytest.fixture
def captured_off() -> None:
    with installed() as captured:
        assert isinstance(captured, Captured)


async def test_a_step_run_on_its_own_joins_the_trace_through_stored_parent() -> None:
    # What a shared step or a Celery task does: run one step with no instance span.
    from sayiir_core.runtime import TaskRequest
    from sayiir_core.telemetry.propagation import attached, stored_parent

    backend = CountingBackend()
    with installed() as captured:
        with trace.get_tracer("test").start_as_current_span("request") as request:
            await AsyncWorkflowClient(backend).submit(TWO_STEPS, "alone-1", 1)
        step = TWO_STEPS.tasks["async_step"]
        call = TaskRequest("two", "alone-1", "async_step", step, 5, 1, None)
        parent = await stored_parent(backend, "alone-1")
        with attached(parent):
            outcome = await LocalExecutor().execute(call)
        alone = captured.named("step async_step")[0]
    assert getattr(outcome, "value", None) == 10
    assert _parent_id(alone) == request.get_span_context().span_id
    assert backend.history_reads == 1


async def test_stored_parent_reads_nothing_when_tracing_is_off() -> None:
    from sayiir_core.telemetry.propagation import stored_parent

    backend = CountingBackend()
    await AsyncWorkflowClient(backend).submit(TWO_STEPS, "alone-2", 1)
    assert await stored_parent(backend, "alone-2") is None
    assert backend.history_reads == 0


async def test_a_commit_refused_for_a_stale_claim_token_is_counted_as_fenced() -> None:
    from sayiir_core import LeaseLostError, Status
    from sayiir_core.backends.base import StepWrite
    from sayiir_core.runtime.durable_runner import ClaimedSink
    from sayiir_core.telemetry.instances import observe_instance

    backend = InMemoryBackend()
    await AsyncWorkflowClient(backend).submit(TWO_STEPS, "fenced-1", 1)
    claim = await backend.claim("fenced-1", "w-new", 30.0, 1e10)
    with installed() as captured:
        observation = observe_instance("two", "fenced-1", 0.0, "w-old", None)
        assert observation is not None
        stale = ClaimedSink(backend, "fenced-1", claim.token - 1, None, observation=observation)
        with pytest.raises(LeaseLostError), observation:
            await stale.write(StepWrite(status=Status.RUNNING, control={}, now=1e10))
        fenced = captured.total("sayiir.commits.fenced", **{"sayiir.workflow.id": "two"})
        span = captured.named("workflow two")[0]
    assert fenced == 1
    assert dict(span.attributes or {})["sayiir.outcome"] == "lease_lost"


async def _run_one_shared_step(backend: CountingBackend, instance_id: str) -> None:
    """Submit ``TWO_STEPS``, publish its ``async_step`` and run it as a helper worker does."""
    import time

    from sayiir_core.backends.step_queue import StepRef, StepTicket
    from sayiir_core.codec import DEFAULT_CODEC
    from sayiir_core.runtime import run_claimed_step

    now = time.time()
    assert await backend.claim(instance_id, "orchestrator", 30.0, now) is not None
    ref = StepRef(instance_id, "async_step", 1)
    ticket = StepTicket(ref, "two", TWO_STEPS.definition_hash, DEFAULT_CODEC.encode(5), 0, now)
    await backend.publish_steps([ticket])
    claimed = await backend.claim_step(ref, "helper", 30.0, now)
    assert claimed is not None
    reads_before = backend.history_reads
    await run_claimed_step(
        claimed,
        queue=backend,
        executor=LocalExecutor(),
        registry={"two": TWO_STEPS},
        codec=DEFAULT_CODEC,
        worker_id="helper",
        ttl=30.0,
    )
    backend.history_reads -= reads_before  # count only the step run's reads
    assert (await backend.step_results([ref]))[ref].output == DEFAULT_CODEC.encode(10)


async def test_a_shared_step_joins_the_submitters_trace_with_the_helpers_worker_id() -> None:
    backend = CountingBackend()
    with installed() as captured:
        with trace.get_tracer("test").start_as_current_span("request") as request:
            await AsyncWorkflowClient(backend).submit(TWO_STEPS, "shared-1", 1)
        await _run_one_shared_step(backend, "shared-1")
        [step] = captured.named("step async_step")
    assert _trace_id(step) == request.get_span_context().trace_id
    assert _parent_id(step) == request.get_span_context().span_id
    assert dict(step.attributes or {})["sayiir.worker.id"] == "helper"
    assert backend.history_reads == 1


async def test_a_shared_step_reads_no_history_when_tracing_is_off() -> None:
    backend = CountingBackend()
    await AsyncWorkflowClient(backend).submit(TWO_STEPS, "shared-2", 1)
    await _run_one_shared_step(backend, "shared-2")
    assert backend.history_reads == 0


async def test_dispatcher_records_about_a_step_carry_its_instance_and_task_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from collections.abc import Sequence

    from sayiir_core.backends.step_queue import StepRef, StepTicket
    from sayiir_core.runtime.dispatch import Dispatcher, StepRun

    async def send(tickets: Sequence[StepTicket], token: int) -> None:
        raise AssertionError("nothing is sent here")

    dispatcher = Dispatcher(InMemoryBackend(), [], send, executor=LocalExecutor())
    with caplog.at_level(logging.INFO, logger="sayiir.dispatch"):
        outcome = await dispatcher.run_step(StepRef("i-7", "charge#2", 1), "gone", "h" * 64)
    assert outcome is StepRun.UNKNOWN
    [record] = [r for r in caplog.records if r.name == "sayiir.dispatch"]
    ids = tuple(record.__dict__[name] for name in ("instance_id", "task_id"))
    assert ids == ("i-7", "charge")
