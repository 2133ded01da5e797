from __future__ import annotations

from typing import ClassVar

from django.db import models


class Order(models.Model):
    """An order; its checkout runs as a durable workflow, ``order-<pk>``."""

    email: models.EmailField[str, str] = models.EmailField()
    items: models.PositiveIntegerField[int, int] = models.PositiveIntegerField()
    status: models.CharField[str, str] = models.CharField(max_length=20, default="new")

    objects: ClassVar[models.Manager[Order]] = models.Manager()

    def __str__(self) -> str:
        return f"order {self.pk}"

    @property
    def workflow_instance_id(self) -> str:
        return f"order-{self.pk}"
