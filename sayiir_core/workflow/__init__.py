"""Pure workflow definitions: the ``@task`` decorator, the ``Flow`` builder, the graph."""

from sayiir_core.workflow.builder import BranchBuilder, Flow, ForkBuilder
from sayiir_core.workflow.loop_result import LoopResult, OnMax
from sayiir_core.workflow.require import require_workflow
from sayiir_core.workflow.task import RetryPolicy, TaskMetadata, task
from sayiir_core.workflow.workflow import NodeInfo, Workflow

__all__ = [
    "BranchBuilder",
    "Flow",
    "ForkBuilder",
    "LoopResult",
    "NodeInfo",
    "OnMax",
    "RetryPolicy",
    "TaskMetadata",
    "Workflow",
    "require_workflow",
    "task",
]
