"""The sink of a dispatched advance: the runner's writes go out as one.

See ``BufferingSink``; ``Dispatcher`` (``dispatcher.py``) uses it for every advance.
"""

from __future__ import annotations

import dataclasses

from sayiir_core.backends.base import BufferedSignal, ControlRequest, StepWrite
from sayiir_core.backends.step_queue import AdvanceQueue
from sayiir_core.errors import PayloadTooLargeError
from sayiir_core.runtime.dispatch.chain import ChainCommit
from sayiir_core.runtime.dispatch.executor import DispatchingExecutor
from sayiir_core.runtime.durable_runner import ClaimedSink


class RedoUnbufferedError(Exception):
    """The combined write was refused for size before anything was sent."""


class BufferingSink:
    """The runner's sink for one advance: its writes go out as one.

    Every write up to the one that gives the claim up (parks, pauses, finishes) is held
    and merged into it; that one is sent with the steps the executor published meanwhile
    (``commit_and_publish``). So a step's checkpoint, the next steps and the release
    cost one round trip. A held write returns no control request: one asked for meanwhile
    is read back by the releasing write (``request_at_release``). With ``buffered``
    false, each write is a commit of its own (``ClaimedSink``). ``chain``: the
    releasing write, when it is the first one sent, may hand the next step over
    (``chain.py``).
    """

    def __init__(
        self,
        sink: ClaimedSink,
        claim: tuple[str, int],
        advancing: AdvanceQueue,
        executor: DispatchingExecutor,
        *,
        buffered: bool,
        chain: ChainCommit | None = None,
    ) -> None:
        self._sink = sink
        self._instance_id, self._token = claim
        self._advancing = advancing
        self._executor = executor
        self._buffered = buffered
        self._chain = chain if buffered else None  # for the first write sent only
        self._held: StepWrite | None = None
        self.released = False
        self.last_write: StepWrite | None = None
        self.request_at_release: ControlRequest | None = None

    async def write(self, write: StepWrite) -> ControlRequest | None:
        releases = write.release or write.status.is_terminal
        if not self._buffered:
            request = await self._sink.write(write)
        else:
            held = self._held
            if held is not None and None not in (held.consumed_signal, write.consumed_signal):
                await self._send(held)  # one consumed signal per commit
                self._held = None
            merged = write if self._held is None else merged_writes(self._held, write)
            if releases:
                self._held = None
                request = await self._send(merged)
            else:
                self._held, request = merged, None
        self.last_write = write
        if releases:
            self.released = True
            self.request_at_release = request
        return request

    async def _send(self, write: StepWrite) -> ControlRequest | None:
        tickets = self._executor.take_unpublished()
        chain, self._chain = self._chain, None
        try:
            if chain is not None and chain.hands_over(write, tickets, self._executor.to_send):
                return await chain.commit(write, tickets)
            return await self._advancing.commit_and_publish(
                self._instance_id, self._token, write, tickets
            )
        except PayloadTooLargeError as error:
            raise RedoUnbufferedError() from error

    async def next_signal(self, name: str) -> BufferedSignal | None:
        return await self._sink.next_signal(name)

    async def pending_control(self) -> ControlRequest | None:
        return await self._sink.pending_control()


def merged_writes(first: StepWrite, then: StepWrite) -> StepWrite:
    """One write doing what ``first`` and then ``then`` do."""
    return dataclasses.replace(
        then,
        checkpoints=[*first.checkpoints, *then.checkpoints],
        events=[*first.events, *then.events],
        consumed_signal=then.consumed_signal
        if then.consumed_signal is not None
        else first.consumed_signal,
        definition_hash=then.definition_hash or first.definition_hash,
        priority=then.priority if then.priority is not None else first.priority,
    )
