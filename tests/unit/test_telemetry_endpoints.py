"""The opt-in Prometheus endpoints: ``sayiir_fastapi.metrics`` and ``sayiir_django.metrics``."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from telemetry_capture import reset_globals

from sayiir_core import Flow, run_workflow
from sayiir_core.telemetry import prometheus
from sayiir_fastapi.metrics import metrics_router


def triple(value: int) -> int:
    return value * 3


@pytest.fixture
def fresh_metrics() -> Iterator[None]:
    reset_globals()
    prometheus._enabled = False
    yield None
    provider = metrics.get_meter_provider()
    if isinstance(provider, MeterProvider):
        provider.shutdown()  # unregisters its collector from prometheus_client's registry
    prometheus._enabled = False
    reset_globals()


async def test_fastapi_router_serves_the_step_counters(fresh_metrics: None) -> None:
    app = FastAPI()
    app.include_router(metrics_router(path="/internal/metrics"))
    run_workflow(Flow("scraped_fastapi").then(triple).build(), 1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/internal/metrics")
        openmetrics = await client.get(
            "/internal/metrics", headers={"accept": "application/openmetrics-text"}
        )
        schema = (await client.get("/openapi.json")).json()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "sayiir_steps_started_total{" in response.text
    assert 'sayiir_workflow_id="scraped_fastapi"' in response.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert "/internal/metrics" not in schema["paths"]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_django_view_serves_the_step_counters() -> None:
    done = _run(
        """
        import django
        from django.conf import settings

        settings.configure(ALLOWED_HOSTS=["testserver"])
        django.setup()
        from django.test import RequestFactory

        from sayiir_core import Flow, run_workflow
        from sayiir_django.metrics import metrics_view

        def triple(value):
            return value * 3

        run_workflow(Flow("scraped_django").then(triple).build(), 1)
        response = metrics_view(RequestFactory().get("/metrics"))
        print(response.status_code, response["Content-Type"])
        print(response.content.decode())
        print(metrics_view(RequestFactory().post("/metrics")).status_code)
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("200 text/plain")
    assert any(
        line.startswith("sayiir_steps_completed_total{") and 'sayiir_task_id="triple"' in line
        for line in lines
    )
    assert lines[-1] == "405"


def test_django_view_serves_the_databases_counts_as_gauges(tmp_path: Path) -> None:
    done = _run(
        f"""
        import django
        from django.conf import settings

        settings.configure(
            ALLOWED_HOSTS=["testserver"],
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "sayiir_django"],
            DATABASES={{"default": {{
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": {str(tmp_path / "gauges.sqlite3")!r},
                "OPTIONS": {{"transaction_mode": "IMMEDIATE"}},
            }}}},
        )
        django.setup()
        from django.core.management import call_command
        from django.test import RequestFactory

        from sayiir_core import Flow, WorkflowClient
        from sayiir_django.backend import DjangoBackend
        from sayiir_django.metrics import metrics_view

        call_command("migrate", verbosity=0)

        def triple(value):
            return value * 3

        flow = Flow("gauged").then(triple).build()
        client = WorkflowClient(DjangoBackend())
        client.submit(flow, "first", 1)
        client.submit(flow, "second", 2)
        print(metrics_view(RequestFactory().get("/metrics")).content.decode())
        """
    )
    assert done.returncode == 0, done.stderr
    values = {}  # "name status" -> value, without the scope labels
    for line in done.stdout.splitlines():
        match = re.match(r"(sayiir_\w+)\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
            status = labels.get("sayiir_instance_status", "")
            values[f"{match[1]} {status}".strip()] = float(match[3])
    assert values["sayiir_instances pending"] == 2, done.stdout
    assert values["sayiir_instances completed"] == 0
    assert values["sayiir_ready_backlog"] == 2
    assert values["sayiir_ready_oldest_age_seconds"] >= 0


def test_django_view_without_the_exporter_says_what_to_install() -> None:
    done = _run(
        """
        import sys
        sys.modules["opentelemetry.exporter.prometheus"] = None
        import django
        from django.conf import settings

        settings.configure(ALLOWED_HOSTS=["testserver"])
        django.setup()
        from django.core.exceptions import ImproperlyConfigured

        try:
            import sayiir_django.metrics
        except ImproperlyConfigured as error:
            print(error)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "pip install" in done.stdout
    assert "opentelemetry-exporter-prometheus" in done.stdout


def test_fastapi_router_without_the_exporter_fails_at_setup() -> None:
    done = _run(
        """
        import sys
        sys.modules["prometheus_client"] = None
        from sayiir_fastapi.metrics import PrometheusUnavailableError, metrics_router

        try:
            metrics_router()
        except PrometheusUnavailableError as error:
            print(type(error).__mro__[1].__name__, error)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ImportError ")
    assert "prometheus-client" in done.stdout
