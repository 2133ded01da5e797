"""A parked instance woken by a signal is taken back only if nobody claimed it meanwhile.

The run that parked it looks for a buffered signal and, finding one, claims the
instance again. A worker woken by the same signal may have claimed it first: taking
that claim over would fence the worker's run in the middle of a step (issue 12).
"""

from __future__ import annotations

import time

from sayiir_core import Flow, InMemoryBackend, run_durable_workflow
from sayiir_core.backends.base import ControlRequest, StepWrite
from sayiir_core.runtime.loop_thread import run_sync
from sayiir_core.status import Status


def approve(decision: object) -> object:
    return decision


flow = Flow("take-back").wait_for_signal("go").then(approve).build()


class _SignalAndClaimAtPark(InMemoryBackend):
    """Right after the run parks: the signal arrives and another worker claims it."""

    def __init__(self) -> None:
        super().__init__()
        self.done = False

    async def commit(self, instance_id: str, token: int, write: StepWrite) -> ControlRequest | None:
        request = await super().commit(instance_id, token, write)
        if write.release and write.status is Status.AWAITING_SIGNAL and not self.done:
            self.done = True
            await self.send_signal(instance_id, "go", b'"yes"', time.time())
            await self.claim(instance_id, "other-worker", 300.0, time.time())
        return request


def test_a_claim_taken_meanwhile_is_left_to_its_holder() -> None:
    backend = _SignalAndClaimAtPark()
    status = run_durable_workflow(flow, "tb-1", None, backend=backend)

    assert backend.done
    assert not status.is_finished()  # not run here: the other worker has it
    record = run_sync(backend.get_record("tb-1"))
    assert record is not None
    assert record.owner == "other-worker"
