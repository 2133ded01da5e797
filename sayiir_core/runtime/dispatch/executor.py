"""The executor of one advance: publishes steps to the step queue instead of running them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from sayiir_core.backends.step_queue import StepQueue, StepRef, StepTicket
from sayiir_core.codec import Codec
from sayiir_core.errors import PayloadTooLargeError, SerializationError
from sayiir_core.runtime.dispatch.outcomes import failure
from sayiir_core.runtime.executor import (
    StepDispatched,
    TaskOutcome,
    TaskRequest,
    encode_or_raise,
)
from sayiir_core.runtime.runner import DEFAULT_PRIORITY


class DispatchingExecutor:
    """The executor of one advance: publishes steps instead of running them.

    ``known`` holds outcomes already in hand (stored by the workers that ran them, or
    the one this process just ran); they are returned at once and recorded in
    ``consumed``. Any other step is published to the step queue, collected in
    ``to_send`` if it is new (not in ``outstanding``, the steps dispatched by earlier
    advances) or if ``resend``, and reported to the runner as ``StepDispatched``.
    With ``defer_publishing``, it is not published here but handed over by
    ``take_unpublished``, for the advance's write to queue it in the same transaction.
    """

    def __init__(
        self,
        queue: StepQueue,
        definition_hash: str,
        *,
        codec: Codec,
        known: Mapping[StepRef, TaskOutcome],
        outstanding: Mapping[str, int],
        resend: bool,
        check_at: float,
        clock: Callable[[], float] = time.time,
        defer_publishing: bool = False,
    ) -> None:
        self._queue = queue
        self._definition_hash = definition_hash
        self._codec = codec
        self._known = dict(known)
        self._outstanding = outstanding
        self._resend = resend
        self._check_at = check_at
        self._clock = clock
        self._defer = defer_publishing
        self._unpublished: list[StepTicket] = []
        self.consumed: set[StepRef] = set()
        self.to_send: list[StepTicket] = []
        self._pending: list[StepTicket] = []
        self._publishing: asyncio.Future[dict[StepRef, PayloadTooLargeError]] | None = None

    def close(self) -> None:
        """Nothing to release: this executor runs nothing."""

    async def execute(self, request: TaskRequest) -> TaskOutcome:
        ref = StepRef(request.instance_id, request.key, request.attempt)
        known = self._known.pop(ref, None)
        if known is not None:
            self.consumed.add(ref)
            return known
        now = self._clock()
        try:
            payload = encode_or_raise(self._codec, request.input, f"input of step {request.key!r}")
        except SerializationError as error:
            # Only this process holds the value, and it runs no step: the step fails.
            return failure(request.key, "SerializationError", str(error), now)
        ticket = StepTicket(
            ref=ref,
            workflow_id=request.workflow_id,
            definition_hash=self._definition_hash,
            input=payload,
            priority=request.task.metadata.priority or DEFAULT_PRIORITY,
            now=now,
        )
        if self._resend or self._outstanding.get(request.key) != request.attempt:
            if self._defer:
                self._unpublished.append(ticket)
                self.to_send.append(ticket)
                raise StepDispatched(request.key, self._check_at)
            refused = await self._publish(ticket)
            if refused is not None:
                return failure(request.key, "PayloadTooLargeError", str(refused), now)
            self.to_send.append(ticket)
        raise StepDispatched(request.key, self._check_at)

    def take_unpublished(self) -> list[StepTicket]:
        """With ``defer_publishing``: the tickets to publish with the next write."""
        tickets, self._unpublished = self._unpublished, []
        return tickets

    async def _publish(self, ticket: StepTicket) -> PayloadTooLargeError | None:
        """Publish with the other tickets of this loop iteration, in one write."""
        self._pending.append(ticket)
        if self._publishing is None:
            self._publishing = asyncio.ensure_future(self._flush())
        # Shielded: one step being cancelled must not cancel its siblings' write.
        refused = await asyncio.shield(self._publishing)
        return refused.get(ticket.ref)

    async def _flush(self) -> dict[StepRef, PayloadTooLargeError]:
        await asyncio.sleep(0)  # the runner starts a batch in one go: let it all queue up
        batch, self._pending, self._publishing = self._pending, [], None
        try:
            await self._queue.publish_steps(batch)
            return {}
        except PayloadTooLargeError:
            pass
        # One input is too large: publish one by one so only that step fails.
        refused: dict[StepRef, PayloadTooLargeError] = {}
        for ticket in batch:
            try:
                await self._queue.publish_steps([ticket])
            except PayloadTooLargeError as error:
                refused[ticket.ref] = error
        return refused
