"""Step keys: the names checkpoints are stored under.

A task, delay or signal wait is checkpointed under its step id. A loop iteration is
``<body id>#<iteration>`` (``poll#3``, from 0) and a map item ``<fn id>[<index>]``
(``fetch[7]``), which is why ``Flow`` refuses ``#``, ``[`` and ``]`` in step ids.
Backends and the runtime read keys back to their task id with ``task_id_of_key``.
"""

from __future__ import annotations

import functools

LOOP_ITERATION_MARK = "#"
MAP_ITEM_MARK = "["


def loop_iteration_key(body_id: str, iteration: int) -> str:
    """The key of iteration ``iteration`` (from 0) of the loop whose body is ``body_id``."""
    return f"{body_id}{LOOP_ITERATION_MARK}{iteration}"


def map_item_key(fn_id: str, index: int) -> str:
    """The key of item ``index`` (from 0) of the map over ``fn_id``."""
    return f"{fn_id}{MAP_ITEM_MARK}{index}]"


@functools.lru_cache(maxsize=256)
def map_item_keys(fn_id: str, count: int) -> tuple[str, ...]:
    """The keys of a map's first ``count`` items, in order."""
    # A map's first walk names every item; naming them once keeps later walks cheap.
    return tuple(map_item_key(fn_id, index) for index in range(count))


def map_item_of_key(key: str) -> tuple[str, int] | None:
    """``(fn id, index)`` of a map item key (``fetch[7]`` -> ``("fetch", 7)``), else None."""
    cut = key.find(MAP_ITEM_MARK)
    if cut == -1 or not key.endswith("]"):
        return None
    index = key[cut + 1 : -1]
    return (key[:cut], int(index)) if index.isascii() and index.isdigit() else None


def task_id_of_key(key: str) -> str:
    """The task id a step key belongs to (``fetch[3]`` and ``fetch#3`` -> ``fetch``)."""
    for marker in (LOOP_ITERATION_MARK, MAP_ITEM_MARK):
        cut = key.find(marker)
        if cut != -1:
            return key[:cut]
    return key
