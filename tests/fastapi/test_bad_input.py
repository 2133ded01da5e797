"""Bad input on every endpoint: unknown ids, malformed JSON, wrong types, huge bodies.

Each answer is a problem document with the right status, and none shows a traceback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from sayiir_core import Flow
from sayiir_fastapi import Sayiir

JSON = {"content-type": "application/json"}
ORDER = {"id": 1, "amount": 1}
HUGE = b'{"input": "' + b"x" * (2 * 1024 * 1024) + b'"}'


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code
    assert "Traceback" not in response.text
    assert 'File "' not in response.text


UNKNOWN_INSTANCE = [
    ("GET", "/sayiir/instances/nope"),
    ("GET", "/sayiir/instances/nope/history"),
    ("GET", "/sayiir/instances/nope/result"),
    ("GET", "/sayiir/instances/nope/result?timeout=1"),
    ("GET", "/sayiir/instances/nope/events"),
    ("POST", "/sayiir/instances/nope/signals/approve"),
    ("POST", "/sayiir/instances/nope/cancel"),
    ("POST", "/sayiir/instances/nope/pause"),
    ("POST", "/sayiir/instances/nope/unpause"),
    ("POST", "/sayiir/instances/nope/retry-from/charge"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_INSTANCE)
async def test_unknown_instances_are_404(http: httpx.AsyncClient, method: str, path: str) -> None:
    assert_problem(await http.request(method, path), 404, "instance_not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/sayiir/workflows/nope"), ("POST", "/sayiir/workflows/nope/instances")],
)
async def test_unknown_workflows_are_404(http: httpx.AsyncClient, method: str, path: str) -> None:
    response = await http.request(method, path, json={"input": {}})
    assert_problem(response, 404, "workflow_not_found")


MALFORMED = [
    "/sayiir/workflows/checkout/instances",
    "/sayiir/workflows/nope/instances",
    "/sayiir/instances/{id}/signals/approve",
    "/sayiir/instances/{id}/cancel",
    "/sayiir/instances/{id}/pause",
]


@pytest.mark.parametrize("path", MALFORMED)
@pytest.mark.parametrize("body", [b"{bad", b'{"input": ', b"\xff\xfe"])
async def test_malformed_json_is_400(
    http: httpx.AsyncClient, existing: str, path: str, body: bytes
) -> None:
    response = await http.post(path.format(id=existing), content=body, headers=JSON)
    assert_problem(response, 400, "malformed_json")


@pytest.mark.parametrize("path", MALFORMED[:1] + MALFORMED[2:])
async def test_huge_bodies_are_413(http: httpx.AsyncClient, existing: str, path: str) -> None:
    response = await http.post(path.format(id=existing), content=HUGE, headers=JSON)
    assert_problem(response, 413, "body_too_large")


async def test_huge_chunked_bodies_are_413_too(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    response = await http.post(
        "/sayiir/workflows/checkout/instances", content=chunks(), headers=JSON
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "body_too_large")


WRONG_QUERIES = [
    "/sayiir/instances?limit=abc",
    "/sayiir/instances?limit=0",
    "/sayiir/instances?limit=501",
    "/sayiir/instances?status=bogus",
    "/sayiir/instances?cursor=not-a-cursor",
    "/sayiir/instances?workflow_id=" + "w" * 300,
    "/sayiir/instances/{id}/result?timeout=-1",
    "/sayiir/instances/{id}/result?timeout=abc",
    "/sayiir/instances/{id}/result?timeout=61",
    "/sayiir/instances/{id}/result?timeout=nan",
    "/sayiir/instances/{id}/events?after=-1",
    "/sayiir/instances/{id}/events?after=x",
]


@pytest.mark.parametrize("path", WRONG_QUERIES)
async def test_wrong_query_types_are_422(http: httpx.AsyncClient, existing: str, path: str) -> None:
    assert_problem(await http.get(path.format(id=existing)), 422)


WRONG_BODIES: list[tuple[str, Any]] = [
    ("/sayiir/workflows/checkout/instances", {"input": {"id": "seven", "amount": 1}}),
    ("/sayiir/workflows/checkout/instances", {"input": {"id": 1, "amount": -5}}),
    ("/sayiir/workflows/checkout/instances", {"input": [1, 2]}),
    ("/sayiir/workflows/checkout/instances", {}),
    ("/sayiir/workflows/checkout/instances", [1, 2]),
    ("/sayiir/workflows/checkout/instances", "text"),
    ("/sayiir/workflows/checkout/instances", {"input": ORDER, "extra": 1}),
    ("/sayiir/workflows/checkout/instances", {"instance_id": "", "input": ORDER}),
    (
        "/sayiir/workflows/checkout/instances",
        {"instance_id": "a/b", "input": ORDER},
    ),
    ("/sayiir/workflows/checkout/instances", {"instance_id": 5, "input": ORDER}),
    ("/sayiir/workflows/checkout/instances", {"instance_id": "x" * 300, "input": {}}),
    ("/sayiir/instances/{id}/cancel", {"reason": 5}),
    ("/sayiir/instances/{id}/cancel", [1, 2]),
    ("/sayiir/instances/{id}/pause", {"unknown": True}),
    ("/sayiir/instances/{id}/pause", {"by": "x" * 300}),
]


@pytest.mark.parametrize(("path", "body"), WRONG_BODIES)
async def test_wrong_body_types_are_422(
    http: httpx.AsyncClient, existing: str, path: str, body: Any
) -> None:
    response = await http.post(path.format(id=existing), json=body)
    assert_problem(response, 422)


@pytest.mark.parametrize("key", ["a/b", "x" * 300, "tab\there"])
async def test_a_bad_idempotency_key_is_422(http: httpx.AsyncClient, key: str) -> None:
    response = await http.post(
        "/sayiir/workflows/checkout/instances",
        json={"input": ORDER},
        headers={"Idempotency-Key": key},
    )
    assert_problem(response, 422)


async def test_unknown_routes_are_still_404(http: httpx.AsyncClient) -> None:
    assert (await http.get("/sayiir/instances/x/nothing")).status_code == 404
    assert (await http.delete("/sayiir/instances/x")).status_code == 405


async def test_workflow_ids_that_are_no_path_segment_use_the_generic_route(
    test_apps: ModuleType,
) -> None:
    spaced = Flow("billing v2").then(test_apps.charge).build()
    sayiir = Sayiir("memory://", workflows=[spaced], workers=0)
    app = test_apps.make_app(sayiir)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            path = "/sayiir/workflows/billing%20v2/instances"
            bad = await http.post(path, json={"input": {"id": "x"}})
            good = await http.post(path, json={"instance_id": "b1", "input": ORDER})
            schema = (await http.get("/openapi.json")).json()
    assert_problem(bad, 422, "invalid_input")
    assert good.status_code == 201, good.text
    assert good.json()["workflow_id"] == "billing v2"
    assert "/sayiir/workflows/{workflow_id}/instances" in schema["paths"]


@pytest.fixture
async def existing(http: httpx.AsyncClient) -> str:
    """An instance that waits for a signal, so every control applies to it."""
    response = await http.post(
        "/sayiir/workflows/approval/instances", json={"instance_id": "there", "input": {}}
    )
    assert response.status_code == 201
    return "there"
