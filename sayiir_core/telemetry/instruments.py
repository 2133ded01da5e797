"""The metric instruments, made once per meter provider.

Names follow OpenTelemetry's conventions (dotted, unit in ``unit``); a Prometheus
exporter turns ``sayiir.steps.started`` into ``sayiir_steps_started_total``. Attributes
are the workflow and task ids only: instance ids would give every instance a series.

The step counters are the hot path (two or three measurements per attempt), and the
SDK's synchronous ``Counter.add`` copies, hashes and aggregates the attribute set on
every call (~80k instructions). So they are observable counters instead: an attempt
bumps plain counts in its thread's own table (``StepCounts``), and the SDK reads the
cumulative sums when it collects. Same metrics, same names and attributes, for ~1/40 of
the cost per attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from threading import get_ident
from typing import TYPE_CHECKING

from sayiir_core.telemetry import otel
from sayiir_core.telemetry.attributes import ATTR_OUTCOME, ATTR_TASK, ATTR_WORKFLOW

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation

StepKey = tuple[str, str]
"""``(workflow id, task id)``: the attribute set of the step metrics."""


STARTED, COMPLETED, FAILED, RETRIED = range(4)
"""The columns of a ``StepCounts`` row."""


class StepCounts:
    """Monotonic attempt counts per ``(workflow id, task id)``: started, completed,
    failed, retried (a row of four), read by four observable counters.

    No lock on the hot path: each thread counts in a table of its own, which only it
    writes (a thread id reused after a thread ended inherits a table nobody else
    writes), and a collection sums the tables, copying each in one step. Counts only
    grow, so sums read later are never smaller.
    """

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[int, dict[StepKey, list[int]]] = {}

    def row(self, key: StepKey) -> list[int]:
        """This thread's row for ``key``: add to its columns (only from this thread)."""
        table = self._tables.get(get_ident())
        if table is None:
            table = self._tables.setdefault(get_ident(), {})
        row = table.get(key)
        if row is None:
            row = table[key] = [0, 0, 0, 0]
        return row

    def observer(self, column: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """The callback of the observable counter of ``column``."""

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            totals: dict[StepKey, int] = {}
            for table in list(self._tables.values()):
                for key, row in list(table.items()):
                    totals[key] = totals.get(key, 0) + row[column]
            return [
                Observation(value, {ATTR_WORKFLOW: workflow, ATTR_TASK: task})
                for (workflow, task), value in totals.items()
            ]

        return observe


@dataclass(frozen=True, slots=True)
class Instruments:
    step_counts: StepCounts
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
    counts = StepCounts()
    for column, description in (
        (STARTED, "Step attempts started"),
        (COMPLETED, "Step attempts that returned"),
        (FAILED, "Step attempts that raised, timed out or could not be encoded"),
        (RETRIED, "Step attempts after the first (retries run)"),
    ):
        meter.create_observable_counter(
            METRIC_NAMES[column],
            callbacks=[counts.observer(column)],
            unit="{attempt}",
            description=description,
        )

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
        step_counts=counts,
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
            description=(
                "Instances, and shared steps, claimed here to continue work cut off under "
                "another claim whose lease ran out"
            ),
        ),
        commits_fenced=meter.create_counter(
            METRIC_NAMES[8],
            unit="{commit}",
            description="Step commits rejected because the claim token was stale",
        ),
    )
