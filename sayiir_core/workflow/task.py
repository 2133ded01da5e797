"""The ``@task`` decorator, task metadata and retry policies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from sayiir_core.durations import Duration, parse_duration

F = TypeVar("F", bound=Callable[..., Any])

_TASK_ATTRIBUTE = "__sayiir_task__"
MAX_TAGS = 20
MAX_TAG_LENGTH = 64


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed task is retried.

    The delay before retry ``n`` (1-based) is
    ``min(initial_delay_secs * backoff_multiplier ** (n - 1), max_delay_secs)``,
    multiplied by a random factor in ``[1 - jitter, 1 + jitter]``.

    ``retry_on`` limits retries to those exception types; ``non_retryable`` never retries
    them (it wins over ``retry_on``). A timed-out attempt counts as a failed attempt.
    """

    max_retries: int = 2
    initial_delay_secs: float = 1.0
    backoff_multiplier: float = 2.0
    max_delay_secs: float | None = None
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = ()
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_delay_secs < 0:
            raise ValueError(f"initial_delay_secs must be >= 0, got {self.initial_delay_secs}")
        if self.backoff_multiplier < 1:
            raise ValueError(f"backoff_multiplier must be >= 1, got {self.backoff_multiplier}")
        if self.max_delay_secs is not None and self.max_delay_secs < 0:
            raise ValueError(f"max_delay_secs must be >= 0, got {self.max_delay_secs}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")
        object.__setattr__(self, "retry_on", tuple(self.retry_on))
        object.__setattr__(self, "non_retryable", tuple(self.non_retryable))

    def delay_before_retry(self, retry_number: int, jitter_sample: float = 0.5) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based).

        ``jitter_sample`` is a number in ``[0, 1)``; passing it in keeps this function pure.
        """
        delay = self.initial_delay_secs * self.backoff_multiplier ** (retry_number - 1)
        if self.max_delay_secs is not None:
            delay = min(delay, self.max_delay_secs)
        return delay * (1 + self.jitter * (2 * jitter_sample - 1))

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
    """What the ``@task`` decorator records about a function."""

    display_name: str | None = None
    description: str | None = None
    timeout_secs: float | None = None
    retries: RetryPolicy | None = None
    tags: tuple[str, ...] = ()
    priority: int | None = None
    version: str | None = None
    input_type: Any = field(default=None, compare=False)
    output_type: Any = field(default=None, compare=False)

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
def task(fn: F, /) -> F: ...


@overload
def task(
    name: str | None = None,
    /,
    *,
    timeout: Duration | None = None,
    timeout_secs: float | None = None,
    retries: int | RetryPolicy | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    description: str | None = None,
    priority: int | None = None,
    version: str | None = None,
) -> Callable[[F], F]: ...


@overload
def task(
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
    fn_or_name: Callable[..., Any] | str | None = None,
    /,
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
    async functions alike.

    Example::

        @task("charge", timeout="30s", retries=3)
        def charge_card(order: dict) -> dict:
            return {**order, "charged": True}
    """
    if isinstance(fn_or_name, str):
        name = fn_or_name
        fn_or_name = None
    raw_timeout = timeout if timeout is not None else timeout_secs
    timeout_secs = parse_duration(raw_timeout) if raw_timeout is not None else None
    if timeout_secs is not None and timeout_secs <= 0:
        raise ValueError(f"timeout must be positive, got {timeout_secs}")
    policy = RetryPolicy(max_retries=retries) if isinstance(retries, int) else retries
    if priority is not None and not 1 <= priority <= 5:
        raise ValueError(f"priority must be between 1 and 5, got {priority}")
    checked_tags = _checked_tags(tags or ())

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

    if fn_or_name is not None:
        return decorate(fn_or_name)
    return decorate


def _checked_tags(tags: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of strings, got the string {tags!r}")
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
