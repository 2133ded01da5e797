"""The backend contract suite, importable: prove your own backend behaves like ours.

Every behaviour the runtime relies on — create and conflict policies, claims and
leases, fenced commits, cancel/pause, signals, listing, history, ``reset_from``, the
optional shared step queue (and its ``AdvanceQueue``), finish watches and the optional
counts behind the gauges (``BackendStats``) — as pytest test classes. Sayiir's own
backends (memory, SQLite, PostgreSQL) run through exactly these classes.

Subclass one and define one fixture, ``make_backend``: it returns a callable, and each
call gives a new, unopened backend object on the same storage for that test (a second
object is how the suite plays another process). A backend whose storage is the object
itself returns the one object every time::

    import pytest
    from sayiir_core.testing import BackendFactory, BackendSuite

    from my_package import MyBackend


    class TestMyBackend(BackendSuite):
        @pytest.fixture
        def make_backend(self, tmp_path) -> BackendFactory:
            return lambda: MyBackend(tmp_path / "flows.db")

The suite opens the backends it creates and closes them after each test. The tests
are coroutines and carry ``pytest.mark.asyncio``, so they run under pytest-asyncio in
its default (strict) mode as well as in ``auto`` mode. This package needs pytest and
pytest-asyncio (``pip install 'sayiir-py[testing]'``); ``import sayiir_core`` alone never
imports them. ``sayiir_core.testing.postgres`` adds fixtures for a throwaway PostgreSQL
database. docs/howto/custom-backend.md walks through writing a backend.
"""

from __future__ import annotations

from sayiir_core.testing._support import BackendFactory, BackendFixtures
from sayiir_core.testing.advance_queue_contract import AdvanceQueueContract
from sayiir_core.testing.backend_contract import BackendContract
from sayiir_core.testing.finish_watch_contract import FinishWatchContract
from sayiir_core.testing.stats_contract import BackendStatsContract
from sayiir_core.testing.step_queue_contract import StepQueueContract
from sayiir_core.testing.suite import BackendSuite

__all__ = [
    "AdvanceQueueContract",
    "BackendContract",
    "BackendFactory",
    "BackendFixtures",
    "BackendStatsContract",
    "BackendSuite",
    "FinishWatchContract",
    "StepQueueContract",
]
