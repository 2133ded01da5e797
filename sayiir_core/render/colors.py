"""Status and step-state colours, one palette for every UI (dashboard, Django admin).

Each ``Palette`` has a light ``fill`` for backgrounds, a ``stroke`` for borders and
accents, a ``text`` colour readable on the fill, and a short human ``label``. Keys are
the strings ``WorkflowStatus.status`` reports (``in_progress``, ``running``...) and the
``StepState`` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Palette:
    fill: str
    stroke: str
    text: str
    label: str


_RED = ("#fee2e2", "#dc2626", "#991b1b")
_BLUE = ("#dbeafe", "#2563eb", "#1e40af")
_SKY = ("#e0f2fe", "#0284c7", "#075985")
_AMBER = ("#fef3c7", "#d97706", "#92400e")
_ORANGE = ("#ffedd5", "#ea580c", "#9a3412")
_VIOLET = ("#ede9fe", "#7c3aed", "#5b21b6")
_SLATE = ("#e2e8f0", "#475569", "#334155")
_GREEN = ("#dcfce7", "#16a34a", "#166534")
_GREY = ("#f3f4f6", "#6b7280", "#374151")
_NEUTRAL = ("#ffffff", "#94a3b8", "#475569")
_FADED = ("#f8fafc", "#cbd5e1", "#94a3b8")

STATUS_PALETTES: Mapping[str, Palette] = MappingProxyType(
    {
        "failed": Palette(*_RED, "Failed"),
        "running": Palette(*_BLUE, "Running"),
        "waiting": Palette(*_AMBER, "Waiting"),
        "awaiting_signal": Palette(*_VIOLET, "Awaiting signal"),
        "paused": Palette(*_SLATE, "Paused"),
        "in_progress": Palette(*_SKY, "Queued"),
        "completed": Palette(*_GREEN, "Completed"),
        "cancelled": Palette(*_GREY, "Cancelled"),
    }
)
"""Instance statuses, failures first: the order a UI lists its counts in."""

STATUS_ORDER: tuple[str, ...] = tuple(STATUS_PALETTES)

STEP_PALETTES: Mapping[str, Palette] = MappingProxyType(
    {
        "pending": Palette(*_NEUTRAL, "Not started"),
        "queued": Palette(*_SKY, "Queued"),
        "running": Palette(*_BLUE, "Running"),
        "completed": Palette(*_GREEN, "Completed"),
        "failed": Palette(*_RED, "Failed"),
        "retrying": Palette(*_ORANGE, "Retry scheduled"),
        "waiting": Palette(*_AMBER, "Waiting"),
        "awaiting_signal": Palette(*_VIOLET, "Awaiting signal"),
        "paused": Palette(*_SLATE, "Paused"),
        "cancelled": Palette(*_GREY, "Cancelled"),
        "skipped": Palette(*_FADED, "Skipped"),
    }
)
"""Step states (``StepState`` values)."""

_UNKNOWN = Palette(*_GREY, "Unknown")


def status_palette(status: str) -> Palette:
    """The palette of an instance status (``"in_progress"``, ``"failed"``...).

    A status this version does not know gets a grey palette labelled with its name.
    """
    name = str(status)
    # The stored name of a submitted instance; WorkflowStatus reports it as in_progress.
    palette = STATUS_PALETTES.get("in_progress" if name == "pending" else name)
    return palette if palette is not None else Palette(*_GREY, name)


def step_palette(state: str) -> Palette:
    """The palette of a step state (``StepState`` or its string value)."""
    return STEP_PALETTES.get(str(state), _UNKNOWN)
