"""A chain's steps run one after the other by one process, one write per step.

A caller that will run a chain's next step itself (the Celery bridge's continuation)
passes ``Dispatcher.run_step`` a ``ChainLink``. Before the advance after the step
commits, ``link.wants(ticket)`` is asked about the one step that advance is about to
send. On yes, when the backend has ``CommitAndClaimNext`` and the advance's releasing
write is its only one, that commit also claims the step and keeps the instance for
this process, exactly as ``claim_step_and_instance`` would take them, fenced the same
way (``ChainCommit``). The step is not sent; ``link.next`` holds both claims, and the
caller runs it with ``run_step(..., claimed=link.next)``, which claims nothing. So a
continued step costs its one commit instead of a claim and a commit.

A process that dies holding them leaves what a message's receiver that died leaves:
the step's lease runs out, the instance's claim too (it is no longer than the step's),
and the sweeper sends the step again once the instance's re-dispatch time comes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sayiir_core.backends.base import Claim, ControlRequest, StepWrite
from sayiir_core.backends.step_queue import (
    ClaimedStepAndInstance,
    CommitAndClaimNext,
    NextStepClaim,
    StepTicket,
)
from sayiir_core.status import Status


class ChainLink:
    """Between one step's run and the caller that may run the next step itself.

    ``wants``: asked, before the commit, about the single step the advance would send;
    true means the caller runs it next. ``next``: set when the commit claimed it (and
    its instance) for this process; ``None`` when the step went out as a message.
    """

    __slots__ = ("next", "wants")

    def __init__(self, wants: Callable[[StepTicket], bool]) -> None:
        self.wants = wants
        self.next: ClaimedStepAndInstance | None = None


class ChainCommit:
    """The releasing write of one advance, handing its one next step over when it may.

    Used for the first write the advance sends only: the instance claim handed over is
    built from the advance's claim and that write (``chained_claim``).
    """

    __slots__ = ("_backend", "_claim", "_link", "_next_claim")

    def __init__(
        self,
        backend: CommitAndClaimNext,
        claim: Claim,
        link: ChainLink,
        next_claim: Callable[[], NextStepClaim],
    ) -> None:
        self._backend = backend
        self._claim = claim
        self._link = link
        self._next_claim = next_claim

    def hands_over(
        self, write: StepWrite, tickets: Sequence[StepTicket], to_send: Sequence[StepTicket]
    ) -> bool:
        """Whether to ask the backend to: a releasing write that leaves the instance
        running, with one step to send, which the caller wants (the backend checks the
        rest: no request, no other step out)."""
        if not write.release or write.status.is_terminal or write.status is Status.PAUSED:
            return False
        return len(tickets) == 1 and len(to_send) == 1 and self._link.wants(tickets[0])

    async def commit(
        self, write: StepWrite, tickets: Sequence[StepTicket]
    ) -> ControlRequest | None:
        done = await self._backend.commit_and_claim_next(
            self._claim, write, tickets, self._next_claim()
        )
        self._link.next = done.next
        return done.request
