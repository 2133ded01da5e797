"""Pictures and text for UIs, written once: the dashboard and the Django admin use them.

Pure functions over what a client returns — no I/O, no web framework::

    from sayiir_core.render import step_states, step_counts, workflow_svg, timeline

    status = await client.status("order-7")
    history = await client.history("order-7")
    svg = workflow_svg(workflow, step_states(workflow, status, history),
                       counts=step_counts(history))
    rows = timeline(history)          # TimelineEntry: title, tone, at, step_key...
    status_palette(status.status)     # Palette(fill, stroke, text, label)

``entry_input_type(workflow)`` is the annotation of the input the workflow expects, for
forms and API schemas.
"""

from __future__ import annotations

from sayiir_core.render.colors import (
    STATUS_ORDER,
    STATUS_PALETTES,
    STEP_PALETTES,
    Palette,
    status_palette,
    step_palette,
)
from sayiir_core.render.graph import workflow_svg
from sayiir_core.render.steps import StepState, states_summary, step_counts, step_states
from sayiir_core.render.structure import entry_input_type
from sayiir_core.render.timeline import TimelineEntry, describe, timeline

__all__ = [
    "STATUS_ORDER",
    "STATUS_PALETTES",
    "STEP_PALETTES",
    "Palette",
    "StepState",
    "TimelineEntry",
    "describe",
    "entry_input_type",
    "states_summary",
    "status_palette",
    "step_counts",
    "step_palette",
    "step_states",
    "timeline",
    "workflow_svg",
]
