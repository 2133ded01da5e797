"""What a ``Worker`` says and does about definitions: instances it leaves alone because
another definition of their workflow started them (``MismatchReporter``), and instances
it takes over from another owner, whose shared steps go through the step queue
(``taking_over``).
"""

from __future__ import annotations

import contextlib
import logging
import time

from sayiir_core.backends.base import Backend, InstanceRecord
from sayiir_core.runtime.executor import Executor
from sayiir_core.runtime.shared_steps import SharingExecutor
from sayiir_core.status import Status
from sayiir_core.workflow.workflow import Workflow

logger = logging.getLogger("sayiir.worker")


class MismatchReporter:
    """Logs, once per instance, the instances this worker leaves alone for their definition.

    ``claim_next`` only hands out instances started by the definitions this worker
    serves; one started by an older (or newer) definition of the same workflow would
    otherwise wait without a word. Looked for at most every ``EVERY`` seconds, on the
    newest ``PAGE`` instances of each workflow, while the worker has free slots.
    """

    EVERY = 30.0
    PAGE = 200

    def __init__(self, backend: Backend, worker_id: str, registry: dict[str, Workflow]) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._registry = registry
        self._reported: set[str] = set()
        self._next_at = 0.0

    async def report_now_and_then(self) -> None:
        now = time.monotonic()
        if now < self._next_at:
            return
        self._next_at = now + self.EVERY
        for workflow_id, workflow in self._registry.items():
            try:
                page = await self._backend.list_instances(workflow_id=workflow_id, limit=self.PAGE)
            except Exception as error:  # the claim loop reports storage trouble already
                logger.debug("worker %s: listing instances failed: %s", self._worker_id, error)
                return
            for record in page.items:
                if (
                    record.definition_hash == workflow.definition_hash
                    or record.status.is_terminal
                    or record.instance_id in self._reported
                ):
                    continue
                self._reported.add(record.instance_id)
                logger.warning(
                    "[%s] not run by worker %s: started by another definition of workflow "
                    "%r (hash %s, this worker serves %s). A worker with that definition "
                    "runs it; or resume it under this one with resume_workflow(..., "
                    "allow_definition_change=True)",
                    record.instance_id,
                    self._worker_id,
                    workflow_id,
                    record.definition_hash[:12],
                    workflow.definition_hash[:12],
                )


def taking_over(
    executor: Executor, record: InstanceRecord
) -> contextlib.AbstractContextManager[None]:
    """Route the steps of an instance another owner was running through the step queue.

    Only ``running`` instances can have shared steps in flight: a pending one never ran,
    and a parked or paused one waited for its running steps before it parked.
    """
    if isinstance(executor, SharingExecutor) and record.status is Status.RUNNING:
        return executor.taking_over(record.instance_id)
    return contextlib.nullcontext()
