"""Sayiir's loggers: one ``sayiir.*`` tree, the ids of what a record is about in ``extra``.

Every record Sayiir emits about an instance carries ``workflow_id``, ``instance_id``
and ``task_id`` attributes (``None`` when not about one step), so a formatter can show
``%(instance_id)s`` and a JSON formatter picks them up; nothing is printed.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

ROOT = "sayiir"


def get_logger(name: str) -> logging.Logger:
    """``sayiir.<name>`` (``name`` without the prefix, e.g. ``"engine"``)."""
    return logging.getLogger(f"{ROOT}.{name}" if name else ROOT)


class InstanceLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry the instance's ids, merged with any ``extra`` given."""

    def __init__(
        self,
        logger: logging.Logger,
        instance_id: str,
        *,
        workflow_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__(
            logger,
            {"workflow_id": workflow_id, "instance_id": instance_id, "task_id": task_id},
        )

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs
