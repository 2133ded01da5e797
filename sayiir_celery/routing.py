"""Which Celery queue, routing key and priority a step's messages get.

A step's route comes from, in order: ``queues_by_task`` (its task id), the first of its
``@task(tags=...)`` found in ``queues_by_tag``, then ``default_queue`` (``None``: the
app's default queue, ``task_default_queue``). The routing key is the queue name unless
the route says otherwise. A task declared with ``@task(priority=1..5)`` (1 first) gets a
Celery priority in the broker's own order: on Redis lower numbers go first (0-9), on
RabbitMQ higher ones (the queue needs ``x-max-priority``); a ``Route(priority=...)``
is passed to Celery as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sayiir_core.workflow.graph import TaskNode


@dataclass(frozen=True, slots=True)
class Route:
    """Where a step's messages go; ``priority`` is a Celery priority, used as given."""

    queue: str
    routing_key: str | None = None
    priority: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not self.queue:
            raise ValueError(f"a route needs a queue name, got {self.queue!r}")


RouteLike = str | Route


def _route(value: RouteLike, what: str) -> Route:
    if isinstance(value, Route):
        return value
    if isinstance(value, str) and value:
        return Route(value)
    raise TypeError(f"{what}: expected a queue name or a Route, got {value!r}")


def celery_priority(priority: int, transport: str) -> int:
    """A Sayiir priority (1 most urgent ... 5) in the broker's order."""
    if transport in ("amqp", "pyamqp", "amqps"):
        return 6 - priority  # RabbitMQ: higher first; 1 -> 5 ... 5 -> 1
    return (priority - 1) * 2  # Redis and others: lower first; 1 -> 0 ... 5 -> 8


class Router:
    """Turns a step's task into ``send_task`` options (queue, routing key, priority)."""

    def __init__(
        self,
        *,
        queues_by_tag: Mapping[str, RouteLike] | None = None,
        queues_by_task: Mapping[str, RouteLike] | None = None,
        default_queue: RouteLike | None = None,
        transport: str = "redis",
    ) -> None:
        self._by_tag = {
            tag: _route(value, f"queues_by_tag[{tag!r}]")
            for tag, value in (queues_by_tag or {}).items()
        }
        self._by_task = {
            task_id: _route(value, f"queues_by_task[{task_id!r}]")
            for task_id, value in (queues_by_task or {}).items()
        }
        self._default = _route(default_queue, "default_queue") if default_queue else None
        self._transport = transport

    @property
    def queues(self) -> set[str]:
        """Every queue a route names (the workers must consume them)."""
        routes = [*self._by_tag.values(), *self._by_task.values()]
        if self._default is not None:
            routes.append(self._default)
        return {route.queue for route in routes}

    def route_of(self, task: TaskNode) -> Route | None:
        route = self._by_task.get(task.task_id)
        if route is None:
            route = next((self._by_tag[t] for t in task.metadata.tags if t in self._by_tag), None)
        return route or self._default

    def options(self, task: TaskNode) -> dict[str, Any]:
        """Keyword arguments for ``app.send_task``."""
        options: dict[str, Any] = {}
        route = self.route_of(task)
        if route is not None:
            options["queue"] = route.queue
            options["routing_key"] = route.routing_key or route.queue
            if route.priority is not None:
                options["priority"] = route.priority
        if "priority" not in options and task.metadata.priority is not None:
            options["priority"] = celery_priority(task.metadata.priority, self._transport)
        return options
