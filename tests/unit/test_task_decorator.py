"""The ``@task`` decorator, ``TaskMetadata`` and ``RetryPolicy``."""

from __future__ import annotations

import asyncio
import inspect
import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sayiir_core.workflow import RetryPolicy, TaskMetadata, task
from sayiir_core.workflow.task import (
    MAX_RETRY_DELAY_SECS,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    TaskSpec,
    task_spec,
)


def spec_of(fn: object) -> TaskSpec:
    spec = task_spec(fn)  # type: ignore[arg-type]
    assert spec is not None, f"{fn!r} is not a task"
    return spec


# -- the decorator forms -----------------------------------------------------------------


def test_bare_decorator_uses_the_function_name() -> None:
    @task
    def fetch(x: int) -> int:
        return x + 1

    spec = spec_of(fetch)
    assert spec.task_id == "fetch"
    assert spec.metadata == TaskMetadata(display_name="fetch")


def test_positional_name() -> None:
    @task("load_user")
    def fetch(x: int) -> int:
        return x

    assert spec_of(fetch).task_id == "load_user"
    assert spec_of(fetch).metadata.display_name == "load_user"


def test_keyword_name_and_empty_parentheses() -> None:
    @task(name="load_user")
    def fetch(x: int) -> int:
        return x

    @task()
    def store(x: int) -> int:
        return x

    assert spec_of(fetch).task_id == "load_user"
    assert spec_of(store).task_id == "store"


def test_func_keyword_decorates_directly_as_in_sayiir() -> None:
    def fetch(x: int) -> int:
        return x

    assert task(func=fetch, name="load", retries=1) is fetch
    assert spec_of(fetch).task_id == "load"
    assert spec_of(fetch).metadata.retries == RetryPolicy(max_retries=1)


def test_two_names_are_refused() -> None:
    with pytest.raises(TypeError, match="two names"):
        task("one", name="two")


def test_a_non_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="decorates a function"):
        task(42)  # type: ignore[call-overload]


def test_all_options_are_recorded() -> None:
    policy = RetryPolicy(max_retries=4, initial_delay_secs=0.5)

    @task(
        name="charge",
        timeout="30s",
        retries=policy,
        tags=["payments", "io"],
        description="Charge the card",
        priority=2,
        version="v3",
    )
    def charge(order: dict[str, int]) -> dict[str, int]:
        return order

    metadata = spec_of(charge).metadata
    assert metadata.timeout_secs == 30.0
    assert metadata.retries is policy
    assert metadata.tags == ("payments", "io")
    assert metadata.description == "Charge the card"
    assert metadata.priority == 2
    assert metadata.version == "v3"


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [("30s", 30.0), ("2m", 120.0), (1.5, 1.5), (3, 3.0), (timedelta(seconds=4), 4.0)],
)
def test_timeout_forms(timeout: str | float | timedelta, seconds: float) -> None:
    @task(timeout=timeout)
    def step(x: int) -> int:
        return x

    assert spec_of(step).metadata.timeout_secs == seconds


def test_timeout_secs_keyword() -> None:
    @task(timeout_secs=2.5)
    def step(x: int) -> int:
        return x

    assert spec_of(step).metadata.timeout_secs == 2.5


def test_integer_retries_is_shorthand_for_a_policy() -> None:
    @task(retries=3)
    def step(x: int) -> int:
        return x

    assert spec_of(step).metadata.retries == RetryPolicy(max_retries=3)


def test_annotations_are_recorded_for_validation() -> None:
    @task
    def step(x: int) -> str:
        return str(x)

    assert spec_of(step).metadata.input_type is int
    assert spec_of(step).metadata.output_type is str


# -- the function stays a function ---------------------------------------------------------


def test_decorated_function_stays_directly_callable() -> None:
    def double(x: int) -> int:
        return x * 2

    decorated = task("double", retries=2)(double)
    assert decorated is double
    assert decorated(21) == 42
    assert decorated.__name__ == "double"


def test_decorated_coroutine_function_stays_a_coroutine_function() -> None:
    @task(timeout="1s")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(1)) == 2


def test_undecorated_function_has_no_spec() -> None:
    def plain(x: int) -> int:
        return x

    assert task_spec(plain) is None


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("priority", [0, 6, -1, 100])
def test_priority_out_of_range(priority: int) -> None:
    with pytest.raises(ValueError, match="priority"):
        task(priority=priority)


@pytest.mark.parametrize("priority", [1, 3, 5])
def test_priority_in_range(priority: int) -> None:
    @task(priority=priority)
    def step(x: int) -> int:
        return x

    assert spec_of(step).metadata.priority == priority


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ([""], "empty"),
        (["x" * (MAX_TAG_LENGTH + 1)], "too long"),
        ([f"t{i}" for i in range(MAX_TAGS + 1)], "too many"),
    ],
)
def test_bad_tags(tags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        task(tags=tags)


def test_tags_at_the_limits_are_accepted() -> None:
    tags = ["x" * MAX_TAG_LENGTH] + [f"t{i}" for i in range(MAX_TAGS - 1)]

    @task(tags=tags)
    def step(x: int) -> int:
        return x

    assert spec_of(step).metadata.tags == tuple(tags)


def test_a_string_is_not_a_list_of_tags() -> None:
    # tags="io" must not silently become ("i", "o").
    with pytest.raises(TypeError, match="tags"):
        task(tags="io")  # type: ignore[call-overload]


def test_tags_must_be_strings() -> None:
    with pytest.raises(TypeError, match="tags"):
        task(tags=[1])  # type: ignore[list-item]


@pytest.mark.parametrize("timeout", ["0s", 0, -1, "soon", math.nan, math.inf])
def test_bad_timeout(timeout: str | float) -> None:
    with pytest.raises(ValueError, match=r"timeout|duration"):
        task(timeout=timeout)


@pytest.mark.parametrize("timeout_secs", [0, -2.0, math.nan])
def test_bad_timeout_secs(timeout_secs: float) -> None:
    with pytest.raises(ValueError, match=r"timeout|duration"):
        task(timeout_secs=timeout_secs)


def test_negative_retries() -> None:
    with pytest.raises(ValueError, match=r"retries=\.\.\.\) must be >= 0"):
        task(retries=-1)


# -- RetryPolicy ----------------------------------------------------------------------------


def test_retry_policy_defaults_match_sayiir() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_delay_secs, policy.backoff_multiplier) == (
        2,
        1.0,
        2.0,
    )
    assert policy.max_delay_secs is None
    assert policy.jitter == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"initial_delay_secs": -0.1}, "initial_delay_secs"),
        ({"backoff_multiplier": -0.5}, "backoff_multiplier"),
        ({"max_delay_secs": -1.0}, "max_delay_secs"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": math.nan}, "jitter"),
    ],
)
def test_retry_policy_validation(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_exponential_backoff() -> None:
    policy = RetryPolicy(max_retries=5, initial_delay_secs=1.0, backoff_multiplier=2.0)
    assert [policy.delay_before_retry(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_constant_backoff() -> None:
    policy = RetryPolicy(initial_delay_secs=3.0, backoff_multiplier=1.0)
    assert [policy.delay_before_retry(n) for n in range(1, 4)] == [3.0, 3.0, 3.0]


def test_max_delay_caps_the_backoff() -> None:
    policy = RetryPolicy(
        max_retries=10, initial_delay_secs=1.0, backoff_multiplier=3.0, max_delay_secs=5.0
    )
    assert [policy.delay_before_retry(n) for n in range(1, 5)] == [1.0, 3.0, 5.0, 5.0]


def test_jitter_sample_spreads_the_delay_symmetrically() -> None:
    policy = RetryPolicy(initial_delay_secs=10.0, jitter=0.2)
    assert policy.delay_before_retry(1, jitter_sample=0.0) == pytest.approx(8.0)
    assert policy.delay_before_retry(1, jitter_sample=0.5) == pytest.approx(10.0)
    assert policy.delay_before_retry(1, jitter_sample=1.0) == pytest.approx(12.0)


@given(
    initial=st.floats(min_value=0, max_value=100),
    multiplier=st.floats(min_value=1, max_value=5),
    cap=st.none() | st.floats(min_value=0, max_value=1000),
    jitter=st.floats(min_value=0, max_value=1),
    retry_number=st.integers(min_value=1, max_value=20),
    sample=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_jittered_delay_stays_within_bounds(
    initial: float,
    multiplier: float,
    cap: float | None,
    jitter: float,
    retry_number: int,
    sample: float,
) -> None:
    policy = RetryPolicy(
        max_retries=20,
        initial_delay_secs=initial,
        backoff_multiplier=multiplier,
        max_delay_secs=cap,
        jitter=jitter,
    )
    base = initial * multiplier ** (retry_number - 1)
    if cap is not None:
        base = min(base, cap)
    delay = policy.delay_before_retry(retry_number, sample)
    assert delay >= 0
    low, high = base * (1 - jitter), base * (1 + jitter)
    assert min(low, MAX_RETRY_DELAY_SECS) - 1e-9 <= delay <= min(high, MAX_RETRY_DELAY_SECS) + 1e-9
    if jitter == 0:
        assert delay == pytest.approx(min(base, MAX_RETRY_DELAY_SECS))


def test_should_retry_honours_retry_on_and_non_retryable() -> None:
    everything = RetryPolicy()
    assert everything.should_retry(ValueError())

    only_io = RetryPolicy(retry_on=(OSError,))
    assert only_io.should_retry(ConnectionError())
    assert not only_io.should_retry(ValueError())

    never_key = RetryPolicy(retry_on=(LookupError,), non_retryable=(KeyError,))
    assert never_key.should_retry(IndexError())
    assert not never_key.should_retry(KeyError())  # non_retryable wins


def test_retry_on_accepts_a_list() -> None:
    policy = RetryPolicy(retry_on=[OSError], non_retryable=[KeyError])  # type: ignore[arg-type]
    assert policy.retry_on == (OSError,)
    assert policy.non_retryable == (KeyError,)
    hash(policy)  # still hashable: the lists became tuples


def test_describe_leaves_out_exception_filters() -> None:
    described = RetryPolicy(max_retries=1, retry_on=(OSError,)).describe()
    assert described == {
        "max_retries": 1,
        "initial_delay_secs": 1.0,
        "backoff_multiplier": 2.0,
        "max_delay_secs": None,
        "jitter": 0.0,
    }


def test_metadata_describe_covers_only_hashed_fields() -> None:
    metadata = TaskMetadata(
        display_name="x",
        description="ignored",
        timeout_secs=5.0,
        retries=RetryPolicy(max_retries=1),
        tags=("a",),
        priority=1,
        version="2",
    )
    assert metadata.describe() == {
        "timeout_secs": 5.0,
        "retries": RetryPolicy(max_retries=1).describe(),
        "version": "2",
    }
