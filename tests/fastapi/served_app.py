"""The app the subprocess tests serve with a real ``uvicorn`` (``--app-dir tests/fastapi``).

``SAYIIR_TEST_DATABASE_URL`` picks the database; with ``SAYIIR_TEST_SCHEMA`` it is a
PostgreSQL schema of the test's own, opened by the app's own lifespan around Sayiir's
(the composition the docs show: whoever opens a backend closes it).
``SAYIIR_TEST_SHUTDOWN_GRACE`` sets ``shutdown_grace`` (20 s by default).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from apps import ALL_WORKFLOWS, make_app  # type: ignore[import-not-found]
from fastapi import FastAPI

from sayiir_fastapi import Sayiir

URL = os.environ["SAYIIR_TEST_DATABASE_URL"]
SCHEMA = os.environ.get("SAYIIR_TEST_SCHEMA")
GRACE = float(os.environ.get("SAYIIR_TEST_SHUTDOWN_GRACE", "20"))
OPTIONS = {"workflows": ALL_WORKFLOWS, "poll_interval": 0.1, "shutdown_grace": GRACE}

if SCHEMA:
    from sayiir_core import PostgresBackend

    backend = PostgresBackend(URL, schema=SCHEMA, max_size=4)
    sayiir = Sayiir(backend, **OPTIONS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with backend, sayiir.lifespan(app):
            yield

    app = make_app(sayiir, lifespan=lifespan)
else:
    sayiir = Sayiir(URL, **OPTIONS)
    app = make_app(sayiir)
