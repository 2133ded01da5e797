"""sayiir_core.render: step states, the SVG graph, colours and the timeline (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from sayiir_core import Flow, HistoryEvent, LoopResult, WorkflowStatus, task
from sayiir_core.render import (
    STATUS_ORDER,
    STATUS_PALETTES,
    STEP_PALETTES,
    StepState,
    entry_input_type,
    states_summary,
    status_palette,
    step_counts,
    step_palette,
    step_states,
    timeline,
    workflow_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def a(x: Any) -> Any:
    return x


def b(x: Any) -> Any:
    return x


def c(x: Any) -> Any:
    return x


def join(x: Any) -> Any:
    return x


def key(x: Any) -> str:
    return "left"


def body(x: Any) -> Any:
    return LoopResult.done(x)


def item(x: int) -> int:
    return x


def status(state: str, **fields: Any) -> WorkflowStatus:
    return WorkflowStatus(status=state, instance_id="i-1", workflow_id="wf", **fields)


def event(kind: str, step: str | None = None, seq: int = 0, **detail: Any) -> HistoryEvent:
    return HistoryEvent(kind, 1_800_000_000.0 + seq, step, 1, "w-1", detail or None, seq)


def done(*steps: str) -> list[HistoryEvent]:
    events = [event("started", seq=1)]
    for step in steps:
        events.append(event("task_started", step, len(events) + 1))
        events.append(event("task_completed", step, len(events) + 1, duration_ms=1.5))
    return events


PIPELINE = Flow("wf").then(a).then(b).then(c).build()


def test_a_pipeline_under_way_has_a_running_frontier() -> None:
    states = step_states(PIPELINE, status("running"), done("a"))
    assert states == {"a": StepState.COMPLETED, "b": StepState.RUNNING, "c": StepState.PENDING}


@pytest.mark.parametrize(
    ("reported", "frontier"),
    [
        ("in_progress", StepState.QUEUED),
        ("paused", StepState.PAUSED),
        ("cancelled", StepState.CANCELLED),
    ],
)
def test_the_frontier_takes_the_instances_state(reported: str, frontier: StepState) -> None:
    assert step_states(PIPELINE, status(reported), done("a"))["b"] is frontier


def test_a_completed_instance_is_all_green() -> None:
    states = step_states(PIPELINE, status("completed"), done("a", "b", "c"))
    assert set(states.values()) == {StepState.COMPLETED}


def test_the_failed_step_is_red_and_later_ones_never_started() -> None:
    history = [*done("a"), event("task_failed", "b", 9, error="ValueError: no\n\nTraceback...")]
    states = step_states(PIPELINE, status("failed", failed_task_id="b"), history)
    assert states == {"a": StepState.COMPLETED, "b": StepState.FAILED, "c": StepState.PENDING}


def test_a_scheduled_retry_shows() -> None:
    history = [*done("a"), event("task_failed", "b", 9), event("retry_scheduled", "b", 10)]
    assert step_states(PIPELINE, status("waiting"), history)["b"] is StepState.RETRYING


def test_retry_from_forgets_the_dropped_steps() -> None:
    history = [
        *done("a", "b", "c"),
        event("completed", seq=20),
        event("retried_from", "b", 21, dropped=["b", "c"]),
    ]
    states = step_states(PIPELINE, status("in_progress"), history)
    assert states == {"a": StepState.COMPLETED, "b": StepState.QUEUED, "c": StepState.PENDING}


def test_forks_run_their_branches_side_by_side() -> None:
    wf = Flow("fork").then(a).fork().branch(b).branch(c).join(join).build()
    states = step_states(wf, status("running"), done("a", "b"))
    assert states["b"] is StepState.COMPLETED
    assert states["c"] is StepState.RUNNING
    assert states["join"] is StepState.PENDING
    finished = step_states(wf, status("completed"), done("a", "b", "c", "join"))
    assert set(finished.values()) == {StepState.COMPLETED}


def test_a_route_skips_the_branches_not_taken() -> None:
    wf = (
        Flow("route")
        .route(key, keys=["left", "right"])
        .branch("left", a)
        .branch("right", b)
        .done()
        .then(c)
        .build()
    )
    states = step_states(wf, status("completed"), done("key", "a", "c"))
    assert states["a"] is StepState.COMPLETED
    assert states["b"] is StepState.SKIPPED
    undecided = step_states(wf, status("running"), done("key"))
    assert undecided["a"] is undecided["b"] is StepState.PENDING


def test_delays_and_signals_wait() -> None:
    wf = Flow("parked").then(a).delay("cool_off", 60).wait_for_signal("go", name="gate").build()
    timer = [*done("a"), event("timer_started", "cool_off", 9, wake_at=1)]
    assert step_states(wf, status("waiting"), timer)["cool_off"] is StepState.WAITING
    fired = [*timer, event("timer_fired", "cool_off", 10)]
    parked = step_states(wf, status("awaiting_signal", signal_id="gate"), fired)
    assert parked["cool_off"] is StepState.COMPLETED
    assert parked["gate"] is StepState.AWAITING_SIGNAL


def test_loops_and_maps_count_iterations_and_items() -> None:
    wf = Flow("repeat").loop(body, max_iterations=5).map(item).then(c).build()
    history = [*done("body#0", "body#1", "item[0]", "item[1]", "item[2]")]
    states = step_states(wf, status("running"), history)
    assert states["body"] is StepState.COMPLETED  # the map after it started
    assert states["item"] is StepState.RUNNING
    assert step_counts(history) == {"body": 2, "item": 3}


def test_the_svg_is_well_formed_and_coloured_by_state() -> None:
    wf = (
        Flow("everything")
        .then(a)
        .fork()
        .branch(b)
        .branch(c)
        .join(join)
        .delay("wait", 300)
        .loop(body, max_iterations=3)
        .map(item, max_concurrency=2)
        .wait_for_signal("go", name="gate")
        .build()
    )
    states = {"a": StepState.COMPLETED, "b": StepState.FAILED, "c": StepState.RUNNING}
    svg = workflow_svg(wf, states, counts={"item": 4}, id_prefix="x1")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    steps = {
        group.get("data-step"): group for group in root.iter(f"{SVG}g") if group.get("data-step")
    }
    assert set(steps) == {"a", "b", "c", "join", "wait", "body", "item", "gate"}
    assert steps["b"].get("data-state") == "failed"
    assert steps["join"].get("data-state") == "pending"
    fill = steps["b"].find(f"{SVG}rect")
    assert fill is not None
    assert fill.get("fill") == STEP_PALETTES["failed"].fill
    assert "url(#x1-arrow)" in svg
    assert "4 done" in svg
    assert "delay 5m" in svg


def test_text_in_the_svg_is_escaped() -> None:
    @task(name="a<b>&c")
    def odd(x: Any) -> Any:
        return x

    svg = workflow_svg(Flow("odd & <wf>").then(odd).build())
    root = ET.fromstring(svg)  # would raise on unescaped markup
    assert root.get("aria-label") == "Workflow odd & <wf>"


def test_the_child_flow_is_framed() -> None:
    child = Flow("child").then(b).build()
    svg = workflow_svg(Flow("parent").then(a).then_flow(child).build())
    assert "flow child" in svg
    ET.fromstring(svg)


def test_palettes_cover_every_status_and_state() -> None:
    assert STATUS_ORDER[0] == "failed"  # failures first
    reported = {"in_progress", "running", "waiting", "awaiting_signal", "paused"}
    assert set(STATUS_PALETTES) == reported | {"completed", "failed", "cancelled"}
    assert {state.value for state in StepState} == set(STEP_PALETTES)
    assert status_palette("pending") == STATUS_PALETTES["in_progress"]
    assert status_palette("from_the_future").label == "from_the_future"
    assert step_palette(StepState.FAILED) == STEP_PALETTES["failed"]
    counts = states_summary({"a": StepState.COMPLETED, "b": StepState.COMPLETED})
    assert counts == {"completed": 2}


def test_the_timeline_reads_like_sentences() -> None:
    history = [
        *done("a"),
        event(
            "task_failed",
            "b",
            9,
            error="ValueError: no\n\nTraceback (most recent...)",
            traceback="Traceback (most recent call last): ...",
            duration_ms=2,
        ),
        event("retry_scheduled", "b", 10, due=1_800_000_012.0),
        event("cancelled", None, 11, reason="duplicate", by="ops"),
    ]
    rows = timeline(history)
    assert [row.kind for row in rows] == [
        "started",
        "task_completed",
        "task_failed",
        "retry_scheduled",
        "cancelled",
    ]
    assert rows[1].title == "a completed"
    assert rows[1].duration_ms == 1.5
    assert rows[2].title == "b failed: ValueError: no"
    assert rows[2].traceback is not None
    assert rows[2].tone == "failed"
    assert rows[3].title == "b: attempt 1 scheduled in 2.0s"
    assert rows[4].title == "cancelled (duplicate, by ops)"
    assert rows[0].at == datetime.fromtimestamp(1_800_000_001.0, UTC)


class Order(BaseModel):
    id: int


def takes_order(order: Order) -> Order:
    return order


def test_the_entry_input_type_is_the_first_steps_annotation() -> None:
    assert entry_input_type(Flow("o").then(takes_order).build()) is Order
    assert entry_input_type(Flow("d").delay("w", 1).then(takes_order).build()) is Order
    assert entry_input_type(Flow("m").map(item).build()) == list[int]
    assert (
        entry_input_type(Flow("f").fork().branch(a).branch(takes_order).join(join).build()) is Order
    )
    assert entry_input_type(Flow("s").wait_for_signal("go").then(a).build()) is None
    assert entry_input_type(Flow("l").then(lambda x: x).build()) is None


def test_the_render_package_exports_what_it_documents() -> None:
    import sayiir_core.render as render

    assert len(set(render.__all__)) == len(render.__all__)
    for name in render.__all__:
        assert hasattr(render, name), name
