"""What the admin's instance page shows: payloads, history, checkpoints and the graph.

Pure formatting over rows, plus the few reads the page needs. The pictures (the graph
SVG, the status and step colours, the timeline rows) come from ``sayiir_core.render``,
which the FastAPI dashboard uses too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from sayiir_core import WorkflowStatus
from sayiir_core.render import (
    Palette,
    TimelineEntry,
    status_palette,
    step_counts,
    step_palette,
    step_states,
    timeline,
    workflow_svg,
)
from sayiir_django._records import error_from_json, event_from_row
from sayiir_django.models import Checkpoint, HistoryEntry, WorkflowInstance
from sayiir_django.registry import registry

_HISTORY_COLUMNS = ("kind", "at", "step_key", "attempt", "worker_id", "detail", "seq")


@dataclass(frozen=True, slots=True)
class Payload:
    """A payload as the page shows it: pretty JSON, cut at the limit."""

    text: str
    cut: int  # characters left out

    @classmethod
    def of(cls, raw: bytes | memoryview | None, limit: int) -> Payload | None:
        if raw is None:
            return None
        data = bytes(raw)
        try:
            text = json.dumps(json.loads(data), indent=2, ensure_ascii=False, sort_keys=True)
        except ValueError:  # not JSON (another codec): show the bytes
            text = repr(data)
        return cls.cut_at(text, limit)

    @classmethod
    def cut_at(cls, text: str, limit: int) -> Payload:
        if len(text) <= limit:
            return cls(text, 0)
        return cls(text[:limit], len(text) - limit)


@dataclass(frozen=True, slots=True)
class TimelineRow:
    entry: TimelineEntry
    palette: Palette


def badge(status: str) -> SafeString:
    """A coloured status label (the same colours as the dashboard)."""
    palette = status_palette(status)
    return format_html(
        '<span class="sayiir-badge" style="background:{};border-color:{};color:{}">{}</span>',
        palette.fill,
        palette.stroke,
        palette.text,
        palette.label,
    )


def history_rows(instance: WorkflowInstance, limit: int | None) -> tuple[list[TimelineRow], int]:
    """The first ``limit`` history rows (all with ``None``) and how many there are."""
    entries = HistoryEntry.objects.using(instance._state.db).filter(
        instance_id=instance.instance_id
    )
    total = entries.count()
    rows = entries.order_by("seq").values(*_HISTORY_COLUMNS)
    if limit is not None:
        rows = rows[:limit]
    events = [event_from_row(row) for row in rows]
    return [TimelineRow(entry, step_palette(entry.tone)) for entry in timeline(events)], total


def checkpoint_rows(instance: WorkflowInstance, limit: int) -> list[tuple[str, Payload | None]]:
    rows = (
        Checkpoint.objects.using(instance._state.db)
        .filter(instance_id=instance.pk)
        .order_by("id")
        .values_list("step_key", "payload")
    )
    return [(key, Payload.of(payload, limit)) for key, payload in rows]


def error_text(instance: WorkflowInstance, limit: int) -> Payload | None:
    error = error_from_json(instance.error)
    return None if error is None else Payload.cut_at(error.full_text(), limit)


def graph(instance: WorkflowInstance, status: WorkflowStatus) -> SafeString | None:
    """The workflow's graph, each step coloured by its state; ``None`` if the workflow
    is not defined in this project (an instance of a removed workflow)."""
    workflow = registry().workflows.get(instance.workflow_id)
    if workflow is None:
        return None
    events = [
        event_from_row(row)
        for row in HistoryEntry.objects.using(instance._state.db)
        .filter(instance_id=instance.instance_id)
        .order_by("seq")
        .values(*_HISTORY_COLUMNS)
    ]
    states = step_states(workflow, status, events)
    svg = workflow_svg(workflow, states, counts=step_counts(events), id_prefix="sayiir-admin")
    # workflow_svg escapes every text it draws (ids, names): the document is safe as is.
    return mark_safe(svg)


def describe_control(instance: WorkflowInstance) -> list[tuple[str, Any]]:
    """The instance's other fields worth a line on its page."""
    pairs: list[tuple[str, Any]] = [
        ("Workflow", instance.workflow_id),
        ("Definition", instance.definition_hash),
        ("Priority", instance.priority),
        ("Current step", instance.current_step or "—"),
        ("Attempt", instance.attempt or "—"),
        ("Owner", instance.owner or "—"),
        ("Reason", instance.reason),
        ("Cancelled by", instance.cancelled_by),
        ("Paused by", instance.paused_by),
        ("Pending request", instance.control_request),
    ]
    return [(name, value) for name, value in pairs if value is not None]
