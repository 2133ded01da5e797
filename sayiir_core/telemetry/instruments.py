"""The metric instruments, made once per meter provider.

Names follow OpenTelemetry's conventions (dotted, unit in ``unit``); a Prometheus
exporter turns ``sayiir.steps.started`` into ``sayiir_steps_started_total``. Attributes
are the workflow and task ids only: instance ids would give every instance a series.

The step counters are the hot path (three measurements per attempt), and the SDK's
synchronous ``Counter.add`` hashes and cleans the attribute set on every call. So they
are observable counters instead: an attempt bumps a plain count under a lock
(``Tally.add``), and the SDK reads the cumulative counts when it collects. Same
metric, same names and attributes, for a fraction of the cost per attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sayiir_core.telemetry import otel
from sayiir_core.telemetry.attributes import ATTR_OUTCOME, ATTR_TASK, ATTR_WORKFLOW

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation

StepKey = tuple[str, str]
"""``(workflow id, task id)``: the attribute set of the step metrics."""


class Tally:
    """Monotonic counts per ``(workflow id, task id)``, observed by an observable counter."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: dict[StepKey, int] = {}
        # Several event loops (threads) may run steps at once: += is not atomic.
        self._lock = threading.Lock()

    def add(self, key: StepKey) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def count(self, key: StepKey) -> int:
        return self._counts.get(key, 0)

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        with self._lock:
            counts = list(self._counts.items())
        return [
            Observation(value, {ATTR_WORKFLOW: workflow, ATTR_TASK: task})
            for (workflow, task), value in counts
        ]


@dataclass(frozen=True, slots=True)
class Instruments:
    steps_started: Tally
    steps_completed: Tally
    steps_failed: Tally
    steps_retried: Tally
    step_duration: Histogram
    workflow_duration: Histogram
    leases_lost: Counter
    leases_taken_over: Counter
    commits_fenced: Counter
    _duration_attributes: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)

    def record_step_duration(self, key: StepKey, outcome: str, seconds: float) -> None:
        """One attempt's duration, with an attribute dict made once per (step, outcome)."""
        cache_key = (key[0], key[1], outcome)
        attributes = self._duration_attributes.get(cache_key)
        if attributes is None:
            attributes = {ATTR_WORKFLOW: key[0], ATTR_TASK: key[1], ATTR_OUTCOME: outcome}
            self._duration_attributes[cache_key] = attributes
        self.step_duration.record(seconds, attributes)


METRIC_NAMES = (
    "sayiir.steps.started",
    "sayiir.steps.completed",
    "sayiir.steps.failed",
    "sayiir.steps.retried",
    "sayiir.step.duration",
    "sayiir.workflow.duration",
    "sayiir.leases.lost",
    "sayiir.leases.taken_over",
    "sayiir.commits.fenced",
    "sayiir.instances",
    "sayiir.ready.backlog",
    "sayiir.ready.oldest_age",
)

_made_for: tuple[Meter, Instruments] | None = None


def instruments() -> Instruments | None:
    """The instruments when a meter provider is set; ``None`` (metrics off) otherwise."""
    global _made_for
    meter = otel.meter()
    if meter is None:
        return None
    cached = _made_for
    if cached is not None and cached[0] is meter:
        return cached[1]
    made = _make(meter)
    _made_for = (meter, made)
    return made


def _make(meter: Meter) -> Instruments:
    def tally(name: str, description: str) -> Tally:
        made = Tally()
        meter.create_observable_counter(
            name, callbacks=[made.observe], unit="{attempt}", description=description
        )
        return made

    # Read from storage snapshots, not counted here (see gauges.py).
    from sayiir_core.telemetry import gauges

    meter.create_observable_gauge(
        METRIC_NAMES[9],
        callbacks=[gauges.observe_instances],
        unit="{instance}",
        description="Instances in each status (attribute sayiir.instance.status)",
    )
    meter.create_observable_gauge(
        METRIC_NAMES[10],
        callbacks=[gauges.observe_backlog],
        unit="{item}",
        description="Instances and published steps a worker could claim now",
    )
    meter.create_observable_gauge(
        METRIC_NAMES[11],
        callbacks=[gauges.observe_oldest_age],
        unit="s",
        description="How long the longest-waiting claimable instance or step has waited",
    )
    return Instruments(
        steps_started=tally(METRIC_NAMES[0], "Step attempts started"),
        steps_completed=tally(METRIC_NAMES[1], "Step attempts that returned"),
        steps_failed=tally(
            METRIC_NAMES[2], "Step attempts that raised, timed out or could not be encoded"
        ),
        steps_retried=tally(METRIC_NAMES[3], "Step attempts after the first (retries run)"),
        step_duration=meter.create_histogram(
            METRIC_NAMES[4], unit="s", description="Duration of one step attempt"
        ),
        workflow_duration=meter.create_histogram(
            METRIC_NAMES[5],
            unit="s",
            description="From an instance's creation to its end (completed, failed, cancelled)",
        ),
        leases_lost=meter.create_counter(
            METRIC_NAMES[6], unit="{lease}", description="Instance leases this process lost"
        ),
        leases_taken_over=meter.create_counter(
            METRIC_NAMES[7],
            unit="{lease}",
            description="Instances claimed here to continue a run cut off under another owner",
        ),
        commits_fenced=meter.create_counter(
            METRIC_NAMES[8],
            unit="{commit}",
            description="Step commits rejected because the claim token was stale",
        ),
    )
