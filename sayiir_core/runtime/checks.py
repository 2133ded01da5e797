"""Refusing the common wrong arguments at the door, with a ``TypeError`` saying what to do.

A ``Flow`` whose ``.build()`` was forgotten, or a URL string passed as ``backend=``,
used to end in an ``AttributeError`` deep inside the engine, or (``Worker.start``) in a
crash in the background after a handle had been returned.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from typing import cast

from sayiir_core.backends.base import Backend
from sayiir_core.workflow.builder import Flow
from sayiir_core.workflow.require import require_workflow
from sayiir_core.workflow.workflow import Workflow

# Classes whose instances passed the check: a runtime protocol check walks every method
# of Backend (~10 us), which each sync call paid two or three times.
_BACKEND_TYPES: weakref.WeakSet[type] = weakref.WeakSet()


def require_backend(value: object, where: str) -> Backend:
    """Return ``value`` if it is a ``Backend``; else a ``TypeError`` saying how to get one.

    ``where`` names the caller in the message, such as ``"WorkflowClient()"``.
    """
    if type(value) in _BACKEND_TYPES:
        return cast("Backend", value)  # its type passed the check below
    if isinstance(value, Backend):
        _BACKEND_TYPES.add(type(value))
        return value
    if isinstance(value, str | bytes | os.PathLike):
        shown = os.fsdecode(value) if not isinstance(value, str) else value
        raise TypeError(
            f"{where} takes a Backend object, got the {type(value).__name__} {shown!r}: "
            f"for a URL, use backend_from_url({shown!r}) (or WorkflowClient.from_url(...)); "
            "for a SQLite file, SqliteBackend(path)"
        )
    raise TypeError(
        f"{where} takes a Backend object (InMemoryBackend(), SqliteBackend(path), "
        f"PostgresBackend(url) or backend_from_url(url)), got {type(value).__name__}"
    )


def require_workflows(values: object, where: str) -> list[Workflow]:
    """The workflows of ``values``, an iterable of built ``Workflow`` objects, checked now."""
    if isinstance(values, Workflow):
        raise TypeError(f"{where} takes a list of workflows: pass [workflow], not workflow")
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(
            f"{where} takes a list of built workflows, got {type(values).__name__}"
            + (
                "; call .build() on the Flow and pass [workflow]"
                if isinstance(values, Flow)
                else ""
            )
        )
    return [require_workflow(value, f"{where} (each item)") for value in values]
