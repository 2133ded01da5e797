"""Drives one instance: feeds the machine, runs its commands, persists every step.

The runner owns the instance while it runs (a claim in durable mode). Each machine
transition is written through a ``StepSink`` as one ``StepWrite`` before the commands it
produced are acted on, so a crash at any point resumes from the last written step.

An executor may hand a step to another process instead of running it (it raises
``StepDispatched``): the runner then counts the step as busy, records it under
``control["dispatched"]`` and, once nothing runs here, parks the instance as
``waiting`` until the step's check time; a later run is fed its outcome.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sayiir_core.backends.base import ControlRequest, StepWrite
from sayiir_core.codec import Codec
from sayiir_core.errors import PayloadTooLargeError
from sayiir_core.machine import (
    AwaitSignal,
    CancelRequested,
    Command,
    ErrorInfo,
    Event,
    FrontierCache,
    PauseRequested,
    RunTask,
    SignalReceived,
    SignalTimedOut,
    Snapshot,
    TaskCompleted,
    TaskFailed,
    Tick,
    WakeAt,
    advance,
)
from sayiir_core.runtime.executor import (
    Executor,
    RunsStepsInline,
    StepDispatched,
    TaskFailure,
    TaskOutcome,
    TaskRequest,
    TaskSuccess,
)
from sayiir_core.runtime.history import delay_ids, transition_events
from sayiir_core.runtime.step_sink import StepSink, discards_writes
from sayiir_core.runtime.transitions import DEFAULT_PRIORITY as DEFAULT_PRIORITY
from sayiir_core.runtime.transitions import BusySteps, changed, event_key
from sayiir_core.runtime.transitions import next_priority as next_priority
from sayiir_core.status import Status
from sayiir_core.workflow.workflow import Workflow


@dataclass(frozen=True, slots=True)
class ParkPolicy:
    """When the runner stops and leaves a parked instance for later.

    ``delays``/``signals``: park on durable delays / signal waits instead of waiting in
    process. ``retries_longer_than``: park on a retry back-off longer than this many
    seconds (``None``: always wait in process).
    """

    delays: bool
    signals: bool
    retries_longer_than: float | None = None


IN_MEMORY_RUN = ParkPolicy(delays=False, signals=False)
DURABLE_RUN = ParkPolicy(delays=True, signals=True)


class InstanceRunner:
    """Runs one instance from ``snapshot`` until it finishes or parks.

    ``inline`` runs a step on this loop's own thread when it is all the run could do
    meanwhile (no other step, timer or signal wait): only for a loop nothing else uses
    (``caller_loop``), since such a step blocks it.
    """

    def __init__(
        self,
        workflow: Workflow,
        instance_id: str,
        snapshot: Snapshot,
        *,
        executor: Executor,
        codec: Codec,
        sink: StepSink,
        park: ParkPolicy,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
        stop: asyncio.Event | None = None,
        control_poll_interval: float = 1.0,
        inline: RunsStepsInline | None = None,
    ) -> None:
        self._workflow = workflow
        self._instance_id = instance_id
        self.snapshot = snapshot
        self._executor = executor
        self._codec = codec
        self._sink = sink
        self._discard_writes = discards_writes(sink)
        self._park = park
        self._worker_id = worker_id
        self._clock = clock
        self._stop = stop
        self._control_poll_interval = control_poll_interval
        self._inline = inline
        self._commands: list[Command] = []
        self._in_flight: dict[str, asyncio.Task[TaskOutcome]] = {}
        # Steps finished and not yet collected, in the order they finished: waiting on all
        # of _in_flight each time would cost O(steps running) per completion.
        self._finished: deque[str] = deque()
        # Set while _wait_for_tasks sleeps; _run_step resolves it. A bare future and a
        # timer, not wait_for(Event.wait()): that made an asyncio task per step.
        self._step_waiter: asyncio.Future[None] | None = None
        self._wake_up: asyncio.TimerHandle | None = None  # resolves _step_waiter on time
        self._wait_until = 0.0  # loop time at which the current wait gives up
        self._attempts: dict[str, int] = {}
        self._events: deque[Event] = deque()
        self._outcomes: dict[str, TaskOutcome] = {}
        self._consumed: dict[str, int] = {}
        self._signal_payloads: dict[str, bytes] = {}
        # Steps handed to another process (StepDispatched): {key: (attempt, check_at)}.
        self._dispatched: dict[str, tuple[int, float]] = {}
        self._delay_ids = delay_ids(workflow)
        # Steps running here or elsewhere, or finished with their outcome queued: the
        # machine need not ask for them again.
        self._busy = BusySteps(self._in_flight, self._outcomes, self._dispatched)
        # Valid because _busy loses a step only when its outcome is applied: with it, a
        # wide map costs O(1) per completion instead of O(items).
        self._frontier = FrontierCache()

    async def run(self, first: Event | None = None) -> Snapshot:
        """Advance until the instance is finished, paused or parked; returns the snapshot."""
        self._events.append(first or Tick(self._clock()))
        try:
            return await self._drive()
        finally:
            for task in self._in_flight.values():
                task.cancel()
            if self._wake_up is not None:
                self._wake_up.cancel()
                self._wake_up = None

    async def _drive(self) -> Snapshot:
        while True:
            while self._events:
                await self._apply(self._events.popleft())
                if self.snapshot.status.is_terminal:
                    return self.snapshot
            if self.snapshot.status is Status.PAUSED and not self._in_flight:
                return self.snapshot
            if self._stop is not None and self._stop.is_set():
                if not self._in_flight:
                    await self._release()
                    return self.snapshot
                await self._wait_for_tasks()
                continue
            alone = self._start_tasks()
            if alone is not None:
                assert self._inline is not None
                outcome = await self._inline.execute_inline(alone)
                self._events.append(self._outcome_event(alone.key, outcome))
                continue
            await self._collect_signals()
            if self._events:
                continue
            if self._in_flight:
                await self._wait_for_tasks()
                continue
            if await self._wait_or_park():
                await self._release()
                return self.snapshot

    @property
    def awaited_signals(self) -> list[str]:
        """Names of the signals the instance waits for right now."""
        return [c.signal_name for c in self._commands if isinstance(c, AwaitSignal)]

    async def _release(self) -> None:
        """Write the parked state and give the claim up."""
        status = self.snapshot.status
        if self._dispatched and status is Status.RUNNING:
            # Nobody holds an instance whose steps run elsewhere: "waiting" (not
            # "running") keeps workers from claiming it before it is due.
            status = Status.WAITING
        await self._sink.write(
            StepWrite(
                status=status,
                control=self._control_state(),
                now=self._clock(),
                wake_at=self._wake_at(),
                release=True,
            )
        )

    async def _apply(self, event: Event) -> None:
        before = self.snapshot
        key = event_key(event)
        # Taken out first: once its outcome is applied, a step may be asked for again (retry).
        outcome = self._outcomes.pop(key, None) if key is not None else None
        after, self._commands = advance(
            self._workflow, before, event, running=self._busy, cache=self._frontier
        )
        self.snapshot = after
        if not changed(before, after):
            return
        if self._discard_writes:
            if after.status is Status.COMPLETED:
                # As a stored run would: an output that cannot be encoded fails here too.
                self._codec.encode(after.output)
            return
        now = self._clock()
        # A pause is final only once the steps still running have checkpointed.
        settled = after.status is Status.PAUSED and not self._in_flight and not self._events
        write = StepWrite(
            # While the steps still running drain, a paused instance stays "running": a
            # pause is only stored once it holds (see rules.settled_status).
            status=after.status if after.status is not Status.PAUSED or settled else Status.RUNNING,
            control=self._control_state(),
            now=now,
            checkpoints=self._new_checkpoints(before, after, key, outcome),
            output=self._codec.encode(after.output) if after.status is Status.COMPLETED else None,
            error=after.error,
            wake_at=self._wake_at(),
            events=transition_events(
                before,
                after,
                event,
                outcome=outcome,
                attempt=self._attempts.get(key) if key is not None else None,
                delay_ids=self._delay_ids,
                worker_id=self._worker_id,
                now=now,
            ),
            consumed_signal=self._consumed.pop(event.key, None)
            if isinstance(event, SignalReceived)
            else None,
            release=after.status.is_terminal or settled,
            priority=next_priority(self._commands),
        )
        try:
            request = await self._sink.write(write)
        except PayloadTooLargeError as error:
            if not isinstance(event, TaskCompleted) or not isinstance(outcome, TaskSuccess):
                raise
            # Nothing was written: record the step as failed instead of its output.
            self.snapshot = before
            await self._apply(self._too_large(event, outcome, error))
            return
        if request is ControlRequest.CANCEL:
            self._events.appendleft(CancelRequested())
        elif request is ControlRequest.PAUSE and after.status is not Status.PAUSED:
            self._events.appendleft(PauseRequested())

    def _too_large(
        self, event: TaskCompleted, outcome: TaskSuccess, error: PayloadTooLargeError
    ) -> TaskFailed:
        info = ErrorInfo("PayloadTooLargeError", str(error), event.key, "serialization")
        self._outcomes[event.key] = TaskFailure(
            info, False, "", outcome.started_at, outcome.finished_at
        )
        return TaskFailed(event.key, info, retryable=False, now=self._clock())

    def _new_checkpoints(
        self, before: Snapshot, after: Snapshot, event_key: str | None, outcome: TaskOutcome | None
    ) -> list[tuple[str, bytes]]:
        """The results this transition added (a step, a signal, delays that came due).

        Results only ever grow by appending, so the new ones are the tail.
        """
        if len(after.results) == len(before.results):
            return []
        checkpoints = []
        for key in after.results_added_since(before):
            if key == event_key and isinstance(outcome, TaskSuccess):
                checkpoints.append((key, outcome.encoded))
            elif key in self._signal_payloads:
                checkpoints.append((key, self._signal_payloads.pop(key)))
            else:
                checkpoints.append((key, self._codec.encode(after.results[key])))
        return checkpoints

    def _control_state(self) -> dict[str, object]:
        """The snapshot's control state, plus what it waits for (for status displays)."""
        waits = {c.key: c.signal_name for c in self._commands if isinstance(c, AwaitSignal)}
        delays = [c.key for c in self._commands if isinstance(c, WakeAt) and c.reason == "delay"]
        control = {**self.snapshot.control_state(), "signals": waits, "delays": delays}
        if self._dispatched:
            control["dispatched"] = {key: attempt for key, (attempt, _) in self._dispatched.items()}
        return control

    def _wake_at(self) -> float | None:
        times = [command.when for command in self._commands if isinstance(command, WakeAt)]
        times.extend(check_at for _, check_at in self._dispatched.values())
        return min(times) if times else None

    def _start_tasks(self) -> TaskRequest | None:
        """Start the steps the machine asks for; or return the one to run inline."""
        if self.snapshot.status is not Status.RUNNING:
            return None
        commands = self._commands
        # Inline only a step that is all there is to do: nothing running, nothing to time.
        alone = len(commands) == 1 and not self._in_flight and not self._dispatched
        inline = self._inline if alone else None
        for command in commands:
            if (
                isinstance(command, RunTask)
                and command.key not in self._in_flight
                and command.key not in self._dispatched
            ):
                request = self._request(command)
                if inline is not None and inline.runs_inline(request):
                    return request
                self._in_flight[command.key] = asyncio.create_task(
                    self._run_step(command.key, request), name=f"sayiir:{command.key}"
                )
        return None

    def _request(self, command: RunTask) -> TaskRequest:
        self._attempts[command.key] = command.attempt
        return TaskRequest(
            workflow_id=self._workflow.workflow_id,
            instance_id=self._instance_id,
            key=command.key,
            task=command.task,
            input=command.input,
            attempt=command.attempt,
            workflow_metadata=self._workflow.metadata,
        )

    async def _run_step(self, key: str, request: TaskRequest) -> TaskOutcome:
        try:
            return await self._executor.execute(request)
        finally:
            # Told as the step's last act rather than from a done callback, which would
            # cost one more turn of the event loop per step. Once the run has ended (it
            # cancels the steps still running) nobody reads this any more.
            self._finished.append(key)
            if self._step_waiter is not None:
                _resolve(self._step_waiter)

    async def _collect_signals(self) -> None:
        for command in self._commands:
            if not isinstance(command, AwaitSignal) or command.key in self._consumed:
                continue
            signal = await self._sink.next_signal(command.signal_name)
            if signal is None:
                now = self._clock()
                if command.deadline is not None and command.deadline <= now:
                    self._events.append(SignalTimedOut(command.key, now))
                continue
            self._consumed[command.key] = signal.signal_id
            self._signal_payloads[command.key] = signal.payload
            payload = self._codec.decode(signal.payload)
            self._events.append(SignalReceived(command.key, payload, self._clock()))

    async def _wait_for_tasks(self) -> None:
        # Wake up for the next timer, and now and then to see whether a cancel or pause
        # was asked for while long steps run: a cancel must reach running async tasks.
        timeout = self._control_poll_interval
        wake = self._wake_at()
        if wake is not None:
            timeout = min(timeout, max(0.0, wake - self._clock()))
        if not self._finished and not await self._step_finishes_within(timeout):
            await self._check_control()
            return
        while self._finished:
            key = self._finished.popleft()
            task = self._in_flight.pop(key)
            try:
                outcome = task.result()
            except StepDispatched as dispatched:
                self._dispatched[key] = (self._attempts[key], dispatched.check_at)
                continue
            self._events.append(self._outcome_event(key, outcome))

    async def _step_finishes_within(self, seconds: float) -> bool:
        """Sleep until a step finishes (True) or at most ``seconds`` pass (False)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._wait_until = loop.time() + seconds
        self._arm_wake_up(loop, self._wait_until)
        self._step_waiter = waiter
        try:
            await waiter
        finally:
            self._step_waiter = None
        return bool(self._finished)

    def _arm_wake_up(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        # One timer serves many waits instead of a timer per step; one set by an earlier
        # wait that comes due sooner moves itself on to this wait's time (_woken_up).
        timer = self._wake_up
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._wake_up = loop.call_at(due, self._woken_up, loop)

    def _woken_up(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wake_up = None
        if self._step_waiter is None:
            return
        if self._wait_until - loop.time() > _TIMER_SLACK:  # an earlier wait's time
            self._arm_wake_up(loop, self._wait_until)
            return
        _resolve(self._step_waiter)

    def _outcome_event(self, key: str, outcome: TaskOutcome) -> Event:
        self._outcomes[key] = outcome
        now = self._clock()
        if isinstance(outcome, TaskSuccess):
            return TaskCompleted(key, outcome.value, now)
        return TaskFailed(key, outcome.error, outcome.retryable, now, random.random())

    async def _wait_or_park(self) -> bool:
        """Nothing runs: sleep until the next wake-up, or park. True when parked."""
        waits = [command for command in self._commands if isinstance(command, WakeAt)]
        awaits_signal = any(isinstance(command, AwaitSignal) for command in self._commands)
        if self._should_park(waits, awaits_signal):
            return True
        if not waits:
            raise _NothingToWaitForError(self._commands)
        # Sleep in slices so that a cancel or pause during a back-off is seen promptly.
        delay = max(0.0, min(command.when for command in waits) - self._clock())
        await asyncio.sleep(min(delay, self._control_poll_interval))
        await self._check_control()
        return False

    async def _check_control(self) -> None:
        """Queue a cancel or pause asked for since the last write, else a ``Tick``."""
        request = await self._sink.pending_control()
        if request is ControlRequest.CANCEL:
            self._events.append(CancelRequested())
        elif request is ControlRequest.PAUSE and self.snapshot.status is not Status.PAUSED:
            self._events.append(PauseRequested())
        else:
            self._events.append(Tick(self._clock()))

    def _should_park(self, waits: list[WakeAt], awaits_signal: bool) -> bool:
        if self._dispatched:  # its outcome comes back through a later run
            return True
        if awaits_signal and self._park.signals:
            return True
        now = self._clock()
        for wait in waits:
            if wait.reason == "delay" and self._park.delays:
                return True
            limit = self._park.retries_longer_than
            if wait.reason == "retry" and limit is not None and wait.when - now > limit:
                return True
        return False


_TIMER_SLACK = 0.001  # the event loop runs a timer up to its clock resolution early


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _NothingToWaitForError(RuntimeError):
    def __init__(self, commands: list[Command]) -> None:
        super().__init__(f"internal error: runner has nothing to wait for ({commands!r})")
