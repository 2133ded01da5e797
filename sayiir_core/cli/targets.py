"""Finding the workflows the ``sayiir`` command line is pointed at.

A target is ``module:attribute`` (``attribute`` may be dotted, ``app.flows:orders``),
naming a built ``Workflow`` or a ``Flow`` that is built on load. Like uvicorn, the
current directory goes on ``sys.path`` first, so ``sayiir run flows:orders`` finds
``./flows.py`` whether the script was started as ``sayiir`` or ``python -m``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from sayiir_core.backends.base import Backend
from sayiir_core.workflow.builder import Flow
from sayiir_core.workflow.workflow import Workflow


class TargetError(Exception):
    """A ``module:attribute`` that does not name a workflow; the message says why."""


def load_workflow(target: str) -> Workflow:
    """Import ``target`` and return the ``Workflow`` it names (building a ``Flow``)."""
    module_name, separator, attribute = target.partition(":")
    if not separator or not module_name or not attribute:
        raise TargetError(f"expected module:attribute (e.g. flows:orders), got {target!r}")
    _put_cwd_on_path()
    found = _resolve(_import(module_name), module_name, attribute)
    if isinstance(found, Workflow):
        return found
    if isinstance(found, Flow):
        try:
            return found.build()
        except ValueError as exc:
            raise TargetError(f"{target!r} is a Flow that does not build: {exc}") from exc
    raise TargetError(
        f"{target!r} is a {type(found).__name__}, not a Workflow; "
        "point at Flow(...).build() or at the Flow itself"
    )


def load_workflows(targets: list[str]) -> list[Workflow]:
    """Load several targets; two different definitions under one workflow id are an error."""
    by_id: dict[str, Workflow] = {}
    for target in targets:
        workflow = load_workflow(target)
        known = by_id.get(workflow.workflow_id)
        if known is not None and known.definition_hash != workflow.definition_hash:
            raise TargetError(
                f"two different definitions of workflow {workflow.workflow_id!r} were given"
            )
        by_id[workflow.workflow_id] = workflow
    return list(by_id.values())


async def awaited_signal_names(workflow: Workflow, instance_id: str, backend: Backend) -> list[str]:
    """Signals a parked instance may be waiting for: signal steps without a checkpoint.

    The engine does not report which signal an ``awaiting_signal`` instance waits for,
    so this reads it off the graph. A route branch that was not taken also has no
    checkpoint; its signals show up as candidates, which is good enough for a hint.
    """
    names: list[str] = []
    for node in workflow.signals.values():
        if node.signal_name in names:
            continue
        if await backend.get_checkpoint(instance_id, node.node_id) is None:
            names.append(node.signal_name)
    return names


def _put_cwd_on_path() -> None:
    # The console script's sys.path[0] is its bin/ directory, not where the user stands.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and _is_package_of(exc.name, module_name):
            raise TargetError(
                f"cannot import module {module_name!r}: no module named {exc.name!r} "
                f"(looked in the current directory and on sys.path)"
            ) from exc
        raise TargetError(f"importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        # The user's module raised at import time: report it as one line, not a traceback.
        raise TargetError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _is_package_of(missing: str, module_name: str) -> bool:
    """Whether the missing module is the target or one of its parent packages."""
    return module_name == missing or module_name.startswith(missing + ".")


def _resolve(module: Any, module_name: str, attribute: str) -> Any:
    found = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return found
