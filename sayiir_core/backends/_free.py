"""``is_free_for``: when ``AdvanceQueue.claim_if_free`` may take an instance.

One predicate for every backend that checks it in Python under its own lock or
transaction (memory, Django); PostgreSQL states the same in its statement's ``WHERE``.
"""

from __future__ import annotations

from collections.abc import Mapping

from sayiir_core.backends.base import InstanceRecord
from sayiir_core.backends.rules import has_live_claim
from sayiir_core.status import Status


def is_free_for(record: InstanceRecord, definitions: Mapping[str, str], now: float) -> bool:
    """True unless claiming ``record`` would take it from someone or is not ours to do.

    Not free: finished; held under a live lease (``lease_until > now``); paused with
    nothing asked of it (it waits for ``unpause``); or running a definition other than
    ``definitions[workflow_id]``.
    """
    if record.status.is_terminal or has_live_claim(record, now):
        return False
    if record.status is Status.PAUSED and record.control_request is None:
        return False
    return definitions.get(record.workflow_id) == record.definition_hash
