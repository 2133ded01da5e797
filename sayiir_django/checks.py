"""System checks: settings, SQLite transactions, and what workflow discovery found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from sayiir_django.conf import sayiir_settings

TAG = "sayiir"

_SQLITE_OPTIONS = '"OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20}'


def register_all() -> None:
    """Register the checks (idempotent: Django keeps one entry per function)."""
    checks.register(check_settings, TAG)
    checks.register(check_sqlite_transactions, TAG)
    checks.register(check_workflows, TAG)


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        sayiir_settings()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="sayiir.E001")]
    return []


def check_sqlite_transactions(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """On SQLite, transactions must take the write lock when they begin."""
    try:
        alias = sayiir_settings().database
    except ImproperlyConfigured:
        return []  # check_settings reports it
    database = settings.DATABASES[alias]
    if "sqlite" not in database.get("ENGINE", ""):
        return []
    mode = str(database.get("OPTIONS", {}).get("transaction_mode") or "DEFERRED").upper()
    if mode in ("IMMEDIATE", "EXCLUSIVE"):
        return []
    return [
        checks.Warning(
            f"database {alias!r} is SQLite with {mode} transactions: a transaction that reads "
            "and then writes finds the write lock taken and fails at once, without waiting, "
            "whenever two processes write (workers, web requests). Sayiir retries its own "
            "transactions, but a submit inside your transaction.atomic() cannot be retried.",
            hint=f"add {_SQLITE_OPTIONS} to DATABASES[{alias!r}] (Django 5.1+)",
            id="sayiir.W001",
        )
    ]


def check_workflows(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """A workflows.py that fails to import, and two workflows with one id."""
    from sayiir_django.registry import registry

    found = registry()
    messages: list[checks.CheckMessage] = [
        checks.Error(
            f"{failure.module} failed to import: {failure.error}",
            hint=f"its workflows are unknown to workers and the admin until it imports:\n"
            f"{failure.traceback}",
            obj=failure.module,
            id="sayiir.E002",
        )
        for failure in found.failures
    ]
    messages.extend(
        checks.Error(
            f"workflow id {workflow_id!r} is defined more than once (in {', '.join(modules)})",
            hint="give each Flow its own name: a worker could not tell which one an "
            "instance was started with",
            obj=workflow_id,
            id="sayiir.E003",
        )
        for workflow_id, modules in found.duplicates.items()
    )
    return messages
