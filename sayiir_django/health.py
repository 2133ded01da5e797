"""What ``manage.py sayiir healthcheck`` checks: the database answers and is migrated."""

from __future__ import annotations

from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

APP = "sayiir_django"


def health_problems(alias: str) -> list[str]:
    """Why workers could not run on database ``alias`` now; empty when all is well."""
    connection = connections[alias]
    try:
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        leaves = [node for node in executor.loader.graph.leaf_nodes() if node[0] == APP]
        pending = executor.migration_plan(leaves)
    except DatabaseError as exc:
        return [f"database {alias!r} does not answer: {exc}"]
    if pending:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in pending)
        return [
            f"database {alias!r} lacks migrations {names}: run "
            f"`python manage.py migrate {APP} --database {alias}`"
        ]
    return []
