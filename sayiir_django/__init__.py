"""Sayiir for Django: durable workflows stored in your Django database.

Add ``"sayiir_django"`` to ``INSTALLED_APPS``, run ``manage.py migrate``, put workflows
in each app's ``workflows.py`` and run them with ``manage.py sayiir worker``::

    from django.db import transaction
    from sayiir_django import get_client

    with transaction.atomic():
        order = Order.objects.create(...)
        get_client().submit(checkout, f"order-{order.pk}", {"order": order.pk})

The instance is written in the caller's transaction: rolled back, it never existed;
committed, workers are woken at the commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sayiir_core import Workflow
    from sayiir_django.client import DjangoWorkflowClient

__all__ = ["get_client", "submit_on_commit"]


# The package is imported while Django loads INSTALLED_APPS, before models can be: the
# client (which needs the models) is imported on first call.
def get_client(using: str | None = None) -> DjangoWorkflowClient:
    """The process's ``WorkflowClient`` on the Django database (``SAYIIR["DATABASE"]``).

    Every call runs on the caller's database connection, so inside
    ``transaction.atomic()`` it is part of the caller's transaction.
    """
    from sayiir_django.client import get_client as _get_client

    return _get_client(using)


def submit_on_commit(
    workflow: Workflow, instance_id: str | None, input: Any, *, using: str | None = None
) -> str:
    """Submit once the current transaction commits; returns the instance id at once.

    ``instance_id=None`` makes one (``<workflow_id>-<random hex>``). Outside a transaction
    the instance is submitted at once; if the transaction rolls back, never.
    """
    from sayiir_django.client import submit_on_commit as _submit_on_commit

    return _submit_on_commit(workflow, instance_id, input, using=using)
