"""``Workflow``: a built, immutable graph with its id and definition hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

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
    iter_nodes,
    iter_task_nodes,
    node_id,
)
from sayiir_core.workflow.task import RetryPolicy

# Characters that name loop iterations (``body#2``) and map items (``fn[7]``) in step keys
# (sayiir_core/machine/keys.py; the machine sits above this module, so it is not imported).
_RESERVED_ID_CHARACTERS = ("#", "[", "]")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of the graph, for introspection and UIs."""

    id: str
    kind: str
    predecessor_id: str | None
    timeout_secs: float | None = None
    retry_policy: RetryPolicy | None = None
    priority: int | None = None


class Workflow:
    """A built workflow. Create it with ``Flow(...).build()``.

    ``definition_hash`` covers the structure, the step ids and each task's timeout,
    retry policy and version, not function bodies: resuming an instance whose hash
    differs fails with ``DefinitionMismatchError``.
    """

    __slots__ = (
        "_definition_hash",
        "_metadata",
        "_pipeline",
        "_signals",
        "_tasks",
        "_workflow_id",
    )

    def __init__(
        self, workflow_id: str, pipeline: Pipeline, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._workflow_id = workflow_id
        self._pipeline = pipeline
        self._metadata = MappingProxyType(dict(metadata)) if metadata is not None else None
        self._tasks = MappingProxyType(_index_tasks(pipeline))
        self._signals = MappingProxyType(
            {node.node_id: node for node in iter_nodes(pipeline) if isinstance(node, SignalNode)}
        )
        _check_step_ids(pipeline)
        self._definition_hash = _hash_definition(workflow_id, pipeline)

    @property
    def workflow_id(self) -> str:
        return self._workflow_id

    @property
    def definition_hash(self) -> str:
        return self._definition_hash

    @property
    def metadata(self) -> Mapping[str, Any] | None:
        return self._metadata

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    @property
    def tasks(self) -> Mapping[str, TaskNode]:
        """Every task node by its id."""
        return self._tasks

    @property
    def signals(self) -> Mapping[str, SignalNode]:
        """Every signal wait by its step id."""
        return self._signals

    @property
    def signal_names(self) -> tuple[str, ...]:
        """Every signal name the workflow can wait for, once each, in graph order.

        Includes the waits inside fork and route branches and child flows: a signal
        under any other name could never be consumed by an instance of this workflow.
        """
        return tuple(dict.fromkeys(node.signal_name for node in self._signals.values()))

    def iter_nodes(self) -> list[NodeInfo]:
        """Every node in execution order."""
        return list(_node_infos(self._pipeline, None))

    def __repr__(self) -> str:
        return f"Workflow({self._workflow_id!r}, steps={len(self._tasks)})"


def _index_tasks(pipeline: Pipeline) -> dict[str, TaskNode]:
    tasks: dict[str, TaskNode] = {}
    for node in iter_task_nodes(pipeline):
        if node.task_id in tasks and tasks[node.task_id] is not node:
            # Flow numbers repeated ids (step_ids.py); only a hand-built graph gets here.
            raise ValueError(
                f"task id {node.task_id!r} is used twice in one workflow; "
                "pass name=... to tell the steps apart"
            )
        tasks[node.task_id] = node
    return tasks


def _check_step_ids(pipeline: Pipeline) -> None:
    seen: set[str] = set()
    for step_id in _checkpointed_ids(pipeline):
        if any(ch in step_id for ch in _RESERVED_ID_CHARACTERS):
            raise ValueError(f"step id {step_id!r} must not contain any of '#', '[' or ']'")
        if step_id in seen:
            raise ValueError(
                f"step id {step_id!r} is used twice in one workflow; "
                "pass name=... to tell the steps apart"
            )
        seen.add(step_id)


def _checkpointed_ids(pipeline: Pipeline) -> Iterator[str]:
    for node in pipeline:
        if isinstance(node, TaskNode | DelayNode | SignalNode):
            yield node_id(node)
        elif isinstance(node, ForkNode):
            for branch in node.branches:
                yield from _checkpointed_ids(branch)
            yield node.join.task_id
        elif isinstance(node, RouteNode):
            yield node.key_fn.task_id
            for _, branch in node.branches:
                yield from _checkpointed_ids(branch)
            if node.default is not None:
                yield from _checkpointed_ids(node.default)
        elif isinstance(node, LoopNode):
            yield node.body.task_id
        elif isinstance(node, MapNode):
            yield node.fn.task_id
        elif isinstance(node, ChildFlowNode):
            yield from _checkpointed_ids(node.pipeline)


def _describe(node: Node) -> dict[str, Any]:
    if isinstance(node, TaskNode):
        return {"task": node.task_id, **node.metadata.describe()}
    if isinstance(node, ForkNode):
        return {
            "fork": [[_describe(n) for n in branch] for branch in node.branches],
            "join": _describe(node.join),
        }
    if isinstance(node, RouteNode):
        return {
            "route": node.node_id,
            "key_fn": _describe(node.key_fn),
            "branches": {key: [_describe(n) for n in branch] for key, branch in node.branches},
            "default": [_describe(n) for n in node.default] if node.default is not None else None,
        }
    if isinstance(node, LoopNode):
        return {
            "loop": _describe(node.body),
            "max_iterations": node.max_iterations,
            "on_max": node.on_max,
        }
    if isinstance(node, MapNode):
        return {"map": _describe(node.fn), "max_concurrency": node.max_concurrency}
    if isinstance(node, ChildFlowNode):
        return {"child": node.workflow_id, "steps": [_describe(n) for n in node.pipeline]}
    if isinstance(node, DelayNode):
        return {"delay": node.node_id, "seconds": node.seconds}
    return {"signal": node.node_id, "name": node.signal_name, "timeout": node.timeout_secs}


def _hash_definition(workflow_id: str, pipeline: Pipeline) -> str:
    description = {"workflow": workflow_id, "steps": [_describe(node) for node in pipeline]}
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _node_infos(pipeline: Pipeline, predecessor: str | None) -> Iterator[NodeInfo]:
    for node in pipeline:
        yield from _node_info(node, predecessor)
        predecessor = node_id(node) if not isinstance(node, ForkNode) else node.join.task_id


def _node_info(node: Node, predecessor: str | None) -> Iterator[NodeInfo]:
    if isinstance(node, TaskNode):
        meta = node.metadata
        yield NodeInfo(
            node.task_id, "task", predecessor, meta.timeout_secs, meta.retries, meta.priority
        )
    elif isinstance(node, ForkNode):
        yield NodeInfo(node.node_id, "fork", predecessor)
        for branch in node.branches:
            yield from _node_infos(branch, node.node_id)
        yield from _node_info(node.join, node.node_id)
    elif isinstance(node, RouteNode):
        yield NodeInfo(node.node_id, "branch", predecessor)
        for _, branch in node.branches:
            yield from _node_infos(branch, node.node_id)
        if node.default is not None:
            yield from _node_infos(node.default, node.node_id)
    elif isinstance(node, LoopNode):
        yield NodeInfo(node.node_id, "loop", predecessor)
        yield from _node_info(node.body, node.node_id)
    elif isinstance(node, MapNode):
        yield NodeInfo(node.node_id, "map", predecessor)
        yield from _node_info(node.fn, node.node_id)
    elif isinstance(node, ChildFlowNode):
        yield NodeInfo(node.node_id, "child_workflow", predecessor)
        yield from _node_infos(node.pipeline, node.node_id)
    elif isinstance(node, DelayNode):
        yield NodeInfo(node.node_id, "delay", predecessor, node.seconds)
    else:
        yield NodeInfo(node.node_id, "await_signal", predecessor, node.timeout_secs)
