"""Bad arguments to ``RetryPolicy``, ``@task``, ``TaskMetadata`` and ``Flow`` fail where written.

Each one used to be accepted and to fail later: a raw ``TypeError`` inside a running
instance (which then stayed ``running``), an ``AttributeError`` deep in the engine, or a
silently wrong workflow. The table in ``docs/concepts/guarantees.md`` ("Bad inputs")
lists the same cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from sayiir_core.workflow import (
    Flow,
    RetryPolicy,
    TaskMetadata,
    require_workflow,
    task,
)
from sayiir_core.workflow.task import MAX_RETRY_DELAY_SECS


def step(x: int) -> int:
    return x + 1


# (what is written, the exception it must raise at once, words the message must contain)
BAD_DEFINITIONS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    # -- RetryPolicy: exception filters (issue 10, item 3) --
    (
        "non_retryable of names",
        lambda: RetryPolicy(non_retryable=("ValueError",)),  # type: ignore[arg-type]
        TypeError,
        "pass the class itself, ValueError, not its name",
    ),
    (
        "retry_on of numbers",
        lambda: RetryPolicy(retry_on=[42]),  # type: ignore[arg-type]
        TypeError,
        "retry_on=...) must hold exception classes",
    ),
    (
        "retry_on a string",
        lambda: RetryPolicy(retry_on="OSError"),  # type: ignore[arg-type]
        TypeError,
        "must be a tuple of exception classes",
    ),
    (
        "retry_on a non-exception class",
        lambda: RetryPolicy(retry_on=(int,)),  # type: ignore[arg-type]
        TypeError,
        "got <class 'int'> (type)",
    ),
    # -- RetryPolicy: numbers --
    ("max_retries a float", lambda: RetryPolicy(max_retries=1.5), TypeError, "must be an int"),  # type: ignore[arg-type]
    ("max_retries a bool", lambda: RetryPolicy(max_retries=True), TypeError, "must be an int"),
    ("max_retries negative", lambda: RetryPolicy(max_retries=-1), ValueError, ">= 0"),
    (
        "initial delay a string",
        lambda: RetryPolicy(initial_delay_secs="1"),  # type: ignore[arg-type]
        TypeError,
        "number of seconds",
    ),
    (
        "initial delay infinite",
        lambda: RetryPolicy(initial_delay_secs=math.inf),
        ValueError,
        "finite",
    ),
    ("initial delay NaN", lambda: RetryPolicy(initial_delay_secs=math.nan), ValueError, "finite"),
    (
        "initial delay over 100 years",
        lambda: RetryPolicy(initial_delay_secs=MAX_RETRY_DELAY_SECS * 2),
        ValueError,
        "100 years",
    ),
    ("multiplier negative", lambda: RetryPolicy(backoff_multiplier=-1), ValueError, ">= 0"),
    ("multiplier NaN", lambda: RetryPolicy(backoff_multiplier=math.nan), ValueError, "finite"),
    ("max delay negative", lambda: RetryPolicy(max_delay_secs=-1), ValueError, ">= 0"),
    ("jitter above 1", lambda: RetryPolicy(jitter=1.5), ValueError, "between 0 and 1"),
    # -- @task (issue 10, item 11) --
    (
        "@task(retries=1.5)",
        lambda: task(retries=1.5),  # type: ignore[call-overload]
        TypeError,
        "takes an int (how many times to retry) or a RetryPolicy",
    ),
    (
        "@task(retries='3')",
        lambda: task(retries="3"),  # type: ignore[call-overload]
        TypeError,
        "takes an int",
    ),
    ("@task(retries=True)", lambda: task(retries=True), TypeError, "takes an int"),
    ("@task(retries=-1)", lambda: task(retries=-1), ValueError, ">= 0"),
    ("@task(timeout='abc')", lambda: task(timeout="abc"), ValueError, "@task(timeout=...)"),
    (
        "@task(timeout=[1])",
        lambda: task(timeout=[1]),  # type: ignore[call-overload]
        TypeError,
        "@task(timeout=...)",
    ),
    ("@task(timeout_secs=-1)", lambda: task(timeout_secs=-1), ValueError, "timeout_secs"),
    ("@task(priority=9)", lambda: task(priority=9), ValueError, "between 1 and 5"),
    (
        "@task(priority=2.5)",
        lambda: task(priority=2.5),  # type: ignore[call-overload]
        TypeError,
        "int from 1 to 5",
    ),
    (
        "@task(priority='1')",
        lambda: task(priority="1"),  # type: ignore[call-overload]
        TypeError,
        "int from 1 to 5",
    ),
    ("@task(tags='x')", lambda: task(tags="x"), TypeError, "list of strings"),  # type: ignore[call-overload]
    ("@task(tags=5)", lambda: task(tags=5), TypeError, "list of strings"),  # type: ignore[call-overload]
    ("@task(name=3)", lambda: task(name=3), TypeError, "@task(name=...)"),  # type: ignore[call-overload]
    (
        "@task(description=3)",
        lambda: task(description=3),  # type: ignore[call-overload]
        TypeError,
        "@task(description=...)",
    ),
    ("@task(version=2)", lambda: task(version=2), TypeError, "@task(version=...)"),  # type: ignore[call-overload]
    # -- TaskMetadata, as Sayiir 1.0 users build it --
    (
        "TaskMetadata(retries=3)",
        lambda: TaskMetadata(retries=3),  # type: ignore[arg-type]
        TypeError,
        "RetryPolicy(max_retries=3)",
    ),
    ("TaskMetadata(timeout_secs=-1)", lambda: TaskMetadata(timeout_secs=-1), ValueError, "> 0"),
    ("TaskMetadata(priority=9)", lambda: TaskMetadata(priority=9), ValueError, "between 1 and 5"),
    (
        "TaskMetadata(display_name=3)",
        lambda: TaskMetadata(display_name=3),  # type: ignore[arg-type]
        TypeError,
        "display_name",
    ),
    # -- Flow --
    ("Flow(3)", lambda: Flow(3), TypeError, "non-empty string"),  # type: ignore[arg-type]
    (
        "Flow metadata not a dict",
        lambda: Flow("f", metadata="x"),  # type: ignore[arg-type]
        TypeError,
        "metadata",
    ),
    (
        "map(max_concurrency=2.5)",
        lambda: Flow("f").map(step, max_concurrency=2.5),  # type: ignore[arg-type]
        TypeError,
        "must be an int",
    ),
    (
        "wait_for_signal(3)",
        lambda: Flow("f").wait_for_signal(3),  # type: ignore[arg-type]
        TypeError,
        "signal name",
    ),
    (
        "route keys not strings",
        lambda: Flow("f").route(step, keys=[1, 2]),  # type: ignore[list-item]
        TypeError,
        "keys must be strings",
    ),
    (
        "then(a Flow)",
        lambda: Flow("f").then(Flow("g").then(step)),  # type: ignore[arg-type]
        TypeError,
        ".then_flow(workflow)",
    ),
    (
        "then_flow(a Flow)",
        lambda: Flow("f").then_flow(Flow("g").then(step)),  # type: ignore[arg-type]
        TypeError,
        "call .build() on it first",
    ),
]


@pytest.mark.parametrize(
    ("written", "make", "error", "words"),
    BAD_DEFINITIONS,
    ids=[row[0] for row in BAD_DEFINITIONS],
)
def test_a_bad_definition_fails_where_it_is_written(
    written: str, make: Callable[[], object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as raised:
        make()
    assert words in str(raised.value), f"{written}: {raised.value}"


# -- what stays accepted -------------------------------------------------------------------


def test_what_sayiir_accepts_and_means_something_stays_accepted() -> None:
    # A shrinking back-off is odd but well defined; Sayiir 1.0 takes it (before: refused).
    assert RetryPolicy(backoff_multiplier=0.5).delay_before_retry(2) == 0.5
    assert RetryPolicy(backoff_multiplier=0).delay_before_retry(2) == 0.0
    # One exception class needs no tuple around it.
    assert RetryPolicy(retry_on=OSError).retry_on == (OSError,)  # type: ignore[arg-type]
    assert RetryPolicy(non_retryable={KeyError}).non_retryable == (KeyError,)  # type: ignore[arg-type]
    # Sets of tags get an order of their own.
    assert TaskMetadata(tags={"b", "a"}).tags == ("a", "b")  # type: ignore[arg-type]


def test_the_longest_back_off_stays_a_date() -> None:
    # 2 ** 2000 overflows a float: the delay is capped instead of raising inside a run.
    many = RetryPolicy(max_retries=5000)
    assert many.delay_before_retry(4000) == MAX_RETRY_DELAY_SECS
    # With no initial delay every retry is immediate, however large the multiplier.
    eager = RetryPolicy(max_retries=5000, initial_delay_secs=0, backoff_multiplier=1e10)
    assert eager.delay_before_retry(4000) == 0.0


# -- require_workflow (issue 10, item 11: forgetting .build()) ------------------------------


def fork_builder() -> object:
    return Flow("f").fork().branch(step)


def route_builder() -> object:
    return Flow("f").route(step, keys=["a"])


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (Flow("orders").then(step), "got the Flow 'orders': call .build() on it first"),
        ([Flow("a").then(step)], "got a list: pass one Workflow here (and call .build()"),
        (step, "got the function 'step': a function is a step, not a workflow"),
        ("orders", "got the string 'orders': pass the Workflow object"),
        (fork_builder(), "unfinished fork: close it with .join(fn)"),
        (route_builder(), "unfinished route: close it with .done()"),
        (None, "got NoneType None"),
    ],
    ids=["flow", "list", "function", "string", "fork", "route", "none"],
)
def test_require_workflow_says_what_to_do(value: object, words: str) -> None:
    with pytest.raises(TypeError) as raised:
        require_workflow(value, "run_workflow()")
    message = str(raised.value)
    assert message.startswith("run_workflow() takes a built Workflow, got ")
    assert words in message


def test_require_workflow_returns_a_workflow() -> None:
    workflow = Flow("f").then(step).build()
    assert require_workflow(workflow, "run_workflow()") is workflow
