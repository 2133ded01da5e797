"""Reading a task's input and output annotations (for pydantic validation)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints


def annotated_types(fn: Callable[..., Any]) -> tuple[Any, Any]:
    """The annotation of ``fn``'s first parameter and of its return value.

    Unresolvable annotations (forward references to names that do not exist) are
    treated as absent: they only ever enable optional validation.
    """
    try:
        hints = get_type_hints(fn)
    except Exception:
        return None, None
    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None, hints.get("return")
    first = hints.get(parameters[0]) if parameters else None
    return first, hints.get("return")
