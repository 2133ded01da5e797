"""The shared step queue on PostgreSQL: ``PostgresStepQueue``, owned by ``PostgresBackend``.

The backend holds one and offers the ``StepQueue`` methods by delegating to it; the
queue shares the backend's ``Session`` (pool, retries) and has a LISTEN connection of
its own. Every operation is one statement. Publishing wakes idle workers on the work
channel; finishing a step wakes orchestrators on the steps channel (its own channel,
so workers are not woken for every finished step).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from sayiir_core.backends.base import Claim, LoadedInstance, StepWrite
from sayiir_core.backends.postgres import convert
from sayiir_core.backends.postgres import statements as sql
from sayiir_core.backends.postgres.listen import WorkListener
from sayiir_core.backends.postgres.session import Attempt, Done, Session
from sayiir_core.backends.postgres.step_statements import STEP_WIDTH, AdvanceStatements
from sayiir_core.backends.postgres.step_statements import (
    StepStatements as StepStatements,  # re-exported: control.py types its argument with it
)
from sayiir_core.backends.rows import failure_json, record_from_row, step_result, to_json
from sayiir_core.backends.rules import missing
from sayiir_core.backends.step_queue import (
    ClaimedStep,
    ClaimedStepAndInstance,
    CommittedChain,
    NextStepClaim,
    StepRef,
    StepResult,
    StepTicket,
    chained_claim,
)
from sayiir_core.errors import LeaseLostError

if TYPE_CHECKING:
    from sayiir_core.backends.postgres.session import Conn


class PostgresStepQueue:
    """The ``StepQueue`` methods on ``session``, for the tables of ``schema``.

    ``statements`` are public to the owning backend: its cancel and ``reset_from``
    withdraw an instance's steps inside their own transactions.
    """

    def __init__(self, session: Session, schema: str, work_channel: str, max_payload: int) -> None:
        self._session = session
        self._max_payload = max_payload
        self.statements = StepStatements(schema, work_channel)
        self._main = sql.Statements(schema)
        self._advance = AdvanceStatements(self._main, schema, work_channel)
        self._step_listener = WorkListener(session.connect, self.statements.channel)
        session.on_fork(self._step_listener.drop_inherited)

    async def close(self) -> None:
        """Close the LISTEN connection for finished steps (the pool is the backend's)."""
        await self._step_listener.close()

    async def publish_steps(self, tickets: Sequence[StepTicket]) -> None:
        if not tickets:
            return
        for ticket in tickets:
            ref = ticket.ref
            convert.check_size(
                ticket.input, self._max_payload, f"the input of step {ref.step_key!r}"
            )
        columns = ticket_columns(tickets)

        async def body(conn: Conn, attempt: Attempt) -> None:
            await attempt.write(conn, self.statements.publish, *columns)

        # Inserting the same tickets again inserts nothing.
        await self._session.run("publish_steps", body, idempotent=True)

    async def claim_steps(
        self,
        owner: str,
        workflows: Mapping[str, str],
        ttl: float,
        now: float,
        limit: int,
        *,
        instances: Collection[str] | None = None,
    ) -> list[ClaimedStep]:
        if limit < 1 or not workflows:
            return []
        lease_until = now + ttl
        ids, hashes = list(workflows), list(workflows.values())
        only = list(instances) if instances is not None else None
        params = [ids, hashes, now, limit, owner, lease_until, only]

        async def body(conn: Conn, attempt: Attempt) -> list[ClaimedStep]:
            return _claimed(await attempt.write(conn, self.statements.claim, *params))

        async def resolve(conn: Conn) -> Done[list[ClaimedStep]] | None:
            rows = await conn.fetch(self.statements.claimed_by, owner, lease_until)
            found = [
                row
                for row in rows
                if workflows.get(row[3]) == row[4] and (only is None or row[0] in only)
            ]
            return Done(_claimed(found)) if found else None

        return await self._session.run("claim_steps", body, resolve=resolve)

    async def claim_step(
        self, ref: StepRef, owner: str, ttl: float, now: float
    ) -> ClaimedStep | None:
        lease_until = now + ttl
        key = (ref.instance_id, ref.step_key, ref.attempt)

        async def body(conn: Conn, attempt: Attempt) -> ClaimedStep | None:
            params = (*key, owner, now, lease_until)
            claimed = _claimed(await attempt.write(conn, self.statements.claim_one, *params))
            return claimed[0] if claimed else None

        async def resolve(conn: Conn) -> Done[ClaimedStep | None] | None:
            rows = await conn.fetch(self.statements.claimed_one, *key, owner, lease_until)
            return Done(_claimed(rows)[0]) if rows else None

        return await self._session.run("claim_step", body, resolve=resolve)

    async def renew_step(self, ref: StepRef, token: int, ttl: float, now: float) -> bool:
        async def body(conn: Conn, attempt: Attempt) -> bool:
            key = (ref.instance_id, ref.step_key, ref.attempt)
            return bool(await attempt.write(conn, self.statements.renew, *key, token, now + ttl))

        return await self._session.run("renew_step", body, idempotent=True)

    async def finish_step(self, ref: StepRef, token: int, result: StepResult) -> bool:
        if result.output is not None:
            what = f"the output of step {ref.step_key!r}"
            convert.check_size(result.output, self._max_payload, what)
        params = [
            ref.instance_id,
            ref.step_key,
            ref.attempt,
            token,
            result.worker_id,
            result.started_at,
            result.finished_at,
            result.output,
            failure_json(result),
        ]

        async def body(conn: Conn, attempt: Attempt) -> bool:
            return bool(await attempt.write(conn, self.statements.finish, *params))

        # Writing the same outcome under the same token twice is writing it once.
        return await self._session.run("finish_step", body, idempotent=True)

    async def step_results(self, refs: Sequence[StepRef]) -> dict[StepRef, StepResult]:
        if not refs:
            return {}
        columns = [
            [r.instance_id for r in refs],
            [r.step_key for r in refs],
            [r.attempt for r in refs],
        ]

        async def body(conn: Conn, _: Attempt) -> list[Any]:
            return list(await conn.fetch(self.statements.results, *columns))

        rows = await self._session.run("step_results", body, idempotent=True)
        return {StepRef(row[0], row[1], row[2]): _result_from(row) for row in rows}

    async def wait_for_step_results(self, max_wait: float) -> None:
        self._session.pool()
        await self._step_listener.wait(max_wait)

    # -- AdvanceQueue: an advance of a dispatched instance in two round trips ----------

    async def claim_if_free(
        self,
        instance_id: str,
        owner: str,
        definitions: Mapping[str, str],
        ttl: float,
        now: float,
    ) -> Claim | None:
        lease_until = now + ttl
        wanted = to_json(dict(definitions), "workflow definitions")
        params = (instance_id, now, owner, lease_until, wanted)
        statements = self._advance

        async def body(conn: Conn, attempt: Attempt) -> Claim | None:
            rows = await attempt.write(conn, statements.claim_if_free, *params)
            if not rows:
                return None
            row = rows[0]
            if row["version"] == row["seen_version"]:
                checkpoints = convert.checkpoints_from(row["keys"], row["payloads"])
                record = record_from_row(tuple(row)[: sql.RECORD_WIDTH])
                return Claim(LoadedInstance(record, checkpoints), record.claim_token)
            # Claimed a version newer than the statement's snapshot: read it again.
            return await self._claim_read(conn, [row])

        async def resolve(conn: Conn) -> Done[Claim | None] | None:
            rows = await conn.fetch(statements.claimed_if_free, instance_id, owner, lease_until)
            return Done(await self._claim_read(conn, rows)) if rows else None

        return await self._session.run("claim_if_free", body, resolve=resolve)

    # -- StepAndInstanceClaim: the step and, for a chain, its instance at once -------------

    async def claim_step_and_instance(
        self,
        ref: StepRef,
        owner: str,
        step_ttl: float,
        definitions: Mapping[str, str],
        claim_ttl: float,
        now: float,
    ) -> ClaimedStepAndInstance | None:
        step_until, claim_until = now + step_ttl, now + claim_ttl
        key = (ref.instance_id, ref.step_key, ref.attempt)
        wanted = to_json(dict(definitions), "workflow definitions")
        params = (*key, owner, now, step_until, wanted, claim_until)
        statements = self._advance

        async def body(conn: Conn, attempt: Attempt) -> ClaimedStepAndInstance | None:
            rows = await attempt.write(conn, statements.claim_step_and_instance, *params)
            if not rows:
                return None
            row = rows[0]
            (step,) = _claimed([row[:STEP_WIDTH]])
            if row["version"] is None:
                return ClaimedStepAndInstance(step)
            record = record_from_row(tuple(row)[STEP_WIDTH : STEP_WIDTH + sql.RECORD_WIDTH])
            if row["version"] == row["seen_version"]:
                checkpoints = convert.checkpoints_from(row["keys"], row["payloads"])
            else:
                # Claimed a version newer than the statement's snapshot: read it again.
                found = await conn.fetch(statements.checkpoints_of, [ref.instance_id])
                checkpoints = {step_key: payload for _, step_key, payload in found}
            claim = Claim(LoadedInstance(record, checkpoints), record.claim_token)
            return ClaimedStepAndInstance(step, claim)

        async def resolve(conn: Conn) -> Done[ClaimedStepAndInstance | None] | None:
            steps = await conn.fetch(self.statements.claimed_one, *key, owner, step_until)
            if not steps:
                return None
            (step,) = _claimed(steps)
            rows = await conn.fetch(statements.claimed_if_free, ref.instance_id, owner, claim_until)
            claim = await self._claim_read(conn, rows) if rows else None
            return Done(ClaimedStepAndInstance(step, claim))

        return await self._session.run("claim_step_and_instance", body, resolve=resolve)

    # -- CommitAndClaimNext: a chain's step checkpointed and the next one claimed --------

    async def commit_and_claim_next(
        self,
        claim: Claim,
        write: StepWrite,
        tickets: Sequence[StepTicket],
        next_claim: NextStepClaim,
    ) -> CommittedChain:
        """One statement; checked like ``PostgresBackend.commit_and_publish``."""
        instance_id, token = claim.instance.record.instance_id, claim.token
        convert.check_write(instance_id, write, tickets, self._max_payload)
        owner, now = next_claim.owner, next_claim.now
        step_until, claim_until = now + next_claim.step_ttl, now + next_claim.claim_ttl
        commit_id = secrets.randbits(63)  # says for certain whether a lost reply applied
        main, statements = self._main, self._advance
        params = convert.commit_params(
            instance_id, token, write, commit_id, main.channel, main.done_channel
        )
        params += [*ticket_columns(tickets), owner, step_until, claim_until]

        def handed(step_token: int, instance_token: int) -> ClaimedStepAndInstance:
            step = ClaimedStep(tickets[0], step_token)
            chained = chained_claim(claim, write, owner, instance_token, claim_until)
            return ClaimedStepAndInstance(step, chained)

        async def body(conn: Conn, attempt: Attempt) -> CommittedChain:
            try:
                rows = await attempt.write(conn, statements.commit_and_claim_next, *params)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "sayiir_checkpoints_pkey":
                    raise
                raise LeaseLostError(
                    f"instance {instance_id!r}: a step is already checkpointed"
                ) from None
            if not rows:
                current = await conn.fetchval(main.select_token, instance_id)
                raise (
                    missing(instance_id)
                    if current is None
                    else convert.lease_lost(instance_id, token, current)
                )
            row = rows[0]
            request = convert.control_request(row["control_request"])
            if not row["handed_over"]:
                return CommittedChain(request, None)
            if row["step_token"] is None:  # a concurrent publish of the step won its row
                await conn.execute(statements.let_go, instance_id, row["instance_token"], owner)
                return CommittedChain(request, None)
            return CommittedChain(request, handed(row["step_token"], row["instance_token"]))

        async def resolve(conn: Conn) -> Done[CommittedChain] | None:
            row = await conn.fetchrow(statements.chain_outcome, instance_id)
            if row is None:
                raise missing(instance_id)
            if row["last_commit"] != commit_id:
                if row["claim_token"] != token or row["owner"] is None:
                    raise convert.lease_lost(instance_id, token, row["claim_token"])
                return None  # not applied, and the claim is still ours: send it again
            request = convert.control_request(row["control_request"])
            kept = (row["owner"], row["lease_until"]) == (owner, claim_until)
            if not kept or row["claim_token"] != token + 1:
                return Done(CommittedChain(request, None))
            key = (instance_id, tickets[0].ref.step_key, tickets[0].ref.attempt)
            steps = await conn.fetch(self.statements.claimed_one, *key, owner, step_until)
            if not steps:
                await conn.execute(statements.let_go, instance_id, token + 1, owner)
                return Done(CommittedChain(request, None))
            return Done(CommittedChain(request, handed(steps[0]["claim_token"], token + 1)))

        return await self._session.run("commit_and_claim_next", body, resolve=resolve)

    async def _claim_read(self, conn: Conn, rows: Sequence[Any]) -> Claim:
        checkpoint_rows = await conn.fetch(self._advance.checkpoints_of, [rows[0]["instance_id"]])
        (claim,) = convert.claims_from(rows, checkpoint_rows)
        return claim

    @property
    def commit_and_publish_statement(self) -> str:
        """The commit statement that also queues tickets (``PostgresBackend`` sends it)."""
        return self._advance.commit_and_publish


def ticket_columns(tickets: Sequence[StepTicket]) -> list[list[Any]]:
    return [
        [t.ref.instance_id for t in tickets],
        [t.ref.step_key for t in tickets],
        [t.ref.attempt for t in tickets],
        [t.workflow_id for t in tickets],
        [t.definition_hash for t in tickets],
        [t.input for t in tickets],
        [t.priority for t in tickets],
        [t.now for t in tickets],
    ]


def _claimed(rows: Sequence[Any]) -> list[ClaimedStep]:
    claimed = [
        ClaimedStep(
            StepTicket(StepRef(row[0], row[1], row[2]), row[3], row[4], row[5], row[6], row[7]),
            row[8],
            row[9],
        )
        for row in rows
    ]
    # RETURNING gives no order: sort like the claim query does.
    return sorted(claimed, key=lambda c: (c.ticket.priority, c.ticket.now))


def _result_from(row: Any) -> StepResult:
    worker_id, started_at, finished_at, output, failure = row[3:8]
    return step_result(worker_id, started_at, finished_at, output, failure)


class StepQueueByDelegation:
    """``PostgresBackend``'s ``StepQueue`` and ``AdvanceQueue`` methods, each handed to
    its ``PostgresStepQueue`` (kept apart so the backend's module stays about instances)."""

    _steps: PostgresStepQueue

    async def publish_steps(self, tickets: Sequence[StepTicket]) -> None:
        await self._steps.publish_steps(tickets)

    async def claim_steps(
        self,
        owner: str,
        workflows: Mapping[str, str],
        ttl: float,
        now: float,
        limit: int,
        *,
        instances: Collection[str] | None = None,
    ) -> list[ClaimedStep]:
        return await self._steps.claim_steps(owner, workflows, ttl, now, limit, instances=instances)

    async def claim_step(
        self, ref: StepRef, owner: str, ttl: float, now: float
    ) -> ClaimedStep | None:
        return await self._steps.claim_step(ref, owner, ttl, now)

    async def renew_step(self, ref: StepRef, token: int, ttl: float, now: float) -> bool:
        return await self._steps.renew_step(ref, token, ttl, now)

    async def finish_step(self, ref: StepRef, token: int, result: StepResult) -> bool:
        return await self._steps.finish_step(ref, token, result)

    async def step_results(self, refs: Sequence[StepRef]) -> dict[StepRef, StepResult]:
        return await self._steps.step_results(refs)

    async def wait_for_step_results(self, max_wait: float) -> None:
        await self._steps.wait_for_step_results(max_wait)

    # AdvanceQueue, but for commit_and_publish (the backend's: it needs its fenced commit)

    async def claim_if_free(
        self,
        instance_id: str,
        owner: str,
        definitions: Mapping[str, str],
        ttl: float,
        now: float,
    ) -> Claim | None:
        return await self._steps.claim_if_free(instance_id, owner, definitions, ttl, now)

    async def claim_step_and_instance(
        self,
        ref: StepRef,
        owner: str,
        step_ttl: float,
        definitions: Mapping[str, str],
        claim_ttl: float,
        now: float,
    ) -> ClaimedStepAndInstance | None:
        return await self._steps.claim_step_and_instance(
            ref, owner, step_ttl, definitions, claim_ttl, now
        )

    async def commit_and_claim_next(
        self,
        claim: Claim,
        write: StepWrite,
        tickets: Sequence[StepTicket],
        next_claim: NextStepClaim,
    ) -> CommittedChain:
        return await self._steps.commit_and_claim_next(claim, write, tickets, next_claim)
