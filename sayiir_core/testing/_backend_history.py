"""The backend contract, part 3: listing instances, their history, ``reset_from``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from sayiir_core import (
    Backend,
    HistoryEvent,
    InstanceNotFoundError,
    InvalidStateError,
    Status,
)
from sayiir_core.backends import ControlRequest
from sayiir_core.status import ErrorInfo
from sayiir_core.testing._support import (
    HASH,
    NOW,
    TTL,
    BackendFixtures,
    claimed,
    create,
    step,
)

_WRITTEN = ["fetch", "body#0", "body#1", "item[0]", "item[3]", "send"]


async def _with_checkpoints(backend: Backend, keys: Sequence[str]) -> int:
    token = await claimed(backend)
    for key in keys:
        await backend.commit("i-1", token, step(checkpoints=[(key, key.encode())]))
    return token


class ListingHistoryAndResetContract(BackendFixtures):
    """``list_instances`` and its cursors, ``history``, ``reset_from`` (retry_from)."""

    # -- list_instances and history ----------------------------------------------------

    async def test_list_instances_pages_newest_first_without_gaps(self, backend: Backend) -> None:
        ids = [f"i-{n}" for n in range(7)]
        for n, instance_id in enumerate(ids):
            await create(backend, instance_id, now=NOW + n)

        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await backend.list_instances(limit=3, cursor=cursor)
            seen.extend(r.instance_id for r in page.items)
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            # A submission between pages must not shift later pages.
            await create(backend, f"late-{pages}", now=NOW + 100 + pages)

        assert seen == list(reversed(ids))
        assert pages == 3

    async def test_list_instances_has_no_next_page_after_an_exact_fit(
        self, backend: Backend
    ) -> None:
        for n in range(4):
            await create(backend, f"i-{n}")

        first = await backend.list_instances(limit=2)
        second = await backend.list_instances(limit=2, cursor=first.next_cursor)

        assert [r.instance_id for r in first.items] == ["i-3", "i-2"]
        assert [r.instance_id for r in second.items] == ["i-1", "i-0"]
        assert second.next_cursor is None

    async def test_list_instances_filters_by_status_and_workflow(self, backend: Backend) -> None:
        await create(backend, "a-1", workflow_id="a")
        await create(backend, "b-1", workflow_id="b")
        await create(backend, "a-2", workflow_id="a")
        await backend.request_control("a-1", ControlRequest.CANCEL, None, None, NOW)

        def ids(page: Any) -> list[str]:
            return [r.instance_id for r in page.items]

        assert ids(await backend.list_instances(workflow_id="a")) == ["a-2", "a-1"]
        assert ids(await backend.list_instances(status=Status.PENDING)) == ["a-2", "b-1"]
        assert ids(await backend.list_instances(status=Status.CANCELLED, workflow_id="a")) == [
            "a-1"
        ]
        assert ids(await backend.list_instances(status=Status.CANCELLED, workflow_id="b")) == []
        page = await backend.list_instances(workflow_id="a", limit=1)
        assert ids(page) == ["a-2"]
        rest = await backend.list_instances(workflow_id="a", limit=1, cursor=page.next_cursor)
        assert (ids(rest), rest.next_cursor) == (["a-1"], None)

    async def test_list_instances_rejects_a_bad_cursor_or_limit(self, backend: Backend) -> None:
        await create(backend)

        with pytest.raises(ValueError, match="cursor"):
            await backend.list_instances(cursor="not-a-cursor")
        with pytest.raises(ValueError, match="limit"):
            await backend.list_instances(limit=0)

    async def test_history_keeps_commit_events_in_order(self, backend: Backend) -> None:
        token = await claimed(backend)
        events = [
            HistoryEvent("task_started", NOW + 1, "a", 1, "w1"),
            HistoryEvent("task_completed", NOW + 2, "a", 1, "w1", {"ms": 1.5}),
        ]
        await backend.commit("i-1", token, step(checkpoints=[("a", b"1")], events=events))
        await backend.commit(
            "i-1", token, step(Status.COMPLETED, events=[HistoryEvent("completed", NOW + 3)])
        )

        history = await backend.history("i-1")

        assert history == [
            HistoryEvent("started", NOW, seq=1),
            HistoryEvent("task_started", NOW + 1, "a", 1, "w1", seq=2),
            HistoryEvent("task_completed", NOW + 2, "a", 1, "w1", {"ms": 1.5}, seq=3),
            HistoryEvent("completed", NOW + 3, seq=4),
        ]
        with pytest.raises(InstanceNotFoundError):
            await backend.history("nope")

    # -- reset_from (retry_from) -------------------------------------------------------

    @pytest.mark.parametrize(
        ("task_id", "kept"),
        [
            ("fetch", []),
            ("body", ["fetch"]),
            ("item", ["fetch", "body#0", "body#1"]),
            ("send", ["fetch", "body#0", "body#1", "item[0]", "item[3]"]),
        ],
    )
    async def test_reset_from_drops_that_step_and_everything_after(
        self, backend: Backend, task_id: str, kept: list[str]
    ) -> None:
        token = await _with_checkpoints(backend, _WRITTEN)
        error = ErrorInfo("ValueError", "boom", task_id="later")
        await backend.commit(
            "i-1", token, step(Status.FAILED, error=error, control={"attempts": {"later": 3}})
        )

        record = await backend.reset_from("i-1", task_id, NOW + 50)

        assert (record.status, record.error, dict(record.control)) == (Status.PENDING, None, {})
        assert (record.owner, record.wake_at, record.updated_at) == (None, NOW + 50, NOW + 50)
        loaded = await backend.load("i-1")
        assert loaded is not None
        assert list(loaded.checkpoints) == kept
        assert loaded.record == record
        last = (await backend.history("i-1"))[-1]
        assert (last.kind, last.step_key) == ("retried_from", task_id)
        assert last.detail == {"dropped": _WRITTEN[len(kept) :]}
        # The instance runs again, and new checkpoints follow the kept ones in order.
        claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 51, 1)
        assert len(claims) == 1
        await backend.commit("i-1", claims[0].token, step(checkpoints=[("again", b"")]))
        reloaded = await backend.load("i-1")
        assert reloaded is not None
        assert list(reloaded.checkpoints) == [*kept, "again"]

    async def test_reset_from_a_failed_map_step_drops_its_finished_items(
        self, backend: Backend
    ) -> None:
        token = await _with_checkpoints(backend, ["fetch", "item[0]", "item[2]"])
        error = ErrorInfo("ValueError", "boom", task_id="item[1]")
        await backend.commit("i-1", token, step(Status.FAILED, error=error))

        record = await backend.reset_from("i-1", "item", NOW + 50)

        assert (record.status, record.error) == (Status.PENDING, None)
        loaded = await backend.load("i-1")
        assert loaded is not None
        assert list(loaded.checkpoints) == ["fetch"]

    async def test_reset_from_a_failed_step_without_checkpoint(self, backend: Backend) -> None:
        token = await _with_checkpoints(backend, ["fetch", "reserve"])
        error = ErrorInfo("ValueError", "card declined", task_id="charge")
        await backend.commit("i-1", token, step(Status.FAILED, error=error))

        record = await backend.reset_from("i-1", "charge", NOW + 50)

        assert (record.status, record.error) == (Status.PENDING, None)
        loaded = await backend.load("i-1")
        assert loaded is not None
        assert list(loaded.checkpoints) == ["fetch", "reserve"]

    async def test_reset_from_refuses_unknown_steps_and_running_instances(
        self, backend: Backend
    ) -> None:
        token = await _with_checkpoints(backend, ["fetch"])

        with pytest.raises(InvalidStateError, match="while it is running"):
            await backend.reset_from("i-1", "fetch", NOW + 1)
        await backend.commit("i-1", token, step(Status.COMPLETED))
        with pytest.raises(InvalidStateError, match="no checkpoint"):
            await backend.reset_from("i-1", "never", NOW + 2)
        with pytest.raises(InstanceNotFoundError):
            await backend.reset_from("nope", "fetch", NOW + 2)
        loaded = await backend.load("i-1")
        assert loaded is not None
        assert list(loaded.checkpoints) == ["fetch"]
        assert loaded.record.status is Status.COMPLETED
