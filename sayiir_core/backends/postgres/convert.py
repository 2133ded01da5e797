"""Parameters and rows of ``PostgresBackend``'s statements (``statements.py``).

Values go out as ``$n`` parameters in the order each statement names them; what comes
back is turned into records, claims and errors. History events and checkpoints travel
as one JSON text (and one bytea for the payloads) rather than arrays: asyncpg encodes
an array element by element, which cost more than the rest of a commit's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sayiir_core.backends.base import (
    Claim,
    ControlRequest,
    HistoryEvent,
    InstanceRecord,
    LoadedInstance,
    StepWrite,
)
from sayiir_core.backends.postgres.statements import MUTABLE_COLUMNS, RECORD_WIDTH
from sayiir_core.backends.rows import (
    error_json,
    record_from_row,
    record_values,
    to_json,
)
from sayiir_core.backends.step_queue import StepTicket
from sayiir_core.errors import LeaseLostError, PayloadTooLargeError
from sayiir_core.status import Status


def insert_params(
    record: InstanceRecord, history_seq: int, events: Sequence[HistoryEvent], channel: str
) -> list[Any]:
    """Parameters for ``insert_record``: ``history_seq`` is the seq before ``events``."""
    return [*record_values(record).values(), history_seq, events_json(events), channel]


def check_size(payload: bytes, limit: int, what: str) -> None:
    """Refuse a payload over ``max_payload_bytes``, naming it."""
    if len(payload) > limit:
        raise PayloadTooLargeError(
            f"{what} is {len(payload):,} bytes, over this PostgresBackend's "
            f"max_payload_bytes={limit:,}; keep large data elsewhere (object storage, a "
            "table of your own) and pass a reference"
        )


def check_write(
    instance_id: str, write: StepWrite, tickets: Sequence[StepTicket], limit: int
) -> None:
    """Refuse, before anything is sent, what a fenced commit must not write: a step
    checkpointed twice, and a checkpoint, output or step input over ``limit`` bytes."""
    keys = [key for key, _ in write.checkpoints]
    for index, (key, payload) in enumerate(write.checkpoints):
        if key in keys[:index]:
            raise LeaseLostError(f"instance {instance_id!r}: step {key!r} is already checkpointed")
        check_size(payload, limit, f"the checkpoint of step {key!r} of instance {instance_id!r}")
    if write.output is not None:
        check_size(write.output, limit, f"the output of workflow instance {instance_id!r}")
    for ticket in tickets:
        check_size(ticket.input, limit, f"the input of step {ticket.ref.step_key!r}")


def save_params(
    record: InstanceRecord, events: Sequence[HistoryEvent], channel: str | None
) -> list[Any]:
    """Parameters for ``save_record``; a ``channel`` makes it wake idle workers."""
    values = record_values(record)
    return [
        record.instance_id,
        *(values[c] for c in MUTABLE_COLUMNS),
        events_json(events),
        channel is not None,
        channel or "",
    ]


def events_json(events: Sequence[HistoryEvent]) -> str:
    """``events`` as one JSON array of objects, for ``json_to_recordset``.

    A field left as ``None`` is left out (a missing key is NULL). A detail travels as
    its JSON text in a string, not nested: PostgreSQL refuses to expand a document
    holding a ``\\u0000`` escape, which a detail may hold (the json column keeps it).
    """
    return to_json([_event_object(e) for e in events], "history detail")


def checkpoint_params(checkpoints: Sequence[tuple[str, bytes]]) -> tuple[str, bytes]:
    """``checkpoints`` as two parameters: a JSON list of each key with where its payload
    lies, and the payloads one after the other.

    Cheaper to send than a text[] and a bytea[] (asyncpg encodes an array element by
    element), and one payload, the usual case, is sent as it is (no copy).
    """
    where = []
    start = 0
    for key, payload in checkpoints:
        where.append({"step_key": key, "start": start, "size": len(payload)})
        start += len(payload)
    return to_json(where, "checkpoint keys"), b"".join([p for _, p in checkpoints])


def _event_object(event: HistoryEvent) -> dict[str, Any]:
    found: dict[str, Any] = {"kind": event.kind, "at": event.at}
    if event.step_key is not None:
        found["step_key"] = event.step_key
    if event.attempt is not None:
        found["attempt"] = event.attempt
    if event.worker_id is not None:
        found["worker_id"] = event.worker_id
    if event.detail is not None:
        found["detail"] = to_json(event.detail, "history detail")
    return found


def commit_params(
    instance_id: str,
    token: int,
    write: StepWrite,
    commit_id: int,
    channel: str,
    done_channel: str,
) -> list[Any]:
    """Parameters for ``Statements.commit``, in ``$n`` order.

    What the commit clears is ``rules.committed_record``'s rule (a finished or paused
    instance settles its control request; a released or finished one drops its claim),
    spelled out here: building the whole record to read it (``rows.commit_effects``)
    cost more than every other parameter together. tests/unit/test_postgres_commit_params
    holds the two together.
    """
    terminal = write.status.is_terminal
    settled = terminal or write.status is Status.PAUSED
    released = write.release or terminal
    return [
        instance_id,
        token,
        write.status.value,
        to_json(dict(write.control), "control state"),
        write.output,
        error_json(write.error),
        write.wake_at,
        write.now,
        settled,
        released,
        released,
        write.definition_hash,
        *checkpoint_params(write.checkpoints),
        events_json(write.events),
        commit_id,
        write.consumed_signal,
        channel,
        write.priority,
        done_channel,
    ]


def signal_detail(name: str) -> str:
    return to_json({"name": name}, "history detail")


def checkpoints_from(
    keys: Sequence[str] | None, payloads: Sequence[bytes] | None
) -> dict[str, bytes]:
    return dict(zip(keys or (), payloads or (), strict=True))


def claims_from(rows: Sequence[Any], checkpoint_rows: Sequence[Any]) -> list[Claim]:
    """Claims for rows of ``claim_next`` (record columns, then seq), in claim order.

    ``RETURNING`` gives no order, so they are sorted here like the claim query sorts.
    ``checkpoint_rows`` come from ``checkpoints_of``, in write order.
    """
    ordered = sorted(
        rows, key=lambda r: (r["priority"], r["wake_at"] or 0.0, r["created_at"], r[-1])
    )
    found: dict[str, dict[str, bytes]] = {row["instance_id"]: {} for row in rows}
    for instance_id, key, payload in checkpoint_rows:
        found[instance_id][key] = payload
    claims = []
    for row in ordered:
        record = record_from_row(tuple(row)[:RECORD_WIDTH])
        claims.append(Claim(LoadedInstance(record, found[record.instance_id]), record.claim_token))
    return claims


def control_request(value: str | None) -> ControlRequest | None:
    return ControlRequest(value) if value is not None else None


def lease_lost(instance_id: str, token: int, current: int) -> LeaseLostError:
    return LeaseLostError(
        f"instance {instance_id!r}: claim {token} was taken over "
        f"(current claim {current}); write refused"
    )
