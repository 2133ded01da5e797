"""The admin list's date hierarchy without a scan of the rows, on PostgreSQL.

Django's date hierarchy asks ``queryset.datetimes("created", "month")``: a ``SELECT
DISTINCT date_trunc(...)`` over every row the filters keep, which over 100,000
instances was the largest part of a list page. ``InstanceListQuerySet`` answers it
with a loose index scan instead: a recursive query that jumps from each period to the
first row of the next one (``min(created)`` past its end, one probe of the index on
``created``), so it costs one probe per period shown. Same periods, same order, same
time zone; anything else (SQLite, another field) goes to Django's own query.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet
from django.utils import timezone

if TYPE_CHECKING:
    from sayiir_django.models import WorkflowInstance

    _QuerySet = QuerySet[WorkflowInstance]
else:
    _QuerySet = QuerySet

_FIELD = "created"
_STEPS = {"year": "1 year", "month": "1 month", "day": "1 day"}


class InstanceListQuerySet(_QuerySet):
    """The admin list's queryset: ``datetimes`` by loose index scan on PostgreSQL."""

    def datetimes(
        self,
        field_name: str,
        kind: Literal["year", "month", "week", "day", "hour", "minute", "second"],
        order: Literal["ASC", "DESC"] = "ASC",
        tzinfo: dt.tzinfo | None = None,
    ) -> Any:  # a list when answered here: the date hierarchy only iterates it
        if (
            field_name != _FIELD
            or kind not in _STEPS
            or order != "ASC"
            or tzinfo is not None
            or not settings.USE_TZ
            or connections[self.db].vendor != "postgresql"
            or self.query.is_sliced
        ):
            return super().datetimes(field_name, kind, order, tzinfo)
        return periods_with_rows(self, kind)


def periods_with_rows(queryset: QuerySet[Any], kind: str) -> list[dt.datetime]:
    """The start of each ``kind`` period (in the current time zone) that holds a row."""
    zone = timezone.get_current_timezone()
    zone_name = str(zone)
    inner = queryset.order_by().values_list(_FIELD)
    inner_sql, inner_params = inner.query.get_compiler(using=queryset.db).as_sql()
    sql = f"""
        WITH RECURSIVE periods(p) AS (
            SELECT (SELECT date_trunc(%s, min(q.c) AT TIME ZONE %s)
                    FROM ({inner_sql}) AS q(c))
          UNION ALL
            SELECT (SELECT date_trunc(%s, min(q.c) AT TIME ZONE %s)
                    FROM ({inner_sql}) AS q(c)
                    WHERE q.c >= (periods.p + %s::interval) AT TIME ZONE %s)
            FROM periods WHERE periods.p IS NOT NULL
        )
        SELECT p FROM periods WHERE p IS NOT NULL ORDER BY p
    """
    params = [kind, zone_name, *inner_params, kind, zone_name, *inner_params]
    params += [_STEPS[kind], zone_name]
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [timezone.make_aware(start, zone) for (start,) in rows]
