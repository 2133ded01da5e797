"""Advancing instances whose steps run in other processes: the dispatch seam.

An adapter that hands every step to another system (``sayiir_celery`` sends each one
as a Celery message) drives its instances through a ``Dispatcher``. Nobody holds an
instance while its steps run (but for the first second of a chain's step, see
``run_step``); three operations move it on, each under the instance's claim for a few
round trips only:

* **advance**: take the claim if nobody holds it (never from a live holder), feed the
  machine the outcomes stored since the last advance, then in one write (one
  transaction) commit the checkpoints, queue every step that became ready in the step
  queue (``DispatchingExecutor`` collects them), park the instance (``waiting``,
  ``wake_at`` = when to look again if nothing comes back) and release the claim; only
  then hand the new tickets to ``send``: a step cannot finish before the advance that
  sent it let go. The two writes are ``AdvanceQueue``'s (``backends.step_queue``): one
  statement each on PostgreSQL.
* **run_step** (on the receiving side): claim the named step (fenced: a duplicate
  delivery, a withdrawn or finished step, a cancelled instance claim nothing), run it
  with the local executor under a renewed lease, then advance with its outcome in hand.
  When the step is its instance's only one out (a chain), the instance is claimed with
  the step in the same statement (``held``), so the advance after it needs no claim of
  its own: two round trips per step on PostgreSQL. That claim is given up if the step
  runs longer than ``hold_claim`` (1 s), so that a slow step keeps nobody waiting.
  A caller that runs the chain's next step itself passes a ``ChainLink`` (``chain``):
  the advance's commit then claims that step and keeps the instance for it
  (``CommitAndClaimNext``), and ``run_step(..., claimed=...)`` runs it with no claim
  of its own: one round trip per continued step.
  When another advance holds the instance, the outcome is stored with ``finish_step``
  and the holder picks it up: it looks for outcomes that arrived while it held the
  claim after releasing, and advances again if it finds any. So a join fires once, in
  exactly one advance.
* **sweep**: claim the instances that are runnable without anyone to wake them
  (submitted but never dispatched, a delay or retry back-off that came due, a signal,
  an unpause, an advance that died, a re-dispatch check that came due) and advance
  them, sending again the steps still outstanding: a lost message or a worker that
  died mid-step is re-sent; a step still running under a live lease drops the copy.

Framework-neutral: ``send`` is the only thing an adapter provides. The runner itself
knows dispatching (an executor raises ``StepDispatched``, see ``runtime/runner.py``);
this package adds the step queue around it: ``dispatcher`` (the three operations),
``executor`` (``DispatchingExecutor``), ``sink`` (an advance's writes sent as one),
``held`` (the instance claim a step takes with it), ``chain`` (the next step claimed
by the commit before it), ``outcomes`` (stored steps <-> outcomes).
"""

from __future__ import annotations

from sayiir_core.runtime.dispatch.dispatcher import DISPATCH_PARK, Dispatcher, SendSteps
from sayiir_core.runtime.dispatch.executor import DispatchingExecutor
from sayiir_core.runtime.dispatch.outcomes import dispatched_steps
from sayiir_core.runtime.dispatch.rounds import StepRun
from sayiir_core.runtime.executor import StepDispatched
from sayiir_core.runtime.step_outcomes import outcome_of

__all__ = [
    "DISPATCH_PARK",
    "Dispatcher",
    "DispatchingExecutor",
    "SendSteps",
    "StepDispatched",
    "StepRun",
    "dispatched_steps",
    "outcome_of",
]
