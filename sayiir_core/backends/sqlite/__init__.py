"""``SqliteBackend``: the backend contract on one SQLite file, durable and embedded.

``backend`` holds the backend, ``statements`` its SQL, ``schema`` opening a file and its
migrations, ``connection`` the thread each connection runs on, ``locking`` what is done
when SQLite refuses for a lock.
"""

from __future__ import annotations

from sayiir_core.backends.sqlite.backend import SqliteBackend

__all__ = ["SqliteBackend"]
