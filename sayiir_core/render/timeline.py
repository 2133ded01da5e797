"""A history as timeline rows: one readable title per event, with a tone to colour it.

``timeline(history)`` turns ``client.history(id)`` into ``TimelineEntry`` rows, oldest
first. ``tone`` is a ``StepState`` value (``completed``, ``failed``, ``retrying``...) so
``colors.step_palette(entry.tone)`` colours the row. Error texts keep their first line;
the stored traceback is in ``traceback`` for pages that choose to show it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sayiir_core.backends.base import HistoryEvent


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    seq: int
    at: datetime
    kind: str
    title: str
    tone: str
    step_key: str | None = None
    attempt: int | None = None
    worker_id: str | None = None
    duration_ms: float | None = None
    traceback: str | None = None


_TONES = {
    "started": "queued",
    "task_completed": "completed",
    "task_failed": "failed",
    "retry_scheduled": "retrying",
    "timer_started": "waiting",
    "timer_fired": "completed",
    "signal_sent": "awaiting_signal",
    "signal_received": "completed",
    "paused": "paused",
    "unpaused": "running",
    "cancelled": "cancelled",
    "completed": "completed",
    "failed": "failed",
    "retried_from": "retrying",
    "definition_changed": "pending",
}


def timeline(history: Iterable[HistoryEvent]) -> list[TimelineEntry]:
    """One row per event except ``task_started`` (its time is the row's duration)."""
    rows = []
    for event in history:
        if event.kind == "task_started":
            continue
        detail: Mapping[str, Any] = event.detail or {}
        duration = detail.get("duration_ms")
        traceback = detail.get("traceback")
        rows.append(
            TimelineEntry(
                seq=event.seq,
                at=datetime.fromtimestamp(event.at, UTC),
                kind=event.kind,
                title=describe(event),
                tone=_TONES.get(event.kind, "pending"),
                step_key=event.step_key,
                attempt=event.attempt,
                worker_id=event.worker_id,
                duration_ms=float(duration) if isinstance(duration, int | float) else None,
                traceback=traceback if isinstance(traceback, str) and traceback else None,
            )
        )
    return rows


def describe(event: HistoryEvent) -> str:
    """A short sentence for one event: ``charge completed``, ``charge failed: ValueError: ...``."""
    detail: Mapping[str, Any] = event.detail or {}
    step = event.step_key or "?"
    kind = event.kind
    error = _first_line(detail.get("error"))
    if kind == "task_completed":
        return f"{step} completed"
    if kind == "task_failed":
        return f"{step} failed: {error}" if error else f"{step} failed"
    if kind == "retry_scheduled":
        due = detail.get("due")
        wait = f" in {max(due - event.at, 0.0):.1f}s" if isinstance(due, int | float) else ""
        return f"{step}: attempt {event.attempt} scheduled{wait}"
    if kind == "timer_started":
        wake_at = detail.get("wake_at")
        if isinstance(wake_at, int | float):
            return f"{step}: waiting {max(wake_at - event.at, 0.0):.1f}s"
        return f"{step}: waiting"
    if kind == "timer_fired":
        return f"{step}: delay over"
    if kind == "signal_received":
        return f"{step}: signal received"
    if kind == "signal_sent":
        name = detail.get("name") or detail.get("signal")
        return f"signal “{name}” sent" if name else "signal sent"
    if kind == "failed":
        return f"failed: {error}" if error else "failed"
    if kind == "retried_from":
        dropped = detail.get("dropped") or []
        return f"retry from {step} ({len(dropped)} checkpoint(s) dropped)"
    if kind in ("cancelled", "paused"):
        reason = detail.get("reason")
        by = detail.get("by")
        extra = ", ".join(str(part) for part in (reason, f"by {by}" if by else None) if part)
        return f"{kind} ({extra})" if extra else kind
    if kind == "started":
        return "submitted"
    if kind == "definition_changed":
        return "definition changed"
    return kind.replace("_", " ")


def _first_line(value: Any) -> str:
    return str(value).strip().partition("\n")[0] if value else ""
