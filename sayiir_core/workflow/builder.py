"""``Flow``: the fluent builder that turns functions into a ``Workflow``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sayiir_core.durations import Duration, parse_duration
from sayiir_core.workflow.arguments import check_count, check_name, describe
from sayiir_core.workflow.graph import (
    ChildFlowNode,
    DelayNode,
    ForkNode,
    LoopNode,
    MapNode,
    Node,
    OnMaxPolicy,
    Pipeline,
    RouteNode,
    SignalNode,
    TaskNode,
)
from sayiir_core.workflow.loop_result import OnMax
from sayiir_core.workflow.step_ids import StepIds, first_task_id, key_fn_id
from sayiir_core.workflow.task import TaskMetadata, task_spec
from sayiir_core.workflow.typing import annotated_types
from sayiir_core.workflow.workflow import Workflow

TaskFn = Callable[..., Any]


class Flow:
    """Build a workflow step by step; ``build()`` returns an immutable ``Workflow``.

    Example::

        wf = (
            Flow("orders")
            .then(validate)
            .fork().branch(charge).branch(reserve).join(confirm)
            .delay("cool_off", "5m")
            .wait_for_signal("approved", timeout="1d")
            .then(ship)
            .build()
        )

    Every place gets its own step and checkpoint, named by its task id. The same
    function may appear at several places: the first keeps its id, later ones are
    ``<id>__1``, ``<id>__2``, ... in the order of the builder calls, on every build.
    """

    def __init__(self, name: str = "workflow", *, metadata: dict[str, Any] | None = None) -> None:
        check_name(name, "a Flow's name")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"Flow metadata must be a dict or None, got {describe(metadata)}")
        self._name = name
        self._metadata = dict(metadata) if metadata is not None else None
        self._nodes: list[Node] = []
        self._lambda_counter = 0
        self._counters: dict[str, int] = {}
        self._step_ids = StepIds()

    @property
    def name(self) -> str:
        return self._name

    # -- sequential steps --------------------------------------------------------------

    def then(self, task_func: TaskFn, *, name: str | None = None) -> Flow:
        """Run ``task_func`` on the previous step's output; ``name`` sets its step id."""
        self._nodes.append(self._task_node(task_func, name))
        return self

    def delay(self, name: str, duration: Duration) -> Flow:
        """Pause durably for ``duration``; no worker is held while the workflow waits."""
        seconds = parse_duration(duration)
        self._nodes.append(DelayNode(self._step_ids.claim(_checked_id(name, "delay")), seconds))
        return self

    def wait_for_signal(
        self, signal_name: str, *, name: str | None = None, timeout: Duration | None = None
    ) -> Flow:
        """Park until ``send_signal(instance, signal_name, payload)``; the payload is the output.

        With ``timeout``, the workflow fails with ``SignalTimeoutError`` when no signal
        arrives in time. Signals sent earlier are buffered, not lost.
        """
        check_name(signal_name, "wait_for_signal() signal name")
        timeout_secs = parse_duration(timeout) if timeout is not None else None
        node_id = self._step_ids.claim(_checked_id(name or signal_name, "signal"))
        self._nodes.append(SignalNode(node_id, signal_name, timeout_secs))
        return self

    def loop(
        self,
        task_func: TaskFn,
        *,
        max_iterations: int = 10,
        on_max: str | OnMax = "fail",
        name: str | None = None,
    ) -> Flow:
        """Call ``task_func`` repeatedly while it returns ``LoopResult.again(value)``.

        Each iteration is checkpointed (``<id>#0``, ``<id>#1``, ...). At
        ``max_iterations`` the loop fails (``on_max="fail"``) or exits with the last
        value (``on_max="exit_with_last"``).
        """
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
            raise TypeError(f"max_iterations must be an int, got {max_iterations!r}")
        if max_iterations < 1:
            raise ValueError("max_iterations must be at least 1")
        policy = OnMax(on_max).value
        body = self._task_node(task_func, name)
        node_id = self._next_id("loop")
        self._nodes.append(LoopNode(node_id, body, max_iterations, _on_max(policy)))
        return self

    def map(
        self, task_func: TaskFn, *, max_concurrency: int | None = None, name: str | None = None
    ) -> Flow:
        """Call ``task_func`` on every item of the previous step's list output.

        Every item is checkpointed on its own (``<id>[0]``, ``<id>[1]``, ...); the next
        step receives the outputs in input order. ``max_concurrency`` bounds how many
        items run at once.
        """
        if max_concurrency is not None:
            check_count(max_concurrency, "map(max_concurrency=...)", minimum=1)
        item_task = self._task_node(task_func, name)
        self._nodes.append(MapNode(self._next_id("map"), item_task, max_concurrency))
        return self

    def then_flow(self, child_workflow: Workflow) -> Flow:
        """Inline another workflow: its first step gets this step's output.

        The child's steps keep their ids unless this flow uses them already: then they
        are renamed like any repeated step (``<id>__1``), so a child may be inlined twice.
        """
        from sayiir_core.workflow.require import require_workflow  # it imports this module

        require_workflow(child_workflow, "then_flow()")
        node_id = self._next_id("child")
        pipeline = self._step_ids.inline(child_workflow.pipeline)
        self._nodes.append(ChildFlowNode(node_id, child_workflow.workflow_id, pipeline))
        return self

    # -- composite steps -------------------------------------------------------------

    def fork(self, branches: Sequence[TaskFn] | None = None) -> ForkBuilder:
        """Start parallel branches; ``fork([a, b])`` is ``fork().branch(a).branch(b)``.

        Beyond Sayiir 1.0: the list shorthand.
        """
        builder = ForkBuilder(self)
        for fn in branches or ():
            builder.branch(fn)
        return builder

    def route(
        self, key_fn: TaskFn, *, keys: Sequence[str], name: str | None = None
    ) -> BranchBuilder:
        """Choose one branch by the key ``key_fn`` returns; ``keys`` lists every valid key.

        The route is known as ``name`` (default ``branch_0``, ``branch_1``, ...) and its
        key function's output is checkpointed as ``<name>::key_fn``.
        """
        return BranchBuilder(self, key_fn, keys=keys, name=name)

    def build(self) -> Workflow:
        """Check the graph and return the immutable ``Workflow``."""
        if not self._nodes:
            raise ValueError(f"workflow {self._name!r} must have at least one step")
        return Workflow(self._name, tuple(self._nodes), self._metadata)

    # -- helpers shared with the branch builders -------------------------------------

    def _task_node(self, fn: TaskFn, name: str | None) -> TaskNode:
        if isinstance(fn, Flow | Workflow):
            raise TypeError(
                f"a workflow step must be a function, got {describe(fn)}; "
                "use .then_flow(workflow) to run another workflow's steps here"
            )
        if not callable(fn):
            raise TypeError(f"a workflow step must be callable, got {fn!r}")
        spec = task_spec(fn)
        if name is not None:
            wanted = _checked_id(name, "task")
        elif spec is not None:
            wanted = spec.task_id
        elif getattr(fn, "__name__", "<lambda>") == "<lambda>":
            wanted = f"lambda_{self._lambda_counter}"
            self._lambda_counter += 1
        else:
            wanted = fn.__name__
        task_id = self._step_ids.claim(wanted)
        if spec is not None:
            return TaskNode(task_id, fn, spec.metadata)
        input_type, output_type = annotated_types(fn)
        metadata = TaskMetadata(display_name=wanted, input_type=input_type, output_type=output_type)
        return TaskNode(task_id, fn, metadata)

    def _pipeline(self, fns: Sequence[TaskFn], name: str | None, what: str) -> Pipeline:
        if not fns:
            raise ValueError(f"{what} requires at least one task function")
        return tuple(self._task_node(fn, name if i == 0 else None) for i, fn in enumerate(fns))

    def _next_id(self, prefix: str) -> str:
        index = self._counters.get(prefix, 0)
        self._counters[prefix] = index + 1
        return f"{prefix}_{index}"

    def _append(self, node: Node) -> Flow:
        self._nodes.append(node)
        return self


class ForkBuilder:
    """Collects the branches of a fork until ``join``."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._branches: list[Pipeline] = []

    def branch(self, *task_funcs: TaskFn, name: str | None = None) -> ForkBuilder:
        """Add a branch of one or more chained tasks; ``name`` renames its first task.

        The join sees this branch's output under the branch's first task id.
        """
        self._branches.append(self._flow._pipeline(task_funcs, name, "branch()"))
        return self

    def join(self, task_func: TaskFn, *, name: str | None = None) -> Flow:
        """Combine the branches: ``task_func`` receives ``{first task id: branch output}``.

        When two branches start with the same function, the second one's key is
        ``<id>__1`` (see ``Flow``).
        """
        if not self._branches:
            raise ValueError("a fork must have at least one branch before join()")
        join_node = self._flow._task_node(task_func, name)
        node_id = "||".join(first_task_id(branch) for branch in self._branches)
        return self._flow._append(ForkNode(node_id, tuple(self._branches), join_node))


class BranchBuilder:
    """Collects the branches of a ``route`` until ``done``."""

    def __init__(
        self, flow: Flow, key_fn: TaskFn, *, keys: Sequence[str], name: str | None = None
    ) -> None:
        if isinstance(keys, str):
            raise TypeError(f"route() keys must be a list of strings, got the string {keys!r}")
        if not keys:
            raise ValueError("route() needs at least one key")
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"route() keys must be strings, got {describe(key)}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"route() keys must be unique, got {list(keys)}")
        wanted = _checked_id(name, "route") if name is not None else flow._next_id("branch")
        self._flow = flow
        self._keys = list(keys)
        self._node_id = flow._step_ids.claim_route(wanted)
        self._key_fn = flow._task_node(key_fn, key_fn_id(self._node_id))
        self._branches: list[tuple[str, Pipeline]] = []
        self._default: Pipeline | None = None

    def branch(self, key: str, *task_funcs: TaskFn, name: str | None = None) -> BranchBuilder:
        """Run ``task_funcs`` when the key function returns ``key``."""
        if key not in self._keys:
            raise ValueError(f"branch key {key!r} is not one of the declared keys {self._keys}")
        if any(existing == key for existing, _ in self._branches):
            raise ValueError(f"branch key {key!r} has two branches")
        self._branches.append((key, self._flow._pipeline(task_funcs, name, "branch()")))
        return self

    def default_branch(self, *task_funcs: TaskFn, name: str | None = None) -> BranchBuilder:
        """Run ``task_funcs`` for any key without a branch of its own."""
        if self._default is not None:
            raise ValueError("route() already has a default branch")
        self._default = self._flow._pipeline(task_funcs, name, "default_branch()")
        return self

    def done(self) -> Flow:
        """Close the route; the next step receives ``{"branch": key, "result": output}``."""
        missing = [key for key in self._keys if key not in dict(self._branches)]
        if missing and self._default is None:
            raise ValueError(
                f"route {self._node_id!r}: missing branches for keys {missing} "
                "(add them or a default_branch())"
            )
        node = RouteNode(self._node_id, self._key_fn, tuple(self._branches), self._default)
        return self._flow._append(node)


def _checked_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a {what} name must be a non-empty string, got {value!r}")
    return value


def _on_max(policy: str) -> OnMaxPolicy:
    return "fail" if policy == "fail" else "exit_with_last"
