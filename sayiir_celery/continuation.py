"""Chain continuation: a step task runs its instance's next sequential step itself.

Without it every step of a chain is one Celery message: published by the task that ran
the step before, fetched by a worker, handed to a pool process, acknowledged. With it,
the task that has just checkpointed step N looks at what that advance sent. When it is
exactly one step, of the same instance, routed to the same queue (same routing key
and priority) as step N, and the task has run for less than its budget
(``SayiirCelery(continue_for=...)``), the task claims that step itself and runs it,
then looks again. Anything else (fork branches, ``map`` items, another queue, the
budget spent, a retry, a worker shutting down) is published as messages, as without
continuation; so is a delay, timer or back-off, which the advance never sends at all
(the sweeper does once it comes due).

Nothing about durability changes: the step was queued in the database by the advance
that checkpointed step N, exactly as for a message, and claimed with the same fenced
claim a message's delivery makes, under its own lease, with its own workflow and step
spans. On a backend with ``CommitAndClaimNext`` (PostgreSQL, in memory) that claim is
made by the very commit that checkpoints step N (``runtime/dispatch/chain.py``): the
checks above are made just before that commit (``wants``), and a continued step costs
one write. Elsewhere the step is claimed once that commit is done (``next_step``). A
task killed in the middle leaves a step that nobody was sent: its lease runs out, its
instance's re-dispatch time comes, the sweeper sends it, as for a lost message. A
cancel or pause asked while a step runs is seen by the advance after it, which then
neither sends nor claims anything, so the chain stops at that step boundary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from sayiir_celery.messages import StepMessage
from sayiir_core.backends.step_queue import ClaimedStepAndInstance, StepTicket
from sayiir_core.runtime.dispatch import Dispatcher, StepRun
from sayiir_core.runtime.dispatch.chain import ChainLink
from sayiir_core.telemetry.advances import run_step_traced

Outgoing = tuple[StepMessage, dict[str, Any]]
"""One message to publish: the step it names and its ``send_task`` options."""


class Continuation:
    """Decides, after each step a task ran, whether the task runs the next one too.

    ``budget``: seconds from the task's start during which it may begin another step
    (0: never, every step is its own message). ``options_of``: the ``send_task``
    options of a step's message (its route), looked up when needed so that it follows
    the bridge's router as it is then.
    """

    __slots__ = ("_clock", "_options_of", "budget")

    def __init__(
        self,
        budget: float,
        options_of: Callable[[StepMessage], dict[str, Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget < 0:
            raise ValueError(f"continue_for must be 0 or more seconds, not {budget!r}")
        self.budget = budget
        self._options_of = options_of
        self._clock = clock

    def deadline(self) -> float:
        """When a task starting now must stop beginning steps (by ``clock``)."""
        return self._clock() + self.budget

    async def run_steps(
        self, dispatcher: Dispatcher, step: StepMessage, outbox: list[Outgoing]
    ) -> StepRun:
        """Run ``step``, then the chain's next steps while ``wants`` allows; returns
        what became of ``step`` itself. ``outbox`` collects what the advances send
        (the caller publishes what is left in it)."""
        deadline = self.deadline()
        first: StepRun | None = None
        claimed: ClaimedStepAndInstance | None = None  # the next step, claimed already
        while True:
            link = ChainLink(partial(self.wants, step, deadline)) if self.budget > 0 else None
            try:
                # A workflow span per step, whether it came in a message or not.
                outcome = await run_step_traced(
                    dispatcher,
                    step.ref,
                    step.workflow_id,
                    step.definition_hash,
                    claimed=claimed,
                    chain=link,
                )
            except BaseException:
                if first is not None:
                    # Send its message after all: if the step was not claimed, it runs
                    # from there; if it was, the copy is dropped, as any duplicate is.
                    outbox.append((step, self._options_of(step)))
                raise
            first = outcome if first is None else first
            if outcome is not StepRun.RAN:
                return first
            if link is not None and link.next is not None:
                claimed = link.next
                step = _message_of(claimed.step.ticket)
                continue
            following = self.next_step(step, outbox, deadline)
            if following is None:
                return first
            step, claimed = following[0], None

    def wants(self, ran: StepMessage, deadline: float, ticket: StepTicket) -> bool:
        """Whether the task that ran ``ran`` runs ``ticket``'s step next, the one step
        its advance is about to send (asked before that advance's commit)."""
        step = _message_of(ticket)
        return self._goes_on(ran, step, self._options_of(step), deadline)

    def next_step(
        self, ran: StepMessage, outbox: list[Outgoing], deadline: float
    ) -> Outgoing | None:
        """The step to run next in the same task (with the options of its message),
        taken out of ``outbox``; or ``None``, and ``outbox`` left for publishing, when
        the chain goes on through the broker.

        ``ran``: the step the task just ran and checkpointed; ``outbox``: the messages
        that step's advance sent.
        """
        if len(outbox) != 1 or not self._goes_on(ran, *outbox[0], deadline):
            return None
        following = outbox[0]
        outbox.clear()
        return following

    def _goes_on(
        self, ran: StepMessage, step: StepMessage, options: dict[str, Any], deadline: float
    ) -> bool:
        if self._clock() >= deadline or _worker_stopping():
            return False
        if step.instance_id != ran.instance_id or step.step_key == ran.step_key:
            return False  # a retry of the same step: as a message, like any other retry
        # Another queue, routing key or priority: its workers run it.
        return options == self._options_of(ran)


def _message_of(ticket: StepTicket) -> StepMessage:
    ref = ticket.ref
    return StepMessage(
        ref.instance_id, ref.step_key, ref.attempt, ticket.workflow_id, ticket.definition_hash
    )


def _worker_stopping() -> bool:
    """A warm or cold shutdown of this worker has begun: hand the chain to the broker
    rather than keep the shutdown waiting (set in the worker's main process only)."""
    from celery.worker import state

    # An exit code, 0 included, once set; None (or False) before (Celery's own test).
    return any(flag not in (None, False) for flag in (state.should_stop, state.should_terminate))
