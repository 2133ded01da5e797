"""The backend contract, part 1: creating and reading instances, claiming them."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from sayiir_core import (
    Backend,
    ConflictPolicy,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    LeaseLostError,
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
    kinds,
    new,
    step,
)


class InstancesAndClaimsContract(BackendFixtures):
    """``create`` and its conflict policies, ``load``/``get_record``/``get_checkpoint``,
    ``claim``, ``claim_next`` and ``renew``."""

    # -- create and conflict policies --------------------------------------------------

    async def test_create_stores_the_record_and_a_started_event(self, backend: Backend) -> None:
        record, created = await backend.create(new(priority=2), ConflictPolicy.FAIL)

        assert created
        assert (record.instance_id, record.workflow_id, record.definition_hash) == (
            "i-1",
            "wf",
            "hash-1",
        )
        assert (record.status, record.input, record.priority) == (Status.PENDING, b'{"n": 1}', 2)
        assert (record.created_at, record.updated_at, record.wake_at) == (NOW, NOW, NOW)
        assert (record.owner, record.claim_token, record.lease_until) == (None, 0, None)
        assert await backend.get_record("i-1") == record
        history = await backend.history("i-1")
        assert [(e.kind, e.at, e.seq) for e in history] == [("started", NOW, 1)]

    async def test_create_with_an_owner_holds_the_first_claim(self, backend: Backend) -> None:
        record, _ = await backend.create(new(owner="runner"), ConflictPolicy.FAIL)

        assert (record.owner, record.claim_token, record.lease_until) == ("runner", 1, NOW + TTL)
        assert await backend.commit("i-1", 1, step(checkpoints=[("a", b"1")])) is None
        assert await backend.get_checkpoint("i-1", "a") == b"1"

    async def test_conflict_fail_raises_and_keeps_the_original(self, backend: Backend) -> None:
        await create(backend)

        with pytest.raises(InstanceAlreadyExistsError, match="i-1"):
            await backend.create(new(input=b"other"), ConflictPolicy.FAIL)

        record = await backend.get_record("i-1")
        assert record is not None
        assert record.input == b'{"n": 1}'
        assert await kinds(backend) == ["started"]

    async def test_conflict_use_existing_returns_the_existing_record(
        self, backend: Backend
    ) -> None:
        original, _ = await backend.create(new(), ConflictPolicy.FAIL)

        record, created = await backend.create(
            new(input=b"other", now=NOW + 5), ConflictPolicy.USE_EXISTING
        )

        assert not created
        assert record == original
        assert await kinds(backend) == ["started"]

    async def test_conflict_terminate_existing_replaces_and_keeps_history(
        self, backend: Backend
    ) -> None:
        token = await claimed(backend)
        await backend.send_signal("i-1", "go", b"old", NOW)
        await backend.commit("i-1", token, step(checkpoints=[("a", b"1")]))

        record, created = await backend.create(
            new(input=b"fresh", now=NOW + 10), ConflictPolicy.TERMINATE_EXISTING
        )

        assert created
        assert (record.input, record.status, record.created_at) == (
            b"fresh",
            Status.PENDING,
            NOW + 10,
        )
        loaded = await backend.load("i-1")
        assert loaded is not None
        assert dict(loaded.checkpoints) == {}
        assert await backend.next_signal("i-1", "go") is None
        history = await backend.history("i-1")
        assert [(e.kind, e.seq) for e in history] == [
            ("started", 1),
            ("signal_sent", 2),
            ("cancelled", 3),
            ("started", 4),
        ]
        assert history[2].detail == {"reason": "replaced (terminate_existing)"}

    async def test_terminate_existing_fences_out_the_old_claim(self, backend: Backend) -> None:
        old_token = await claimed(backend, owner="zombie")
        await backend.create(new(now=NOW + 10), ConflictPolicy.TERMINATE_EXISTING)
        new_claim = await backend.claim("i-1", "w2", TTL, NOW + 11)

        assert new_claim.token != old_token
        with pytest.raises(LeaseLostError):
            await backend.commit("i-1", old_token, step(checkpoints=[("a", b"zombie")]))
        assert await backend.get_checkpoint("i-1", "a") is None

    async def test_replaced_instance_lists_as_the_newest(self, backend: Backend) -> None:
        await create(backend, "a")
        await create(backend, "b")
        await backend.create(new("a", now=NOW + 1), ConflictPolicy.TERMINATE_EXISTING)

        page = await backend.list_instances()

        assert [r.instance_id for r in page.items] == ["a", "b"]

    # -- load, get_record, get_checkpoint ----------------------------------------------

    async def test_reads_of_an_unknown_instance_return_none(self, backend: Backend) -> None:
        assert await backend.load("nope") is None
        assert await backend.get_record("nope") is None
        assert await backend.get_checkpoint("nope", "a") is None

    async def test_load_returns_checkpoints_in_write_order(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, step(checkpoints=[("zeta", b"1"), ("alpha", b"2")]))
        await backend.commit("i-1", token, step(checkpoints=[("mid", b"3")]))

        loaded = await backend.load("i-1")

        assert loaded is not None
        assert list(loaded.checkpoints.items()) == [("zeta", b"1"), ("alpha", b"2"), ("mid", b"3")]
        assert loaded.record.status is Status.RUNNING
        assert await backend.get_checkpoint("i-1", "alpha") == b"2"
        assert await backend.get_checkpoint("i-1", "missing") is None

    async def test_records_round_trip_every_field(self, backend: Backend) -> None:
        token = await claimed(backend)
        error = ErrorInfo("ValueError", "card declined", task_id="charge", kind="task")
        control = {
            "attempts": {"charge": 2},
            "retry_at": MappingProxyType({"charge": NOW + 9.5}),
            "timers": {},
        }

        await backend.commit(
            "i-1",
            token,
            step(Status.FAILED, control=control, output=b"\x00\xff", error=error, wake_at=None),
        )

        record = await backend.get_record("i-1")
        assert record is not None
        assert record.error == error
        assert record.output == b"\x00\xff"
        assert dict(record.control) == {**control, "retry_at": {"charge": NOW + 9.5}}
        assert (record.status, record.updated_at, record.wake_at) == (Status.FAILED, NOW + 1, None)
        assert (record.owner, record.lease_until) == (None, None)

    # -- claim, claim_next, renew ------------------------------------------------------

    async def test_claim_bumps_the_token_and_takes_over_a_live_lease(
        self, backend: Backend
    ) -> None:
        first = await claimed(backend, owner="w1")
        second = await backend.claim("i-1", "w2", TTL, NOW + 1)

        assert second.token == first + 1
        assert second.instance.record.owner == "w2"
        assert second.instance.record.lease_until == NOW + 1 + TTL
        assert second.instance.record.claim_token == second.token

    async def test_claim_returns_the_checkpoints(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, step(checkpoints=[("a", b"1")]))

        claim = await backend.claim("i-1", "w2", TTL, NOW + 2)

        assert dict(claim.instance.checkpoints) == {"a": b"1"}

    async def test_claim_of_an_unknown_instance_raises(self, backend: Backend) -> None:
        with pytest.raises(InstanceNotFoundError):
            await backend.claim("nope", "w1", TTL, NOW)

    async def test_claim_next_takes_a_pending_instance_once_per_lease(
        self, backend: Backend
    ) -> None:
        await create(backend)

        claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW, 10)

        assert [c.instance.record.instance_id for c in claims] == ["i-1"]
        assert claims[0].token == 1
        assert claims[0].instance.record.owner == "w1"
        assert await backend.claim_next("w2", {"wf": HASH}, TTL, NOW + 1, 10) == []
        # Once the lease runs out, another worker takes over with a newer token.
        later = await backend.claim_next("w2", {"wf": HASH}, TTL, NOW + TTL + 1, 10)
        assert [(c.token, c.instance.record.owner) for c in later] == [(2, "w2")]

    async def test_claim_next_orders_by_priority_then_wake_at(self, backend: Backend) -> None:
        await create(backend, "low", priority=5)
        await create(backend, "high", priority=1, now=NOW + 2)
        await create(backend, "mid-late", priority=3, now=NOW + 3)
        await create(backend, "mid-early", priority=3, now=NOW + 1)

        claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10, 10)

        assert [c.instance.record.instance_id for c in claims] == [
            "high",
            "mid-early",
            "mid-late",
            "low",
        ]

    async def test_claim_next_respects_limit_and_workflow_ids(self, backend: Backend) -> None:
        for n in range(3):
            await create(backend, f"a-{n}", workflow_id="a", now=NOW + n)
        await create(backend, "b-0", workflow_id="b")

        first = await backend.claim_next("w1", {"a": HASH}, TTL, NOW + 10, 2)
        rest = await backend.claim_next("w1", {"a": HASH, "c": HASH}, TTL, NOW + 10, 5)

        assert [c.instance.record.instance_id for c in first] == ["a-0", "a-1"]
        assert [c.instance.record.instance_id for c in rest] == ["a-2"]
        assert await backend.claim_next("w1", {}, TTL, NOW + 10, 5) == []
        assert await backend.claim_next("w1", {"b": HASH}, TTL, NOW + 10, 0) == []
        assert await backend.claim_next("w1", {"b": HASH}, TTL, NOW + 10, -1) == []
        assert [
            c.instance.record.instance_id
            for c in await backend.claim_next("w1", {"b": HASH}, TTL, NOW + 10, 5)
        ] == ["b-0"]

    async def test_claim_next_leaves_instances_of_other_definitions(self, backend: Backend) -> None:
        await create(backend, "old-1")

        assert await backend.claim_next("w1", {"wf": "hash-2"}, TTL, NOW + 10, 5) == []
        claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10, 5)
        assert [c.instance.record.instance_id for c in claims] == ["old-1"]

    @pytest.mark.parametrize("status", [Status.WAITING, Status.AWAITING_SIGNAL])
    async def test_claim_next_takes_a_parked_instance_at_wake_at(
        self, backend: Backend, status: Status
    ) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, step(status, wake_at=NOW + 100, release=True))

        assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 99, 10) == []
        claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 100, 10)
        assert [c.instance.record.status for c in claims] == [status]

    async def test_claim_next_skips_parked_instances_without_wake_at(
        self, backend: Backend
    ) -> None:
        token = await claimed(backend)
        await backend.commit("i-1", token, step(Status.AWAITING_SIGNAL, wake_at=None, release=True))

        assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10_000, 10) == []

    @pytest.mark.parametrize("status", [Status.PAUSED, Status.COMPLETED, Status.FAILED])
    async def test_claim_next_skips_paused_and_finished_instances(
        self, backend: Backend, status: Status
    ) -> None:
        token = await claimed(backend)
        if status is Status.PAUSED:
            await backend.request_control("i-1", ControlRequest.PAUSE, None, None, NOW + 1)
        await backend.commit("i-1", token, step(status, release=True))

        assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10_000, 10) == []

    async def test_a_pause_settles_only_while_it_is_still_asked_for(self, backend: Backend) -> None:
        token = await claimed(backend)
        await backend.request_control("i-1", ControlRequest.PAUSE, "hold", "ops", NOW + 1)
        await backend.unpause("i-1", NOW + 2)  # withdrawn while the steps were still running

        await backend.commit("i-1", token, step(Status.PAUSED, release=True))

        record = await backend.get_record("i-1")
        assert record is not None
        assert record.status is Status.PENDING
        assert record.control_request is None
        claims = await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 10, 10)
        assert [c.instance.record.instance_id for c in claims] == ["i-1"]

    async def test_claim_next_skips_a_cancelled_instance(self, backend: Backend) -> None:
        await create(backend)
        await backend.request_control("i-1", ControlRequest.CANCEL, None, None, NOW)

        assert await backend.claim_next("w1", {"wf": HASH}, TTL, NOW + 1, 10) == []

    async def test_a_control_request_makes_a_parked_instance_claimable(
        self, backend: Backend
    ) -> None:
        token = await claimed(backend)
        # Parked far in the future but still holding the lease, then a cancel arrives.
        await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 10_000))
        await backend.request_control("i-1", ControlRequest.CANCEL, "stop", "ops", NOW + 2)

        claims = await backend.claim_next("w2", {"wf": HASH}, TTL, NOW + TTL + 1, 10)

        assert [c.instance.record.control_request for c in claims] == [ControlRequest.CANCEL]

    async def test_renew_extends_only_the_current_claim(self, backend: Backend) -> None:
        token = await claimed(backend)

        assert await backend.renew("i-1", token, TTL, NOW + 20)
        record = await backend.get_record("i-1")
        assert record is not None
        assert record.lease_until == NOW + 20 + TTL
        assert not await backend.renew("i-1", token - 1, TTL, NOW + 21)
        assert not await backend.renew("nope", token, TTL, NOW + 21)
        await backend.commit("i-1", token, step(Status.WAITING, wake_at=NOW + 50, release=True))
        assert not await backend.renew("i-1", token, TTL, NOW + 22)
