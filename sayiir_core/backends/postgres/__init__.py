"""PostgreSQL storage: ``PostgresBackend`` (needs the ``postgres`` extra: asyncpg).

``import sayiir_core`` never imports this package: ``sayiir_core.PostgresBackend`` loads
it on first use. The modules, each one concern:

* ``backend``: ``PostgresBackend``, the ``Backend`` contract and lifecycle;
* ``step_queue``: ``PostgresStepQueue``, the shared step queue the backend owns;
* ``control``: ``PostgresControl``, cancel, pause, signals and retry;
* ``statements``: the SQL of the hot paths and the row conversions;
* ``session``: the asyncpg pool, retries of lost connections, fork safety;
* ``options``: Sayiir 1.0's pool keywords as asyncpg settings;
* ``listen``: LISTEN/NOTIFY wake-ups; ``schema``: migrations (SQL files under
  ``backends/sql/postgres/``); ``address``: the URL, for messages.
"""

from __future__ import annotations

from sayiir_core.backends.postgres.backend import PostgresBackend

__all__ = ["PostgresBackend"]
