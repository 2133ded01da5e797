"""The router's request and response bodies (pydantic), and their conversions.

Responses never carry a traceback: ``error`` is the failure's first line
(``ValueError: card declined``) and history details drop the stored ``traceback``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sayiir_core import HistoryEvent, WorkflowStatus

# Ids created through the API can be used in URL paths: no "/" and no control characters.
INSTANCE_ID_PATTERN = r"^[^/\x00-\x1f\x7f]+$"
MAX_INSTANCE_ID_LENGTH = 255


class ProblemDocument(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str = Field(description="A stable name of the problem: instance_not_found, ...")


class InstanceOut(BaseModel):
    """Where an instance stands."""

    instance_id: str
    workflow_id: str | None
    status: str = Field(
        description="in_progress, running, waiting, awaiting_signal, paused, "
        "completed, failed or cancelled"
    )
    output: Any = None
    error: str | None = Field(
        default=None, description="The failure's first line, without traceback"
    )
    error_type: str | None = None
    failed_task_id: str | None = None
    reason: str | None = None
    cancelled_by: str | None = None
    paused_by: str | None = None
    wake_at: datetime | None = None
    delay_id: str | None = None
    signal_id: str | None = None
    signal_name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, status: WorkflowStatus) -> InstanceOut:
        return cls(
            instance_id=status.instance_id or "",
            workflow_id=status.workflow_id,
            status=status.status,
            output=status.output,
            error=one_line_error(status),
            error_type=status.error_type,
            failed_task_id=status.failed_task_id,
            reason=status.reason,
            cancelled_by=status.cancelled_by,
            paused_by=status.paused_by,
            wake_at=status.wake_at,
            delay_id=status.delay_id,
            signal_id=status.signal_id,
            signal_name=status.signal_name,
            created_at=status.created_at,
            updated_at=status.updated_at,
        )


def one_line_error(status: WorkflowStatus) -> str | None:
    if status.error_detail is not None:
        return str(status.error_detail)
    return status.error.partition("\n")[0] if status.error else None


class InstancePageOut(BaseModel):
    """Newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[InstanceOut]
    next_cursor: str | None


class HistoryEventOut(BaseModel):
    """One append-only history entry of an instance."""

    seq: int
    kind: str
    at: datetime
    step_key: str | None = None
    attempt: int | None = None
    worker_id: str | None = None
    detail: dict[str, Any] | None = None

    @classmethod
    def of(cls, event: HistoryEvent) -> HistoryEventOut:
        return cls(
            seq=event.seq,
            kind=event.kind,
            at=datetime.fromtimestamp(event.at, UTC),
            step_key=event.step_key,
            attempt=event.attempt,
            worker_id=event.worker_id,
            detail=public_detail(event.detail),
        )


def public_detail(detail: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A history detail without tracebacks (a failed event's ``error`` keeps its first line)."""
    if detail is None:
        return None
    cleaned = {key: value for key, value in detail.items() if key != "traceback"}
    if isinstance(cleaned.get("error"), str):
        cleaned["error"] = cleaned["error"].partition("\n")[0]
    return cleaned


class StepOut(BaseModel):
    id: str
    kind: str
    predecessor_id: str | None


class WorkflowOut(BaseModel):
    """A registered workflow definition."""

    workflow_id: str
    definition_hash: str
    steps: list[StepOut]
    input_schema: dict[str, Any] = Field(
        description="JSON schema of the input (from the first step's annotation)"
    )


class SubmissionIn(BaseModel):
    """Start an instance. Without ``instance_id`` (and no ``Idempotency-Key``) one is made."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_INSTANCE_ID_LENGTH, pattern=INSTANCE_ID_PATTERN
    )
    input: Any = None


class ControlIn(BaseModel):
    """Why, and by whom (both optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)
    by: str | None = Field(default=None, max_length=255)
