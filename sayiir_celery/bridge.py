"""``SayiirCelery``: an existing Celery app's workers run the steps of durable workflows.

The bridge registers one task on the app, ``sayiir_celery.run_step``, whose JSON message
names one step (``messages.StepMessage``). The worker that receives it claims the step,
runs it with the core's executor, checkpoints it and sends the instance's next ready
steps as new messages (``sayiir_core.runtime.dispatch``), or, when that is one step of
a chain on the same queue, claims and runs it itself for a while
(``continuation.py``). Retries, delays and lost
messages are the sweeper's (``sweeper.py``), never Celery ETA or countdown. Nothing of
the bridge runs in the parent process of a prefork pool: each pool process starts its
own event loop, connections and sweeper when it starts.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from celery import Celery, signals

from sayiir_celery.client import BridgeClient
from sayiir_celery.config_check import CeleryConfigError, broker_transport, check_config
from sayiir_celery.continuation import Continuation, Outgoing
from sayiir_celery.messages import MessageError, StepMessage
from sayiir_celery.routing import RouteLike, Router
from sayiir_celery.sweeper import Sweeper
from sayiir_core.backends.base import Backend
from sayiir_core.backends.step_queue import StepQueue, StepTicket
from sayiir_core.backends.url import backend_from_url
from sayiir_core.codec import DEFAULT_CODEC, Codec
from sayiir_core.machine.keys import task_id_of_key
from sayiir_core.runtime import LocalExecutor, default_owner_id
from sayiir_core.runtime.dispatch import Dispatcher, StepRun
from sayiir_core.runtime.loop_thread import loop_of_sync_api, run_sync, submit
from sayiir_core.telemetry.logs import InstanceLogger
from sayiir_core.workflow.workflow import Workflow

logger = logging.getLogger("sayiir.celery")

STEP_TASK = "sayiir_celery.run_step"
SWEEP_TASK = "sayiir_celery.sweep"

# The messages a step task's advance sends, published by the task's thread afterwards.
_outbox: contextvars.ContextVar[list[Outgoing] | None] = contextvars.ContextVar(
    "sayiir_celery_outbox", default=None
)

# Publishing retries briefly: with the broker down, the step waits in the database and
# the sweeper sends it once the broker is back.
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


class SayiirCelery:
    """Run durable workflows on an existing Celery app's workers.

    Example (``tasks.py``; start the workers as usual, ``celery -A tasks worker``)::

        app = Celery("shop", broker="redis://127.0.0.1:6379/0")
        app.conf.worker_prefetch_multiplier = 1
        bridge = SayiirCelery(app, backend="postgresql://127.0.0.1/shop", workflows=[checkout])

        bridge.client.submit(checkout, "order-7", {"id": 7})
        bridge.client.result("order-7", timeout=30)

    ``backend``: a URL or a backend with a step queue (PostgreSQL). The bridge owns a
    backend it creates from a URL, and one handed over with ``owns_backend=True``:
    ``bridge.client.close()`` closes it. A backend object handed without it stays open
    for the code that created it to close (the core's rule). ``queues_by_tag`` /
    ``queues_by_task`` / ``default_queue``: routing (see ``routing.py``). ``step_lease``:
    a running step's lease, renewed while it runs; a step whose worker died runs again
    after it. ``redispatch_after``: how long an instance waits on its outstanding steps
    before the sweeper sends them again (default ``step_lease``). ``sweeper``:
    ``"worker"`` runs it in the workers (one at a time under a database lease),
    ``"beat"`` leaves it to ``beat_schedule_entry()``, ``"off"`` to you.
    ``check_config``: what to do with Celery settings the bridge cannot work with, at
    worker start (``"raise"``, ``"warn"`` or ``"off"``). ``continue_for``: seconds
    during which a step's task may go on running its instance's next step itself,
    rather than sending it as a message, when that step is the only one the advance
    made ready and goes to the same queue (a chain; ``continuation.py``). Each step is
    still claimed, fenced and checkpointed on its own; a chain then costs one message
    per ``continue_for`` seconds instead of one per step. The price: a long chain stays
    on one worker process for up to that long while other messages wait for another
    one, and the broker's visibility timeout must cover it too (the configuration check
    adds it). ``0`` sends every step as its own message. ``acks_late=False``: a step's
    message is acknowledged when a worker process starts it, not once it ran: more
    steps per second on small steps, as Celery can then fetch the next message while
    a step runs. The price: a message whose worker dies is not delivered
    again by the broker; the sweeper sends its step again at the re-dispatch time
    (``redispatch_after``), as for any lost message; and a worker may hold a message
    while its processes are busy (see docs/integrations/celery.md).
    """

    def __init__(
        self,
        app: Celery,
        *,
        backend: str | Backend,
        workflows: Iterable[Workflow],
        queues_by_tag: Mapping[str, RouteLike] | None = None,
        queues_by_task: Mapping[str, RouteLike] | None = None,
        default_queue: RouteLike | None = None,
        step_lease: float = 60.0,
        redispatch_after: float | None = None,
        sweep_interval: float = 1.0,
        sweeper: Literal["worker", "beat", "off"] = "worker",
        check_config: Literal["raise", "warn", "off"] = "raise",
        codec: Codec = DEFAULT_CODEC,
        max_threads: int | None = None,
        owns_backend: bool = False,
        acks_late: bool = True,
        continue_for: float = 1.0,
    ) -> None:
        self.app = app
        self.workflows = _unique(workflows)
        if not self.workflows:
            raise ValueError("SayiirCelery needs at least one workflow")
        if sweeper not in ("worker", "beat", "off"):
            raise ValueError(f"sweeper must be 'worker', 'beat' or 'off', not {sweeper!r}")
        if check_config not in ("raise", "warn", "off"):
            raise ValueError(f"check_config must be 'raise', 'warn' or 'off', not {check_config!r}")
        if step_lease <= 0 or sweep_interval <= 0:
            raise ValueError("step_lease and sweep_interval must be positive")
        self.backend: Backend = backend_from_url(backend) if isinstance(backend, str) else backend
        self.owns_backend = owns_backend or isinstance(backend, str)
        if not isinstance(self.backend, StepQueue):
            raise TypeError(
                f"{type(self.backend).__name__} has no step queue, which the bridge needs to "
                "share steps between worker processes: use PostgreSQL (postgresql://...)"
            )
        self.codec = codec
        self.step_lease = step_lease
        self.redispatch_after = redispatch_after if redispatch_after is not None else step_lease
        self.sweep_interval = sweep_interval
        self.sweeper_mode = sweeper
        self.check_mode = check_config
        self.router = Router(
            queues_by_tag=queues_by_tag,
            queues_by_task=queues_by_task,
            default_queue=default_queue,
            transport=broker_transport(app),
        )
        self._max_threads = max_threads
        self.acks_late = acks_late
        self._registry = {workflow.workflow_id: workflow for workflow in self.workflows}
        self.continuation = Continuation(continue_for, self._options_of)
        self._state: _ProcessState | None = None
        self._state_lock = threading.Lock()
        self._pool: str | None = None
        self.step_task = app.task(
            name=STEP_TASK,
            acks_late=acks_late,
            ignore_result=True,
            serializer="json",
            shared=False,
        )(self._make_step_handler())
        self.sweep_task = app.task(name=SWEEP_TASK, ignore_result=True, shared=False)(
            self._make_sweep_handler()
        )
        self._connect_signals()
        self.client = BridgeClient(self)

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._registry))
        return f"SayiirCelery({self.app.main!r}, workflows=[{names}])"

    # -- configuration ---------------------------------------------------------------

    def config_problems(self, pool: str | None = None) -> list[Any]:
        """What in the Celery configuration must change for the bridge (empty: nothing)."""
        return check_config(
            self.app,
            STEP_TASK,
            self.workflows,
            pool=pool,
            acks_late=self.acks_late,
            continue_for=self.continue_for,
        )

    @property
    def continue_for(self) -> float:
        """How long a step's task may go on running its instance's next steps itself."""
        return self.continuation.budget

    def beat_schedule_entry(self, every: float = 5.0) -> dict[str, Any]:
        """A ``beat_schedule`` entry running one sweep every ``every`` seconds.

        For ``sweeper="beat"``: ``app.conf.beat_schedule = {"sayiir-sweep":
        bridge.beat_schedule_entry()}``. A sweep takes the same database lease, so an
        overlap with another sweeper does no harm.
        """
        return {"task": SWEEP_TASK, "schedule": every, "options": {"expires": every * 2}}

    # -- sending -----------------------------------------------------------------------

    async def send_steps(self, tickets: Sequence[StepTicket], token: int = 0) -> None:
        """Publish one message per ticket.

        Inside a step task, the messages are handed to the task's own thread, which
        publishes them once the advance is over (``_make_step_handler``): Celery's
        producer pool lives there, and that saves two thread switches per step. Else
        they are published off the event loop (the broker may block).
        """
        messages = self._messages(tickets, token)
        outbox = _outbox.get()
        if outbox is not None:
            outbox.extend(messages)
            return
        await asyncio.to_thread(self._publish, messages)

    def _messages(self, tickets: Sequence[StepTicket], token: int) -> list[Outgoing]:
        messages = []
        for ticket in tickets:
            ref = ticket.ref
            message = StepMessage(
                ref.instance_id,
                ref.step_key,
                ref.attempt,
                ticket.workflow_id,
                ticket.definition_hash,
                token,
            )
            messages.append((message, self._options_of(message)))
        return messages

    def _options_of(self, message: StepMessage) -> dict[str, Any]:
        """The ``send_task`` options of a step's message: its queue, routing key, priority."""
        task = self._registry[message.workflow_id].tasks[task_id_of_key(message.step_key)]
        return self.router.options(task)

    def _publish(self, messages: list[Outgoing]) -> None:
        with self.app.producer_or_acquire() as producer:
            for message, options in messages:
                self.app.send_task(
                    STEP_TASK,
                    args=[message.to_json()],
                    producer=producer,
                    serializer="json",
                    retry=True,
                    retry_policy=_PUBLISH_RETRY,
                    # Said here because send_task cannot know it from the task's name:
                    # else a result backend subscribes to every step's result (Redis:
                    # one more command per step) and the message becomes a child of
                    # the task that sent it.
                    ignore_result=True,
                    add_to_parent=False,
                    # What monitoring shows for the arguments, without Celery's
                    # saferepr walking the message for it on every publish.
                    argsrepr=_args_repr(message),
                    kwargsrepr="{}",
                    **options,
                )

    def _publish_collected(self, messages: list[Outgoing]) -> None:
        """Publish what a step task's advance sent; never raises (like the dispatcher's
        own sending: the steps are durable, the sweeper sends them again)."""
        if not messages:
            return
        try:
            self._publish(messages)
        except Exception:
            instance = messages[0][0].instance_id
            InstanceLogger(logger, instance).warning(
                "[%s] could not send %d step(s); they are sent again in %.0f s",
                instance,
                len(messages),
                self.redispatch_after,
                exc_info=True,
            )

    # -- per process -----------------------------------------------------------------

    def dispatcher(self) -> Dispatcher:
        """This process's dispatcher (a new one after a fork)."""
        return self._process().dispatcher

    def kick(self, instance_id: str, *, resend: bool = False) -> None:
        """Move an instance on now (after a submit, signal, unpause); never raises.

        If it fails (the database or the broker unreachable), the instance is durable
        as it is and the sweeper moves it on later. ``resend``: send its outstanding
        steps again too (``Dispatcher.advance``).
        """
        try:
            run_sync(self.dispatcher().advance(instance_id, resend=resend))
        except Exception:
            InstanceLogger(logger, instance_id).warning(
                "[%s] could not dispatch now; the sweeper will", instance_id, exc_info=True
            )

    def _process(self) -> _ProcessState:
        pid = os.getpid()
        with self._state_lock:
            if self._state is None or self._state.pid != pid:
                self._state = _ProcessState(self, pid)
            return self._state

    def _make_step_handler(self) -> Any:
        def run_step(message: Any) -> str:
            """Run one workflow step named by a sayiir_celery message."""
            try:
                step = StepMessage.from_json(message)
            except MessageError as error:
                logger.error("sayiir_celery: message dropped: %s", error)
                return "invalid"
            outbox: list[Outgoing] = []
            try:
                outcome: StepRun = run_sync(self._run_steps(step, outbox))
            finally:
                self._publish_collected(outbox)
            return outcome.value

        return run_step

    async def _run_steps(self, step: StepMessage, outbox: list[Outgoing]) -> StepRun:
        """Run the message's step, and the chain's next ones while it goes on here."""
        _outbox.set(outbox)  # this asyncio task's own context: its sends go to the outbox
        return await self.continuation.run_steps(self.dispatcher(), step, outbox)

    def _make_sweep_handler(self) -> Any:
        def sweep() -> int:
            """Advance what no message will wake (under the sweeper lease)."""
            return run_sync(self._process().sweeper.sweep_once())

        return sweep

    # -- worker life cycle -------------------------------------------------------------

    def _connect_signals(self) -> None:
        signals.worker_init.connect(self._on_worker_init, weak=False)
        signals.worker_ready.connect(self._on_worker_ready, weak=False)
        signals.worker_process_init.connect(self._on_pool_process_init, weak=False)
        signals.worker_process_shutdown.connect(self._on_shutdown, weak=False)
        signals.worker_shutdown.connect(self._on_shutdown, weak=False)

    def _ours(self, sender: Any) -> bool:
        app = getattr(sender, "app", None)
        return app is None or app is self.app

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if not self._ours(sender):
            return
        pool = getattr(sender, "pool_cls", None)
        self._pool = f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', pool)}"
        if self.check_mode == "off":
            return
        problems = self.config_problems(self._pool)
        if not problems:
            return
        if self.check_mode == "raise":
            raise CeleryConfigError(problems)
        for problem in problems:
            logger.warning("sayiir_celery: %s", problem)

    def _is_prefork(self) -> bool:
        return self._pool is not None and "prefork" in self._pool

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._ours(sender) and not self._is_prefork():
            self._start_sweeper()

    def _on_pool_process_init(self, **_: Any) -> None:
        self._start_sweeper()

    def _start_sweeper(self) -> None:
        if self.sweeper_mode == "worker":
            self._process().start_sweeper()

    def _on_shutdown(self, **_: Any) -> None:
        state = self._state
        if state is not None and state.pid == os.getpid():
            state.stop_sweeper()


class _ProcessState:
    """What the bridge needs in one process: its executor, dispatcher and sweeper."""

    def __init__(self, bridge: SayiirCelery, pid: int) -> None:
        self.pid = pid
        self.executor = LocalExecutor(codec=bridge.codec, max_threads=bridge._max_threads)
        owner = f"celery:{default_owner_id()}"
        self.dispatcher = Dispatcher(
            bridge.backend,
            bridge.workflows,
            bridge.send_steps,
            executor=self.executor,
            codec=bridge.codec,
            owner_id=owner,
            step_lease=bridge.step_lease,
            redispatch_after=bridge.redispatch_after,
        )
        self.sweeper = Sweeper(self.dispatcher, interval=bridge.sweep_interval)
        self._stop: asyncio.Event | None = None

    def start_sweeper(self) -> None:
        if self._stop is not None:
            return
        ready = threading.Event()

        async def serve() -> None:
            self._stop = asyncio.Event()
            ready.set()
            await self.sweeper.run(self._stop)

        submit(serve())
        ready.wait()

    def stop_sweeper(self) -> None:
        stop = self._stop
        if stop is not None:
            loop_of_sync_api().call_soon_threadsafe(stop.set)


def _args_repr(message: StepMessage) -> str:
    step = f"{message.instance_id!r}, {message.step_key!r}, attempt {message.attempt}"
    return f"({step[:_ARGS_REPR_MAX]})"


_ARGS_REPR_MAX = 200


def _unique(workflows: Iterable[Workflow]) -> list[Workflow]:
    seen: dict[str, Workflow] = {}
    for workflow in workflows:
        other = seen.get(workflow.workflow_id)
        if other is not None and other.definition_hash != workflow.definition_hash:
            raise ValueError(f"two definitions of workflow {workflow.workflow_id!r}; register one")
        seen[workflow.workflow_id] = workflow
    return list(seen.values())
