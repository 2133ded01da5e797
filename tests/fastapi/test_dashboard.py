"""The dashboard's pages, fragments and actions, in process (the browser test is apart)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

ORDER = {"id": 1, "amount": 2}


async def _seed(http: httpx.AsyncClient, served: Any) -> None:
    _, sayiir, _ = served
    for instance_id, workflow, value in [
        ("o-1", "checkout", ORDER),
        ("boom", "failing", {}),
        ("ap", "approval", {}),
    ]:
        response = await http.post(
            f"/sayiir/workflows/{workflow}/instances",
            json={"instance_id": instance_id, "input": value},
        )
        assert response.status_code == 201
    await sayiir.client.wait("o-1", timeout=30)
    await sayiir.client.wait("boom", timeout=30)
    for _ in range(600):
        if (await sayiir.client.status("ap")).status == "awaiting_signal":
            break
        await asyncio.sleep(0.05)


async def test_the_list_counts_and_filters(http: httpx.AsyncClient, served: Any) -> None:
    await _seed(http, served)
    page = await http.get("/sayiir/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert text.index('data-status="failed"') < text.index('data-status="completed"')
    for instance_id in ("o-1", "boom", "ap"):
        assert f'data-instance="{instance_id}"' in text
    assert "ValueError: card declined" in text
    failed = (await http.get("/sayiir/ui/", params={"status": "failed"})).text
    assert 'data-instance="boom"' in failed
    assert 'data-instance="o-1"' not in failed
    recent = (await http.get("/sayiir/ui/", params={"age": "1h", "workflow_id": "checkout"})).text
    assert 'data-instance="o-1"' in recent
    assert 'data-instance="boom"' not in recent
    fragment = await http.get("/sayiir/ui/fragments/list", params={"status": "failed"})
    assert "<html" not in fragment.text
    assert 'data-instance="boom"' in fragment.text


async def test_bad_filters_are_422(http: httpx.AsyncClient) -> None:
    for params in ({"status": "bogus"}, {"age": "1y"}, {"cursor": "garbage"}):
        response = await http.get("/sayiir/ui/", params=params)
        assert response.status_code == 422, params
        assert "Traceback" not in response.text


async def test_the_instance_page_shows_everything(http: httpx.AsyncClient, served: Any) -> None:
    await _seed(http, served)
    done = (await http.get("/sayiir/ui/instances/o-1")).text
    assert "order 1 shipped" in done  # the output
    assert "&#34;amount&#34;: 2" in done or '"amount": 2' in done  # the input
    assert 'data-step="charge" data-state="completed"' in done
    assert "Retry from" in done
    failed = (await http.get("/sayiir/ui/instances/boom")).text
    assert "ValueError: card declined" in failed
    assert 'data-state="failed"' in failed
    assert "Task traceback" in failed  # the dashboard is the operator's: it may show it
    waiting = (await http.get("/sayiir/ui/instances/ap")).text
    assert "Send signal" in waiting
    assert 'data-step="approval" data-state="awaiting_signal"' in waiting
    svg = await http.get("/sayiir/ui/instances/ap/graph.svg")
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.text.startswith("<svg")
    fragment = (await http.get("/sayiir/ui/instances/ap/fragment")).text
    assert "<html" not in fragment
    assert "Awaiting signal" in fragment
    assert (await http.get("/sayiir/ui/instances/nope")).status_code == 404
    assert (await http.get("/sayiir/ui/static/dashboard.js")).status_code == 200
    assert (await http.get("/sayiir/ui/static/../integration.py")).status_code == 404


async def test_actions_redirect_back_with_the_outcome(http: httpx.AsyncClient, served: Any) -> None:
    _, sayiir, _ = served
    await _seed(http, served)
    form = {"content-type": "application/x-www-form-urlencoded"}
    signalled = await http.post(
        "/sayiir/ui/instances/ap/actions/signal",
        content="signal_name=approve&payload=%7B%22ok%22%3A+true%7D",
        headers=form,
    )
    assert signalled.status_code == 303
    assert "notice=" in signalled.headers["location"]
    assert await sayiir.client.result("ap", timeout=30) == "decided: {'ok': True}"
    refused = await http.post("/sayiir/ui/instances/ap/actions/pause", headers=form)
    assert refused.status_code == 303
    assert "error=" in refused.headers["location"]  # finished: nothing to pause
    retried = await http.post(
        "/sayiir/ui/instances/boom/actions/retry-from", content="task_id=explode", headers=form
    )
    assert "notice=" in retried.headers["location"]
    bad_json = await http.post(
        "/sayiir/ui/instances/o-1/actions/signal",
        content="signal_name=x&payload=%7Bnope",
        headers=form,
    )
    assert "error=" in bad_json.headers["location"]
    unknown = await http.post("/sayiir/ui/instances/o-1/actions/explode", headers=form)
    assert unknown.status_code == 404


async def test_posts_from_another_site_are_refused(http: httpx.AsyncClient, served: Any) -> None:
    _, sayiir, _ = served
    await _seed(http, served)
    response = await http.post(
        "/sayiir/ui/instances/ap/actions/cancel",
        headers={
            "origin": "https://evil.example",
            "content-type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 403
    assert (await sayiir.client.status("ap")).status == "awaiting_signal"
    same_site = await http.post(
        "/sayiir/ui/instances/ap/actions/cancel",
        headers={"origin": "http://app", "content-type": "application/x-www-form-urlencoded"},
    )
    assert same_site.status_code == 303
    assert (await sayiir.client.status("ap")).status == "cancelled"
