from __future__ import annotations

from typing import ClassVar

from django.db import models


class Receipt(models.Model):
    """Written by a task, to prove steps use the ORM on a usable connection."""

    order: models.IntegerField[int, int] = models.IntegerField()
    amount: models.IntegerField[int, int] = models.IntegerField()
    written_by: models.CharField[str, str] = models.CharField(max_length=200)

    objects: ClassVar[models.Manager[Receipt]] = models.Manager()

    def __str__(self) -> str:
        return f"receipt for order {self.order}"
