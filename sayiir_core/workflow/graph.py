"""The immutable workflow graph that the builder produces and the machine walks.

A workflow is a *pipeline*: a tuple of nodes run one after another, each node
receiving the previous node's output. Composite nodes (fork, route, loop, map,
child flow) hold pipelines or task nodes of their own. Every node is a frozen
dataclass; nothing here runs user code or touches I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from sayiir_core.workflow.task import TaskMetadata

OnMaxPolicy: TypeAlias = Literal["fail", "exit_with_last"]


@dataclass(frozen=True, slots=True)
class TaskNode:
    """One user function; its output is checkpointed under ``task_id``."""

    task_id: str
    fn: Callable[..., Any] = field(compare=False, repr=False)
    metadata: TaskMetadata = field(default_factory=TaskMetadata)

    kind: Literal["task"] = "task"


@dataclass(frozen=True, slots=True)
class ForkNode:
    """Run every branch on the same input, then call ``join`` with their outputs.

    The join receives ``{first task id of branch: branch output}``.
    """

    node_id: str
    branches: tuple[Pipeline, ...]
    join: TaskNode

    kind: Literal["fork"] = "fork"


@dataclass(frozen=True, slots=True)
class RouteNode:
    """Call ``key_fn`` on the input, then run the branch chosen by the key.

    The next node receives ``{"branch": key, "result": branch output}``.
    """

    node_id: str
    key_fn: TaskNode
    branches: tuple[tuple[str, Pipeline], ...]
    default: Pipeline | None

    kind: Literal["route"] = "route"

    def branch_for(self, key: str) -> Pipeline | None:
        for branch_key, pipeline in self.branches:
            if branch_key == key:
                return pipeline
        return self.default


@dataclass(frozen=True, slots=True)
class LoopNode:
    """Repeat ``body`` while it returns ``LoopResult.again``."""

    node_id: str
    body: TaskNode
    max_iterations: int
    on_max: OnMaxPolicy

    kind: Literal["loop"] = "loop"


@dataclass(frozen=True, slots=True)
class MapNode:
    """Call ``fn`` on every item of a list input; outputs keep the input order."""

    node_id: str
    fn: TaskNode
    max_concurrency: int | None

    kind: Literal["map"] = "map"


@dataclass(frozen=True, slots=True)
class ChildFlowNode:
    """Another workflow's pipeline, inlined."""

    node_id: str
    workflow_id: str
    pipeline: Pipeline

    kind: Literal["child_workflow"] = "child_workflow"


@dataclass(frozen=True, slots=True)
class DelayNode:
    """A durable pause; the input passes through unchanged."""

    node_id: str
    seconds: float

    kind: Literal["delay"] = "delay"


@dataclass(frozen=True, slots=True)
class SignalNode:
    """Park until a signal named ``signal_name`` arrives; its payload is the output."""

    node_id: str
    signal_name: str
    timeout_secs: float | None

    kind: Literal["await_signal"] = "await_signal"


Node: TypeAlias = (
    TaskNode | ForkNode | RouteNode | LoopNode | MapNode | ChildFlowNode | DelayNode | SignalNode
)
Pipeline: TypeAlias = tuple[Node, ...]


def node_id(node: Node) -> str:
    """The id a node is known by in the graph and in checkpoints."""
    return node.task_id if isinstance(node, TaskNode) else node.node_id


def iter_nodes(pipeline: Pipeline) -> Iterator[Node]:
    """Every node in the pipeline and inside its composite nodes, depth first."""
    for node in pipeline:
        yield node
        if isinstance(node, ForkNode):
            for branch in node.branches:
                yield from iter_nodes(branch)
            yield node.join
        elif isinstance(node, RouteNode):
            yield node.key_fn
            for _, branch in node.branches:
                yield from iter_nodes(branch)
            if node.default is not None:
                yield from iter_nodes(node.default)
        elif isinstance(node, LoopNode):
            yield node.body
        elif isinstance(node, MapNode):
            yield node.fn
        elif isinstance(node, ChildFlowNode):
            yield from iter_nodes(node.pipeline)


def iter_task_nodes(pipeline: Pipeline) -> list[TaskNode]:
    """Every task node in the pipeline, depth first, in execution order."""
    return [node for node in iter_nodes(pipeline) if isinstance(node, TaskNode)]
