"""What the table means, computed from it: ratios to the peers and the floor, and targets.

``run.py`` prints these under the table (and writes them to ``--markdown``), so a
fresh run gives docs/performance.md its numbers directly: no figure is copied by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common import Result, Row, format_ms

# (our row, the peer rows it is compared with): same backend, or the closest one.
PEER_PAIRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ours/none", ("sayiir10/none",)),
    ("ours/memory", ("sayiir10/memory",)),
    ("ours/postgres", ("sayiir10/postgres", "dbos/postgres", "celery/redis")),
    ("ours/sqlite", ("dbos/sqlite",)),
)
# Scenario -> (metric, higher is better).
RATIO_METRICS: dict[str, tuple[str, bool]] = {
    "S1": ("p50_ms", False),
    "S2": ("steps_per_s", True),
    "S3": ("p50_ms", False),
    "S4": ("p50_ms", False),
    "S5": ("p50_ms", False),
    "S6": ("p50_ms", False),
}
# Our rows measured against the floor of their backend (S1 p50 / floor commit p50).
FLOOR_PAIRS: tuple[tuple[str, str], ...] = (
    ("ours/postgres", "floor/postgres"),
    ("ours/postgres/async", "floor/postgres"),
    ("ours/sqlite", "floor/sqlite"),
    ("ours/sqlite/async", "floor/sqlite"),
)


class _Figures:
    """Usable figures by (row key, scenario): errors, skips and suspect cells are left out."""

    def __init__(self, rows: Sequence[Row], results: Sequence[Result]) -> None:
        self.labels = {row.key: row.label for row in rows}
        self.suspect = {r.row for r in results if r.suspect}
        self._cells = {
            (r.row, r.scenario): r
            for r in results
            if not (r.error or r.skipped or r.suspect) and r.metrics
        }

    def get(self, key: str, scenario: str, metric: str) -> float | None:
        result = self._cells.get((key, scenario))
        value = None if result is None else result.metrics.get(metric)
        return None if value is None or math.isnan(value) else value


def render_ratios(rows: Sequence[Row], results: Sequence[Result]) -> str:
    """How many times faster our row is than each peer's, per scenario (>1: ours faster)."""
    figures = _Figures(rows, results)
    scenarios = list(RATIO_METRICS)
    lines = [
        "| ours | peer | " + " | ".join(scenarios) + " |",
        "|---|---|" + "---|" * len(scenarios),
    ]
    for ours, peers in PEER_PAIRS:
        if ours not in figures.labels:
            continue
        for peer in peers:
            if peer not in figures.labels:
                continue
            if peer in figures.suspect or ours in figures.suspect:
                lines.append(
                    f"| {figures.labels[ours]} | {figures.labels[peer]} | suspect: see the "
                    "table's footnote; rerun before quoting |" + " |" * (len(scenarios) - 1)
                )
                continue
            cells = []
            for scenario in scenarios:
                metric, higher_better = RATIO_METRICS[scenario]
                mine = figures.get(ours, scenario, metric)
                theirs = figures.get(peer, scenario, metric)
                if mine is None or theirs is None or mine <= 0 or theirs <= 0:
                    cells.append("")
                    continue
                ratio = mine / theirs if higher_better else theirs / mine
                cells.append(f"{ratio:.1f}x" if ratio >= 1 else f"1/{1 / ratio:.1f}")
            lines.append(
                f"| {figures.labels[ours]} | {figures.labels[peer]} | " + " | ".join(cells) + " |"
            )
    if len(lines) == 2:
        return ""
    return (
        "Ratios, ours against each peer (p50 for latencies, the mean for S2): `3.0x` means "
        "ours is three times as fast, `1/2.0` half as fast; empty when either cell is "
        "missing, failed or suspect.\n\n" + "\n".join(lines) + "\n"
    )


def render_floor_ratios(rows: Sequence[Row], results: Sequence[Result]) -> str:
    """Our S1 per-step p50 in units of the floor's commit p50 on the same backend."""
    figures = _Figures(rows, results)
    lines = ["| row | S1 per step p50 | floor p50 | per step / floor |", "|---|---|---|---|"]
    for ours, floor in FLOOR_PAIRS:
        mine, base = figures.get(ours, "S1", "p50_ms"), figures.get(floor, "floor", "p50_ms")
        if mine is None or base is None or base <= 0:
            continue
        lines.append(
            f"| {figures.labels[ours]} | {format_ms(mine)} | {format_ms(base)} | "
            f"{mine / base:.2f}x |"
        )
    if len(lines) == 2:
        return ""
    return "Against the floor (one durable commit of one row):\n\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Target:
    """One performance target of issue 15, checked against a run's figures."""

    name: str
    measure: Callable[[_Figures], tuple[float, str] | None]  # (value, how it was measured)
    passes: Callable[[float], bool]


def _per_step(key: str) -> Callable[[_Figures], tuple[float, str] | None]:
    def measure(figures: _Figures) -> tuple[float, str] | None:
        value = figures.get(key, "S1", "p50_ms")
        return None if value is None else (value, f"{format_ms(value)} per step")

    return measure


def _floor_ratio(key: str, floor: str) -> Callable[[_Figures], tuple[float, str] | None]:
    def measure(figures: _Figures) -> tuple[float, str] | None:
        mine, base = figures.get(key, "S1", "p50_ms"), figures.get(floor, "floor", "p50_ms")
        if mine is None or base is None or base <= 0:
            return None
        return mine / base, f"{format_ms(mine)} / floor {format_ms(base)} = {mine / base:.2f}x"

    return measure


def _rate(key: str) -> Callable[[_Figures], tuple[float, str] | None]:
    def measure(figures: _Figures) -> tuple[float, str] | None:
        value = figures.get(key, "S2", "steps_per_s")
        return None if value is None else (value, f"{value:,.0f} steps/s")

    return measure


TARGETS: tuple[Target, ...] = (
    Target("no persistence: <= 0.06 ms per sync step", _per_step("ours/none"), lambda v: v <= 0.06),
    Target(
        "no persistence, async steps: < 0.06 ms per step",
        _per_step("ours/none/async"),
        lambda v: v < 0.06,
    ),
    Target("in-memory: <= 0.06 ms per sync step", _per_step("ours/memory"), lambda v: v <= 0.06),
    Target(
        "in-memory, async steps: < 0.06 ms per step",
        _per_step("ours/memory/async"),
        lambda v: v < 0.06,
    ),
    Target(
        "PostgreSQL S1: <= 2x the floor's commit",
        _floor_ratio("ours/postgres", "floor/postgres"),
        lambda v: v <= 2.0,
    ),
    Target(
        "SQLite S1: <= 2.5x the floor's commit",
        _floor_ratio("ours/sqlite", "floor/sqlite"),
        lambda v: v <= 2.5,
    ),
    Target(
        "PostgreSQL S2, 2 worker processes: >= 2,500 steps/s",
        _rate("ours/postgres/2procs"),
        lambda v: v >= 2500,
    ),
)


def render_targets(rows: Sequence[Row], results: Sequence[Result]) -> str:
    figures = _Figures(rows, results)
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for target in TARGETS:
        measured = target.measure(figures)
        if measured is None:
            lines.append(f"| {target.name} | not measured in this run | — |")
            continue
        value, text = measured
        lines.append(f"| {target.name} | {text} | {'met' if target.passes(value) else 'not met'} |")
    return "Targets (issue 15), from this run:\n\n" + "\n".join(lines) + "\n"


def render_summary(rows: Sequence[Row], results: Sequence[Result]) -> str:
    """The ratios and targets sections, in the order docs/performance.md shows them."""
    parts = [
        render_ratios(rows, results),
        render_floor_ratios(rows, results),
        render_targets(rows, results),
    ]
    return "\n".join(part for part in parts if part)
