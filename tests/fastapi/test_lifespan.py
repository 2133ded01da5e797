"""``Sayiir.lifespan``: opens once, runs in-process workers, drains on shutdown, composes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request

from sayiir_core import AsyncWorkflowClient, SqliteBackend
from sayiir_fastapi import Sayiir, WorkflowClientDep, get_client


async def _http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def _history_kinds(client: AsyncWorkflowClient, instance_id: str) -> list[tuple[str, str]]:
    return [(event.kind, event.step_key or "") for event in await client.history(instance_id)]


async def test_workers_run_what_an_endpoint_submits(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType
) -> None:
    sayiir = make_sayiir()
    app = test_apps.make_app(sayiir)
    async with LifespanManager(app) as manager, await _http(manager.app) as http:
        response = await http.post("/orders", json={"id": 7, "amount": 12.5})
        assert response.status_code == 201, response.text
        assert response.json() == {"instance_id": "order-7", "status": "running"}
        output = await sayiir.client.result("order-7", timeout=30)
    assert output == "order 7 shipped"


@pytest.mark.parametrize(("setting", "expected"), [("0", 0), ("2", 2), (" 3 ", 3), ("", 1)])
async def test_sayiir_workers_overrides_the_worker_count(
    make_sayiir: Callable[..., Sayiir],
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    expected: int,
) -> None:
    monkeypatch.setenv("SAYIIR_WORKERS", setting)
    sayiir = make_sayiir(workers=1)
    async with sayiir.lifespan(FastAPI()):
        assert len(sayiir.worker_ids) == expected
        assert len(set(sayiir.worker_ids)) == expected


async def test_no_workers_leaves_instances_for_others(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType
) -> None:
    sayiir = make_sayiir(workers=0)
    async with sayiir.lifespan(FastAPI()):
        await sayiir.client.submit(test_apps.checkout, "web-only", {"id": 1, "amount": 1})
        await asyncio.sleep(0.3)  # several poll intervals of a worker, had there been one
        assert (await sayiir.client.status("web-only")).status == "in_progress"
    # A worker that starts later picks it up.
    served = make_sayiir(workers=1)
    async with served.lifespan(FastAPI()):
        assert await served.client.result("web-only", timeout=30) == "order 1 shipped"


@pytest.mark.parametrize("setting", ["two", "-1", "1.5"])
async def test_a_bad_sayiir_workers_fails_the_startup(
    make_sayiir: Callable[..., Sayiir], monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv("SAYIIR_WORKERS", setting)
    sayiir = make_sayiir()
    with pytest.raises(ValueError, match="SAYIIR_WORKERS"):
        async with sayiir.lifespan(FastAPI()):
            pass
    assert not sayiir.running


async def test_the_lifespan_runs_twice_in_one_process(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType
) -> None:
    sayiir = make_sayiir()
    app = test_apps.make_app(sayiir)
    for order_id in (1, 2):
        async with LifespanManager(app) as manager, await _http(manager.app) as http:
            response = await http.post("/orders", json={"id": order_id, "amount": 3})
            assert response.status_code == 201
            assert await sayiir.client.result(f"order-{order_id}", timeout=30) == (
                f"order {order_id} shipped"
            )
            # The first run's instance is still there: the same database, opened again.
            assert (await sayiir.client.status("order-1")).is_completed()
        assert not sayiir.running
        assert not hasattr(app.state, "sayiir")


async def test_it_composes_with_the_apps_own_lifespan(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType
) -> None:
    sayiir = make_sayiir()
    steps: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        steps.append("app startup")
        async with sayiir.lifespan(app):
            steps.append(f"sayiir running: {sayiir.running}")
            yield {"greeting": "hello"}
            steps.append("app shutdown")
        steps.append(f"sayiir stopped: {not sayiir.running}")

    app: FastAPI = test_apps.make_app(sayiir, lifespan=lifespan)

    @app.get("/both")
    async def both(request: Request, client: WorkflowClientDep) -> dict[str, str]:
        status = await client.submit(test_apps.checkout, "composed", {"id": 3, "amount": 1})
        return {"greeting": request.state.greeting, "status": status.status}

    async with LifespanManager(app) as manager, await _http(manager.app) as http:
        response = await http.get("/both")
        assert response.json() == {"greeting": "hello", "status": "running"}
        assert await sayiir.client.result("composed", timeout=30) == "order 3 shipped"
    assert steps == [
        "app startup",
        "sayiir running: True",
        "app shutdown",
        "sayiir stopped: True",
    ]


async def test_a_backend_handed_in_stays_open(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType, tmp_path: Path
) -> None:
    backend = SqliteBackend(str(tmp_path / "handed.db"))
    try:
        sayiir = make_sayiir(backend)
        async with sayiir.lifespan(FastAPI()):
            assert sayiir.client.backend is backend
            await sayiir.client.submit(test_apps.checkout, "handed", {"id": 4, "amount": 1})
            await sayiir.client.result("handed", timeout=30)
        # Ours to close, still usable after the lifespan ended.
        record = await backend.get_record("handed")
        assert record is not None
        assert record.status == "completed"
    finally:
        await backend.close()


async def test_running_steps_finish_within_the_grace_period(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType
) -> None:
    sayiir = make_sayiir(shutdown_grace=30.0, claim_ttl=300.0)
    started = test_apps.GATES.setdefault("drain.started", asyncio.Event())
    gate = test_apps.GATES.setdefault("drain", asyncio.Event())
    async with sayiir.lifespan(FastAPI()):
        client = sayiir.client
        await client.submit(test_apps.gate_flow, "draining", {"gate": "drain"})
        await asyncio.wait_for(started.wait(), 30)
        # Shutdown begins with the step still running; it may finish during the grace.
        asyncio.get_running_loop().call_later(0.2, gate.set)
    kinds = await _history_after(make_sayiir, "draining")
    assert ("task_completed", "gated") in kinds
    assert ("task_completed", "after_gate") not in kinds  # nothing new started


async def test_steps_still_running_after_the_grace_are_cancelled_and_released(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType
) -> None:
    # claim_ttl=300: the next run goes on at once only if the claim was released.
    sayiir = make_sayiir(shutdown_grace=0.2, claim_ttl=300.0)
    started = test_apps.GATES.setdefault("stuck.started", asyncio.Event())
    async with sayiir.lifespan(FastAPI()):
        await sayiir.client.submit(test_apps.gate_flow, "stuck", {"gate": "stuck"})
        await asyncio.wait_for(started.wait(), 30)
    # The lifespan returned although the gate never opened: the step was cancelled.
    kinds = await _history_after(make_sayiir, "stuck")
    assert ("task_completed", "gated") not in kinds
    test_apps.GATES["stuck"].set()  # the step runs again in the next run, and passes
    again = make_sayiir(claim_ttl=300.0)
    async with again.lifespan(FastAPI()):
        assert await again.client.result("stuck", timeout=60) == "through"
    kinds = await _history_after(make_sayiir, "stuck")
    assert kinds.count(("task_completed", "gated")) == 1


async def test_a_drained_instance_goes_on_at_once_in_the_next_run(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType
) -> None:
    # claim_ttl=300: were the claim not released at shutdown, the next run would wait
    # five minutes and this test would time out.
    started = test_apps.GATES.setdefault("again.started", asyncio.Event())
    gate = test_apps.GATES.setdefault("again", asyncio.Event())
    first = make_sayiir(claim_ttl=300.0)
    async with first.lifespan(FastAPI()):
        await first.client.submit(test_apps.gate_flow, "again", {"gate": "again"})
        await asyncio.wait_for(started.wait(), 30)
        asyncio.get_running_loop().call_later(0.1, gate.set)
    second = make_sayiir(claim_ttl=300.0)
    async with second.lifespan(FastAPI()):
        assert await second.client.result("again", timeout=60) == "through"


async def _history_after(
    make_sayiir: Callable[..., Sayiir], instance_id: str
) -> list[tuple[str, str]]:
    reader = make_sayiir(workers=0)
    async with reader.lifespan(FastAPI()):
        return await _history_kinds(reader.client, instance_id)


async def test_one_sayiir_serves_one_app_at_a_time(make_sayiir: Callable[..., Sayiir]) -> None:
    sayiir = make_sayiir(workers=0)
    async with sayiir.lifespan(FastAPI()):
        with pytest.raises(RuntimeError, match="already running"):
            async with sayiir.lifespan(FastAPI()):
                pass
        assert sayiir.running


async def test_the_client_outside_the_lifespan_says_what_to_do(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType
) -> None:
    sayiir = make_sayiir()
    with pytest.raises(RuntimeError, match=r"lifespan=sayiir\.lifespan"):
        _ = sayiir.client
    app = test_apps.make_app(sayiir, dashboard=False)  # its lifespan never runs here
    async with await _http(app) as http:
        response = await http.get("/sayiir/instances")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text


async def test_an_unreachable_database_fails_the_startup() -> None:
    sayiir = Sayiir("postgresql://nobody@127.0.0.1:1/none", workers=0)
    with pytest.raises(Exception) as caught:
        async with sayiir.lifespan(FastAPI()):
            pass
    assert not sayiir.running
    assert "password" not in str(caught.value)


def test_get_client_is_one_stable_function() -> None:
    from sayiir_fastapi import dependencies

    assert get_client is dependencies.get_client
    assert WorkflowClientDep.__metadata__[0].dependency is get_client  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"backend": 42}, TypeError, "URL"),
        ({"workers": -1}, ValueError, "workers"),
        ({"workers": True}, ValueError, "workers"),
        ({"concurrency": 0}, ValueError, "concurrency"),
        ({"shutdown_grace": -1}, ValueError, "shutdown_grace"),
        ({"poll_interval": 0}, ValueError, "poll_interval"),
        ({"workflows": ["checkout"]}, TypeError, "built workflows"),
    ],
)
def test_bad_settings_are_refused_at_once(
    arguments: dict[str, object], error: type[Exception], match: str
) -> None:
    settings: dict[str, object] = {"backend": "memory://", **arguments}
    backend = settings.pop("backend")
    with pytest.raises(error, match=match):
        Sayiir(backend, **settings)  # type: ignore[arg-type]


def test_two_workflows_with_one_id_are_refused(test_apps: ModuleType) -> None:
    with pytest.raises(ValueError, match="checkout"):
        Sayiir("memory://", workflows=[test_apps.checkout, test_apps.checkout])


async def test_workers_without_workflows_fail_the_startup() -> None:
    sayiir = Sayiir("memory://", workers=1)
    with pytest.raises(ValueError, match="workers=0"):
        async with sayiir.lifespan(FastAPI()):
            pass
