"""Fixtures of the FastAPI tests: the shared workflows, an app in process, an HTTP client.

``apps.py`` is loaded under the name ``sayiir_fastapi_test_apps`` (this directory is
not a package; uvicorn loads the same file in the subprocess tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from sayiir_fastapi import Sayiir

HERE = Path(__file__).resolve().parent


def _load_apps() -> ModuleType:
    name = "sayiir_fastapi_test_apps"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "apps.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


apps = _load_apps()


@pytest.fixture
def test_apps() -> ModuleType:
    """The module of shared workflows (``checkout``, ``approval``, ``failing``...)."""
    apps.GATES.clear()
    return apps


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def make_sayiir(sqlite_url: str) -> Callable[..., Sayiir]:
    """A ``Sayiir`` over the shared workflows on this test's SQLite file (fast polling)."""

    def make(backend: Any = None, **options: Any) -> Sayiir:
        settings: dict[str, Any] = {
            "workflows": apps.ALL_WORKFLOWS,
            "workers": 1,
            "poll_interval": 0.05,
            "shutdown_grace": 10.0,
            **options,
        }
        return Sayiir(backend if backend is not None else sqlite_url, **settings)

    return make


@pytest.fixture
async def served(
    make_sayiir: Callable[..., Sayiir],
) -> AsyncIterator[tuple[FastAPI, Sayiir, httpx.AsyncClient]]:
    """``(app, sayiir, http)``: the app's lifespan running, an httpx client into it."""
    sayiir = make_sayiir()
    app = apps.make_app(sayiir)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            yield app, sayiir, http


@pytest.fixture
async def http(served: tuple[FastAPI, Sayiir, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[2]


@asynccontextmanager
async def live_server(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on this test's loop (lifespan included); yields its URL.

    httpx's ASGI transport hands over a response only once it is complete, so streams
    (Server-Sent Events) are tested through a real server.
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", loop="none"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=None))
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
def serve_live() -> Callable[[FastAPI], AbstractAsyncContextManager[str]]:
    """``async with serve_live(app) as url``: the app under a real uvicorn, in this loop."""
    return live_server


class UvicornProcess:
    """``python -m uvicorn served_app:app`` in a subprocess, on a free port."""

    def __init__(self, env: dict[str, str], *, workers: int = 1) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "uvicorn", "served_app:app",
            "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
        root = str(HERE.parents[1])
        self.process = subprocess.Popen(
            command,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/sayiir/workflows", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"uvicorn did not answer within {timeout}s:\n{self.output()}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a process manager stops it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def stop_gracefully(self) -> str:
        """SIGTERM; asserts the lifespan shut down cleanly; returns the server's output."""
        code = self.terminate()
        output = self.output()
        # Recent uvicorn re-raises the signal after a clean shutdown: -SIGTERM is fine too.
        assert code in (0, -signal.SIGTERM), f"uvicorn exited {code}:\n{output}"
        assert "Traceback" not in output, output
        return output

    def output(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stdout is not None
        return self.process.stdout.read()


@pytest.fixture
def start_uvicorn() -> Iterator[Callable[..., UvicornProcess]]:
    """Start served_app under uvicorn (stopped with SIGTERM, then killed, at the end)."""
    started: list[UvicornProcess] = []

    def start(env: dict[str, str], *, workers: int = 1) -> UvicornProcess:
        server = UvicornProcess(env, workers=workers)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.terminate(timeout=30)
        if server.process.stdout is not None:
            server.process.stdout.close()
