"""The tables: instances, their checkpoints, buffered signals, history and shared steps.

Times are seconds since the epoch (floats), exactly as the core's ``Backend`` protocol
passes them; ``WorkflowInstance.created`` repeats the creation time as a timestamp for
the admin's date filters. Payloads are the codec's bytes; the control state, errors
and history details are JSON text (text, not ``jsonb``: it keeps exactly what was
written, ``\\u0000`` escapes included).
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from django.db import models
from django.db.models.functions import Coalesce

from sayiir_core.backends.base import ControlRequest
from sayiir_core.status import Status

STATUS_CHOICES = [(status.value, status.reported.replace("_", " ")) for status in Status]
CONTROL_CHOICES = [(request.value, request.value) for request in ControlRequest]
ID_LENGTH = 255


class WorkflowInstance(models.Model):
    """One workflow instance: its status, input, output and the claim of whoever runs it.

    ``id`` orders the list (newest first) and is its cursor. ``owner``, ``claim_token``
    and ``lease_until`` are the claim: a commit is only written under the current token.
    ``history_seq`` is the number of the instance's last history entry; ``last_commit``
    the random id of its last commit, which tells a commit whose connection dropped
    whether it was applied. ``current_step`` and ``attempt`` name the step its latest
    history entry was about, for the admin list. ``has_shared_steps`` is set when steps
    are published to the queue, so the commits of the other instances skip its clean-up.
    """

    id = models.BigAutoField(primary_key=True)
    instance_id = models.CharField(max_length=ID_LENGTH, unique=True)
    workflow_id = models.CharField(max_length=ID_LENGTH)
    definition_hash = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES)
    input = models.BinaryField()
    output = models.BinaryField(null=True)
    error = models.TextField(null=True)
    control = models.TextField(default="{}")
    created_at = models.FloatField()
    updated_at = models.FloatField()
    created = models.DateTimeField()
    wake_at = models.FloatField(null=True)
    reason = models.TextField(null=True)
    cancelled_by = models.TextField(null=True)
    paused_by = models.TextField(null=True)
    control_request = models.CharField(max_length=8, null=True, choices=CONTROL_CHOICES)
    owner = models.CharField(max_length=ID_LENGTH, null=True)
    claim_token = models.BigIntegerField(default=0)
    lease_until = models.FloatField(null=True)
    priority = models.SmallIntegerField(default=3)
    history_seq = models.IntegerField(default=0)
    last_commit = models.BigIntegerField(null=True)
    current_step = models.CharField(max_length=ID_LENGTH, null=True)
    attempt = models.IntegerField(null=True)
    has_shared_steps = models.BooleanField(default=False)

    objects: ClassVar[models.Manager[WorkflowInstance]] = models.Manager()

    class Meta:
        db_table = "sayiir_instance"
        verbose_name = "workflow instance"
        # Nothing is added, changed or deleted through the admin; its actions have
        # permissions of their own.
        default_permissions = ("view",)
        permissions = [
            ("cancel_workflowinstance", "Can cancel workflow instances"),
            ("pause_workflowinstance", "Can pause and unpause workflow instances"),
            ("retry_workflowinstance", "Can retry workflow instances from a step"),
            ("signal_workflowinstance", "Can send signals to workflow instances"),
        ]
        indexes = [
            models.Index(fields=["status", "-id"], name="sayiir_instance_status"),
            models.Index(fields=["workflow_id", "-id"], name="sayiir_instance_workflow"),
            models.Index(fields=["created"], name="sayiir_instance_created"),
            # In claim order, only rows that are or will become claimable by time alone.
            models.Index(
                models.F("priority"),
                Coalesce(models.F("wake_at"), models.Value(0.0)),
                models.F("created_at"),
                models.F("id"),
                name="sayiir_instance_claimable",
                condition=models.Q(control_request__isnull=False)
                | models.Q(status__in=[Status.PENDING.value, Status.RUNNING.value])
                | models.Q(
                    status__in=[Status.WAITING.value, Status.AWAITING_SIGNAL.value],
                    wake_at__isnull=False,
                ),
            ),
        ]

    def __str__(self) -> str:
        return str(self.instance_id)

    @property
    def duration(self) -> dt.timedelta | None:
        """How long a finished instance took, from submission to its last write."""
        if not Status(self.status).is_terminal:
            return None
        return dt.timedelta(seconds=max(self.updated_at - self.created_at, 0.0))


class Checkpoint(models.Model):
    """A completed step's output, written once; ``id`` is the write order."""

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(
        WorkflowInstance, on_delete=models.CASCADE, related_name="checkpoints"
    )
    step_key = models.CharField(max_length=ID_LENGTH)
    payload = models.BinaryField()

    objects: ClassVar[models.Manager[Checkpoint]] = models.Manager()

    class Meta:
        db_table = "sayiir_checkpoint"
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "step_key"], name="sayiir_checkpoint_once_per_step"
            )
        ]

    def __str__(self) -> str:
        return str(self.step_key)


class PendingSignal(models.Model):
    """A signal sent to an instance and not yet consumed; FIFO per name by ``id``."""

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(
        WorkflowInstance, on_delete=models.CASCADE, related_name="pending_signals"
    )
    name = models.CharField(max_length=ID_LENGTH)
    payload = models.BinaryField()
    sent_at = models.FloatField()

    objects: ClassVar[models.Manager[PendingSignal]] = models.Manager()

    class Meta:
        db_table = "sayiir_signal"
        default_permissions = ()
        indexes = [models.Index(fields=["instance", "name", "id"], name="sayiir_signal_by_name")]

    def __str__(self) -> str:
        return str(self.name)


class HistoryEntry(models.Model):
    """One append-only history event; ``seq`` counts from 1 per instance id.

    Keyed by the instance id rather than the row, so the history outlives an instance
    replaced by ``terminate_existing``.
    """

    id = models.BigAutoField(primary_key=True)
    instance_id = models.CharField(max_length=ID_LENGTH)
    seq = models.IntegerField()
    kind = models.CharField(max_length=32)
    at = models.FloatField()
    step_key = models.CharField(max_length=ID_LENGTH, null=True)
    attempt = models.IntegerField(null=True)
    worker_id = models.CharField(max_length=ID_LENGTH, null=True)
    detail = models.TextField(null=True)

    objects: ClassVar[models.Manager[HistoryEntry]] = models.Manager()

    class Meta:
        db_table = "sayiir_history"
        verbose_name_plural = "history entries"
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(fields=["instance_id", "seq"], name="sayiir_history_seq")
        ]

    def __str__(self) -> str:
        return f"{self.instance_id} #{self.seq} {self.kind}"


class SharedStep(models.Model):
    """A step an instance's owner handed to any worker (fork branches, map items).

    Queued (no owner), running (owner and lease) or finished (``finished_at`` set, with
    ``output`` or ``error``). ``claims`` counts the claims of this row; the claim token is
    ``id * 2**24 + claims``, so a row deleted and published again (the instance replaced
    or retried) gets a new ``id`` and never repeats a token an old claimant still holds.
    """

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(
        WorkflowInstance, on_delete=models.CASCADE, related_name="shared_steps"
    )
    step_key = models.CharField(max_length=ID_LENGTH)
    attempt = models.IntegerField()
    workflow_id = models.CharField(max_length=ID_LENGTH)
    definition_hash = models.CharField(max_length=128)
    input = models.BinaryField()
    priority = models.SmallIntegerField()
    queued_at = models.FloatField()
    owner = models.CharField(max_length=ID_LENGTH, null=True)
    claims = models.IntegerField(default=0)
    lease_until = models.FloatField(null=True)
    worker_id = models.CharField(max_length=ID_LENGTH, null=True)
    started_at = models.FloatField(null=True)
    finished_at = models.FloatField(null=True)
    output = models.BinaryField(null=True)
    error = models.TextField(null=True)

    objects: ClassVar[models.Manager[SharedStep]] = models.Manager()

    class Meta:
        db_table = "sayiir_step"
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "step_key", "attempt"], name="sayiir_step_once_per_attempt"
            )
        ]
        indexes = [
            models.Index(
                fields=["priority", "queued_at"],
                name="sayiir_step_claimable",
                condition=models.Q(finished_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.step_key} (attempt {self.attempt})"
