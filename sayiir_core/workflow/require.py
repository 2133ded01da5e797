"""``require_workflow``: refuse anything but a built ``Workflow``, saying what to do instead."""

from __future__ import annotations

import inspect

from sayiir_core.workflow.builder import BranchBuilder, Flow, ForkBuilder
from sayiir_core.workflow.workflow import Workflow


def require_workflow(value: object, where: str) -> Workflow:
    """Return ``value`` if it is a ``Workflow``; else raise a ``TypeError`` saying how to get one.

    ``where`` names the caller in the message, such as ``"run_workflow()"``. The most
    common mistake, a ``Flow`` whose ``.build()`` was forgotten, is named as such.

    Example::

        require_workflow(Flow("orders").then(charge), "run_workflow()")
        # TypeError: run_workflow() takes a built Workflow, got the Flow 'orders':
        # call .build() on it first, as in Flow("orders").then(...).build()
    """
    if isinstance(value, Workflow):
        return value
    raise TypeError(f"{where} takes a built Workflow, got {_what_instead(value)}")


def _what_instead(value: object) -> str:
    if isinstance(value, Flow):
        return (
            f"the Flow {value.name!r}: call .build() on it first, "
            f'as in Flow("{value.name}").then(...).build()'
        )
    if isinstance(value, ForkBuilder):
        return "an unfinished fork: close it with .join(fn), then call .build()"
    if isinstance(value, BranchBuilder):
        return "an unfinished route: close it with .done(), then call .build()"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a {type(value).__name__}: pass one Workflow here" + (
            " (and call .build() on each Flow)" if any(isinstance(v, Flow) for v in value) else ""
        )
    if inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value):
        name = getattr(value, "__name__", "fn")
        return (
            f"the function {name!r}: a function is a step, not a workflow; "
            f'build one with Flow("name").then({name}).build()'
        )
    if isinstance(value, str):
        return (
            f"the string {value!r}: pass the Workflow object built with Flow(...).build(), "
            "not its name"
        )
    return f"{type(value).__name__} {value!r}: build one with Flow(...).then(...).build()"
