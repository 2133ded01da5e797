"""The ``SAYIIR`` setting: one dict, every key optional.

::

    SAYIIR = {
        "DATABASE": "default",      # the database alias the instances live in
        "WORKER_CONCURRENCY": 8,    # instances (and shared steps) a worker runs at once
        "POLL_INTERVAL": 1.0,       # seconds an idle worker waits before looking again
        "CLAIM_TTL": 300.0,         # a claim's lease in seconds, renewed every TTL/3
        "SQLITE_LOCK_TIMEOUT": 60.0,  # seconds a write retries SQLite's "database is locked"
        "ADMIN_HISTORY_LIMIT": 100, # history events shown on an instance's admin page
        "ADMIN_PAYLOAD_CHARS": 4000,  # longer inputs, outputs and errors are cut there
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    "DATABASE": "default",
    "WORKER_CONCURRENCY": 8,
    "POLL_INTERVAL": 1.0,
    "CLAIM_TTL": 300.0,
    "SQLITE_LOCK_TIMEOUT": 60.0,
    "ADMIN_HISTORY_LIMIT": 100,
    "ADMIN_PAYLOAD_CHARS": 4000,
}

_POSITIVE_NUMBERS = (
    "WORKER_CONCURRENCY",
    "POLL_INTERVAL",
    "CLAIM_TTL",
    "SQLITE_LOCK_TIMEOUT",
    "ADMIN_HISTORY_LIMIT",
    "ADMIN_PAYLOAD_CHARS",
)


@dataclass(frozen=True, slots=True)
class SayiirSettings:
    """``settings.SAYIIR`` merged over the defaults and checked."""

    database: str
    worker_concurrency: int
    poll_interval: float
    claim_ttl: float
    sqlite_lock_timeout: float
    admin_history_limit: int
    admin_payload_chars: int


def sayiir_settings() -> SayiirSettings:
    """Read ``settings.SAYIIR`` now (tests may change it with ``override_settings``)."""
    given = getattr(settings, "SAYIIR", None) or {}
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"SAYIIR must be a dict, not {type(given).__name__}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"unknown SAYIIR setting(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}"
        )
    merged = {**DEFAULTS, **given}
    if not isinstance(merged["DATABASE"], str) or merged["DATABASE"] not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"SAYIIR['DATABASE'] is {merged['DATABASE']!r}, which is not a key of DATABASES "
            f"({', '.join(settings.DATABASES)})"
        )
    for key in _POSITIVE_NUMBERS:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ImproperlyConfigured(f"SAYIIR[{key!r}] must be a positive number, not {value!r}")
    return SayiirSettings(
        database=merged["DATABASE"],
        worker_concurrency=int(merged["WORKER_CONCURRENCY"]),
        poll_interval=float(merged["POLL_INTERVAL"]),
        claim_ttl=float(merged["CLAIM_TTL"]),
        sqlite_lock_timeout=float(merged["SQLITE_LOCK_TIMEOUT"]),
        admin_history_limit=int(merged["ADMIN_HISTORY_LIMIT"]),
        admin_payload_chars=int(merged["ADMIN_PAYLOAD_CHARS"]),
    )
