"""``BackendSuite``: the whole backend contract in one class."""

from __future__ import annotations

from sayiir_core.testing.advance_queue_contract import AdvanceQueueContract
from sayiir_core.testing.backend_contract import BackendContract
from sayiir_core.testing.finish_watch_contract import FinishWatchContract
from sayiir_core.testing.stats_contract import BackendStatsContract
from sayiir_core.testing.step_queue_contract import StepQueueContract


class BackendSuite(
    BackendContract,
    StepQueueContract,
    AdvanceQueueContract,
    FinishWatchContract,
    BackendStatsContract,
):
    """``BackendContract`` + ``StepQueueContract`` + ``AdvanceQueueContract`` +
    ``FinishWatchContract`` + ``BackendStatsContract``.

    The step-queue tests skip, with the reason, for a backend that does not implement
    ``StepQueue`` (the queue is optional: workers on such a backend run every step of
    an instance themselves); the advance-queue tests likewise for one without
    ``AdvanceQueue``; the stats tests likewise for one without ``BackendStats``.
    """
