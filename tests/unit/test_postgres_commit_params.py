"""The PostgreSQL commit's parameters say what ``rules.committed_record`` says.

``convert.commit_params`` spells out which of control request, owner and lease a commit
clears instead of building a whole record; for every status and release flag it must
agree with ``rows.commit_effects`` (the rule as the in-memory backend applies it).
"""

from __future__ import annotations

import pytest

from sayiir_core.backends import HistoryEvent, StepWrite
from sayiir_core.backends.postgres import convert
from sayiir_core.backends.rows import commit_effects, error_json, to_json
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.status import Status

NOW = 1_000.0


@pytest.mark.parametrize("release", [False, True])
@pytest.mark.parametrize("status", list(Status))
def test_what_a_commit_sets_and_clears_matches_the_rule(status: Status, release: bool) -> None:
    write = StepWrite(
        status=status,
        control={"attempts": {"a": 1}},
        now=NOW,
        checkpoints=[("a", b"1")],
        output=b"2" if status is Status.COMPLETED else None,
        error=ErrorInfo("boom", "ValueError") if status is Status.FAILED else None,
        wake_at=NOW + 5 if status is Status.WAITING else None,
        events=[HistoryEvent("task_completed", NOW, "a", 1, "w1")],
        release=release,
        priority=2,
    )
    after = commit_effects(write)

    params = convert.commit_params("i-1", 7, write, 99, "work", "done")

    assert params[:8] == [
        "i-1",
        7,
        status.value,
        to_json(after.control, "control state"),
        after.output,
        error_json(after.error),
        after.wake_at,
        after.updated_at,
    ]
    # $9..$11: whether the control request, the owner and the lease are cleared.
    assert params[8:11] == [
        after.control_request is None,
        after.owner is None,
        after.lease_until is None,
    ]
