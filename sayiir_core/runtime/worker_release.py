"""How a ``Worker`` gives claims back instead of leaving them to expire.

Three cases: work still running when the shutdown grace runs out (``abandon``), an
instance whose storage failed mid-run (``hand_back``, once storage answers again), and
an instance handed over by the intake just as the worker's run ended (``release_later``).
Each saves the other workers a wait of up to a lease (``claim_ttl``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sayiir_core.backends.base import Backend, Claim
from sayiir_core.backends.step_queue import ClaimedStep, StepQueue
from sayiir_core.errors import BackendError
from sayiir_core.runtime.durable_runner import DurableRunner
from sayiir_core.runtime.executor import safe_str
from sayiir_core.runtime.storage_health import one_line
from sayiir_core.telemetry.logs import InstanceLogger

logger = logging.getLogger("sayiir.worker")

# Seconds the releases after a shutdown grace may take before the leases are left to run out.
RELEASE_WITHIN = 10.0


async def abandon(
    worker_id: str,
    backend: Backend,
    runner: DurableRunner,
    queue: StepQueue | None,
    instances: dict[asyncio.Task[None], str],
    steps: dict[asyncio.Task[None], ClaimedStep],
) -> None:
    """Cancel what still runs after the grace; release its claims for others at once."""
    logger.warning(
        "worker %s: %d instance(s) and %d shared step(s) still running when the "
        "shutdown grace ran out; cancelling them and releasing their claims (they run "
        "again on another worker)",
        worker_id,
        len(instances),
        len(steps),
    )
    for task in (*instances, *steps):
        task.cancel()
    await asyncio.gather(*instances, *steps, return_exceptions=True)
    try:
        # Storage that does not answer must not hold the shutdown up: the leases
        # then run out as after a crash.
        async with asyncio.timeout(RELEASE_WITHIN):
            for instance_id in instances.values():
                await _release_instance(worker_id, backend, runner, instance_id)
            if queue is not None:
                for step in steps.values():
                    await _release_step(queue, step)
    except Exception as error:  # TimeoutError included
        logger.warning(
            "worker %s: releasing the claims of cancelled work failed (%s); they are "
            "taken over once their leases expire",
            worker_id,
            one_line(safe_str(error)) or type(error).__name__,
        )


async def _release_instance(
    worker_id: str, backend: Backend, runner: DurableRunner, instance_id: str
) -> None:
    # Read back: the instance may have parked (owner gone) or been claimed again
    # under a new token while it ran here; release only a claim this worker holds.
    record = await backend.get_record(instance_id)
    if record is not None and record.owner == worker_id:
        await runner.release(instance_id, record.claim_token)
        InstanceLogger(logger, instance_id).info(
            "[%s] released by worker %s on shutdown", instance_id, worker_id
        )


async def _release_step(queue: StepQueue, step: ClaimedStep) -> None:
    # A lease renewed for 0 s ends now: the step is claimable again at once, and the
    # token stays fenced (the next claim bumps it).
    await queue.renew_step(step.ticket.ref, step.token, 0.0, time.time())


async def hand_back(
    runner: DurableRunner,
    claim: Claim,
    stop: asyncio.Event,
    *,
    claim_ttl: float,
    poll_interval: float,
) -> None:
    """Release the claim once storage answers again, so any worker can go on at once.

    Without this the instance would wait for its lease (``claim_ttl``) to run out.
    Gives up when the lease would have expired anyway, or on stop.
    """
    instance_id = claim.instance.record.instance_id
    deadline = time.monotonic() + claim_ttl
    pause = min(0.5, poll_interval)
    while time.monotonic() < deadline and not stop.is_set():
        try:
            await runner.release(instance_id, claim.token)
        except BackendError:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
            continue
        InstanceLogger(logger, instance_id).info(
            "[%s] handed back after a storage failure", instance_id
        )
        return


def release_later(runner: DurableRunner, claim: Claim) -> None:
    """Give back a claim handed over after the worker's run ended (best effort)."""
    record = claim.instance.record

    async def release() -> None:
        try:
            await runner.release(record.instance_id, claim.token)
        except Exception as error:
            logger.warning(
                "[%s] handed to a worker that had stopped; releasing it failed (%s), it "
                "is taken over once its lease expires",
                record.instance_id,
                one_line(safe_str(error)) or type(error).__name__,
            )

    _background.add(task := asyncio.ensure_future(release()))
    task.add_done_callback(_background.discard)


# Strong references to fire-and-forget tasks (the loop only keeps weak ones).
_background: set[asyncio.Future[None]] = set()
