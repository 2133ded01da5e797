"""``Flow`` and its branch builders, the built graph, ``definition_hash`` and ``iter_nodes``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from sayiir_core.workflow import Flow, LoopResult, OnMax, RetryPolicy, Workflow, task
from sayiir_core.workflow.graph import (
    ChildFlowNode,
    DelayNode,
    ForkNode,
    LoopNode,
    MapNode,
    RouteNode,
    SignalNode,
    TaskNode,
    iter_nodes,
)


def step_a(x: int) -> int:
    return x + 1


def step_b(x: int) -> int:
    return x * 2


def step_c(x: int) -> int:
    return x - 3


def combine(results: dict[str, int]) -> int:
    return sum(results.values())


def parity(x: int) -> str:
    return "even" if x % 2 == 0 else "odd"


def countdown(x: int) -> LoopResult[int]:
    return LoopResult.done(x) if x <= 0 else LoopResult.again(x - 1)


def task_node(node: object) -> TaskNode:
    assert isinstance(node, TaskNode), node
    return node


def ids(pipeline: tuple[Any, ...]) -> list[str]:
    return [task_node(node).task_id for node in pipeline]


# -- sequential steps and ids -------------------------------------------------------------


def test_then_chains_tasks_in_order() -> None:
    wf = Flow("chain").then(step_a).then(step_b).then(step_c).build()
    assert isinstance(wf, Workflow)
    assert wf.workflow_id == "chain"
    assert ids(wf.pipeline) == ["step_a", "step_b", "step_c"]
    assert task_node(wf.pipeline[0]).fn is step_a
    assert set(wf.tasks) == {"step_a", "step_b", "step_c"}


def test_decorated_task_keeps_its_name_and_metadata() -> None:
    @task("fetch_user", timeout="5s", retries=2)
    def fetch(x: int) -> int:
        return x

    node = task_node(Flow("f").then(fetch).build().pipeline[0])
    assert node.task_id == "fetch_user"
    assert node.metadata.timeout_secs == 5.0
    assert node.metadata.retries == RetryPolicy(max_retries=2)


def test_name_overrides_the_decorator_name_but_keeps_metadata() -> None:
    @task("fetch_user", version="2")
    def fetch(x: int) -> int:
        return x

    node = task_node(Flow("f").then(fetch, name="fetch_admin").build().pipeline[0])
    assert node.task_id == "fetch_admin"
    assert node.metadata.version == "2"


def test_undecorated_function_gets_default_metadata_with_annotations() -> None:
    node = task_node(Flow("f").then(step_a).build().pipeline[0])
    assert node.metadata.display_name == "step_a"
    assert node.metadata.retries is None
    assert node.metadata.input_type is int
    assert node.metadata.output_type is int


def test_lambdas_are_numbered_in_build_order() -> None:
    wf = (
        Flow("lambdas")
        .then(lambda x: x + 1)
        .fork()
        .branch(lambda x: x * 2, lambda x: x - 1)
        .branch(lambda x: x)
        .join(lambda d: d)
        .then(lambda x: x, name="named")
        .then(lambda x: x)
        .build()
    )
    fork = wf.pipeline[1]
    assert isinstance(fork, ForkNode)
    assert ids(wf.pipeline[:1]) == ["lambda_0"]
    assert [ids(branch) for branch in fork.branches] == [["lambda_1", "lambda_2"], ["lambda_3"]]
    assert fork.join.task_id == "lambda_4"
    assert ids(wf.pipeline[2:]) == ["named", "lambda_5"]


def test_lambda_numbering_restarts_for_each_flow() -> None:
    first = Flow("one").then(lambda x: x).build()
    second = Flow("two").then(lambda x: x).build()
    assert list(first.tasks) == list(second.tasks) == ["lambda_0"]


def test_non_callable_step_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="callable"):
        Flow("f").then(42)  # type: ignore[arg-type]


def test_flow_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name"):
        Flow("")


@pytest.mark.parametrize("name", [None, 3])
def test_flow_name_must_be_a_string(name: object) -> None:
    # Like Sayiir 1.0: a TypeError (before: None was a ValueError, 3 was accepted).
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        Flow(name)  # type: ignore[arg-type]


def test_empty_step_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Flow("f").then(step_a, name="")


def test_empty_flow_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        Flow("empty").build()


def test_metadata_is_kept_read_only() -> None:
    source = {"team": "billing"}
    wf = Flow("f", metadata=source).then(step_a).build()
    source["team"] = "changed"
    assert wf.metadata == {"team": "billing"}
    with pytest.raises(TypeError):
        wf.metadata["team"] = "x"  # type: ignore[index]
    assert Flow("g").then(step_a).build().metadata is None


def test_built_workflow_is_not_changed_by_further_building() -> None:
    flow = Flow("f").then(step_a)
    first = flow.build()
    flow.then(step_b)
    assert ids(first.pipeline) == ["step_a"]
    assert ids(flow.build().pipeline) == ["step_a", "step_b"]


# -- repeated and reserved ids -------------------------------------------------------------


def test_same_function_at_several_places_gets_numbered_ids() -> None:
    wf = Flow("rep").then(step_a).then(step_b).then(step_a).then(step_a).build()
    assert ids(wf.pipeline) == ["step_a", "step_b", "step_a__1", "step_a__2"]
    assert [task_node(node).fn for node in wf.pipeline] == [step_a, step_b, step_a, step_a]
    assert list(wf.tasks) == ["step_a", "step_b", "step_a__1", "step_a__2"]
    # The task keeps its own name; only the step id is numbered.
    assert {node.metadata.display_name for node in wf.tasks.values()} == {"step_a", "step_b"}


def test_repeated_ids_are_the_same_on_every_build() -> None:
    def build() -> Workflow:
        return (
            Flow("rep")
            .then(step_a)
            .fork()
            .branch(step_a, step_b)
            .branch(step_b)
            .join(combine)
            .loop(countdown)
            .loop(countdown)
            .map(step_a)
            .build()
        )

    first, second = build(), build()
    assert (
        list(first.tasks)
        == list(second.tasks)
        == [
            "step_a",
            "step_a__1",
            "step_b",
            "step_b__1",
            "combine",
            "countdown",
            "countdown__1",
            "step_a__2",
        ]
    )
    assert first.definition_hash == second.definition_hash


def test_numbered_ids_skip_an_id_taken_by_name() -> None:
    wf = Flow("rep").then(step_a, name="step_a__1").then(step_a).then(step_a).build()
    assert ids(wf.pipeline) == ["step_a__1", "step_a", "step_a__2"]
    wf = Flow("rep").then(step_a).then(step_a).then(step_b, name="step_a__1").build()
    assert ids(wf.pipeline) == ["step_a", "step_a__1", "step_a__1__1"]


def test_the_same_function_in_two_branches_gives_the_join_two_keys() -> None:
    wf = Flow("f").fork().branch(step_a).branch(step_a).join(combine).build()
    fork = wf.pipeline[0]
    assert isinstance(fork, ForkNode)
    assert [ids(branch) for branch in fork.branches] == [["step_a"], ["step_a__1"]]
    assert fork.node_id == "step_a||step_a__1"


@pytest.mark.parametrize(
    ("make", "step_ids"),
    [
        (lambda: Flow("d").then(step_a).delay("step_a", 1), ["step_a", "step_a__1"]),
        (lambda: Flow("d").then(step_a).wait_for_signal("step_a"), ["step_a", "step_a__1"]),
        (lambda: Flow("d").delay("pause", 1).delay("pause", 2), ["pause", "pause__1"]),
        (
            lambda: Flow("d").wait_for_signal("go").wait_for_signal("go", timeout=5),
            ["go", "go__1"],
        ),
        (lambda: Flow("d").then(step_a).then(step_b, name="step_a"), ["step_a", "step_a__1"]),
        (lambda: Flow("d").then(step_a).loop(countdown, name="step_a"), ["step_a", "step_a__1"]),
        (lambda: Flow("d").then(step_a).map(step_b, name="step_a"), ["step_a", "step_a__1"]),
    ],
)
def test_a_repeated_step_id_of_any_kind_is_numbered(
    make: Callable[[], Flow], step_ids: list[str]
) -> None:
    wf = make().build()
    assert [info.id for info in wf.iter_nodes() if info.kind not in ("loop", "map")] == step_ids


def test_repeated_signal_waits_keep_their_signal_name() -> None:
    wf = Flow("s").wait_for_signal("go").wait_for_signal("go").build()
    assert wf.pipeline == (SignalNode("go", "go", None), SignalNode("go__1", "go", None))
    assert set(wf.signals) == {"go", "go__1"}


def test_a_workflow_built_by_hand_still_refuses_duplicate_ids() -> None:
    node = TaskNode("step_a", step_a)
    with pytest.raises(ValueError, match="used twice"):
        Workflow("hand", (node, TaskNode("step_a", step_b)))


@pytest.mark.parametrize("bad", ["a#1", "b[0]", "c]"])
def test_reserved_characters_in_ids_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        Flow("r").then(step_a, name=bad).build()
    with pytest.raises(ValueError, match="must not contain"):
        Flow("r").delay(bad, 1).build()


# -- fork / join ------------------------------------------------------------------------------


def test_fork_branch_join() -> None:
    wf = Flow("f").then(step_a).fork().branch(step_b).branch(step_c).join(combine).build()
    fork = wf.pipeline[1]
    assert isinstance(fork, ForkNode)
    assert fork.node_id == "step_b||step_c"
    assert [ids(branch) for branch in fork.branches] == [["step_b"], ["step_c"]]
    assert fork.join.task_id == "combine"


def test_fork_list_shorthand() -> None:
    shorthand = Flow("f").fork([step_a, step_b, step_c]).join(combine).build()
    longhand = Flow("f").fork().branch(step_a).branch(step_b).branch(step_c).join(combine).build()
    fork = shorthand.pipeline[0]
    assert isinstance(fork, ForkNode)
    assert fork.node_id == "step_a||step_b||step_c"
    assert shorthand.definition_hash == longhand.definition_hash


def test_multi_task_branch_and_branch_name() -> None:
    wf = (
        Flow("f")
        .fork()
        .branch(step_a, step_b, name="first")
        .branch(step_c)
        .join(combine, name="merge")
        .build()
    )
    fork = wf.pipeline[0]
    assert isinstance(fork, ForkNode)
    assert [ids(branch) for branch in fork.branches] == [["first", "step_b"], ["step_c"]]
    assert fork.node_id == "first||step_c"
    assert fork.join.task_id == "merge"


def test_fork_then_continues_the_flow() -> None:
    wf = Flow("f").fork().branch(step_a).join(combine).then(step_b).build()
    assert isinstance(wf.pipeline[0], ForkNode)
    assert task_node(wf.pipeline[1]).task_id == "step_b"


def test_empty_fork_cannot_join() -> None:
    with pytest.raises(ValueError, match="at least one branch"):
        Flow("f").fork().join(combine)
    with pytest.raises(ValueError, match="at least one branch"):
        Flow("f").fork([]).join(combine)


def test_empty_fork_branch_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one task"):
        Flow("f").fork().branch()


# -- route ------------------------------------------------------------------------------------


def test_route_with_every_key() -> None:
    wf = (
        Flow("r")
        .route(parity, keys=["even", "odd"])
        .branch("even", step_a)
        .branch("odd", step_b, step_c)
        .done()
        .then(step_a, name="after")
        .build()
    )
    route = wf.pipeline[0]
    assert isinstance(route, RouteNode)
    assert route.node_id == "branch_0"
    assert route.key_fn.task_id == "branch_0::key_fn"
    assert route.key_fn.fn is parity
    assert [(key, ids(branch)) for key, branch in route.branches] == [
        ("even", ["step_a"]),
        ("odd", ["step_b", "step_c"]),
    ]
    assert route.default is None
    assert ids(route.branch_for("odd") or ()) == ["step_b", "step_c"]
    assert route.branch_for("other") is None


def test_route_default_branch_covers_missing_and_unknown_keys() -> None:
    wf = (
        Flow("r")
        .route(parity, keys=["even", "odd"])
        .branch("even", step_a)
        .default_branch(step_b)
        .done()
        .build()
    )
    route = wf.pipeline[0]
    assert isinstance(route, RouteNode)
    assert ids(route.branch_for("odd") or ()) == ["step_b"]
    assert ids(route.branch_for("anything") or ()) == ["step_b"]


def test_two_routes_get_distinct_ids() -> None:
    wf = (
        Flow("r")
        .route(parity, keys=["even"])
        .branch("even", step_a)
        .done()
        .route(parity, keys=["even"])
        .branch("even", step_b)
        .done()
        .build()
    )
    assert [node.node_id for node in wf.pipeline if isinstance(node, RouteNode)] == [
        "branch_0",
        "branch_1",
    ]


def test_named_route() -> None:
    wf = Flow("r").route(parity, keys=["even"], name="by_parity").branch("even", step_a).done()
    route = wf.build().pipeline[0]
    assert isinstance(route, RouteNode)
    assert route.node_id == "by_parity"
    assert route.key_fn.task_id == "by_parity::key_fn"


def test_parent_and_child_routes_get_distinct_ids() -> None:
    child = Flow("child").route(parity, keys=["even"]).branch("even", step_a).done().build()
    parent = (
        Flow("parent")
        .route(parity, keys=["even"])
        .branch("even", step_b)
        .done()
        .then_flow(child)
        .then_flow(child)
        .build()
    )
    routes = [node for node in iter_nodes(parent.pipeline) if isinstance(node, RouteNode)]
    assert [(route.node_id, route.key_fn.task_id) for route in routes] == [
        ("branch_0", "branch_0::key_fn"),
        ("branch_0__1", "branch_0__1::key_fn"),
        ("branch_0__2", "branch_0__2::key_fn"),
    ]
    assert [ids(route.branches[0][1]) for route in routes] == [
        ["step_b"],
        ["step_a"],
        ["step_a__1"],
    ]


def test_two_routes_with_one_name_get_distinct_ids() -> None:
    wf = (
        Flow("r")
        .route(parity, keys=["even"], name="by_parity")
        .branch("even", step_a)
        .done()
        .route(parity, keys=["even"], name="by_parity")
        .branch("even", step_b)
        .done()
        .build()
    )
    assert {"by_parity::key_fn", "by_parity__1::key_fn"} <= set(wf.tasks)


def test_a_route_and_a_task_may_share_a_name() -> None:
    # Route ids are not checkpoints: a task called "branch_0" does not rename the route
    # (flows built like this before repeated ids were numbered keep their hash).
    wf = Flow("r").then(step_a, name="branch_0").route(parity, keys=["even"])
    route = wf.branch("even", step_b).done().build().pipeline[1]
    assert isinstance(route, RouteNode)
    assert route.node_id == "branch_0"


def test_route_name_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Flow("r").route(parity, keys=["even"], name="")


def test_route_unknown_key_in_branch() -> None:
    builder = Flow("r").route(parity, keys=["even", "odd"])
    with pytest.raises(ValueError, match="not one of the declared keys"):
        builder.branch("zero", step_a)


def test_route_missing_keys_without_default() -> None:
    builder = Flow("r").route(parity, keys=["even", "odd"]).branch("even", step_a)
    with pytest.raises(ValueError, match=r"missing branches for keys \['odd'\]"):
        builder.done()


def test_route_duplicate_keys() -> None:
    with pytest.raises(ValueError, match="unique"):
        Flow("r").route(parity, keys=["even", "even"])


def test_route_same_key_twice_in_branch() -> None:
    builder = Flow("r").route(parity, keys=["even", "odd"]).branch("even", step_a)
    with pytest.raises(ValueError, match="two branches"):
        builder.branch("even", step_b)


def test_route_needs_keys() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Flow("r").route(parity, keys=[])
    with pytest.raises(TypeError, match="list of strings"):
        Flow("r").route(parity, keys="even")


def test_route_empty_branches_are_rejected() -> None:
    builder = Flow("r").route(parity, keys=["even"])
    with pytest.raises(ValueError, match="at least one task"):
        builder.branch("even")
    with pytest.raises(ValueError, match="at least one task"):
        builder.default_branch()


def test_route_second_default_is_rejected() -> None:
    builder = Flow("r").route(parity, keys=["even"]).default_branch(step_a)
    with pytest.raises(ValueError, match="already has a default"):
        builder.default_branch(step_b)


# -- loop and map -----------------------------------------------------------------------------


def test_loop_node() -> None:
    wf = Flow("l").loop(countdown, max_iterations=7, on_max="exit_with_last").build()
    loop = wf.pipeline[0]
    assert isinstance(loop, LoopNode)
    assert loop.node_id == "loop_0"
    assert loop.body.task_id == "countdown"
    assert loop.max_iterations == 7
    assert loop.on_max == "exit_with_last"


def test_loop_defaults_and_enum_policy() -> None:
    loop = Flow("l").loop(countdown).build().pipeline[0]
    assert isinstance(loop, LoopNode)
    assert (loop.max_iterations, loop.on_max) == (10, "fail")
    loop = Flow("l").loop(countdown, on_max=OnMax.EXIT_WITH_LAST).build().pipeline[0]
    assert isinstance(loop, LoopNode)
    assert loop.on_max == "exit_with_last"


@pytest.mark.parametrize("max_iterations", [0, -1])
def test_loop_max_iterations_must_be_positive(max_iterations: int) -> None:
    with pytest.raises(ValueError, match=r"^max_iterations must be at least 1$"):
        Flow("l").loop(countdown, max_iterations=max_iterations)


@pytest.mark.parametrize("max_iterations", [2.5, "3", True, None])
def test_loop_max_iterations_must_be_an_int(max_iterations: object) -> None:
    with pytest.raises(TypeError, match="max_iterations must be an int"):
        Flow("l").loop(countdown, max_iterations=max_iterations)  # type: ignore[arg-type]


def test_loop_on_max_must_be_known() -> None:
    with pytest.raises(ValueError, match="retry"):
        Flow("l").loop(countdown, on_max="retry")


def test_loop_result_wire_form() -> None:
    assert LoopResult.again(3).to_dict() == {"_loop": "again", "value": 3}
    assert LoopResult.from_wire({"_loop": "done", "value": [1]}) == LoopResult.done([1])
    assert LoopResult.from_wire({"_loop": "maybe", "value": 1}) is None
    assert LoopResult.from_wire({"_loop": "done"}) is None
    assert LoopResult.from_wire(5) is None
    with pytest.raises(ValueError, match="tag"):
        LoopResult("later", 1)


def test_map_node() -> None:
    wf = Flow("m").map(step_a, max_concurrency=3).map(step_b).build()
    first, second = wf.pipeline
    assert isinstance(first, MapNode)
    assert isinstance(second, MapNode)
    assert (first.node_id, first.fn.task_id, first.max_concurrency) == ("map_0", "step_a", 3)
    assert (second.node_id, second.max_concurrency) == ("map_1", None)


@pytest.mark.parametrize("max_concurrency", [0, -5])
def test_map_max_concurrency_must_be_positive(max_concurrency: int) -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        Flow("m").map(step_a, max_concurrency=max_concurrency)


# -- child flows --------------------------------------------------------------------------------


def test_then_flow_inlines_the_child_pipeline() -> None:
    child = Flow("child").then(step_b).then(step_c).build()
    wf = Flow("parent").then(step_a).then_flow(child).build()
    node = wf.pipeline[1]
    assert isinstance(node, ChildFlowNode)
    assert node.node_id == "child_0"
    assert node.workflow_id == "child"
    assert node.pipeline == child.pipeline
    assert set(wf.tasks) == {"step_a", "step_b", "step_c"}


@pytest.mark.parametrize("not_a_workflow", [Flow("unbuilt").then(step_a), step_a, None])
def test_then_flow_requires_a_built_workflow(not_a_workflow: object) -> None:
    with pytest.raises(TypeError, match="built Workflow"):
        Flow("parent").then_flow(not_a_workflow)  # type: ignore[arg-type]


def test_a_child_inlined_twice_or_sharing_ids_with_the_parent_gets_numbered_ids() -> None:
    child = Flow("child").then(step_a).then(step_b).build()
    wf = Flow("parent").then(step_a).then_flow(child).then_flow(child).build()
    first, second = wf.pipeline[1], wf.pipeline[2]
    assert isinstance(first, ChildFlowNode)
    assert isinstance(second, ChildFlowNode)
    assert (first.node_id, ids(first.pipeline)) == ("child_0", ["step_a__1", "step_b"])
    assert (second.node_id, ids(second.pipeline)) == ("child_1", ["step_a__2", "step_b__1"])
    assert ids(child.pipeline) == ["step_a", "step_b"]  # the child itself is unchanged


def test_a_child_without_clashes_is_inlined_as_it_is() -> None:
    child = Flow("child").fork([step_b, step_c]).join(combine).loop(countdown).build()
    node = Flow("parent").then(step_a).then_flow(child).build().pipeline[1]
    assert isinstance(node, ChildFlowNode)
    assert node.pipeline is child.pipeline


def test_a_clashing_child_fork_is_renamed_throughout() -> None:
    child = (
        Flow("child")
        .fork([step_b, step_c])
        .join(combine)
        .loop(countdown)
        .map(step_a)
        .delay("nap", 1)
        .wait_for_signal("go")
        .build()
    )
    wf = Flow("parent").then_flow(child).then_flow(child).build()
    second = wf.pipeline[1]
    assert isinstance(second, ChildFlowNode)
    fork, loop, mapping, delay, signal = second.pipeline
    assert isinstance(fork, ForkNode)
    assert fork.node_id == "step_b__1||step_c__1"
    assert fork.join.task_id == "combine__1"
    assert isinstance(loop, LoopNode)
    assert loop.body.task_id == "countdown__1"
    assert isinstance(mapping, MapNode)
    assert mapping.fn.task_id == "step_a__1"
    assert delay == DelayNode("nap__1", 1.0)
    assert signal == SignalNode("go__1", "go", None)


# -- delay and signal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("5m", 300.0), (12, 12.0), (0.5, 0.5), (timedelta(hours=1), 3600.0), ("0s", 0.0)],
)
def test_delay_duration(duration: str | float | timedelta, seconds: float) -> None:
    node = Flow("d").delay("cool_off", duration).build().pipeline[0]
    assert node == DelayNode("cool_off", seconds)


@pytest.mark.parametrize("duration", ["soon", -1, "-5s"])
def test_delay_bad_duration(duration: str | float) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        Flow("d").delay("cool_off", duration)


def test_delay_needs_a_name() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Flow("d").delay("", 5)


def test_wait_for_signal() -> None:
    wf = (
        Flow("s")
        .wait_for_signal("approved")
        .wait_for_signal("approved", name="second_approval", timeout="1h")
        .build()
    )
    assert wf.pipeline == (
        SignalNode("approved", "approved", None),
        SignalNode("second_approval", "approved", 3600.0),
    )


def test_wait_for_signal_bad_timeout() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        Flow("s").wait_for_signal("approved", timeout="forever")


# -- definition hash ----------------------------------------------------------------------------


def full_flow(
    *,
    name: str = "orders",
    second: Callable[..., Any] = step_b,
    second_name: str | None = None,
    delay: float = 60,
    max_iterations: int = 5,
    max_concurrency: int | None = 2,
    route_keys: tuple[str, ...] = ("even", "odd"),
) -> Workflow:
    child = Flow("child").then(step_c, name="child_step").build()
    builder = (
        Flow(name)
        .then(step_a)
        .fork()
        .branch(second, name=second_name)
        .branch(step_c)
        .join(combine)
        .route(parity, keys=list(route_keys))
    )
    for key in route_keys:
        builder.branch(key, lambda x: x, name=f"on_{key}")
    return (
        builder.done()
        .loop(countdown, max_iterations=max_iterations)
        .map(lambda x: x, name="each", max_concurrency=max_concurrency)
        .then_flow(child)
        .delay("cool_off", delay)
        .wait_for_signal("approved", timeout="1d")
        .build()
    )


def test_hash_is_stable_across_builds() -> None:
    first, second = full_flow(), full_flow()
    assert first is not second
    assert first.definition_hash == second.definition_hash
    assert len(first.definition_hash) == 64
    int(first.definition_hash, 16)


def test_hash_ignores_function_bodies() -> None:
    def step_b(x: int) -> int:  # same id as the module-level step_b, different body
        return -x

    assert full_flow(second=step_b).definition_hash == full_flow().definition_hash


@pytest.mark.parametrize(
    "changed",
    [
        lambda: full_flow(name="invoices"),
        lambda: full_flow(second_name="renamed"),
        lambda: full_flow(delay=61),
        lambda: full_flow(max_iterations=6),
        lambda: full_flow(max_concurrency=None),
        lambda: full_flow(route_keys=("even", "odd", "zero")),
    ],
)
def test_hash_changes_with_structure_and_ids(changed: Callable[[], Workflow]) -> None:
    assert changed().definition_hash != full_flow().definition_hash


def test_hash_changes_with_an_extra_step_or_reordering() -> None:
    base = Flow("f").then(step_a).then(step_b).build().definition_hash
    assert Flow("f").then(step_a).then(step_b).then(step_c).build().definition_hash != base
    assert Flow("f").then(step_b).then(step_a).build().definition_hash != base
    forked = Flow("f").fork([step_a, step_b]).join(combine).build().definition_hash
    swapped = Flow("f").fork([step_b, step_a]).join(combine).build().definition_hash
    assert forked != swapped


def hash_of_decorated(**options: Any) -> str:
    @task("charge", **options)
    def charge(x: int) -> int:
        return x

    return Flow("pay").then(charge).build().definition_hash


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"timeout": "30s"}, {"timeout": "31s"}),
        ({}, {"timeout": "30s"}),
        ({"retries": 2}, {"retries": 3}),
        ({}, {"retries": 2}),
        (
            {"retries": RetryPolicy(initial_delay_secs=1)},
            {"retries": RetryPolicy(initial_delay_secs=2)},
        ),
        ({"version": "1"}, {"version": "2"}),
        ({}, {"version": "1"}),
    ],
)
def test_hash_changes_with_timeout_retries_and_version(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    assert hash_of_decorated(**before) != hash_of_decorated(**after)


def test_hash_ignores_descriptive_metadata() -> None:
    assert hash_of_decorated() == hash_of_decorated(
        description="charge the card", tags=["payments"], priority=1
    )


def mixed_flow() -> Workflow:
    @task(
        "charge",
        timeout="30s",
        retries=RetryPolicy(max_retries=3, initial_delay_secs=0.5, max_delay_secs=10, jitter=0.1),
        version="2",
        tags=["x"],
        priority=2,
    )
    def charge(x: int) -> int:
        return x

    child = Flow("child").route(parity, keys=["even"]).branch("even", step_a).done().build()
    return (
        Flow("mixed")
        .then(charge)
        .fork([step_b, step_c])
        .join(combine)
        .route(parity, keys=["even", "odd"], name="outer")
        .branch("even", step_a, name="ev")
        .default_branch(lambda x: x)
        .done()
        .then_flow(child)
        .loop(countdown, max_iterations=3, on_max="exit_with_last")
        .map(step_a, name="each", max_concurrency=4)
        .wait_for_signal("go", name="gate")
        .delay("d", "1h")
        .build()
    )


@pytest.mark.parametrize(
    ("make", "pinned"),
    [
        (
            lambda: Flow("f").then(step_a).then(step_b).build(),
            "43b6096b8767ccf0eae26fbc1c352e89c6c9c116ce8b92603c3a430781147353",
        ),
        (full_flow, "cd76cce42f5c5a2d0bb030be0c442c2e03ab7ea340ab24777d832d9a6abc8cfd"),
        (mixed_flow, "109b177211071d657bb3524b12c9bc4272a5663c20b4020b3629d0a244febaf5"),
    ],
)
def test_hash_of_a_flow_without_repeats_never_changes(
    make: Callable[[], Workflow], pinned: str
) -> None:
    # Stored instances carry this hash and are refused on resume when it differs: a
    # change to how flows are described must leave every existing flow's hash alone.
    assert make().definition_hash == pinned


# -- iter_nodes ---------------------------------------------------------------------------------


def test_iter_nodes_kinds_and_predecessors() -> None:
    policy = RetryPolicy(max_retries=1)

    @task("start", timeout="10s", retries=policy, priority=2)
    def start(x: int) -> int:
        return x

    child = Flow("child").then(step_c, name="child_step").build()
    wf = (
        Flow("all")
        .then(start)
        .fork()
        .branch(step_a, step_b)
        .branch(step_c)
        .join(combine)
        .route(parity, keys=["even"])
        .branch("even", lambda x: x, name="on_even")
        .default_branch(lambda x: x, name="on_other")
        .done()
        .loop(countdown)
        .map(lambda x: x, name="each")
        .then_flow(child)
        .delay("cool_off", "5s")
        .wait_for_signal("approved", timeout="1m")
        .build()
    )
    rows = [(info.id, info.kind, info.predecessor_id) for info in wf.iter_nodes()]
    assert rows == [
        ("start", "task", None),
        ("step_a||step_c", "fork", "start"),
        ("step_a", "task", "step_a||step_c"),
        ("step_b", "task", "step_a"),
        ("step_c", "task", "step_a||step_c"),
        ("combine", "task", "step_a||step_c"),
        ("branch_0", "branch", "combine"),
        ("on_even", "task", "branch_0"),
        ("on_other", "task", "branch_0"),
        ("loop_0", "loop", "branch_0"),
        ("countdown", "task", "loop_0"),
        ("map_0", "map", "loop_0"),
        ("each", "task", "map_0"),
        ("child_0", "child_workflow", "map_0"),
        ("child_step", "task", "child_0"),
        ("cool_off", "delay", "child_0"),
        ("approved", "await_signal", "cool_off"),
    ]
    infos = {info.id: info for info in wf.iter_nodes()}
    assert infos["start"].timeout_secs == 10.0
    assert infos["start"].retry_policy is policy
    assert infos["start"].priority == 2
    assert infos["cool_off"].timeout_secs == 5.0
    assert infos["approved"].timeout_secs == 60.0
    assert infos["step_a"].retry_policy is None


def test_workflow_repr_and_tasks_mapping() -> None:
    wf = Flow("f").then(step_a).fork([step_b, step_c]).join(combine).build()
    assert repr(wf) == "Workflow('f', steps=4)"
    assert list(wf.tasks) == ["step_a", "step_b", "step_c", "combine"]
    with pytest.raises(TypeError):
        wf.tasks["x"] = wf.tasks["step_a"]  # type: ignore[index]
