"""Every SQL block of the production how-to runs as written against a migrated schema.

The monitoring and retention queries in ``docs/howto/production.md`` name the default
schema ``sayiir.``; here they run in a test schema of their own, on a few instances and
shared steps, so a schema change that breaks a documented query fails this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from sayiir_core import Flow, WorkflowClient
from sayiir_core.backends.postgres import PostgresBackend
from sayiir_core.backends.step_queue import StepRef, StepTicket
from sayiir_core.runtime.loop_thread import run_sync

pytestmark = pytest.mark.postgres

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "production.md"
# DDL and role statements change the server, not the data: not run here.
_NOT_QUERIES = re.compile(r"^\s*(CREATE ROLE|GRANT|ALTER DEFAULT|CREATE|ALTER|DROP)", re.M)


def _sql_blocks() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    return [block for block in blocks if not _NOT_QUERIES.search(block)]


def test_the_how_to_has_queries() -> None:
    assert len(_sql_blocks()) >= 5


@pytest.mark.parametrize("block", _sql_blocks(), ids=lambda b: b.strip().splitlines()[0][:60])
def test_a_documented_query_runs(block: str, postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    backend = PostgresBackend(url, schema=schema)
    client = WorkflowClient(backend, owns_backend=True)  # client.close() closes it
    workflow = Flow("docs").then(lambda x: x, name="noop").build()
    client.submit(workflow, "order-7", {"id": 7})
    ticket = StepTicket(
        StepRef("order-7", "noop", 1), "docs", workflow.definition_hash, b"1", 3, 1.0
    )
    run_sync(backend.publish_steps([ticket]))

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():  # rolled back: DELETEs in the docs keep the data
                await conn.execute(f'SET LOCAL search_path = "{schema}"')
                for statement in _statements(block.replace("sayiir.", f'"{schema}".')):
                    await conn.fetch(statement)
                raise _RollbackError
        except _RollbackError:
            pass
        finally:
            await conn.close()

    run_sync(run())
    client.close()
    run_sync(backend.close())  # the client leaves a backend it was handed open


class _RollbackError(Exception):
    pass


def _statements(block: str) -> list[str]:
    lines = [line for line in block.splitlines() if not line.lstrip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
