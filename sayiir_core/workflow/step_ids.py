"""Step ids: every place in a workflow gets its own, stable across builds.

A checkpoint is stored under its step's id, so two places must never share one. The
first place that asks for an id gets it; each later place that asks for the same id
gets ``<id>__1``, ``<id>__2``, ... in the order the builder calls are made. So
``Flow("f").then(identity).then(double).then(identity)`` has the steps ``identity``,
``double`` and ``identity__1``, every time it is built. A flow in which no id repeats
keeps its ids exactly, and so its definition hash.

Route ids (``branch_0`` or ``route(name=...)``) are not checkpoints themselves and live
in a namespace of their own; a route's key function is checkpointed as
``<route id>::key_fn``.
"""

from __future__ import annotations

import dataclasses

from sayiir_core.workflow.graph import (
    ChildFlowNode,
    DelayNode,
    ForkNode,
    LoopNode,
    MapNode,
    Node,
    Pipeline,
    RouteNode,
    SignalNode,
    TaskNode,
)

REPEAT_SEPARATOR = "__"
KEY_FN_SUFFIX = "::key_fn"


def repeated_id(step_id: str, repeat: int) -> str:
    """The id of the ``repeat``-th place (from 1) that asked again for ``step_id``."""
    return f"{step_id}{REPEAT_SEPARATOR}{repeat}"


def key_fn_id(route_id: str) -> str:
    return f"{route_id}{KEY_FN_SUFFIX}"


class _Namespace:
    def __init__(self) -> None:
        self._taken: set[str] = set()
        self._repeats: dict[str, int] = {}

    def claim(self, wanted: str) -> str:
        if wanted not in self._taken:
            self._taken.add(wanted)
            return wanted
        repeat = self._repeats.get(wanted, 0)
        while True:  # skip a suffixed id that some place took by name already
            repeat += 1
            candidate = repeated_id(wanted, repeat)
            if candidate not in self._taken:
                break
        self._repeats[wanted] = repeat
        self._taken.add(candidate)
        return candidate


class StepIds:
    """Hands out the step ids of one ``Flow``, in the order its builder calls are made."""

    def __init__(self) -> None:
        self._steps = _Namespace()
        self._routes = _Namespace()

    def claim(self, wanted: str) -> str:
        """The id of a new checkpointed place (task, delay, signal wait) asking for ``wanted``."""
        return self._steps.claim(wanted)

    def claim_route(self, wanted: str) -> str:
        """The id of a new route asking for ``wanted``."""
        return self._routes.claim(wanted)

    def inline(self, pipeline: Pipeline) -> Pipeline:
        """Claim every id of a child flow's pipeline; the pipeline with the ids it got.

        The child's own nodes come back unchanged when none of their ids was taken.
        """
        renamed = tuple(self._node(node) for node in pipeline)
        return pipeline if _same(renamed, pipeline) else renamed

    def _task(self, node: TaskNode) -> TaskNode:
        step_id = self.claim(node.task_id)
        return node if step_id == node.task_id else dataclasses.replace(node, task_id=step_id)

    def _node(self, node: Node) -> Node:
        if isinstance(node, TaskNode):
            return self._task(node)
        if isinstance(node, ForkNode):
            branches = tuple(self.inline(branch) for branch in node.branches)
            join = self._task(node.join)
            if _same(branches, node.branches) and join is node.join:
                return node
            node_id = "||".join(first_task_id(branch) for branch in branches)
            return ForkNode(node_id, branches, join)
        if isinstance(node, RouteNode):
            return self._route(node)
        if isinstance(node, LoopNode):
            body = self._task(node.body)
            return node if body is node.body else dataclasses.replace(node, body=body)
        if isinstance(node, MapNode):
            fn = self._task(node.fn)
            return node if fn is node.fn else dataclasses.replace(node, fn=fn)
        if isinstance(node, ChildFlowNode):
            child = self.inline(node.pipeline)
            return node if child is node.pipeline else dataclasses.replace(node, pipeline=child)
        step_id = self.claim(node.node_id)
        if isinstance(node, DelayNode | SignalNode) and step_id != node.node_id:
            return dataclasses.replace(node, node_id=step_id)
        return node

    def _route(self, node: RouteNode) -> RouteNode:
        route_id = self.claim_route(node.node_id)
        if node.key_fn.task_id == key_fn_id(node.node_id):
            key_id = self.claim(key_fn_id(route_id))
        else:
            key_id = self.claim(node.key_fn.task_id)
        key_fn = node.key_fn
        if key_id != key_fn.task_id:
            key_fn = dataclasses.replace(key_fn, task_id=key_id)
        branches = tuple((key, self.inline(branch)) for key, branch in node.branches)
        default = self.inline(node.default) if node.default is not None else None
        unchanged = (
            route_id == node.node_id
            and key_fn is node.key_fn
            and all(new is old for (_, new), (_, old) in zip(branches, node.branches, strict=True))
            and default is node.default
        )
        return node if unchanged else RouteNode(route_id, key_fn, branches, default)


def first_task_id(pipeline: Pipeline) -> str:
    """The id of a branch's first task: the key of its output in a join's input."""
    first = pipeline[0]
    assert isinstance(first, TaskNode)
    return first.task_id


def _same(new: tuple[object, ...], old: tuple[object, ...]) -> bool:
    return all(a is b for a, b in zip(new, old, strict=True))
