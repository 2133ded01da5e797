"""``bridge.client``: a ``WorkflowClient`` that also dispatches what it starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sayiir_celery.sweeper import LEASE_WORKFLOW
from sayiir_core.client import InstanceList, WorkflowClient
from sayiir_core.status import Status, WorkflowStatus
from sayiir_core.workflow.workflow import Workflow

if TYPE_CHECKING:
    from sayiir_celery.bridge import SayiirCelery


class BridgeClient(WorkflowClient):
    """The sync client of a ``SayiirCelery`` bridge.

    Every method is ``WorkflowClient``'s. ``submit``, ``send_signal``, ``unpause`` and
    ``retry_from`` also send the instance's ready steps to the workers at once; if the
    broker is unreachable they still succeed (the instance is stored) and the sweeper
    sends the steps once it is back. A plain ``WorkflowClient`` on the same database
    works too: the sweeper picks up what it submits within ``sweep_interval``.

    ``close()`` closes the bridge's backend when the bridge owns it (built from a URL,
    or ``SayiirCelery(..., owns_backend=True)``) and leaves it open otherwise.

    ``list_instances`` leaves out the sweeper's lease (the reserved instance
    ``sayiir-celery-sweeper``, see ``sweeper.py``) unless asked for its workflow id
    ``sayiir_celery.sweeper``; a page that held it has one item fewer than ``limit``.
    Other clients on the same database (a plain ``WorkflowClient``, the CLI) list it.
    """

    def __init__(self, bridge: SayiirCelery) -> None:
        super().__init__(bridge.backend, codec=bridge.codec, owns_backend=bridge.owns_backend)
        self._bridge = bridge

    def submit(self, workflow: Workflow, instance_id: str, input: Any) -> WorkflowStatus:
        registered = self._bridge._registry.get(workflow.workflow_id)
        if registered is None or registered.definition_hash != workflow.definition_hash:
            raise ValueError(
                f"workflow {workflow.workflow_id!r} is not registered with this bridge "
                "(SayiirCelery(..., workflows=[...])): no worker would run its steps"
            )
        status = super().submit(workflow, instance_id, input)
        self._bridge.kick(instance_id)
        return status

    def send_signal(self, instance_id: str, signal_name: str, payload: Any) -> None:
        super().send_signal(instance_id, signal_name, payload)
        self._bridge.kick(instance_id)

    def unpause(self, instance_id: str) -> WorkflowStatus:
        status = super().unpause(instance_id)
        # Steps queued by an advance that a pause interrupted were never sent.
        self._bridge.kick(instance_id, resend=True)
        return status

    def retry_from(self, instance_id: str, task_id: str) -> WorkflowStatus:
        status = super().retry_from(instance_id, task_id)
        self._bridge.kick(instance_id)
        return status

    def list_instances(
        self,
        *,
        status: str | Status | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> InstanceList:
        page = super().list_instances(
            status=status, workflow_id=workflow_id, limit=limit, cursor=cursor
        )
        if workflow_id == LEASE_WORKFLOW:
            return page
        # The lease is bookkeeping of the bridge, not a workflow anyone submitted.
        users = InstanceList(item for item in page if item.workflow_id != LEASE_WORKFLOW)
        users.next_cursor = page.next_cursor
        return users
