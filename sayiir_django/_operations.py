"""The ``Backend`` operations as synchronous ORM work, one transaction each.

``DjangoBackend`` runs these off the event loop. Each loads what it needs inside its
transaction (locking the instance row on PostgreSQL), asks
``sayiir_core.backends.rules`` for the new record and history entries, and writes both
back. They live by concern; this module gathers them under one name:

- ``_instance_rows``: an instance's row read, locked and written back, its history;
- ``_submit``: ``create``;
- ``_reads``: ``load``, ``get_record``, ``get_checkpoint``, ``check_tables``;
- ``_claims``: ``claim``, ``claim_next``, ``renew``;
- ``_commit``: a step's ``commit`` and resolving one lost at commit.

Control requests, signals, listing and resets are in ``_control``; the step queue in
``_step_queue``; the advance queue in ``_advance``.
"""

from __future__ import annotations

from sayiir_django._claims import claim, claim_next, claimable, definitions_filter, renew
from sayiir_django._commit import commit, resolve_commit
from sayiir_django._instance_rows import (
    FINISHED,
    append_history,
    checkpoints_of,
    instances,
    locked,
    require,
    save,
)
from sayiir_django._reads import check_tables, get_checkpoint, get_record, load
from sayiir_django._submit import create

__all__ = [
    "FINISHED",
    "append_history",
    "check_tables",
    "checkpoints_of",
    "claim",
    "claim_next",
    "claimable",
    "commit",
    "create",
    "definitions_filter",
    "get_checkpoint",
    "get_record",
    "instances",
    "load",
    "locked",
    "renew",
    "require",
    "resolve_commit",
    "save",
]
