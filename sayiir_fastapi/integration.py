"""``Sayiir``: the one object a FastAPI app creates — lifespan, workers, router, dashboard.

::

    sayiir = Sayiir("sqlite:///app.db", workflows=[checkout], workers=1)
    app = FastAPI(lifespan=sayiir.lifespan)
    app.include_router(sayiir.router(), prefix="/sayiir")

The lifespan opens the backend on the app's event loop (an asyncpg pool belongs to the
loop that made it), runs ``workers`` in-process async workers beside the requests, and
on shutdown stops them gracefully. Ownership: a backend built from a URL is the
lifespan's own and is closed by it; a backend object handed in belongs to its creator,
who closes it (the lifespan only opens it, which is idempotent).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sayiir_core import AsyncWorkflowClient, Backend, Codec, JsonCodec, Workflow
from sayiir_fastapi.events import EventHub
from sayiir_fastapi.lifespan import Running, start

if TYPE_CHECKING:
    from fastapi import APIRouter

WORKERS_ENVIRONMENT_VARIABLE = "SAYIIR_WORKERS"


class Sayiir:
    """Durable workflows inside a FastAPI app.

    ``backend`` is a URL (``"sqlite:///app.db"``, ``"postgresql://..."``,
    ``"memory://"``) or a backend object. ``workflows`` are the ones this app submits
    and its workers run. ``workers`` in-process async workers run steps in the web
    process (``0``: web only, for a deployment whose workers run elsewhere); the
    environment variable ``SAYIIR_WORKERS`` overrides it when the lifespan starts.
    Each worker runs up to ``concurrency`` instances at once. On shutdown running steps
    get ``shutdown_grace`` seconds to finish and checkpoint; steps still running then
    are cancelled and their claims released, so another process runs them again at
    once (not only once their lease, ``claim_ttl``, runs out).

    One ``Sayiir`` serves one app at a time; its lifespan may run again after it ended
    (as tests do).
    """

    def __init__(
        self,
        backend: str | Backend,
        *,
        workflows: Iterable[Workflow] = (),
        workers: int = 1,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        claim_ttl: float = 300.0,
        shutdown_grace: float = 30.0,
        codec: Codec | None = None,
    ) -> None:
        if not isinstance(backend, str | Backend):
            raise TypeError(
                "Sayiir(backend) takes a URL such as 'sqlite:///app.db' or a backend object, "
                f"got {type(backend).__name__}"
            )
        _check_worker_count(workers, "workers")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not poll_interval > 0 or not claim_ttl > 0:
            raise ValueError("poll_interval and claim_ttl must be positive")
        if not shutdown_grace >= 0:
            raise ValueError(f"shutdown_grace must be >= 0 seconds, got {shutdown_grace!r}")
        registry: dict[str, Workflow] = {}
        for workflow in workflows:
            if not isinstance(workflow, Workflow):
                raise TypeError(
                    f"workflows must be built workflows (Flow(...).build()), got {workflow!r}"
                )
            if workflow.workflow_id in registry:
                raise ValueError(f"two workflows have the id {workflow.workflow_id!r}")
            registry[workflow.workflow_id] = workflow
        self._backend = backend
        self._workflows = MappingProxyType(registry)
        self._workers = workers
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._claim_ttl = claim_ttl
        self._shutdown_grace = shutdown_grace
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self._running: Running | None = None
        self.events = EventHub()

    def __repr__(self) -> str:
        backend = "url" if isinstance(self._backend, str) else type(self._backend).__name__
        return (
            f"Sayiir(backend={backend}, workflows={list(self._workflows)}, "
            f"workers={self._workers}, running={self.running})"
        )

    @property
    def workflows(self) -> Mapping[str, Workflow]:
        """The registered workflows by id."""
        return self._workflows

    @property
    def running(self) -> bool:
        """Whether the lifespan is between startup and shutdown."""
        return self._running is not None

    @property
    def client(self) -> AsyncWorkflowClient:
        """The client of the running lifespan; ``RuntimeError`` outside it."""
        if self._running is None:
            raise RuntimeError(
                "Sayiir is not running: pass lifespan=sayiir.lifespan to FastAPI(...) "
                "(or enter sayiir.lifespan(app) from the app's own lifespan)"
            )
        return self._running.client

    @property
    def worker_ids(self) -> list[str]:
        """The ids of the workers running in this process (empty outside the lifespan)."""
        return list(self._running.worker_ids) if self._running is not None else []

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Open the backend, start the workers; on exit stop them and close what it opened.

        Pass it as ``FastAPI(lifespan=sayiir.lifespan)``, or enter it from the app's
        own lifespan::

            @asynccontextmanager
            async def lifespan(app):
                async with sayiir.lifespan(app):
                    yield
        """
        if self._running is not None:
            raise RuntimeError("this Sayiir is already running; one app at a time")
        workers = workers_from_environment(self._workers)
        if workers and not self._workflows:
            raise ValueError(
                f"Sayiir runs {workers} worker(s) but has no workflows: pass "
                "workflows=[...], or workers=0 for a web-only process"
            )
        running = await start(
            self._backend,
            workflows=list(self._workflows.values()),
            workers=workers,
            concurrency=self._concurrency,
            poll_interval=self._poll_interval,
            claim_ttl=self._claim_ttl,
            grace=self._shutdown_grace,
            codec=self.codec,
            events=self.events,
        )
        self._running = running
        state = getattr(app, "state", None)
        if state is not None:
            state.sayiir = self
        try:
            yield
        finally:
            self._running = None
            if state is not None and getattr(state, "sayiir", None) is self:
                del state.sayiir
            await running.stop()

    def router(
        self,
        *,
        max_body_bytes: int = 1024 * 1024,
        max_result_wait: float = 60.0,
        stream_seconds: float = 60.0,
        tags: list[str] | None = None,
    ) -> APIRouter:
        """The REST API over instances (see ``sayiir_fastapi.router``); include it with a prefix.

        ``max_body_bytes`` bounds request bodies (413 beyond), ``max_result_wait`` the
        long-poll ``timeout`` of ``/result``, ``stream_seconds`` how long one
        ``/events`` stream stays open before the client reconnects (with
        ``Last-Event-ID``, as browsers do).
        """
        from sayiir_fastapi.router import build_router

        return build_router(
            self,
            max_body_bytes=max_body_bytes,
            max_result_wait=max_result_wait,
            stream_seconds=stream_seconds,
            tags=tags or ["sayiir"],
        )

    def dashboard(self, *, title: str = "Sayiir", show_tracebacks: bool = True) -> APIRouter:
        """Server-rendered HTML pages over instances; mount it behind authentication.

        ``show_tracebacks`` shows a failed task's stored traceback on its instance page
        (the REST router never does).
        """
        from sayiir_fastapi.dashboard import build_dashboard

        return build_dashboard(self, title=title, show_tracebacks=show_tracebacks)

    @property
    def poll_interval(self) -> float:
        return self._poll_interval


def workers_from_environment(configured: int) -> int:
    """``SAYIIR_WORKERS`` when set (an integer >= 0), else ``configured``."""
    raw = os.environ.get(WORKERS_ENVIRONMENT_VARIABLE)
    if raw is None or not raw.strip():
        return configured
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(
            f"{WORKERS_ENVIRONMENT_VARIABLE}={raw!r} is not a number of workers (0 or more)"
        ) from None
    _check_worker_count(count, WORKERS_ENVIRONMENT_VARIABLE)
    return count


def _check_worker_count(count: int, name: str) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {count!r}")
