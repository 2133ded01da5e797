"""The REST router: every endpoint, its status codes and its problem documents."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sayiir_fastapi import Sayiir

PROBLEM = "application/problem+json"
ORDER = {"id": 1, "amount": 9.5}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


async def submit(
    http: httpx.AsyncClient, workflow: str, body: Any, **kwargs: Any
) -> httpx.Response:
    return await http.post(f"/sayiir/workflows/{workflow}/instances", json=body, **kwargs)


async def test_workflows_lists_definitions_with_input_schemas(
    http: httpx.AsyncClient, test_apps: ModuleType
) -> None:
    response = await http.get("/sayiir/workflows")
    assert response.status_code == 200
    by_id = {item["workflow_id"]: item for item in response.json()}
    assert set(by_id) == {"checkout", "approval", "failing", "gate_flow", "fulfilment"}
    checkout = by_id["checkout"]
    assert checkout["definition_hash"] == test_apps.checkout.definition_hash
    assert [step["id"] for step in checkout["steps"]] == ["charge", "pack", "ship"]
    assert checkout["input_schema"]["required"] == ["id", "amount"]
    assert checkout["input_schema"]["properties"]["amount"]["exclusiveMinimum"] == 0
    assert by_id["failing"]["input_schema"] == {}  # annotated Any: anything goes
    one = await http.get("/sayiir/workflows/checkout")
    assert one.json() == checkout


async def test_submit_creates_an_instance(http: httpx.AsyncClient, served: Any) -> None:
    _, sayiir, _ = served
    response = await submit(http, "checkout", {"instance_id": "o-1", "input": ORDER})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["instance_id"] == "o-1"
    assert body["workflow_id"] == "checkout"
    # The in-process worker had a free slot: the instance was stored claimed by it.
    assert body["status"] == "running"
    assert response.headers["location"] == "http://app/sayiir/instances/o-1"
    assert await sayiir.client.result("o-1", timeout=30) == "order 1 shipped"


@pytest.mark.parametrize("instance_id", ["plain", "with space", "ünï%20cødé", "a?b#c"])
async def test_the_location_is_what_url_for_gives(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType, instance_id: str
) -> None:
    # The path is looked up once per app; it must still match url_for for any id, also
    # with the app mounted under a root path, and on a second app with another prefix.
    sayiir = make_sayiir(workers=0)
    inner = test_apps.make_app(sayiir)
    outer = FastAPI()
    outer.mount("/api", inner)
    async with sayiir.lifespan(inner):
        for app, base in ((inner, "http://app"), (outer, "http://app/api")):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                prefix = "/api" if app is outer else ""
                for attempt in range(2):
                    key = f"{instance_id}-{prefix.strip('/')}-{attempt}"
                    response = await http.post(
                        f"{prefix}/sayiir/workflows/checkout/instances",
                        json={"instance_id": key, "input": ORDER},
                    )
                    assert response.status_code == 201, response.text
                    expected = inner.url_path_for("sayiir_instance", instance_id=key)
                    assert response.headers["location"] == str(
                        expected.make_absolute_url(base_url=base + "/")
                    )


async def test_submit_without_an_id_makes_one(http: httpx.AsyncClient) -> None:
    first = await submit(http, "checkout", {"input": ORDER})
    second = await submit(http, "checkout", {"input": ORDER})
    assert first.status_code == second.status_code == 201
    assert first.json()["instance_id"] != second.json()["instance_id"]


async def test_submit_conflict_is_409(http: httpx.AsyncClient) -> None:
    assert (
        await submit(http, "checkout", {"instance_id": "dup", "input": ORDER})
    ).status_code == 201
    again = await submit(http, "checkout", {"instance_id": "dup", "input": ORDER})
    assert_problem(again, 409, "instance_already_exists")


async def test_idempotency_key_gives_the_id_and_makes_retries_safe(http: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "pay-77"}
    first = await submit(http, "checkout", {"input": ORDER}, headers=headers)
    assert first.status_code == 201
    assert first.json()["instance_id"] == "pay-77"
    retried = await submit(http, "checkout", {"input": ORDER}, headers=headers)
    assert retried.status_code == 200  # the same request again: the same instance
    assert retried.json()["instance_id"] == "pay-77"
    other = await submit(http, "checkout", {"input": {"id": 2, "amount": 1}}, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
    clash = await submit(http, "checkout", {"instance_id": "x", "input": ORDER}, headers=headers)
    assert_problem(clash, 422, "conflicting_ids")


async def test_submit_validates_the_first_steps_model(http: httpx.AsyncClient) -> None:
    response = await submit(http, "checkout", {"input": {"id": "seven", "amount": -1}})
    body = assert_problem(response, 422, "invalid_input")
    locations = {tuple(error["loc"]) for error in body["errors"]}
    assert ("body", "input", "id") in locations
    assert ("body", "input", "amount") in locations
    assert "seven" not in response.text  # the offending input is not echoed back


async def test_list_get_history(http: httpx.AsyncClient, served: Any) -> None:
    _, sayiir, _ = served
    for index in range(3):
        await submit(http, "checkout", {"instance_id": f"l-{index}", "input": ORDER})
    await submit(http, "failing", {"instance_id": "l-failed", "input": None})
    for instance_id in ("l-0", "l-1", "l-2", "l-failed"):
        await sayiir.client.wait(instance_id, timeout=30)

    page = (await http.get("/sayiir/instances", params={"limit": 2})).json()
    assert [item["instance_id"] for item in page["items"]] == ["l-failed", "l-2"]
    rest = (await http.get("/sayiir/instances", params={"cursor": page["next_cursor"]})).json()
    assert [item["instance_id"] for item in rest["items"]] == ["l-1", "l-0"]
    assert rest["next_cursor"] is None
    failed = (await http.get("/sayiir/instances", params={"status": "failed"})).json()
    assert [item["instance_id"] for item in failed["items"]] == ["l-failed"]
    by_workflow = await http.get("/sayiir/instances", params={"workflow_id": "failing"})
    assert len(by_workflow.json()["items"]) == 1

    one = (await http.get("/sayiir/instances/l-0")).json()
    assert one["status"] == "completed"
    assert one["output"] == "order 1 shipped"
    history = (await http.get("/sayiir/instances/l-0/history")).json()
    assert history[0]["kind"] == "started"
    assert [event["seq"] for event in history] == sorted(event["seq"] for event in history)
    assert history[-1]["kind"] == "completed"


async def test_failures_carry_no_traceback(http: httpx.AsyncClient, served: Any) -> None:
    _, sayiir, _ = served
    await submit(http, "failing", {"instance_id": "boom", "input": {}})
    await sayiir.client.wait("boom", timeout=30)
    status = await http.get("/sayiir/instances/boom")
    assert status.json()["error"] == "ValueError: card declined"
    assert status.json()["failed_task_id"] == "explode"
    history = await http.get("/sayiir/instances/boom/history")
    failed = [event for event in history.json() if event["kind"] == "task_failed"]
    assert failed[0]["detail"]["error"].startswith("ValueError: card declined")
    for response in (status, history):
        assert "Traceback" not in response.text
        assert "raise ValueError" not in response.text
    result = await http.get("/sayiir/instances/boom/result")
    body = assert_problem(result, 424, "task_failed")
    assert body["detail"] == "ValueError: card declined"
    assert body["failed_task_id"] == "explode"
    assert body["error_type"] == "ValueError"


async def test_result_long_polls(http: httpx.AsyncClient, test_apps: ModuleType) -> None:
    await submit(http, "gate_flow", {"instance_id": "slow", "input": {"gate": "result"}})
    pending = await http.get("/sayiir/instances/slow/result", params={"timeout": 0.2})
    assert pending.status_code == 202
    assert pending.json()["status"] in ("in_progress", "running")
    gate = test_apps.GATES.setdefault("result", asyncio.Event())
    asyncio.get_running_loop().call_later(0.2, gate.set)
    done = await http.get("/sayiir/instances/slow/result", params={"timeout": 30})
    assert done.status_code == 200
    assert done.json()["output"] == "through"


async def test_signal_cancel_pause_unpause(http: httpx.AsyncClient, served: Any) -> None:
    _, sayiir, _ = served
    await submit(http, "approval", {"instance_id": "ap-1", "input": {"amount": 5}})
    await _until(sayiir, "ap-1", "awaiting_signal")
    signalled = await http.post("/sayiir/instances/ap-1/signals/approve", json={"by": "maria"})
    assert signalled.status_code == 202
    result = await http.get("/sayiir/instances/ap-1/result", params={"timeout": 30})
    assert result.json()["output"] == "decided: {'by': 'maria'}"

    await submit(http, "approval", {"instance_id": "ap-2", "input": {}})
    await _until(sayiir, "ap-2", "awaiting_signal")
    paused = await http.post("/sayiir/instances/ap-2/pause", json={"reason": "audit", "by": "ops"})
    assert paused.status_code == 200
    assert paused.json()["status"] == "paused"
    assert paused.json()["paused_by"] == "ops"
    unpaused = await http.post("/sayiir/instances/ap-2/unpause")
    assert unpaused.status_code == 200
    await _until(sayiir, "ap-2", "awaiting_signal")
    cancelled = await http.post("/sayiir/instances/ap-2/cancel", json={"reason": "dup"})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["reason"] == "dup"
    result = await http.get("/sayiir/instances/ap-2/result")
    body = assert_problem(result, 409, "instance_cancelled")
    assert body["reason"] == "dup"
    # Finished: no more controls.
    assert_problem(await http.post("/sayiir/instances/ap-2/pause"), 409, "invalid_state")
    signal = await http.post("/sayiir/instances/ap-2/signals/approve", json=1)
    assert_problem(signal, 409, "invalid_state")


async def test_a_signal_name_the_workflow_never_waits_for_is_a_409(
    http: httpx.AsyncClient, served: Any
) -> None:
    _, sayiir, _ = served
    await submit(http, "approval", {"instance_id": "ap-typo", "input": {}})
    await _until(sayiir, "ap-typo", "awaiting_signal")
    typo = await http.post("/sayiir/instances/ap-typo/signals/aprove", json=1)
    body = assert_problem(typo, 409, "unknown_signal")
    assert "approve" in body["detail"]
    # Nothing was buffered: the right name still wakes it, with its own payload.
    await http.post("/sayiir/instances/ap-typo/signals/approve", json={"by": "ana"})
    result = await http.get("/sayiir/instances/ap-typo/result", params={"timeout": 30})
    assert result.json()["output"] == "decided: {'by': 'ana'}"


async def test_cancel_of_a_running_step_is_accepted_then_holds(
    http: httpx.AsyncClient, served: Any, test_apps: ModuleType
) -> None:
    _, sayiir, _ = served
    started = test_apps.GATES.setdefault("cancel.started", asyncio.Event())
    await submit(http, "gate_flow", {"instance_id": "c-run", "input": {"gate": "cancel"}})
    await asyncio.wait_for(started.wait(), 30)
    asked = await http.post("/sayiir/instances/c-run/cancel")
    assert asked.status_code == 202  # asked: it takes effect at the next checkpoint
    test_apps.GATES.setdefault("cancel", asyncio.Event()).set()
    final = await sayiir.client.wait("c-run", timeout=30)
    assert final.status == "cancelled"


async def test_retry_from_runs_again(http: httpx.AsyncClient, served: Any) -> None:
    _, sayiir, _ = served
    await submit(http, "checkout", {"instance_id": "r-1", "input": ORDER})
    await sayiir.client.wait("r-1", timeout=30)
    response = await http.post("/sayiir/instances/r-1/retry-from/pack")
    assert response.status_code == 200
    assert response.json()["status"] == "in_progress"
    assert await sayiir.client.result("r-1", timeout=30) == "order 1 shipped"
    kinds = [event["kind"] for event in (await http.get("/sayiir/instances/r-1/history")).json()]
    assert "retried_from" in kinds
    unknown = await http.post("/sayiir/instances/r-1/retry-from/no-such-step")
    assert_problem(unknown, 409, "invalid_state")


async def test_events_stream_history_then_end(
    make_sayiir: Callable[..., Sayiir], test_apps: ModuleType, serve_live: Any
) -> None:
    app = test_apps.make_app(make_sayiir())
    async with serve_live(app) as url, httpx.AsyncClient(base_url=url) as http:
        await _stream_and_resume(http, test_apps)


async def _stream_and_resume(http: httpx.AsyncClient, test_apps: ModuleType) -> None:
    await submit(http, "gate_flow", {"instance_id": "sse", "input": {"gate": "sse"}})
    gate = test_apps.GATES.setdefault("sse", asyncio.Event())
    messages: list[dict[str, str]] = []
    async with http.stream("GET", "/sayiir/instances/sse/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for message in _sse(stream):
            messages.append(message)
            if message.get("data", "").find('"kind":"started"') != -1:
                gate.set()  # the stream is live: let the instance finish
    assert messages[0] == {"retry": "1000"}
    messages = messages[1:]
    kinds = [_json(message)["kind"] for message in messages if "event" not in message]
    assert kinds[0] == "started"
    assert "task_completed" in kinds
    assert kinds[-1] == "completed"
    ids = [int(message["id"]) for message in messages if "id" in message]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))
    assert messages[-1]["event"] == "end"
    assert _json(messages[-1])["status"] == "completed"
    # Reconnecting with the last id sends only what came after, then ends.
    resumed: list[dict[str, str]] = []
    headers = {"Last-Event-ID": str(ids[-2])}
    async with http.stream("GET", "/sayiir/instances/sse/events", headers=headers) as stream:
        resumed = [message async for message in _sse(stream) if "data" in message]
    assert [message.get("id") for message in resumed] == [str(ids[-1]), None]


async def test_the_dependency_can_be_overridden(test_apps: ModuleType) -> None:
    """The test the docs show: swap the client for one over memory, no lifespan at all."""
    from sayiir_core import AsyncWorkflowClient, InMemoryBackend
    from sayiir_fastapi import get_client

    sayiir = Sayiir("sqlite:///never-opened.db", workflows=test_apps.ALL_WORKFLOWS)
    app: FastAPI = test_apps.make_app(sayiir)
    backend = InMemoryBackend()
    app.dependency_overrides[get_client] = lambda: AsyncWorkflowClient(backend)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        created = await http.post("/orders", json={"id": 5, "amount": 2})
        listed = await http.get("/sayiir/instances")
    assert created.status_code == 201
    assert [item["instance_id"] for item in listed.json()["items"]] == ["order-5"]
    assert (await backend.get_record("order-5")) is not None


async def test_openapi_shows_each_workflows_input(served: Any) -> None:
    app, _, http = served
    schema = (await http.get("/openapi.json")).json()
    operation = schema["paths"]["/sayiir/workflows/checkout/instances"]["post"]
    reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    model = schema["components"]["schemas"][reference.rsplit("/", 1)[1]]
    order = model["properties"]["input"]
    order_schema = schema["components"]["schemas"][order["$ref"].rsplit("/", 1)[1]]
    assert order_schema["required"] == ["id", "amount"]
    assert "/sayiir/workflows/approval/instances" in schema["paths"]
    assert "/sayiir/instances/{instance_id}/events" in schema["paths"]
    assert app.openapi() is not None


async def _until(sayiir: Sayiir, instance_id: str, wanted: str) -> None:
    for _ in range(600):
        if (await sayiir.client.status(instance_id)).status == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{instance_id} never reached {wanted}")


async def _sse(stream: httpx.Response) -> Any:
    message: dict[str, str] = {}
    async for line in stream.aiter_lines():
        if not line:
            if message:
                yield message
            message = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            message[field] = value


def _json(message: dict[str, str]) -> dict[str, Any]:
    import json

    result: dict[str, Any] = json.loads(message["data"])
    return result
