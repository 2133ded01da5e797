"""``sayiir_django``: ``DjangoBackend`` on PostgreSQL and SQLite, and the admin list at scale.

S1 runs ``run_workflow(wf, 0, instance_id=..., backend=DjangoBackend())``, the shapes of
``bench_ours``. S2 runs workers the way ``manage.py sayiir worker`` does
(``sayiir_django.worker.run_worker``: ``DjangoBackend`` plus ``DjangoExecutor``,
concurrency 16) in separate processes, stopped with SIGTERM; the bench process submits
and waits through ``WorkflowClient`` on a ``DjangoBackend``. Django is configured in
code (no project needed): the instances live in the database ``sayiir_bench_django``,
dropped and recreated per row, or in a SQLite file in WAL mode with
``synchronous=FULL`` and IMMEDIATE transactions, as ``SqliteBackend`` is measured.

Three ways to run it::

    python benchmarks/run.py --systems ours,dbos,django --scenarios S1,S2   # "django" in
                                                      # run.py's MODULES: bench_django
    python benchmarks/bench_django.py [--quick]       # the same run: ours, DBOS and
                                                      # these rows (S1, S2), then the admin
    python benchmarks/bench_django.py admin [--quick] # the admin line alone

The admin line fills ``sayiir_instance`` with 100,000 instances (one ``INSERT ...
SELECT generate_series``; 20,000 with ``--quick``) on PostgreSQL, then times the
admin's instance list through Django's test client (a logged-in superuser, the full
middleware and template rendering): unfiltered, filtered by status, and a search; p50
and p99 over the runs, and the queries each page costs. The targets: under 300 ms, at
most 10 queries.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common import (
    OBSERVE_INTERVAL,
    Reporter,
    Result,
    Row,
    Settings,
    measure_s2,
    percentile,
    run_id,
    run_sequential,
    versioned,
)

SYSTEM = "django"
PG_DATABASE = "sayiir_bench_django"
WORKER_CONCURRENCY = 16
ADMIN_INSTANCES = 100_000
ADMIN_INSTANCES_QUICK = 20_000
_LABEL = "ours, DjangoBackend"

_LABEL = f"{_LABEL} ({versioned('django', 'Django')})"
ROWS = [
    Row(SYSTEM, "postgres", f"{_LABEL}, PostgreSQL", ("S1", "S2")),
    Row(SYSTEM, "sqlite", f"{_LABEL}, SQLite (FULL)", ("S1", "S2")),
]

WORKER_NOTE = (
    "run_worker (DjangoBackend + DjangoExecutor, concurrency={c}, poll_interval={p}) in "
    "{n} separate process(es), as `manage.py sayiir worker`; client: WorkflowClient.result "
    "(woken by NOTIFY on PostgreSQL, re-reading every 1 ms on SQLite)"
)


def available() -> str:
    try:
        import django  # noqa: F401
        import sayiir_django  # noqa: F401
    except ImportError as error:
        return f"Django or sayiir_django not importable ({error}); pip install -e '.[django]'"
    if importlib_missing("psycopg"):
        return "psycopg not installed (Django on PostgreSQL needs it): pip install psycopg"
    return ""


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


# -- Django, configured in code ----------------------------------------------------------


def database_settings(backend: str, settings: Settings) -> dict[str, Any]:
    if backend == "postgres":
        url = urlsplit(settings.pg_database_url(PG_DATABASE))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": PG_DATABASE,
            "USER": url.username or "postgres",
            "PASSWORD": url.password or "",
            "HOST": url.hostname or "127.0.0.1",
            "PORT": str(url.port or 5432),
            # Persistent, as a deployed admin would run; a new connection per request
            # would add its set-up to every page.
            "CONN_MAX_AGE": 60,
        }
    if backend == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(Path(settings.work_dir) / "django-bench.sqlite3"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
            },
        }
    raise ValueError(f"unknown backend {backend!r}")


def configure_django(backend: str, settings: Settings) -> None:
    """Settings for a project of sayiir_django and the admin; idempotent per process."""
    import django
    from django.conf import settings as django_settings

    if django_settings.configured:
        return
    django_settings.configure(
        DEBUG=False,
        SECRET_KEY="sayiir-bench-only",
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        ROOT_URLCONF=__name__,  # urlpatterns: see __getattr__ below
        DATABASES={"default": database_settings(backend, settings)},
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "sayiir_django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        STATIC_URL="/static/",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        SAYIIR={"DATABASE": "default", "POLL_INTERVAL": settings.poll_interval},
    )
    django.setup()


def __getattr__(name: str) -> Any:
    # ROOT_URLCONF is this module; its URLs need configured settings, so they are made on
    # first use rather than at import (run.py imports this module before any setup).
    if name == "urlpatterns":
        from django.contrib import admin
        from django.urls import path

        return [path("admin/", admin.site.urls)]
    raise AttributeError(name)


def recreate_pg_database(settings: Settings) -> None:
    import psycopg

    with psycopg.connect(settings.pg_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def prepare(backend: str, settings: Settings, *, fresh: bool) -> None:
    """Configure Django on ``backend``; ``fresh``: a new empty database, migrated."""
    if fresh and backend == "postgres":
        recreate_pg_database(settings)
    configure_django(backend, settings)
    if fresh:
        migrate()


# -- one row -------------------------------------------------------------------------------


def run_row(row: Row, settings: Settings, reporter: Reporter) -> None:
    from sayiir_core import WorkflowClient

    from bench_ours import build_flows, shapes_for

    prepare(row.backend, settings, fresh=True)
    from sayiir_django.backend import DjangoBackend  # its models need the settings

    tag = run_id()
    flows = build_flows(asynchronous=False)
    store = DjangoBackend("default")
    run_sequential(reporter, settings, shapes_for(row.backend, flows, store, tag))
    if "S2" in row.scenarios:
        run_s2(row, settings, reporter, store, tag)
    WorkflowClient(store, owns_backend=True).close()


def run_s2(row: Row, settings: Settings, reporter: Reporter, store: Any, tag: str) -> None:
    from sayiir_core import WorkflowClient

    from bench_ours import build_flows

    flows = build_flows(asynchronous=False)
    client = WorkflowClient(store)
    note = WORKER_NOTE.format(c=WORKER_CONCURRENCY, p=settings.poll_interval, n=1)
    poll = OBSERVE_INTERVAL if row.backend == "sqlite" else None

    def submit(instance_id: str) -> str:
        client.submit(flows["chain"], instance_id, 0)
        return instance_id

    def wait(instance_id: str) -> Any:
        return client.result(instance_id, timeout=120, poll_interval=poll)

    with worker_processes(row.backend, settings, 1):
        reporter.measure(
            "S2", lambda: Result(row.key, "S2", measure_s2(submit, wait, settings, tag), note)
        )


@contextmanager
def worker_processes(backend: str, settings: Settings, count: int) -> Iterator[None]:
    spec = json.dumps({"backend": backend, "settings": settings.to_json()})
    procs: list[subprocess.Popen[str]] = []
    try:
        for n in range(count):
            command = [sys.executable, str(Path(__file__).resolve()), "worker", spec, f"dj-{n}"]
            procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker process did not start (said {line!r})")
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)  # graceful, as for `manage.py sayiir worker`
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve_worker(spec_json: str, worker_id: str) -> int:
    """Worker process: ``run_worker`` (what ``manage.py sayiir worker`` runs) until SIGTERM."""
    from bench_ours import build_flows

    spec = json.loads(spec_json)
    settings = Settings.from_json(spec["settings"])
    prepare(spec["backend"], settings, fresh=False)
    from sayiir_django.worker import WorkerOptions, run_worker

    options = WorkerOptions(
        using="default",
        concurrency=WORKER_CONCURRENCY,
        poll_interval=settings.poll_interval,
        claim_ttl=30.0,
        worker_id=worker_id,
    )
    print("ready", flush=True)
    return run_worker(list(build_flows(asynchronous=False).values()), options)


# -- the admin list over many instances --------------------------------------------------


def fill_instances(count: int) -> None:
    """``count`` instances in one statement: a mix of statuses and workflows over 60 days."""
    from django.db import connection

    statuses = ["completed", "completed", "completed", "failed", "running", "waiting"]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO sayiir_instance (
                instance_id, workflow_id, definition_hash, status, input, output, control,
                created_at, updated_at, created, claim_token, priority, history_seq,
                has_shared_steps, current_step, attempt)
            SELECT 'order-' || n, 'checkout_' || (n %% 4), 'h', (%s::text[])[1 + n %% 6],
                   '\\x30'::bytea, '\\x31'::bytea, '{}',
                   t, t + 1.5 + (n %% 7), to_timestamp(t), 0, 3, 3, false, 'charge', 1
            FROM generate_series(1, %s) AS n,
                 LATERAL (SELECT extract(epoch FROM now()) - 60 * 86400.0 * (1 - n::float8 / %s)
                          AS t) AS times
            """,
            [statuses, count, count],
        )
        cursor.execute("ANALYZE sayiir_instance")


def time_page(browser: Any, url: str, runs: int) -> tuple[dict[str, float], int, int]:
    """p50/p99 of ``runs`` GETs of ``url`` after two warm-ups; the queries of one; the status."""
    from django.db import connection

    for _ in range(2):
        browser.get(url)
    sent: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = browser.get(url)
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        browser.get(url)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    samples.sort()
    figures = {"p50_ms": percentile(samples, 0.5), "p99_ms": percentile(samples, 0.99)}
    return figures, len(sent), response.status_code


def measure_admin(settings: Settings) -> list[tuple[str, dict[str, float], int, int]]:
    prepare("postgres", settings, fresh=True)
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    count = ADMIN_INSTANCES_QUICK if settings.quick else ADMIN_INSTANCES
    started = time.monotonic()
    fill_instances(count)
    print(f"filled {count:,} instances in {time.monotonic() - started:.1f} s", flush=True)
    browser = Client()
    browser.force_login(User.objects.create_superuser("bench", password="bench"))
    changelist = reverse("admin:sayiir_django_workflowinstance_changelist")
    runs = 5 if settings.quick else 20
    pages = [
        ("list, newest first", changelist),
        ("list, status=failed", f"{changelist}?status=failed"),
        ("list, search an id", f"{changelist}?q=order-4242"),
        ("list, page 100", f"{changelist}?p=100"),
    ]
    return [(label, *time_page(browser, url, runs)) for label, url in pages]


def render_admin(results: list[tuple[str, dict[str, float], int, int]], count: int) -> str:
    lines = [
        f"Django admin, instance list over {count:,} instances (PostgreSQL; target "
        "under 300 ms, at most 10 queries)",
        "",
        "| page | p50 | p99 | queries | HTTP |",
        "|---|---|---|---|---|",
    ]
    for label, figures, queries, status in results:
        lines.append(
            f"| {label} | {figures['p50_ms']:.1f} ms | {figures['p99_ms']:.1f} ms "
            f"| {queries} | {status} |"
        )
    return "\n".join(lines)


# -- standalone ----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        return serve_worker(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=["all", "admin"], default="all")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "SAYIIR_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--poll-interval", type=float, default=0.01)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    status = 0
    if args.what == "all":
        status = run_suite_rows(args)
    # The admin line in a process of its own: Django is configured once per process.
    command = [sys.executable, str(Path(__file__).resolve()), "admin-child", args.pg_url]
    command += ["--quick"] if args.quick else []
    return subprocess.call(command) or status


def run_suite_rows(args: argparse.Namespace) -> int:
    """run.py with this module registered: ours and DBOS on SQLite and PostgreSQL, and
    DjangoBackend, S1 and S2, in one run."""
    import run

    run.MODULES.setdefault(SYSTEM, Path(__file__).stem)
    argv = ["--systems", "ours,dbos,django", "--scenarios", "S1,S2"]
    argv += ["--backends", "sqlite,postgres", "--pg-url", args.pg_url]
    argv += ["--poll-interval", str(args.poll_interval)]
    argv += ["--quick"] if args.quick else []
    argv += ["--json", str(args.json)] if args.json else []
    argv += ["--markdown", str(args.markdown)] if args.markdown else []
    return run.main(argv)


def admin_child(pg_url: str, quick: bool) -> int:
    settings = Settings.make(
        quick=quick, pg_url=pg_url, redis_url="", work_dir="/nonexistent", poll_interval=0.01
    )
    results = measure_admin(settings)
    count = ADMIN_INSTANCES_QUICK if quick else ADMIN_INSTANCES
    print("\n" + render_admin(results, count) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["admin-child"]:
        sys.exit(admin_child(sys.argv[2], "--quick" in sys.argv[3:]))
    sys.exit(main(sys.argv[1:]))
