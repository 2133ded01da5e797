"""What a UI or an API schema needs to know about a workflow's shape."""

from __future__ import annotations

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
)
from sayiir_core.workflow.workflow import Workflow


def entry_input_type(workflow: Workflow) -> Any:
    """The type the workflow's input must have: the first step's parameter annotation.

    ``None`` when nothing says (no annotation, or the workflow starts by waiting for a
    signal). Durable delays pass the input through, so the step after one decides; a
    fork's branches all receive the input (the first branch annotated with more than
    ``Any`` decides); a ``map`` takes a list of what its function takes. For API
    schemas, forms and validation at the edge: a pydantic model here is what the first
    step validates anyway.
    """
    return _pipeline_input(workflow.pipeline)


def _pipeline_input(pipeline: Pipeline) -> Any:
    for node in pipeline:
        if isinstance(node, DelayNode):
            continue
        return _node_input(node)
    return None


def _node_input(node: Node) -> Any:
    if isinstance(node, TaskNode):
        return node.metadata.input_type
    if isinstance(node, ForkNode):
        found = [_pipeline_input(branch) for branch in node.branches]
        # A branch that says nothing (or Any) defers to one that does.
        return next(
            (kind for kind in found if kind not in (None, Any)), found[0] if found else None
        )
    if isinstance(node, RouteNode):
        return node.key_fn.metadata.input_type
    if isinstance(node, LoopNode):
        return node.body.metadata.input_type
    if isinstance(node, MapNode):
        item = node.fn.metadata.input_type
        return list.__class_getitem__(item if item is not None else Any)
    if isinstance(node, ChildFlowNode):
        return _pipeline_input(node.pipeline)
    if isinstance(node, SignalNode):
        return None
    raise TypeError(f"unknown node {node!r}")
