"""HTTP benchmark: a 3-step workflow started from a FastAPI endpoint, ours beside DBOS.

Each system serves a FastAPI app under a real ``uvicorn`` (one process, a subprocess of
this script) with its workers in that process, on SQLite and on PostgreSQL:

- **ours**: ``Sayiir(url, workflows=[chain3], workers=1)``, its router:
  ``POST /workflows/chain3/instances`` then ``GET /instances/{id}/result?timeout=``
  (a submit is handed to the in-process worker while it has a free slot: stored
  claimed, four commits per instance on PostgreSQL);
- **DBOS**: ``DBOS.launch()`` in the app's lifespan, ``POST /start``
  (``DBOS.start_workflow``) then ``GET /result/{id}``
  (``DBOS.retrieve_workflow(id).get_result()``), sync endpoints as in DBOS's guide.

Figures, measured by an httpx client in this process:

- **submit→result p50/p99**: one client, sequential: the submit request and the result
  request until the output (3) is back;
- **submit req/s**: 32 concurrent clients posting submits for a fixed time; only the
  submit requests are timed (the workers run meanwhile, as in production).

Run (DBOS is in the ``bench`` group)::

    /work/venv-bench/bin/pip install -e '.[postgres,fastapi]' dbos uvicorn httpx
    /work/venv-bench/bin/python benchmarks/bench_fastapi.py [--quick] [--systems ours,dbos]

(or, without installing this project, its dependencies and ``PYTHONPATH=.``). Each peer
runs in its documented setup: ours with the lifespan and the router; DBOS launched in
the app's lifespan, sync endpoints, ``get_result`` polling every ``POLL_INTERVAL``
(10 ms; its default, 1 s, would make its latency the poll's).

Nothing here asserts a timing; the machine's load moves every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

DEFAULT_PG = os.environ.get("SAYIIR_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CONCURRENCY = 32
ROOT = str(Path(__file__).resolve().parents[1])
STEPS = 3
# How often DBOS's get_result polls for the output (DBOS has no push for it). Ours keeps
# its default poll interval (1 s): it is only the fallback, workers and result waits wake
# on LISTEN/NOTIFY on PostgreSQL and on in-process notices on SQLite; polling every
# 10 ms would only spend the server's CPU on empty claims.
POLL_INTERVAL = 0.01


# -- the served apps (run in the uvicorn subprocess) -------------------------------------


def inc(x: int) -> int:
    return x + 1


def ours_app(url: str) -> Any:
    from fastapi import FastAPI
    from sayiir_fastapi import Sayiir

    from sayiir_core import Flow

    chain3 = Flow("chain3").then(inc, name="s1").then(inc, name="s2").then(inc, name="s3").build()
    sayiir = Sayiir(url, workflows=[chain3], workers=1, concurrency=64)
    app = FastAPI(lifespan=sayiir.lifespan)
    app.include_router(sayiir.router())
    return app


def dbos_app(url: str) -> Any:
    from contextlib import asynccontextmanager

    from dbos import DBOS
    from fastapi import FastAPI

    DBOS(config={"name": "bench-fastapi", "system_database_url": url, "log_level": "WARNING"})
    step_inc = DBOS.step(name="inc")(inc)

    @DBOS.workflow(name="chain3")
    def chain3(x: int) -> int:
        for _ in range(STEPS):
            x = step_inc(x)
        return x

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        DBOS.launch()  # DBOS 3 launches from the app's lifespan
        try:
            yield
        finally:
            DBOS.destroy()

    app = FastAPI(lifespan=lifespan)

    # Sync endpoints (FastAPI runs them in its thread pool), as DBOS's FastAPI guide does:
    # the *_async variants are for async workflows.
    @app.post("/start", status_code=201)
    def start() -> dict[str, str]:
        handle = DBOS.start_workflow(chain3, 0)
        return {"instance_id": handle.get_workflow_id()}

    @app.get("/result/{workflow_id}")
    def result(workflow_id: str) -> dict[str, Any]:
        # get_result polls the database, once a second by default: every POLL_INTERVAL
        # here, or DBOS's latency would be its default poll's.
        handle = DBOS.retrieve_workflow(workflow_id)
        return {"output": handle.get_result(polling_interval_sec=POLL_INTERVAL)}

    return app


def serve(system: str, url: str, port: int) -> None:
    import uvicorn

    app = ours_app(url) if system == "ours" else dbos_app(url)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Api:
    """How a client submits and reads the result on one system."""

    submit: Callable[[Any], Awaitable[str]]
    result: Callable[[Any, str], Awaitable[Any]]


def api_of(system: str) -> Api:
    if system == "ours":

        async def submit(http: Any) -> str:
            response = await http.post("/workflows/chain3/instances", json={"input": 0})
            response.raise_for_status()
            return str(response.json()["instance_id"])

        async def result(http: Any, instance_id: str) -> Any:
            while True:
                response = await http.get(
                    f"/instances/{instance_id}/result", params={"timeout": 30}
                )
                if response.status_code == 200:
                    return response.json()["output"]
                response.raise_for_status()

        return Api(submit, result)

    async def dbos_submit(http: Any) -> str:
        response = await http.post("/start")
        response.raise_for_status()
        return str(response.json()["instance_id"])

    async def dbos_result(http: Any, instance_id: str) -> Any:
        response = await http.get(f"/result/{instance_id}")
        response.raise_for_status()
        return response.json()["output"]

    return Api(dbos_submit, dbos_result)


async def latency(http: Any, api: Api, *, warmup: int, budget: float, minimum: int) -> list[float]:
    for _ in range(warmup):
        assert await api.result(http, await api.submit(http)) == STEPS
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline or len(samples) < minimum:
        started = time.perf_counter_ns()
        output = await api.result(http, await api.submit(http))
        samples.append((time.perf_counter_ns() - started) / 1e6)
        assert output == STEPS, output
    return samples


async def submit_rate(http: Any, api: Api, *, seconds: float) -> tuple[float, list[str]]:
    submitted: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            submitted.append(await api.submit(http))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return len(submitted) / (time.perf_counter() - started), submitted


def _start_server(system: str, url: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "serve", system, url, str(port)],
        env={**os.environ, "PYTHONPATH": ROOT},
    )


@contextlib.asynccontextmanager
async def served(system: str, url: str) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = _start_server(system, url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        async with httpx.AsyncClient(base_url=base, timeout=5) as probe_client:
            for _ in range(600):
                if process.poll() is not None:
                    raise RuntimeError(f"{system} server exited {process.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    await probe_client.get("/openapi.json")
                    break
                await asyncio.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def measure(system: str, url: str, quick: bool) -> dict[str, Any]:
    import httpx

    api = api_of(system)
    async with served(system, url) as base:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
            samples = await latency(
                http, api, warmup=5 if quick else 20, budget=1.0 if quick else 4.0, minimum=20
            )
            rate, ids = await submit_rate(http, api, seconds=1.5 if quick else 5.0)
            # Outside the timed region: every submitted instance finishes with 3.
            for instance_id in ids[:: max(1, len(ids) // 50)]:
                assert await api.result(http, instance_id) == STEPS
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "runs": len(ordered),
        "submits_per_s": rate,
        "submits": len(ids),
    }


async def pg_database(server: str, name: str, *, create: bool) -> str:
    import asyncpg

    connection = await asyncpg.connect(server, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base, _, _ = server.rpartition("/")
    return f"{base}/{name}"


def version(name: str) -> str:
    try:
        return f"{name} {metadata.version(name)}"
    except metadata.PackageNotFoundError:
        if name == "sayiir-py":  # run from the tree (PYTHONPATH), not installed
            return f"{name} (this tree)"
        return f"{name} (not installed)"


async def main_async(args: argparse.Namespace) -> int:
    systems = [name for name in args.systems.split(",") if name]
    backends = [name for name in args.backends.split(",") if name]
    rows: list[tuple[str, str, dict[str, Any] | str]] = []
    work = Path(tempfile.mkdtemp(prefix="sayiir-bench-fastapi-"))
    try:
        for system in systems:
            for backend in backends:
                database = f"sayiir_bench_fastapi_{system}_{secrets.token_hex(3)}"
                try:
                    if backend == "postgres":
                        url = await pg_database(args.pg_url, database, create=True)
                    else:
                        url = f"sqlite:///{work / f'{system}.db'}"
                    print(f"running {system} on {backend}...", file=sys.stderr, flush=True)
                    rows.append((system, backend, await measure(system, url, args.quick)))
                except Exception as error:  # a row that fails says why; the others run
                    rows.append((system, backend, f"{type(error).__name__}: {error}"))
                finally:
                    if backend == "postgres":
                        with contextlib.suppress(Exception):
                            await pg_database(args.pg_url, database, create=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(rows, args.quick))
    return 0


def report(rows: list[tuple[str, str, dict[str, Any] | str]], quick: bool) -> str:
    labels = {
        "ours": version("sayiir-py") + " + FastAPI router",
        "dbos": version("dbos") + " from a FastAPI endpoint",
    }
    lines = [
        f"HTTP, 3-step workflow, uvicorn (1 process), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {version('fastapi')}, {version('uvicorn')}"
        + (" — QUICK, do not quote" if quick else ""),
        "",
        "| system | backend | submit→result p50 | p99 | submit req/s (32 clients) |",
        "|---|---|---|---|---|",
    ]
    for system, backend, figures in rows:
        if isinstance(figures, str):
            lines.append(f"| {labels[system]} | {backend} | {figures} | | |")
            continue
        lines.append(
            f"| {labels[system]} | {backend} | {figures['p50_ms']:.2f} ms | "
            f"{figures['p99_ms']:.2f} ms | {figures['submits_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default="ours,dbos")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--quick", action="store_true")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
