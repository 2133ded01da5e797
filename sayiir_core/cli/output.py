"""Rendering for the ``sayiir`` command line: JSON documents, aligned tables, event lines.

Human output shows local times; JSON output shows ISO 8601 times in UTC, so scripts get
one unambiguous form and people get the clock on their wall.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from sayiir_core.backends.base import HistoryEvent
from sayiir_core.status import WorkflowStatus

# Left out of live progress: the engine writes a step's start in the same transaction as
# its outcome, so by the time it is reported the outcome line says everything.
QUIET_KINDS = frozenset({"task_started"})
# Event details that hold epoch seconds; JSON shows them as ISO 8601 like every other time.
_TIME_DETAILS = ("due", "wake_at")


@dataclasses.dataclass(frozen=True, slots=True)
class Symbols:
    """The marks in front of event lines, in Unicode or plain ASCII."""

    ok: str
    failed: str
    retry: str
    wait: str
    timer: str
    signal: str
    done: str
    stop: str
    other: str


UNICODE = Symbols("✓", "✗", "↻", "⏸", "⏰", "✉", "✔", "■", "•")
ASCII = Symbols("+", "x", "~", "|", "@", ">", "*", "#", "-")


def symbols_for(stream: TextIO) -> Symbols:
    """Unicode marks when ``stream`` can encode them (a C-locale terminal may not)."""
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        "".join(dataclasses.astuple(UNICODE)).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return UNICODE


# -- JSON ---------------------------------------------------------------------------


def to_json(document: Any) -> str:
    """Indented JSON; ASCII-only so it survives any terminal encoding."""
    return json.dumps(document, indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    # Outputs come from the JSON codec, so this is only a safety net for odd payloads.
    return repr(value)


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def status_document(status: WorkflowStatus) -> dict[str, Any]:
    """Every public field of ``status``; datetimes become ISO 8601 strings."""
    document: dict[str, Any] = {}
    for field in dataclasses.fields(status):
        if field.repr:  # error_detail duplicates error/error_type/failed_task_id
            value = getattr(status, field.name)
            document[field.name] = value.isoformat() if isinstance(value, datetime) else value
    return document


def event_document(event: HistoryEvent) -> dict[str, Any]:
    detail = dict(event.detail) if event.detail is not None else None
    if detail is not None:
        for key in _TIME_DETAILS:
            if isinstance(detail.get(key), int | float):
                detail[key] = iso(detail[key])
    return {
        "seq": event.seq,
        "kind": event.kind,
        "at": iso(event.at),
        "step_key": event.step_key,
        "attempt": event.attempt,
        "worker_id": event.worker_id,
        "detail": detail,
    }


# -- tables and blocks --------------------------------------------------------------


def local_time(moment: float | datetime | None, *, millis: bool = False) -> str:
    if moment is None:
        return ""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    text = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f" if millis else "%Y-%m-%d %H:%M:%S")
    return text[:-3] if millis else text


def clock_time(timestamp: float) -> str:
    """``HH:MM:SS.mmm`` local time, for live progress lines."""
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S.%f")[:-3]


def key_value_block(rows: Sequence[tuple[str, str]]) -> str:
    """``key  value`` lines with the values aligned; empty values are left out.

    A value of several lines (an error with its traceback) keeps them under its column.
    """
    shown = [(key, value) for key, value in rows if value]
    width = max((len(key) for key, _ in shown), default=0)
    margin = " " * (width + 2)
    return "\n".join(f"{key.ljust(width)}  {_continued(value, margin)}" for key, value in shown)


def _continued(value: str, margin: str) -> str:
    first, *rest = value.split("\n")
    return "\n".join([first, *(f"{margin}{line}" if line else "" for line in rest)])


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned table; the last column is not padded, so long text just runs on."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def one_line(text: str) -> str:
    first, _, rest = text.strip().partition("\n")
    return f"{first} …" if rest else first


def status_block(status: WorkflowStatus) -> str:
    rows = [
        ("instance", status.instance_id or ""),
        ("workflow", status.workflow_id or ""),
        ("status", status.status),
        ("created", local_time(status.created_at)),
        ("updated", local_time(status.updated_at)),
        ("waiting on", status.delay_id or status.signal_name or ""),
        ("wakes at", local_time(status.wake_at)),
        ("failed step", status.failed_task_id or ""),
        ("error", status.error or ""),
        ("reason", status.reason or ""),
        ("cancelled by", status.cancelled_by or ""),
        ("paused by", status.paused_by or ""),
        # A worker runs only instances of the definition it serves: for an unfinished
        # instance, compare with the worker's log ("not run by worker ...").
        ("definition", "" if status.is_finished() else (status.definition_hash or "")[:12]),
    ]
    if status.is_completed():
        # Shown even when falsy: an output of 0, "" or null is still an answer.
        rows.append(("output", compact_json(status.output)))
    return key_value_block(rows)


def instance_table(items: Sequence[WorkflowStatus]) -> str:
    rows = [
        [
            item.instance_id or "",
            item.workflow_id or "",
            item.status,
            local_time(item.created_at),
            local_time(item.updated_at),
            _instance_note(item),
        ]
        for item in items
    ]
    return table(["INSTANCE", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "NOTE"], rows)


def _instance_note(item: WorkflowStatus) -> str:
    if item.error:
        return one_line(item.error)
    if item.wake_at is not None:
        return f"until {local_time(item.wake_at)}"
    return item.reason or ""


def history_table(events: Sequence[HistoryEvent]) -> str:
    rows = [
        [
            str(event.seq),
            local_time(event.at, millis=True),
            event.kind,
            event.step_key or "",
            str(event.attempt) if event.attempt is not None else "",
            event.worker_id or "",
            detail_text(event),
        ]
        for event in events
    ]
    return table(["SEQ", "TIME", "KIND", "STEP", "ATTEMPT", "WORKER", "DETAIL"], rows)


def detail_text(event: HistoryEvent) -> str:
    """The interesting part of an event's detail on one line (never the traceback)."""
    detail: Mapping[str, Any] = event.detail or {}
    parts: list[str] = []
    if "error" in detail:
        parts.append(one_line(str(detail["error"])))
    if "duration_ms" in detail:
        parts.append(duration(detail["duration_ms"]))
    for key in _TIME_DETAILS:
        if isinstance(detail.get(key), int | float):
            parts.append(f"{key} {local_time(detail[key], millis=True)}")
    shown = {"error", "duration_ms", "traceback", *_TIME_DETAILS}
    parts.extend(f"{key}={value}" for key, value in detail.items() if key not in shown and value)
    return ", ".join(parts)


def duration(milliseconds: float) -> str:
    if milliseconds < 1000:
        return f"{milliseconds:.1f} ms"
    return f"{milliseconds / 1000:.2f} s"


# -- live event lines ---------------------------------------------------------------


def describe_event(event: HistoryEvent, marks: Symbols) -> str:
    """One readable line for a history event, e.g. ``✓ charge (attempt 1, 12.3 ms)``."""
    detail: Mapping[str, Any] = event.detail or {}
    step = event.step_key or ""
    if event.kind == "task_completed":
        return f"{marks.ok} {step} ({_attempt_and_duration(event)})"
    if event.kind == "task_failed":
        error = one_line(str(detail.get("error", "failed")))
        return f"{marks.failed} {step} ({_attempt_and_duration(event)}): {error}"
    if event.kind == "retry_scheduled":
        due = detail.get("due")
        wait = f" in {max(due - event.at, 0.0):.1f}s" if isinstance(due, int | float) else ""
        return f"{marks.retry} {step}: retry scheduled{wait} (attempt {event.attempt})"
    if event.kind == "timer_started":
        wake_at = detail.get("wake_at")
        if not isinstance(wake_at, int | float):
            return f"{marks.wait} {step}: waiting"
        left = wake_at - event.at
        return f"{marks.wait} {step}: waiting until {local_time(wake_at)} ({left:.1f}s)"
    if event.kind == "timer_fired":
        return f"{marks.timer} {step}: timer fired"
    if event.kind == "signal_received":
        return f"{marks.signal} {step}: signal received"
    if event.kind == "completed":
        return f"{marks.done} completed"
    if event.kind == "failed":
        error = one_line(str(detail.get("error", "")))
        return f"{marks.failed} failed: {error}" if error else f"{marks.failed} failed"
    if event.kind in ("cancelled", "paused"):
        mark = marks.stop if event.kind == "cancelled" else marks.wait
        note = detail_text(event)
        return f"{mark} {event.kind}" + (f" ({note})" if note else "")
    note = detail_text(event)
    return " ".join(part for part in (marks.other, event.kind, step, note) if part)


def _attempt_and_duration(event: HistoryEvent) -> str:
    parts = [f"attempt {event.attempt}"] if event.attempt is not None else []
    milliseconds = (event.detail or {}).get("duration_ms")
    if isinstance(milliseconds, int | float):
        parts.append(duration(milliseconds))
    return ", ".join(parts)
