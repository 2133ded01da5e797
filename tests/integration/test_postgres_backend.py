"""What only ``PostgresBackend`` promises: clear errors, limits, NOTIFY wake-ups, SKIP
LOCKED claims, one round trip per step, isolation by schema, and surviving lost
connections."""

from __future__ import annotations

import asyncio
import gc
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from postgres_service import WireProxy, run_sync, with_database

from sayiir_core.backends import (
    ConflictPolicy,
    ControlRequest,
    FinishWatch,
    HistoryEvent,
    NewInstance,
    StepWrite,
    backend_from_url,
)
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.backends.postgres import session as session_module
from sayiir_core.errors import BackendError, LeaseLostError
from sayiir_core.machine.state import ErrorInfo
from sayiir_core.status import Status

pytestmark = pytest.mark.postgres

NOW = 1_000.0
HASH = "hash-1"
TTL = 30.0
PASSWORD = "s3cret-Pa55"
Opener = Callable[..., Awaitable[PostgresBackend]]


def new(instance_id: str = "i-1", *, input: bytes = b"{}", now: float = NOW) -> NewInstance:
    return NewInstance(instance_id, "wf", HASH, input, Status.PENDING, now)


def step(
    status: Status = Status.RUNNING,
    checkpoints: list[tuple[str, bytes]] | None = None,
    control: dict[str, Any] | None = None,
    **extra: Any,
) -> StepWrite:
    return StepWrite(status, control or {"n": 1}, NOW + 1, checkpoints=checkpoints or [], **extra)


@pytest.fixture
async def opener(postgres_schema: tuple[str, str]) -> AsyncIterator[Opener]:
    """Opens backends on this test's schema (or ``schema=``); closes them afterwards."""
    url, schema = postgres_schema
    opened: list[PostgresBackend] = []

    async def open_backend(**options: Any) -> PostgresBackend:
        options.setdefault("schema", schema)
        backend = PostgresBackend(options.pop("url", url), **options)
        opened.append(backend)
        await backend.open()
        return backend

    yield open_backend
    for backend in opened:
        await backend.close()


async def claimed(backend: PostgresBackend, instance_id: str = "i-1") -> int:
    await backend.create(new(instance_id), ConflictPolicy.FAIL)
    return (await backend.claim(instance_id, "w1", TTL, NOW)).token


# -- errors at open() ------------------------------------------------------------------


def _full_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


async def test_a_refused_connection_is_a_backend_error_without_the_password() -> None:
    backend = PostgresBackend(f"postgresql://app:{PASSWORD}@127.0.0.1:1/flows", connect_timeout=2)

    with pytest.raises(BackendError) as caught:
        await backend.open()

    message = str(caught.value)
    assert "127.0.0.1:1" in message
    assert "'flows'" in message
    assert PASSWORD not in _full_text(caught.value)
    assert PASSWORD not in repr(backend)
    await backend.close()


async def test_an_unknown_database_is_a_backend_error_naming_it(postgres_database: str) -> None:
    url = with_database(postgres_database, "sayiir_no_such_db").replace(
        "postgres@", f"postgres:{PASSWORD}@"
    )
    backend = PostgresBackend(url)

    with pytest.raises(BackendError, match="sayiir_no_such_db") as caught:
        await backend.open()

    assert "127.0.0.1:5432" in str(caught.value)
    assert PASSWORD not in _full_text(caught.value)


async def test_using_a_backend_before_open_is_a_clear_error(postgres_database: str) -> None:
    backend = PostgresBackend(postgres_database)

    with pytest.raises(BackendError, match="not open"):
        await backend.get_record("i-1")


# -- payload limit ---------------------------------------------------------------------


async def test_oversized_payloads_are_refused_before_anything_is_written(opener: Opener) -> None:
    backend = await opener(max_payload_bytes=1000)
    big = b"x" * 1001

    with pytest.raises(BackendError, match=r"input of workflow instance 'big'.*1,000"):
        await backend.create(new("big", input=big), ConflictPolicy.FAIL)
    assert await backend.get_record("big") is None

    token = await claimed(backend)
    before = await backend.load("i-1")
    with pytest.raises(BackendError, match=r"step 'b' of instance 'i-1'.*max_payload_bytes"):
        await backend.commit("i-1", token, step(checkpoints=[("a", b"ok"), ("b", big)]))
    with pytest.raises(BackendError, match="output of workflow instance 'i-1'"):
        await backend.commit("i-1", token, step(Status.COMPLETED, output=big))
    with pytest.raises(BackendError, match="signal 'go' for workflow instance 'i-1'"):
        await backend.send_signal("i-1", "go", big, NOW)
    assert await backend.load("i-1") == before
    assert await backend.next_signal("i-1", "go") is None
    # At the limit is fine.
    await backend.commit("i-1", token, step(checkpoints=[("a", b"x" * 1000)]))


async def test_text_with_nul_characters_round_trips(opener: Opener) -> None:
    # int("\x00") raises "invalid literal ...: '\x00'": such messages reach storage.
    # jsonb refuses the \u0000 escape; the json columns keep it, like the other backends.
    backend = await opener()
    token = await claimed(backend)
    error = ErrorInfo("ValueError", "invalid literal: '\x00'", task_id="parse")
    event = HistoryEvent("task_failed", NOW + 1, "parse", 1, "w1", {"error": "a\x00b"})

    write = StepWrite(Status.FAILED, {"k": "\x00"}, NOW + 1, error=error, events=[event])
    await backend.commit("i-1", token, write)

    record = await backend.get_record("i-1")
    assert record is not None
    assert (record.error, dict(record.control)) == (error, {"k": "\x00"})
    assert (await backend.history("i-1"))[-1].detail == {"error": "a\x00b"}


# -- LISTEN/NOTIFY ---------------------------------------------------------------------


async def _listening(backend: PostgresBackend) -> None:
    # The first wait connects the LISTEN session and returns at once (work may have
    # appeared while nobody listened); from then on a wait blocks until NOTIFY.
    await backend.wait_for_work(5)
    started = time.monotonic()
    await backend.wait_for_work(0.05)
    assert time.monotonic() - started >= 0.04, "nothing should wake an idle listener"


async def _woken_within(backend: PostgresBackend, action: Awaitable[Any]) -> float:
    waiting = asyncio.create_task(backend.wait_for_work(10))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await action
    await asyncio.wait_for(waiting, 5)
    return time.monotonic() - started


async def test_a_create_in_another_pool_wakes_wait_for_work(opener: Opener) -> None:
    worker, client = await opener(), await opener()
    await _listening(worker)

    elapsed = await _woken_within(worker, client.create(new(), ConflictPolicy.FAIL))

    assert elapsed < 1.0


async def test_signals_unpause_retry_and_releases_wake_workers(opener: Opener) -> None:
    worker, client = await opener(), await opener()
    token = await claimed(client)
    awaiting_go = step(
        Status.AWAITING_SIGNAL, wake_at=None, release=True, control={"signals": {"wait": "go"}}
    )
    await client.commit("i-1", token, awaiting_go)
    await _listening(worker)

    assert await _woken_within(worker, client.send_signal("i-1", "go", b"", NOW)) < 1.0
    await client.request_control("i-1", ControlRequest.PAUSE, None, None, NOW + 1)
    assert await _woken_within(worker, client.unpause("i-1", NOW + 2)) < 1.0
    token = (await client.claim("i-1", "w1", TTL, NOW + 3)).token
    release = client.commit("i-1", token, step(Status.RUNNING, release=True))
    assert await _woken_within(worker, release) < 1.0
    token = (await client.claim("i-1", "w1", TTL, NOW + 4)).token
    await client.commit("i-1", token, step(Status.FAILED, checkpoints=[("a", b"1")]))
    assert await _woken_within(worker, client.reset_from("i-1", "a", NOW + 5)) < 1.0


async def test_work_that_is_not_runnable_does_not_wake_workers(opener: Opener) -> None:
    worker, client = await opener(), await opener()
    token = await claimed(client)
    await _listening(worker)

    waiting = asyncio.create_task(worker.wait_for_work(0.4))
    await client.send_signal("i-1", "go", b"", NOW)  # running, not awaiting signals
    await client.commit("i-1", token, step(checkpoints=[("a", b"1")]))  # keeps its claim
    started = time.monotonic()
    await waiting

    assert time.monotonic() - started > 0.2


async def test_a_signal_the_instance_does_not_wait_for_does_not_wake_workers(
    opener: Opener,
) -> None:
    worker, client = await opener(), await opener()
    token = await claimed(client)
    awaiting_go = step(
        Status.AWAITING_SIGNAL, wake_at=None, release=True, control={"signals": {"wait": "go"}}
    )
    await client.commit("i-1", token, awaiting_go)
    await _listening(worker)

    waiting = asyncio.create_task(worker.wait_for_work(0.4))
    await client.send_signal("i-1", "later", b"", NOW)  # buffered for a later wait
    started = time.monotonic()
    await waiting

    assert time.monotonic() - started > 0.2


async def test_wait_for_work_survives_losing_the_listen_connection(
    opener: Opener, postgres_database: str
) -> None:
    worker, client = await opener(), await opener()
    await _listening(worker)
    assert await _kill_listen_connections(postgres_database) >= 1

    # The loss wakes waiters at once (they may have missed work); the next wait
    # reconnects and returns at once too, so the worker looks for work again.
    for _ in range(2):
        await asyncio.wait_for(worker.wait_for_work(5), 2)
    assert await _woken_within(worker, client.create(new(), ConflictPolicy.FAIL)) < 1.0


async def _kill_listen_connections(database_url: str) -> int:
    admin = await asyncpg.connect(database_url)
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    return killed


async def test_a_finish_in_another_pool_fires_a_watch_through_notify(opener: Opener) -> None:
    waiter, worker = await opener(), await opener()
    token = await claimed(worker)

    async with waiter.watch_finish("i-1") as watch:
        await _until(lambda: waiter._finish_listener.listening)  # connected in the background
        assert await asyncio.wait_for(watch.wait(10), 5)  # and says so: read again
        await worker.commit("i-1", token, step(Status.COMPLETED, output=b"1", release=True))
        assert await asyncio.wait_for(watch.wait(10), 5)


async def test_a_finish_watch_survives_losing_the_listen_connection(
    opener: Opener, postgres_database: str
) -> None:
    waiter, worker = await opener(), await opener()
    token = await claimed(worker)

    async with waiter.watch_finish("i-1") as watch:
        await _finish_listening(waiter, watch)
        assert await _kill_listen_connections(postgres_database) >= 1
        # Finishes may have been missed while the connection was down: the loss fires
        # every watch, so its waiter reads the instance again at once.
        assert await asyncio.wait_for(watch.wait(10), 5)

    async with waiter.watch_finish("i-1") as watch:
        await _finish_listening(waiter, watch)  # re-made for the next watch
        await worker.commit("i-1", token, step(Status.COMPLETED, output=b"1", release=True))
        assert await asyncio.wait_for(watch.wait(10), 5)


async def test_a_watch_in_progress_hears_finishes_again_once_listen_is_re_made(
    opener: Opener, postgres_database: str
) -> None:
    waiter, worker = await opener(), await opener()
    token = await claimed(worker)

    async with waiter.watch_finish("i-1") as watch:
        await _finish_listening(waiter, watch)
        assert await _kill_listen_connections(postgres_database) >= 1
        assert await asyncio.wait_for(watch.wait(10), 5)  # the loss: read again
        await _finish_listening(waiter, watch)  # re-made in the background

        await worker.commit("i-1", token, step(Status.COMPLETED, output=b"1", release=True))
        assert await asyncio.wait_for(watch.wait(10), 5)


async def test_a_finish_of_an_instance_with_a_very_long_id_is_notified(opener: Opener) -> None:
    waiter, worker = await opener(), await opener()
    long_id = "order-" + "x" * 9000  # over NOTIFY's 8000-byte payload limit
    token = await claimed(worker, long_id)

    async with waiter.watch_finish(long_id) as watch, waiter.watch_finish("other") as other:
        await worker.commit(long_id, token, step(Status.COMPLETED, output=b"1", release=True))
        # Sent without its id, the notification fires every watch; each re-reads its own.
        assert await asyncio.wait_for(watch.wait(10), 5)
        assert await asyncio.wait_for(other.wait(10), 5)
    record = await waiter.get_record(long_id)
    assert record is not None
    assert record.status is Status.COMPLETED


async def test_a_wait_keeps_its_timeout_while_listen_cannot_connect(opener: Opener) -> None:
    from sayiir_core import AsyncWorkflowClient, WaitTimeoutError

    waiter = await opener()
    await waiter.create(new(), ConflictPolicy.FAIL)

    async def hanging_connect() -> asyncpg.Connection:
        await asyncio.sleep(3600)  # a half-open network path
        raise AssertionError("unreachable")

    waiter._finish_listener._connect = hanging_connect
    client = AsyncWorkflowClient(waiter)
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError):
        await client.wait("i-1", timeout=0.2)
    assert time.monotonic() - started < 2.0  # the connect goes on in the background

    await client.cancel("i-1")
    assert (await asyncio.wait_for(client.wait("i-1", timeout=0), 2)).is_cancelled()


async def _finish_listening(backend: PostgresBackend, watch: FinishWatch) -> None:
    """Until the finish LISTEN connection is up, and past the wake-up its connect sends."""
    await _until(lambda: backend._finish_listener.listening)
    await watch.wait(0.5)


async def _until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# -- claims ----------------------------------------------------------------------------


async def test_concurrent_claimers_never_take_the_same_instance(opener: Opener) -> None:
    backends = [await opener(max_size=3) for _ in range(2)]
    for round_number in range(3):
        ids = [f"r{round_number}-{n:03}" for n in range(150)]
        for instance_id in ids:
            await backends[0].create(new(instance_id), ConflictPolicy.FAIL)
        taken: list[str] = []

        async def claimer(backend: PostgresBackend, name: str, taken: list[str]) -> None:
            while claims := await backend.claim_next(name, {"wf": HASH}, TTL, NOW, 4):
                taken.extend(c.instance.record.instance_id for c in claims)
                for claim in claims:
                    await backend.commit(
                        claim.instance.record.instance_id,
                        claim.token,
                        step(Status.COMPLETED, [("done", name.encode())]),
                    )

        await asyncio.gather(
            *(
                claimer(backend, f"w{i}-{j}", taken)
                for i, backend in enumerate(backends)
                for j in range(3)
            )
        )

        assert sorted(taken) == ids  # every instance claimed, none twice


async def test_claim_next_costs_one_round_trip_when_idle(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    proxy = WireProxy()
    await proxy.start()
    try:
        backend = await opener(url=proxy.url(postgres_schema[0]), min_size=1, max_size=1)
        await backend.claim_next("w", {"wf": HASH}, TTL, NOW, 5)  # prepares the statement
        proxy.round_trips = 0

        for _ in range(10):
            assert await backend.claim_next("w", {"wf": HASH}, TTL, NOW, 5) == []

        assert proxy.round_trips == 10
    finally:
        await proxy.stop()


# -- commit ----------------------------------------------------------------------------


async def test_a_ten_step_run_costs_one_round_trip_per_step_and_one_to_start(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    from sayiir_core import Flow
    from sayiir_core.runtime import DurableRunner, LocalExecutor

    flow = Flow("chain")
    for n in range(10):
        flow = flow.then(lambda x: x + 1, name=f"step_{n}")
    workflow = flow.build()
    proxy = WireProxy()
    await proxy.start()
    try:
        backend = await opener(url=proxy.url(postgres_schema[0]), min_size=1, max_size=1)
        engine = DurableRunner(backend, executor=LocalExecutor())
        await engine.run(workflow, "warm-up", 0)  # prepares the statements
        proxy.round_trips = 0

        status = await engine.run(workflow, "measured", 0)

        assert status.output == 10
        assert proxy.round_trips == 11  # the create, then one commit per step
    finally:
        await proxy.stop()


async def test_a_commit_is_one_round_trip_and_one_transaction(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    proxy = WireProxy()
    await proxy.start()
    try:
        backend = await opener(url=proxy.url(url), min_size=1, max_size=1)
        token = await claimed(backend)
        events = [HistoryEvent("task_completed", NOW, f"s{n}", 1, "w1") for n in range(2)]
        await backend.commit("i-1", token, step(checkpoints=[("warm", b"")]))
        proxy.round_trips, proxy.queries = 0, []

        for n in range(20):
            write = step(checkpoints=[(f"a{n}", b"1"), (f"b{n}", b"2")], events=events)
            await backend.commit("i-1", token, write)

        assert proxy.round_trips == 20
        assert proxy.queries == []  # no BEGIN/COMMIT: each step is one implicit transaction
    finally:
        await proxy.stop()
    conn = await asyncpg.connect(url)
    try:
        # Every row the last commit wrote carries the same transaction id.
        xids = await conn.fetch(
            f"""
            SELECT xmin::text FROM "{schema}".sayiir_instances WHERE instance_id = 'i-1'
            UNION ALL SELECT xmin::text FROM "{schema}".sayiir_checkpoints
                WHERE step_key IN ('a19', 'b19')
            UNION ALL (SELECT xmin::text FROM "{schema}".sayiir_history
                WHERE instance_id = 'i-1' ORDER BY seq DESC LIMIT 2)
            """
        )
    finally:
        await conn.close()
    assert len(xids) == 5
    assert len({row[0] for row in xids}) == 1


# -- durability and isolation -----------------------------------------------------------


async def test_everything_survives_close_and_reopen(opener: Opener) -> None:
    first = await opener()
    token = await claimed(first)
    event = HistoryEvent("task_completed", NOW + 1, "a", 1, "w1", {"ms": 2})
    await first.commit("i-1", token, step(checkpoints=[("a", b"\x00\x01")], events=[event]))
    await first.send_signal("i-1", "go", b"payload", NOW + 2)
    before = (await first.load("i-1"), await first.history("i-1"))
    signal = await first.next_signal("i-1", "go")
    await first.close()

    second = await opener()

    assert (await second.load("i-1"), await second.history("i-1")) == before
    assert await second.next_signal("i-1", "go") == signal
    assert [e.kind for e in before[1]] == ["started", "task_completed", "signal_sent"]
    await second.commit("i-1", token, step(checkpoints=[("b", b"")]))  # the claim is intact


async def test_schemas_are_isolated(opener: Opener, postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    other = f"{schema}_b"
    a = await opener()
    b = backend_from_url(f"{url}?schema={other}")
    assert isinstance(b, PostgresBackend)
    assert b.schema == other
    await b.open()
    try:
        await a.create(new("i-1", input=b"a"), ConflictPolicy.FAIL)
        await b.create(new("i-1", input=b"b"), ConflictPolicy.FAIL)
        await b.create(new("only-b"), ConflictPolicy.FAIL)
        await _listening(a)

        record_a, record_b = await a.get_record("i-1"), await b.get_record("i-1")
        assert record_a is not None
        assert record_b is not None
        assert (record_a.input, record_b.input) == (b"a", b"b")
        assert [r.instance_id for r in (await a.list_instances()).items] == ["i-1"]
        # A NOTIFY for schema b does not wake workers of schema a.
        waiting = asyncio.create_task(a.wait_for_work(0.3))
        await b.create(new("i-2"), ConflictPolicy.FAIL)
        started = time.monotonic()
        await waiting
        assert time.monotonic() - started > 0.15
    finally:
        await b.close()
        await _drop_schema(url, other)


async def _drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_open_is_idempotent_safe_concurrently_and_after_close(opener: Opener) -> None:
    backend = await opener()
    await asyncio.gather(*(backend.open() for _ in range(5)))

    await backend.create(new(), ConflictPolicy.FAIL)
    assert await backend.get_record("i-1") is not None
    await backend.close()
    with pytest.raises(BackendError, match="not open"):
        await backend.get_record("i-1")
    await backend.open()
    assert await backend.get_record("i-1") is not None


async def test_a_backend_used_from_another_event_loop_says_so(opener: Opener) -> None:
    backend = await opener()

    with pytest.raises(BackendError, match="another event loop"):
        run_sync(backend.get_record("i-1"))
    with pytest.raises(BackendError, match="another event loop"):
        run_sync(backend.open())
    assert await backend.get_record("i-1") is None  # still fine on its own loop


async def test_a_backend_reopens_after_its_loop_is_gone(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    backend = PostgresBackend(url, schema=schema)

    async def use_and_forget() -> None:
        await backend.open()
        await backend.create(new(), ConflictPolicy.FAIL)

    run_sync(use_and_forget())  # that loop is closed now, the backend never closed

    # Reopening drops the dead loop's pool. Its connections warn (ResourceWarning: the
    # point of calling close() in time) when collected: collect them here, not in
    # whichever later test runs when the collector next does.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        await backend.open()
        gc.collect()
    try:
        assert await backend.get_record("i-1") is not None
    finally:
        await backend.close()


# -- lost connections -------------------------------------------------------------------


async def test_reads_and_commits_are_retried_after_the_connection_drops(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    proxy = WireProxy()
    await proxy.start()
    try:
        backend = await opener(url=proxy.url(postgres_schema[0]), min_size=1, max_size=1)
        token = await claimed(backend)

        proxy.cut()
        assert await backend.get_record("i-1") is not None
        proxy.cut()
        await backend.commit("i-1", token, step(checkpoints=[("a", b"1")]))
        proxy.cut()
        assert await backend.renew("i-1", token, TTL, NOW + 2)
    finally:
        await proxy.stop()
    loaded = await (await opener()).load("i-1")
    assert loaded is not None
    assert dict(loaded.checkpoints) == {"a": b"1"}


def _lose_reply_of(statement: str, *, after_sending: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next ``statement`` fail with a lost connection, before or after it ran."""
    original = session_module.Attempt.write
    fired = False

    async def write(self: Any, conn: Any, text: str, *args: Any) -> list[Any]:
        nonlocal fired
        if text != statement or fired:
            return await original(self, conn, text, *args)
        fired = True
        self.in_doubt, self.statement = True, text
        if after_sending:
            await original(self, conn, text, *args)
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    monkeypatch.setattr(session_module.Attempt, "write", write)


@pytest.mark.parametrize("after_sending", [True, False])
async def test_a_commit_in_doubt_is_applied_exactly_once(
    opener: Opener, monkeypatch: pytest.MonkeyPatch, after_sending: bool
) -> None:
    backend = await opener()
    token = await claimed(backend)
    event = HistoryEvent("task_completed", NOW + 1, "a", 1, "w1")
    _lose_reply_of(backend._sql.commit, after_sending=after_sending, monkeypatch=monkeypatch)

    await backend.commit("i-1", token, step(checkpoints=[("a", b"1")], events=[event]))

    assert await backend.get_checkpoint("i-1", "a") == b"1"
    assert [e.kind for e in await backend.history("i-1")] == ["started", "task_completed"]


async def test_a_commit_in_doubt_that_lost_its_claim_raises_lease_lost(
    opener: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await opener()
    token = await claimed(backend)
    await backend.claim("i-1", "w2", TTL, NOW + 1)
    _lose_reply_of(backend._sql.commit, after_sending=False, monkeypatch=monkeypatch)

    with pytest.raises(LeaseLostError):
        await backend.commit("i-1", token, step(checkpoints=[("a", b"1")]))
    assert await backend.get_checkpoint("i-1", "a") is None


async def test_a_commit_still_running_when_its_connection_dies_is_settled_first(
    opener: Opener, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    proxy = WireProxy()
    await proxy.start()
    blocker = await asyncpg.connect(url)
    try:
        backend = await opener(url=proxy.url(url), max_size=2)
        token = await claimed(backend)
        # Another session holds the row lock, so the commit waits inside the server.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(
            f"SELECT 1 FROM \"{schema}\".sayiir_instances WHERE instance_id = 'i-1' FOR UPDATE"
        )
        committing = asyncio.create_task(
            backend.commit("i-1", token, step(checkpoints=[("a", b"1")]))
        )
        for _ in range(200):
            if await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ):
                break
            await asyncio.sleep(0.01)
        proxy.cut()  # the client side is gone; the server still waits for the lock
        await asyncio.sleep(0.3)
        await transaction.commit()

        # Without settling, the orphaned statement would write "a" and the retry would
        # then fail on it as a duplicate (LeaseLostError).
        assert await asyncio.wait_for(committing, 20) is None
    finally:
        await blocker.close()
        await proxy.stop()
    assert await (await opener()).get_checkpoint("i-1", "a") == b"1"
