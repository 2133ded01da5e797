"""Every error the library raises, in one tree.

::

    RuntimeError
    └── WorkflowError                   base of everything raised by sayiir_core
        ├── TaskError                   a task raised, or exhausted its retries
        │   ├── TaskTimeoutError        an attempt ran past the task's timeout
        │   └── SerializationError      an input or output the codec cannot encode
        ├── SignalTimeoutError          no signal arrived before wait_for_signal's timeout
        ├── BackendError                storage failed: unreachable, bad URL, corrupt data
        │   ├── LeaseLostError          another worker took over this instance (fencing)
        │   └── PayloadTooLargeError    a value over the backend's payload-size limit
        ├── InstanceAlreadyExistsError  submit/run with an id that exists (policy "fail")
        ├── InstanceNotFoundError       no instance with that id
        ├── InvalidStateError           the instance cannot do that now (signal a finished one)
        │   ├── UnknownSignalError      a signal its workflow never waits for (client side)
        │   └── SignalBufferFullError   the instance already buffers the most signals it may
        └── DefinitionMismatchError     resume with a workflow whose structure changed

``TaskError`` keeps the task's own exception type and message: ``error_type`` and
``str(error)`` read like ``ValueError: card declined (task 'charge' of instance 'o-7')``,
followed by the task's traceback after a blank line when the task raised (as Sayiir
1.0's ``TaskError`` text). Every class can be raised with just a message, or none.
"""

from __future__ import annotations


class WorkflowError(RuntimeError):
    """Base class of every error raised by sayiir_core."""


class TaskError(WorkflowError):
    """A task failed. ``error_type`` is the task's exception class name."""

    def __init__(
        self,
        message: str = "",
        *,
        instance_id: str | None = None,
        task_id: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.task_id = task_id
        self.error_type = error_type


class TaskTimeoutError(TaskError):
    """An attempt ran longer than the task's ``timeout``."""


class SerializationError(TaskError):
    """A value could not be encoded or decoded by the codec."""


class SignalTimeoutError(WorkflowError):
    """``wait_for_signal(timeout=...)`` expired before a signal arrived."""


class BackendError(WorkflowError):
    """The storage backend failed or was given something it cannot use."""


class LeaseLostError(BackendError):
    """This process's claim on an instance was taken over; its writes are refused."""


class PayloadTooLargeError(BackendError):
    """A value is larger than the backend accepts; nothing was written.

    A step whose output is too large fails (it is not retried: it would fail again).
    """


class InstanceAlreadyExistsError(WorkflowError):
    """An instance with this id already exists."""


class InstanceNotFoundError(WorkflowError):
    """No instance with this id exists in the backend."""


class InvalidStateError(WorkflowError):
    """The instance is in a state that does not allow the operation."""


class UnknownSignalError(InvalidStateError):
    """A signal under a name the instance's workflow never waits for; nothing was sent.

    Raised by a client that knows the instance's workflow definition (same id and
    definition hash): such a signal could only pile up unread. ``awaited`` lists the
    names the workflow does wait for.
    """

    def __init__(
        self,
        message: str = "",
        *,
        instance_id: str | None = None,
        workflow_id: str | None = None,
        signal_name: str | None = None,
        awaited: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.workflow_id = workflow_id
        self.signal_name = signal_name
        self.awaited = awaited


class SignalBufferFullError(InvalidStateError):
    """The instance already buffers as many unconsumed signals as allowed; nothing was stored.

    Room comes back as the workflow consumes its signals (``wait_for_signal``).
    """

    def __init__(
        self,
        message: str = "",
        *,
        instance_id: str | None = None,
        signal_name: str | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.signal_name = signal_name
        self.limit = limit


class InstanceCancelledError(WorkflowError):
    """The result was asked for, but the instance was cancelled (see ``reason``)."""

    def __init__(
        self, message: str = "", *, reason: str | None = None, cancelled_by: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.cancelled_by = cancelled_by


class WaitTimeoutError(WorkflowError, TimeoutError):
    """``wait``/``result`` gave up before the instance finished; the instance runs on."""


class DefinitionMismatchError(WorkflowError):
    """The instance was started by a workflow definition with another hash."""
