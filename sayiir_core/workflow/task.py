"""The ``@task`` decorator, task metadata and retry policies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from sayiir_core.durations import Duration, parse_duration
from sayiir_core.workflow.arguments import (
    check_count,
    check_exception_types,
    check_number,
    check_optional_str,
    check_priority,
    check_seconds,
    describe,
)

F = TypeVar("F", bound=Callable[..., Any])

_TASK_ATTRIBUTE = "__sayiir_task__"
MAX_TAGS = 20
MAX_TAG_LENGTH = 64


# A due time must stay a date (datetime ends in year 9999) and a JSON number: no back-off
# waits longer than this, whatever the multiplier made of it.
MAX_RETRY_DELAY_SECS = 100 * 365 * 86400.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed task is retried.

    The delay before retry ``n`` (1-based) is
    ``min(initial_delay_secs * backoff_multiplier ** (n - 1), max_delay_secs)``,
    multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` (and never more than
    ``MAX_RETRY_DELAY_SECS``, 100 years).

    ``retry_on`` limits retries to those exception types; ``non_retryable`` never retries
    them (it wins over ``retry_on``). A timed-out attempt counts as a failed attempt.

    Every argument is checked here: ``max_retries`` an int >= 0; the delays finite
    numbers of seconds >= 0; ``backoff_multiplier`` a finite number >= 0 (below 1 the
    delays shrink, as Sayiir 1.0 allows); ``jitter`` from 0 to 1; ``retry_on`` and
    ``non_retryable`` exception classes (a tuple, a list, or one class).
    """

    max_retries: int = 2
    initial_delay_secs: float = 1.0
    backoff_multiplier: float = 2.0
    max_delay_secs: float | None = None
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = ()
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        check_count(self.max_retries, "RetryPolicy(max_retries=...)")
        initial = check_seconds(self.initial_delay_secs, "RetryPolicy(initial_delay_secs=...)")
        if initial > MAX_RETRY_DELAY_SECS:
            raise ValueError(
                f"RetryPolicy(initial_delay_secs=...) must be at most "
                f"{MAX_RETRY_DELAY_SECS:.0f} (100 years), got {self.initial_delay_secs}"
            )
        if check_number(self.backoff_multiplier, "RetryPolicy(backoff_multiplier=...)") < 0:
            raise ValueError(
                f"RetryPolicy(backoff_multiplier=...) must be >= 0, got {self.backoff_multiplier}"
            )
        if self.max_delay_secs is not None:
            check_seconds(self.max_delay_secs, "RetryPolicy(max_delay_secs=...)")
        if not 0 <= check_number(self.jitter, "RetryPolicy(jitter=...)") <= 1:
            raise ValueError(f"RetryPolicy(jitter=...) must be between 0 and 1, got {self.jitter}")
        retry_on = check_exception_types(self.retry_on, "RetryPolicy(retry_on=...)")
        object.__setattr__(self, "retry_on", retry_on)
        non_retryable = check_exception_types(self.non_retryable, "RetryPolicy(non_retryable=...)")
        object.__setattr__(self, "non_retryable", non_retryable)

    def delay_before_retry(self, retry_number: int, jitter_sample: float = 0.5) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based).

        ``jitter_sample`` is a number in ``[0, 1)``; passing it in keeps this function pure.
        """
        delay = self.initial_delay_secs
        if delay > 0 and retry_number > 1:
            try:
                delay *= self.backoff_multiplier ** (retry_number - 1)
            except OverflowError:  # a float cannot hold it: longer than any cap anyway
                delay = MAX_RETRY_DELAY_SECS
        if self.max_delay_secs is not None:
            delay = min(delay, self.max_delay_secs)
        delay *= 1 + self.jitter * (2 * jitter_sample - 1)
        return min(delay, MAX_RETRY_DELAY_SECS)

    def should_retry(self, error: BaseException) -> bool:
        """Whether this exception type may be retried at all (attempts aside)."""
        if self.non_retryable and isinstance(error, self.non_retryable):
            return False
        return not self.retry_on or isinstance(error, self.retry_on)

    def describe(self) -> dict[str, Any]:
        """The parts of the policy that belong to the workflow definition."""
        return {
            "max_retries": self.max_retries,
            "initial_delay_secs": self.initial_delay_secs,
            "backoff_multiplier": self.backoff_multiplier,
            "max_delay_secs": self.max_delay_secs,
            "jitter": self.jitter,
        }


@dataclass(frozen=True, slots=True)
class TaskMetadata:
    """What the ``@task`` decorator records about a function.

    The positional order is Sayiir 1.0's: ``display_name, description, timeout_secs,
    retries, tags, version, priority``. ``tags`` may be given as a list. Every field is
    checked: strings or None, ``timeout_secs`` a number of seconds > 0, ``retries`` a
    ``RetryPolicy``, ``priority`` an int from 1 to 5.
    """

    display_name: str | None = None
    description: str | None = None
    timeout_secs: float | None = None
    retries: RetryPolicy | None = None
    tags: tuple[str, ...] = ()
    version: str | None = None
    priority: int | None = None
    input_type: Any = field(default=None, compare=False)
    output_type: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_optional_str(self.display_name, "TaskMetadata(display_name=...)")
        check_optional_str(self.description, "TaskMetadata(description=...)")
        check_optional_str(self.version, "TaskMetadata(version=...)")
        if self.timeout_secs is not None:
            check_seconds(self.timeout_secs, "TaskMetadata(timeout_secs=...)", positive=True)
        if self.retries is not None and not isinstance(self.retries, RetryPolicy):
            raise TypeError(
                "TaskMetadata(retries=...) takes a RetryPolicy, such as "
                f"RetryPolicy(max_retries=3), got {describe(self.retries)}"
            )
        check_priority(self.priority, "TaskMetadata(priority=...)")
        # Sayiir 1.0 takes a list (or None); a tuple keeps the metadata hashable.
        tags: Any = self.tags
        if not isinstance(tags, tuple):
            object.__setattr__(self, "tags", _checked_tags(tags if tags is not None else ()))

    def describe(self) -> dict[str, Any]:
        """The parts of the metadata that belong to the workflow definition hash."""
        return {
            "timeout_secs": self.timeout_secs,
            "retries": self.retries.describe() if self.retries else None,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """The id and metadata attached to a function by ``@task``."""

    task_id: str
    metadata: TaskMetadata


def task_spec(fn: Callable[..., Any]) -> TaskSpec | None:
    """The ``@task`` spec attached to ``fn``, if it was decorated."""
    spec = getattr(fn, _TASK_ATTRIBUTE, None)
    return spec if isinstance(spec, TaskSpec) else None


@overload
def task(
    func: F,
    *,
    name: str | None = None,
    timeout: Duration | None = None,
    timeout_secs: float | None = None,
    retries: int | RetryPolicy | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    description: str | None = None,
    priority: int | None = None,
    version: str | None = None,
) -> F: ...


@overload
def task(
    func: str | None = None,
    *,
    name: str | None = None,
    timeout: Duration | None = None,
    timeout_secs: float | None = None,
    retries: int | RetryPolicy | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    description: str | None = None,
    priority: int | None = None,
    version: str | None = None,
) -> Callable[[F], F]: ...


def task(
    func: Callable[..., Any] | str | None = None,
    *,
    name: str | None = None,
    timeout: Duration | None = None,
    timeout_secs: float | None = None,
    retries: int | RetryPolicy | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    description: str | None = None,
    priority: int | None = None,
    version: str | None = None,
) -> Any:
    """Declare a function as a workflow task; the function stays directly callable.

    ``retries=3`` is shorthand for ``RetryPolicy(max_retries=3)``. ``timeout`` takes
    seconds, a ``timedelta`` or a string like ``"30s"``; it is enforced for sync and
    async functions alike. Used bare (``@task``), with a name (``@task("charge")``) or
    with options; ``task(func=fn, ...)`` works as well, as in Sayiir 1.0.

    Example::

        @task("charge", timeout="30s", retries=3)
        def charge_card(order: dict) -> dict:
            return {**order, "charged": True}
    """
    if isinstance(func, str):
        if name is not None:
            raise TypeError(f"task() got two names: {func!r} and name={name!r}")
        name = func
        func = None
    check_optional_str(name, "@task(name=...)")
    check_optional_str(description, "@task(description=...)")
    check_optional_str(version, "@task(version=...)")
    timeout_secs = _task_timeout(timeout, timeout_secs)
    policy = _task_retries(retries)
    check_priority(priority, "@task(priority=...)")
    checked_tags = _checked_tags(tags if tags is not None else ())

    def decorate(fn: F) -> F:
        from sayiir_core.workflow.typing import annotated_types

        input_type, output_type = annotated_types(fn)
        task_id = name or fn.__name__
        metadata = TaskMetadata(
            display_name=task_id,
            description=description,
            timeout_secs=timeout_secs,
            retries=policy,
            tags=checked_tags,
            priority=priority,
            version=version,
            input_type=input_type,
            output_type=output_type,
        )
        setattr(fn, _TASK_ATTRIBUTE, TaskSpec(task_id, metadata))
        return fn

    if func is not None:
        if not callable(func):
            raise TypeError(f"@task decorates a function, got {func!r}")
        return decorate(func)
    return decorate


def _task_timeout(timeout: object, timeout_secs: object) -> float | None:
    # As in Sayiir 1.0, ``timeout`` wins when both are given.
    raw, label = (timeout, "timeout") if timeout is not None else (timeout_secs, "timeout_secs")
    if raw is None:
        return None
    try:
        seconds = parse_duration(raw)  # type: ignore[arg-type]  # checked inside
    except (TypeError, ValueError) as error:
        raise type(error)(f"@task({label}=...): {error}") from None
    if seconds <= 0:
        raise ValueError(f"@task({label}=...) must be positive, got {raw!r}")
    return seconds


def _task_retries(retries: object) -> RetryPolicy | None:
    if retries is None or isinstance(retries, RetryPolicy):
        return retries
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(
            "@task(retries=...) takes an int (how many times to retry) or a RetryPolicy, "
            f"got {describe(retries)}"
        )
    if retries < 0:
        raise ValueError(f"@task(retries=...) must be >= 0 (max_retries), got {retries}")
    return RetryPolicy(max_retries=retries)


def _checked_tags(tags: Sequence[str] | AbstractSet[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of strings, got the string {tags!r}")
    if isinstance(tags, AbstractSet):
        tags = sorted(tags, key=str)  # a set has no order; the metadata should have one
    if not isinstance(tags, Sequence):
        raise TypeError(f"tags must be a list of strings, got {describe(tags)}")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"too many tags: {len(tags)} (max {MAX_TAGS})")
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"tags must be strings, got {tag!r}")
        if not tag:
            raise ValueError("tags must not contain empty strings")
        if len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"tag too long: {tag!r} ({len(tag)} chars, max {MAX_TAG_LENGTH})")
    return tuple(tags)
