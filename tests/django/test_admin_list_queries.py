"""The admin's instance list costs a fixed number of queries, whatever the rows and filters.

Rows are bulk-inserted (more than two pages of them, each with a current step and a
duration to show), on SQLite and on PostgreSQL. A list that read anything per row (an
N+1) would cost more queries with 150 rows than with 60; it costs the same, at most 10,
with the permission look-ups of a non-superuser included. The time over 100,000 rows is
measured by ``benchmarks/bench_django.py admin``, not here. On PostgreSQL the date
hierarchy probes the index instead of scanning the rows; it must find the same periods
as Django's own query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import ExitStack
from typing import Literal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections
from django.db.models import QuerySet
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings
from sayiir_django_testproject.support import require_postgres

from sayiir_django._admin_dates import InstanceListQuerySet
from sayiir_django.models import WorkflowInstance

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "postgres"])]

LIST = reverse("admin:sayiir_django_workflowinstance_changelist")
MAX_QUERIES = 10
STATUSES = ("completed", "failed", "running", "waiting", "cancelled")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["default", pytest.param("postgres", marks=pytest.mark.postgres)])
def alias(request: pytest.FixtureRequest, settings: Settings) -> str:
    name: str = request.param
    if name == "postgres":
        require_postgres()
    settings.SAYIIR = {**settings.SAYIIR, "DATABASE": name}
    return name


def fill(alias: str, first: int, count: int) -> None:
    """Instances ``first`` .. ``first + count - 1``, over two months, in one bulk insert."""
    rows = []
    for n in range(first, first + count):
        created = START + dt.timedelta(hours=10 * n)
        at = created.timestamp()
        rows.append(
            WorkflowInstance(
                instance_id=f"order-{n}",
                workflow_id=f"checkout_{n % 3}",
                definition_hash="h",
                status=STATUSES[n % len(STATUSES)],
                input=b"0",
                output=b"1",
                created_at=at,
                updated_at=at + 2.5,
                created=created,
                current_step="charge",
                attempt=1 + n % 2,
                history_seq=3,
            )
        )
    WorkflowInstance.objects.using(alias).bulk_create(rows)


def operator() -> Client:
    """A staff user with the view and every action permission (not a superuser, so the
    page also looks up permissions)."""
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="sayiir_django",
            codename__in=[
                "view_workflowinstance",
                "cancel_workflowinstance",
                "pause_workflowinstance",
                "retry_workflowinstance",
                "signal_workflowinstance",
            ],
        )
    )
    browser = Client()
    browser.force_login(user)
    return browser


def queries_of(get: Callable[[], object]) -> list[str]:
    """Every statement ``get`` sends, on every database."""
    with ExitStack() as stack:
        captured = [
            stack.enter_context(CaptureQueriesContext(connections[name]))
            for name in ("default", "postgres")
        ]
        get()
    return [query["sql"] for capture in captured for query in capture.captured_queries]


PAGES = [
    "",
    "?p=2",
    "?status=failed",
    "?workflow_id=checkout_1",
    "?created__year=2026&created__month=3",
    "?q=order-1",
    "?o=3",  # sorted by a column
]


@pytest.mark.parametrize("query", PAGES)
def test_every_list_page_costs_the_same_few_queries_at_any_row_count(
    alias: str, query: str
) -> None:
    browser = operator()
    fill(alias, 0, 60)
    browser.get(LIST + query)  # warm: content types and permissions caches
    few = queries_of(lambda: browser.get(LIST + query))

    fill(alias, 60, 90)
    html: list[str] = []
    many = queries_of(lambda: html.append(browser.get(LIST + query).content.decode()))

    assert len(many) == len(few), "\n".join(many)
    assert len(many) <= MAX_QUERIES, "\n".join(many)
    assert "sayiir-badge" in html[0]


def test_the_first_page_shows_the_newest_fifty_with_their_columns(alias: str) -> None:
    browser = operator()
    fill(alias, 0, 150)

    html = browser.get(LIST).content.decode()

    assert html.count('class="sayiir-badge"') == 50
    assert ">order-149</a>" in html
    assert ">order-100</a>" in html
    assert ">order-99</a>" not in html
    assert "charge" in html
    assert "2.5 s" in html


def test_search_finds_ids_by_their_start(alias: str) -> None:
    browser = operator()
    fill(alias, 0, 150)

    html = browser.get(f"{LIST}?q=order-14").content.decode()

    assert html.count('class="sayiir-badge"') == 11  # order-14 and order-140 .. order-149
    assert ">order-14</a>" in html
    assert ">order-114</a>" not in html  # contains the term, does not start with it


MOMENTS = [
    dt.datetime(2025, 12, 31, 23, 30, tzinfo=dt.UTC),  # 2026 already in Paris
    dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.UTC),  # still 2025 in New York
    dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC),  # the night Paris moves its clocks
    dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 7, 14, 12, 0, tzinfo=dt.UTC),
    dt.datetime(2026, 7, 14, 23, 59, tzinfo=dt.UTC),
    dt.datetime(2027, 2, 1, 6, 0, tzinfo=dt.UTC),
]


KINDS: tuple[Literal["year", "month", "day"], ...] = ("year", "month", "day")


@pytest.mark.postgres
@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York"])
def test_the_date_hierarchy_finds_the_periods_djangos_own_query_finds(zone: str) -> None:
    require_postgres()
    fill("postgres", 0, 30)
    for n, moment in enumerate(MOMENTS):
        WorkflowInstance.objects.using("postgres").filter(instance_id=f"order-{n}").update(
            created=moment
        )
    listed = InstanceListQuerySet(WorkflowInstance, using="postgres")
    with timezone.override(zone):
        for queryset in (
            listed,
            listed.filter(status="failed"),
            listed.filter(created__year=2026),
            listed.filter(instance_id__startswith="nobody"),
        ):
            for kind in KINDS:
                expected = list(QuerySet.datetimes(queryset, "created", kind))
                found, sent = periods_and_queries(queryset, kind)
                assert found == expected, (zone, kind, str(queryset.query))
                assert len(sent) == 1
                assert "DISTINCT" not in sent[0]


def periods_and_queries(
    queryset: QuerySet[WorkflowInstance], kind: Literal["year", "month", "day"]
) -> tuple[list[dt.datetime], list[str]]:
    found: list[dt.datetime] = []
    sent = queries_of(lambda: found.extend(queryset.datetimes("created", kind)))
    return found, sent
