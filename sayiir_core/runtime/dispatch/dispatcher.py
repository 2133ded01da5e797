"""``Dispatcher``: advances instances whose steps run in other processes.

See the package docstring (``sayiir_core.runtime.dispatch``) for the three operations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from sayiir_core.backends.base import (
    Backend,
    Claim,
)
from sayiir_core.backends.step_queue import (
    ClaimedStep,
    ClaimedStepAndInstance,
    CommitAndClaimNext,
    NextStepClaim,
    StepAndInstanceClaim,
    StepQueue,
    StepRef,
    StepResult,
    StepTicket,
    advance_queue,
)
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.errors import LeaseLostError, PayloadTooLargeError
from sayiir_core.machine.keys import task_id_of_key
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.runtime.convert import snapshot_from
from sayiir_core.runtime.dispatch.chain import ChainCommit, ChainLink
from sayiir_core.runtime.dispatch.executor import DispatchingExecutor
from sayiir_core.runtime.dispatch.held import HOLD_WHILE_RUNNING, HeldClaim, release_write
from sayiir_core.runtime.dispatch.lease import StepLease
from sayiir_core.runtime.dispatch.outcomes import dispatched_in, dispatched_steps, step_request
from sayiir_core.runtime.dispatch.rounds import (
    OwnOutcome,
    Round,
    StepRun,
    control_event,
    resumed,
)
from sayiir_core.runtime.dispatch.sink import BufferingSink, RedoUnbufferedError
from sayiir_core.runtime.durable_runner import ClaimedSink, default_owner_id
from sayiir_core.runtime.executor import Executor, TaskFailure, TaskOutcome
from sayiir_core.runtime.runner import InstanceRunner, ParkPolicy
from sayiir_core.runtime.step_outcomes import outcome_of, step_result
from sayiir_core.telemetry.instances import count_step_takeovers
from sayiir_core.telemetry.logs import InstanceLogger
from sayiir_core.telemetry.propagation import attached, stored_parent
from sayiir_core.telemetry.steps import current_worker_id
from sayiir_core.workflow.workflow import Workflow

logger = logging.getLogger("sayiir.dispatch")

SendSteps = Callable[[Sequence[StepTicket], int], Awaitable[None]]
"""Hands published steps to the system that runs them, with the claim token of the
advance that sends them (for logs); raising means "not sent"."""

# Nothing waits in process: delays, signal waits and every retry back-off park.
DISPATCH_PARK = ParkPolicy(delays=True, signals=True, retries_longer_than=0.0)
RENEW_AT_MOST_EVERY = 2.0
# An advance that keeps finding new outcomes hands over to the next one after this many.
_MAX_ROUNDS = 50


class Dispatcher:
    """Advances instances whose steps run elsewhere; see the module docstring.

    ``backend`` must offer the step queue (PostgreSQL, ``InMemoryBackend``); ``executor``
    runs the steps this process receives (``run_step``); ``send`` hands new steps to
    the system that delivers them. ``step_lease``: a running step's lease, renewed
    while it runs; a worker that dies loses its steps after this long.
    ``redispatch_after``: how long an instance waits for outstanding steps before the
    sweeper sends them again (default: ``step_lease``). ``claim_ttl``: the lease of an
    advance, which takes a few round trips. ``hold_claim``: how long a step that took
    its instance with it (``held.py``) may keep it while it runs (at most a third of
    that claim's lease, the shorter of ``claim_ttl`` and ``step_lease``); 0 takes the
    step alone.
    """

    def __init__(
        self,
        backend: Backend,
        workflows: Iterable[Workflow],
        send: SendSteps,
        *,
        executor: Executor,
        codec: Codec = DEFAULT_CODEC,
        owner_id: str | None = None,
        step_lease: float = 60.0,
        redispatch_after: float | None = None,
        claim_ttl: float = 30.0,
        hold_claim: float = HOLD_WHILE_RUNNING,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(backend, StepQueue):
            raise TypeError(
                f"{type(backend).__name__} has no step queue; dispatching steps to other "
                "processes needs one (PostgresBackend, or InMemoryBackend in one process)"
            )
        if step_lease <= 0 or claim_ttl <= 0:
            raise ValueError("step_lease and claim_ttl must be positive")
        if hold_claim < 0:
            raise ValueError("hold_claim must not be negative")
        self.backend = backend
        self._queue: StepQueue = backend
        self._advancing = advance_queue(backend)
        self.registry = {workflow.workflow_id: workflow for workflow in workflows}
        self.definitions = {wf_id: wf.definition_hash for wf_id, wf in self.registry.items()}
        self._send = send
        self.executor = executor
        self.codec = codec
        self.owner_id = owner_id or default_owner_id()
        self.step_lease = step_lease
        self.redispatch_after = redispatch_after if redispatch_after is not None else step_lease
        self.claim_ttl = claim_ttl
        self._clock = clock
        # A worker that dies holding the instance with its step delays nothing: that
        # claim ends no later than the step's own lease, after which the step is sent again.
        self._held_lease = min(claim_ttl, step_lease)
        self._hold = min(hold_claim, self._held_lease / 3)
        # Looked up once: a runtime protocol check costs more than the rest of a claim's
        # Python side, on every step.
        self._claims_both: StepAndInstanceClaim | None = None
        if isinstance(backend, StepAndInstanceClaim) and self._hold > 0:
            self._claims_both = backend
        self._chains: CommitAndClaimNext | None = None
        if isinstance(backend, CommitAndClaimNext) and self._hold > 0:
            self._chains = backend
        self._opened = False

    async def open(self) -> None:
        if not self._opened:
            await self.backend.open()
            self._opened = True

    # -- the receiving side ----------------------------------------------------------

    async def run_step(
        self,
        ref: StepRef,
        workflow_id: str,
        definition_hash: str,
        *,
        claimed: ClaimedStepAndInstance | None = None,
        chain: ChainLink | None = None,
    ) -> StepRun:
        """Run the step a message names, then move its instance on.

        ``chain``: the caller may run the instance's next step itself (``chain.py``).
        ``claimed``: that next step, already claimed by the advance before it
        (``ChainLink.next``): it is not claimed again.
        """
        await self.open()
        workflow = self.registry.get(workflow_id)
        if workflow is None or workflow.definition_hash != definition_hash:
            _log(ref).warning(
                "[%s] step %r: workflow %r with definition %s is not registered here; "
                "message dropped (the sweeper sends it again)",
                ref.instance_id,
                ref.step_key,
                workflow_id,
                definition_hash[:12],
            )
            return StepRun.UNKNOWN
        if claimed is None:
            claimed = await self._claim_step(ref)
        if claimed is None:
            _log(ref).info(
                "[%s] step %r attempt %d: message dropped (running elsewhere, finished, "
                "withdrawn, or the instance is finished)",
                ref.instance_id,
                ref.step_key,
                ref.attempt,
            )
            return StepRun.DROPPED
        step = claimed.step
        count_step_takeovers([step])
        held = HeldClaim(self.backend, claimed.instance, self._hold, self._clock)
        # The lease is kept until the outcome is checkpointed or stored, not only while the
        # function runs: an advance slowed down past the lease would otherwise let the
        # sweeper's re-dispatch run the step a second time. The step runs in this task
        # (no task of its own: one less per message); a refused renewal cancels it here.
        lease = StepLease(
            self._queue,
            step,
            lease=self.step_lease,
            every=min(self.step_lease / 3, RENEW_AT_MOST_EVERY),
            clock=self._clock,
        )
        try:
            outcome = await self._outcome(step, workflow, lease, ref)
            if outcome is None:
                return StepRun.LOST
            own = OwnOutcome(ref, step.token, outcome)
            await self._advance(ref.instance_id, own=own, claim=await held.take(), chain=chain)
            return StepRun.RAN
        finally:
            lease.stop()
            await held.give_back()

    async def _claim_step(self, ref: StepRef) -> ClaimedStepAndInstance | None:
        """The step, and its instance with it when that blocks nobody (``held.py``)."""
        now = self._clock()
        if self._claims_both is not None:
            return await self._claims_both.claim_step_and_instance(
                ref, self.owner_id, self.step_lease, self.definitions, self._held_lease, now
            )
        step = await self._queue.claim_step(ref, self.owner_id, self.step_lease, now)
        return None if step is None else ClaimedStepAndInstance(step)

    async def _execute(self, claimed: ClaimedStep, workflow: Workflow) -> TaskOutcome:
        request = step_request(claimed, workflow, self.codec)
        if isinstance(request, TaskFailure):
            return request
        # Continue the submitter's trace (read from history only while tracing is on).
        parent = await stored_parent(self.backend, request.instance_id)
        if parent is None:
            return await self.executor.execute(request)
        worker = current_worker_id.set(self.owner_id)
        try:
            with attached(parent):
                return await self.executor.execute(request)
        finally:
            current_worker_id.reset(worker)

    async def _outcome(
        self, claimed: ClaimedStep, workflow: Workflow, lease: StepLease, ref: StepRef
    ) -> TaskOutcome | None:
        """The step's outcome; ``None`` if its lease was lost while it ran."""
        try:
            return await self._execute(claimed, workflow)
        except asyncio.CancelledError:
            if not lease.stopped_the_step or lease.uncancel() > 0:
                raise  # cancelled from elsewhere (too)
            _log(ref).info("[%s] step %r: lease lost while running", ref.instance_id, ref)
            return None
        finally:
            lease.step_over()

    # -- advancing ---------------------------------------------------------------------

    async def advance(self, instance_id: str, *, resend: bool = False) -> None:
        """Move the instance on now if nobody holds it (after a submit, signal, unpause).

        ``resend``: send the steps still out again too (after an unpause: a pause asked
        during an advance leaves the steps it queued unsent)."""
        await self.open()
        await self._advance(instance_id, resend=resend)

    async def sweep(self, limit: int = 20) -> int:
        """Advance up to ``limit`` instances nobody will wake; returns how many were claimed."""
        await self.open()
        claims = await self.backend.claim_next(
            self.owner_id, self.definitions, self.claim_ttl, self._clock(), limit
        )
        results = await asyncio.gather(
            *(
                self._advance(claim.instance.record.instance_id, claim=claim, resend=True)
                for claim in claims
            ),
            return_exceptions=True,
        )
        for claim, result in zip(claims, results, strict=True):
            if isinstance(result, BaseException):
                record = claim.instance.record
                InstanceLogger(logger, record.instance_id, workflow_id=record.workflow_id).error(
                    "[%s] sweep: advance failed; the instance is retried once its lease ends",
                    record.instance_id,
                    exc_info=result,
                )
        return len(claims)

    async def _advance(
        self,
        instance_id: str,
        *,
        own: OwnOutcome | None = None,
        claim: Claim | None = None,
        resend: bool = False,
        chain: ChainLink | None = None,
    ) -> None:
        stored = own is None
        for _ in range(_MAX_ROUNDS):
            if claim is None:
                claim = await self._advancing.claim_if_free(
                    instance_id, self.owner_id, self.definitions, self.claim_ttl, self._clock()
                )
                if claim is None:
                    if stored:
                        return
                    assert own is not None
                    await self._store(own)
                    stored = True
                    # Look once more: if the holder released before the outcome was
                    # stored it may not have seen it; if it still holds the claim, it
                    # looks after releasing and finds it.
                    continue
            done = await self._round(claim, None if stored else own, resend, chain)
            claim, resend = None, done.held_back
            if not stored and own is not None and own.ref in done.consumed:
                stored = True
            if done.lost:
                continue  # taken over: store our outcome (next pass) for the new holder
            if not stored:
                assert own is not None
                await self._store(own)  # not asked for now (paused, say): keep it for later
                stored = True
            if not done.look_again:
                return
        InstanceLogger(logger, instance_id).info(
            "[%s] still busy after %d advances; the sweeper goes on", instance_id, _MAX_ROUNDS
        )

    async def _store(self, own: OwnOutcome) -> None:
        result = step_result(own.outcome, self.owner_id)
        try:
            stored = await self._queue.finish_step(own.ref, own.token, result)
        except PayloadTooLargeError as error:
            info = ErrorInfo("PayloadTooLargeError", str(error), own.ref.step_key, "serialization")
            too_large = StepResult(self.owner_id, result.started_at, result.finished_at, error=info)
            stored = await self._queue.finish_step(own.ref, own.token, too_large)
        if not stored:
            _log(own.ref).info(
                "[%s] step %r: taken over or withdrawn meanwhile; outcome discarded",
                own.ref.instance_id,
                own.ref.step_key,
            )

    async def _round(
        self, claim: Claim, own: OwnOutcome | None, resend: bool, chain: ChainLink | None
    ) -> Round:
        """One advance under ``claim``: feed outcomes, then commit, publish and release in
        one write (``AdvanceQueue.commit_and_publish``), then send.

        An input, output or checkpoint over the backend's size limit is refused before
        anything is written; the advance is then done again one write per transition,
        where the runner turns a too-large output into a failed step.
        """
        try:
            return await self._round_once(claim, own, resend, chain, buffered=True)
        except RedoUnbufferedError:
            return await self._round_once(claim, own, resend, None, buffered=False)

    async def _round_once(
        self,
        claim: Claim,
        own: OwnOutcome | None,
        resend: bool,
        chain: ChainLink | None,
        *,
        buffered: bool,
    ) -> Round:
        record = claim.instance.record
        instance_id = record.instance_id
        workflow = self.registry[record.workflow_id]
        before = dispatched_steps(record)
        known: dict[StepRef, TaskOutcome] = {}
        if own is not None:
            known[own.ref] = own.outcome
        others = [
            StepRef(instance_id, key, attempt)
            for key, attempt in before.items()
            if own is None or key != own.ref.step_key
        ]
        if others:
            for ref, result in (await self._queue.step_results(others)).items():
                known[ref] = outcome_of(result, self.codec)
        executor = DispatchingExecutor(
            self._queue,
            record.definition_hash,
            codec=self.codec,
            known=known,
            outstanding=before,
            resend=resend,
            check_at=self._clock() + self.redispatch_after,
            clock=self._clock,
            defer_publishing=buffered,
        )
        claimed = ClaimedSink(self.backend, instance_id, claim.token, None)
        sink = BufferingSink(
            claimed,
            (instance_id, claim.token),
            self._advancing,
            executor,
            buffered=buffered,
            chain=self._chain_commit(claim, chain),
        )
        runner = InstanceRunner(
            workflow,
            instance_id,
            resumed(snapshot_from(claim.instance, self.codec), record, before),
            executor=executor,
            codec=self.codec,
            sink=sink,
            park=DISPATCH_PARK,
            worker_id=self.owner_id,
            clock=self._clock,
        )
        try:
            await runner.run(control_event(record))
            if not sink.released:
                await sink.write(release_write(sink.last_write, record, self._clock()))
        except LeaseLostError:
            InstanceLogger(logger, instance_id, workflow_id=record.workflow_id).info(
                "[%s] advance: claim taken over; leaving it to the new holder", instance_id
            )
            return Round(lost=True, consumed=frozenset(executor.consumed))
        consumed = frozenset(executor.consumed)
        if chain is not None and chain.next is not None:
            # Its step goes on here, and the instance stays with it: nothing to send, and
            # outcomes that arrived meanwhile are for the advance after that step.
            return Round(consumed=consumed)
        final = sink.last_write
        # A cancel or pause asked for while the claim was held is honoured at once (one
        # this advance started with has been fed to it already). The steps this advance
        # queued are not sent before that: the advance honouring the request sends them
        # if the instance still runs them (a paused one's on unpause, with ``resend``).
        asked = sink.request_at_release not in (None, record.control_request)
        if asked and final is not None and not final.status.is_terminal:
            return Round(consumed=consumed, look_again=True, held_back=bool(executor.to_send))
        await self._send_steps(instance_id, executor.to_send, claim.token)
        if final is None or final.status.is_terminal:
            return Round(consumed=consumed)
        # Steps dispatched before this advance may have finished while it held the claim;
        # their workers saw the claim and left the outcome for this advance to find.
        after = dispatched_in(final.control)
        waiting = [
            StepRef(instance_id, key, attempt)
            for key, attempt in before.items()
            if after.get(key) == attempt and StepRef(instance_id, key, attempt) not in consumed
        ]
        arrived = bool(waiting) and bool(await self._queue.step_results(waiting))
        return Round(consumed=consumed, look_again=arrived)

    def _chain_commit(self, claim: Claim, chain: ChainLink | None) -> ChainCommit | None:
        if chain is None or self._chains is None:
            return None

        def next_claim() -> NextStepClaim:
            return NextStepClaim(self.owner_id, self.step_lease, self._held_lease, self._clock())

        return ChainCommit(self._chains, claim, chain, next_claim)

    async def _send_steps(
        self, instance_id: str, tickets: Sequence[StepTicket], token: int
    ) -> None:
        if not tickets:
            return
        try:
            await self._send(tickets, token)
        except Exception:
            InstanceLogger(logger, instance_id).warning(
                "[%s] could not send %d step(s); they are sent again in %.0f s",
                instance_id,
                len(tickets),
                self.redispatch_after,
                exc_info=True,
            )


def _log(ref: StepRef) -> InstanceLogger:
    """The dispatcher's logger with the step's instance and task ids on each record."""
    return InstanceLogger(logger, ref.instance_id, task_id=task_id_of_key(ref.step_key))
