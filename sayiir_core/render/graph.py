"""The workflow graph as a standalone SVG, steps coloured by state.

``workflow_svg(workflow, states)`` draws top to bottom: a start dot, then each node of
the pipeline; a fork's branches side by side then its join; a route's key step, its
branches labelled by key, a merge dot; a loop with its back arrow; a map as a stack; a
child flow in a dashed frame; delays and signal waits as pills; an end ring. Colours
come from ``colors.STEP_PALETTES``; every step is a ``<g class="sayiir-step"
data-step="ID" data-state="STATE">`` with a ``<title>`` tooltip, so a page can style or
script it. All styling is inline: the SVG looks the same embedded in any page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape

from sayiir_core.render.colors import step_palette
from sayiir_core.workflow.graph import (
    ChildFlowNode,
    DelayNode,
    ForkNode,
    LoopNode,
    MapNode,
    Node,
    Pipeline,
    RouteNode,
    SignalNode,
    TaskNode,
)
from sayiir_core.workflow.workflow import Workflow

NODE_WIDTH = 176
NODE_HEIGHT = 44
GAP_Y = 30
GAP_X = 22
DOT = 10
FRAME_PAD = 14
FRAME_TITLE = 22
LOOP_PAD = 34
STACK_OFFSET = 5
MARGIN = 16
MAX_LABEL = 22
FONT = "ui-sans-serif, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
EDGE = "#94a3b8"


@dataclass(slots=True)
class _Block:
    """A drawn piece: its size, and SVG parts in its own coordinates (entry top-centre)."""

    width: float
    height: float
    parts: list[str] = field(default_factory=list)

    @property
    def centre(self) -> float:
        return self.width / 2

    def placed(self, x: float, y: float) -> str:
        return f'<g transform="translate({_n(x)},{_n(y)})">{"".join(self.parts)}</g>'


def workflow_svg(
    workflow: Workflow,
    states: Mapping[str, str] | None = None,
    *,
    counts: Mapping[str, int] | None = None,
    id_prefix: str = "sayiir",
) -> str:
    """The SVG document (a string) of ``workflow``'s graph.

    ``states`` maps step ids to ``StepState`` values (``step_states(...)``); steps not
    in it are drawn as not started. ``counts`` (``step_counts(history)``) adds the
    number of finished iterations or items to loops and maps. ``id_prefix`` keeps the
    ids of two SVGs on one page apart.
    """
    painter = _Painter(states or {}, counts or {}, id_prefix)
    body = painter.pipeline(workflow.pipeline)
    start = _dot_block(filled=True)
    end = _dot_block(filled=False)
    chain = _stack([start, body, end], arrow=painter.arrow)
    width = chain.width + 2 * MARGIN
    height = chain.height + 2 * MARGIN
    title = escape(f"Workflow {workflow.workflow_id}")
    marker = (
        f'<defs><marker id="{escape(id_prefix)}-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{EDGE}"/></marker></defs>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'width="{_n(width)}" height="{_n(height)}" role="img" aria-label="{title}" '
        f'font-family="{FONT}" class="sayiir-graph">'
        f"<title>{title}</title>{marker}{chain.placed(MARGIN, MARGIN)}</svg>"
    )


class _Painter:
    def __init__(self, states: Mapping[str, str], counts: Mapping[str, int], prefix: str) -> None:
        self.states = states
        self.counts = counts
        self.arrow = f"url(#{escape(prefix)}-arrow)"

    def pipeline(self, pipeline: Pipeline) -> _Block:
        return _stack([self.node(node) for node in pipeline], arrow=self.arrow)

    def node(self, node: Node) -> _Block:
        if isinstance(node, TaskNode):
            return self.step(node.task_id, _task_label(node))
        if isinstance(node, DelayNode):
            return self.step(node.node_id, f"⏱ {node.node_id}", _seconds(node.seconds), pill=True)
        if isinstance(node, SignalNode):
            note = f"signal “{node.signal_name}”"
            return self.step(node.node_id, f"✉ {node.node_id}", note, pill=True)
        if isinstance(node, ForkNode):
            return self.fork(node)
        if isinstance(node, RouteNode):
            return self.route(node)
        if isinstance(node, LoopNode):
            return self.loop(node)
        if isinstance(node, MapNode):
            return self.map(node)
        if isinstance(node, ChildFlowNode):
            return self.child(node)
        raise TypeError(f"unknown node {node!r}")

    def step(
        self,
        step_id: str,
        label: str,
        note: str | None = None,
        *,
        pill: bool = False,
        stacked: bool = False,
    ) -> _Block:
        state = str(self.states.get(step_id, "pending"))
        palette = step_palette(state)
        radius = NODE_HEIGHT / 2 if pill else 7
        dashed = ' stroke-dasharray="4 3"' if state == "skipped" else ""
        parts = []
        if stacked:  # a map: its items as cards behind the step
            for depth in (2, 1):
                inset = depth * STACK_OFFSET
                parts.append(
                    _rect(
                        inset,
                        inset,
                        palette.fill,
                        palette.stroke,
                        radius,
                        width=NODE_WIDTH - 2 * inset,
                        extra=' opacity="0.6"',
                    )
                )
        parts.append(_rect(0, 0, palette.fill, palette.stroke, radius, extra=dashed))
        text_y = NODE_HEIGHT / 2 + (-3 if note else 4.5)
        parts.append(
            f'<text x="{_n(NODE_WIDTH / 2)}" y="{_n(text_y)}" text-anchor="middle" '
            f'font-size="13" font-weight="600" fill="{palette.text}">{escape(_cut(label))}</text>'
        )
        if note:
            parts.append(
                f'<text x="{_n(NODE_WIDTH / 2)}" y="{_n(NODE_HEIGHT / 2 + 12)}" '
                f'text-anchor="middle" font-size="10.5" fill="{palette.text}" opacity="0.8">'
                f"{escape(_cut(note, MAX_LABEL + 6))}</text>"
            )
        tip = escape(f"{step_id}: {palette.label}")
        group = (
            f'<g class="sayiir-step" data-step="{escape(step_id)}" data-state="{escape(state)}">'
            f"<title>{tip}</title>{''.join(parts)}</g>"
        )
        height = NODE_HEIGHT + (2 * STACK_OFFSET if stacked else 0)
        return _Block(NODE_WIDTH, height, [group])

    def fork(self, node: ForkNode) -> _Block:
        branches = [self.pipeline(branch) for branch in node.branches]
        join = self.step(node.join.task_id, _task_label(node.join), "join")
        return _fan(branches, [None] * len(branches), _dot_block(), join, self.arrow)

    def route(self, node: RouteNode) -> _Block:
        branches = [self.pipeline(branch) for _, branch in node.branches]
        labels: list[str | None] = [key for key, _ in node.branches]
        if node.default is not None:
            branches.append(self.pipeline(node.default))
            labels.append("default")
        key = self.step(node.key_fn.task_id, _task_label(node.key_fn), "route by key")
        return _fan(branches, labels, key, _dot_block(), self.arrow)

    def loop(self, node: LoopNode) -> _Block:
        count = self.counts.get(node.body.task_id)
        note = f"loop ≤ {node.max_iterations}" + (f" · {count} done" if count else "")
        inner = self.step(node.body.task_id, _task_label(node.body), note)
        block = _Block(inner.width + 2 * LOOP_PAD, inner.height, [inner.placed(LOOP_PAD, 0)])
        right = LOOP_PAD + inner.width
        top, bottom = inner.height * 0.3, inner.height * 0.7
        block.parts.append(
            f'<path d="M{_n(right)},{_n(bottom)} C{_n(right + 26)},{_n(bottom)} '
            f'{_n(right + 26)},{_n(top)} {_n(right + 2)},{_n(top)}" fill="none" '
            f'stroke="{EDGE}" stroke-width="1.5" marker-end="{self.arrow}"/>'
        )
        return block

    def map(self, node: MapNode) -> _Block:
        count = self.counts.get(node.fn.task_id)
        limit = f" ≤ {node.max_concurrency} at once" if node.max_concurrency else ""
        note = f"map{limit}" + (f" · {count} done" if count else "")
        return self.step(node.fn.task_id, _task_label(node.fn), note, stacked=True)

    def child(self, node: ChildFlowNode) -> _Block:
        inner = self.pipeline(node.pipeline)
        width = inner.width + 2 * FRAME_PAD
        height = inner.height + FRAME_PAD + FRAME_TITLE
        frame = (
            f'<rect x="0" y="0" width="{_n(width)}" height="{_n(height)}" rx="10" '
            f'fill="#f8fafc" stroke="{EDGE}" stroke-dasharray="5 4"/>'
            f'<text x="10" y="15" font-size="10.5" fill="#64748b">'
            f"{escape(_cut('flow ' + node.workflow_id, MAX_LABEL + 8))}</text>"
        )
        return _Block(width, height, [frame, inner.placed(FRAME_PAD, FRAME_TITLE)])


def _fan(
    branches: list[_Block],
    labels: list[str | None],
    head: _Block,
    tail: _Block,
    arrow: str,
) -> _Block:
    """``head``, then ``branches`` side by side, each joining into ``tail``."""
    row_width = sum(branch.width for branch in branches) + GAP_X * (len(branches) - 1)
    width = max(row_width, head.width, tail.width)
    row_top = head.height + GAP_Y + (8 if any(labels) else 0)
    row_height = max((branch.height for branch in branches), default=0)
    tail_top = row_top + row_height + GAP_Y
    block = _Block(width, tail_top + tail.height)
    centre = width / 2
    block.parts.append(head.placed(centre - head.centre, 0))
    x = (width - row_width) / 2
    for branch, label in zip(branches, labels, strict=True):
        mid = x + branch.centre
        block.parts.append(branch.placed(x, row_top))
        block.parts.append(_edge(centre, head.height, mid, row_top, arrow, bend=head.height + 12))
        if label is not None:
            block.parts.append(
                f'<text x="{_n(mid + 5)}" y="{_n(row_top - 6)}" font-size="10.5" '
                f'fill="#475569" font-style="italic">{escape(_cut(label, 16))}</text>'
            )
        block.parts.append(
            _edge(mid, row_top + branch.height, centre, tail_top, arrow, bend=tail_top - 12)
        )
        x += branch.width + GAP_X
    block.parts.append(tail.placed(centre - tail.centre, tail_top))
    return block


def _stack(blocks: list[_Block], arrow: str | None = None) -> _Block:
    """Blocks one under another, centred, joined by arrows."""
    width = max((block.width for block in blocks), default=0)
    block = _Block(width, 0)
    y = 0.0
    for index, part in enumerate(blocks):
        if index:
            block.parts.append(_edge(width / 2, y, width / 2, y + GAP_Y, arrow))
            y += GAP_Y
        block.parts.append(part.placed((width - part.width) / 2, y))
        y += part.height
    block.height = y
    return block


def _dot_block(*, filled: bool = True) -> _Block:
    fill = "#475569" if filled else "#ffffff"
    circle = (
        f'<circle cx="{DOT / 2}" cy="{DOT / 2}" r="{DOT / 2 - 1}" fill="{fill}" '
        'stroke="#475569" stroke-width="1.5"/>'
    )
    return _Block(DOT, DOT, [circle])


def _edge(
    x1: float, y1: float, x2: float, y2: float, arrow: str | None, *, bend: float | None = None
) -> str:
    """A line (straight, or down-across-down) from (x1, y1) to (x2, y2)."""
    if abs(x1 - x2) < 0.5:
        path = f"M{_n(x1)},{_n(y1)} V{_n(y2)}"
    else:
        turn = bend if bend is not None else (y1 + y2) / 2
        path = f"M{_n(x1)},{_n(y1)} V{_n(turn)} H{_n(x2)} V{_n(y2)}"
    end = f' marker-end="{arrow}"' if arrow else ""
    return f'<path d="{path}" fill="none" stroke="{EDGE}" stroke-width="1.5"{end}/>'


def _rect(
    x: float,
    y: float,
    fill: str,
    stroke: str,
    radius: float,
    *,
    width: float = NODE_WIDTH,
    extra: str = "",
) -> str:
    return (
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(width)}" height="{NODE_HEIGHT}" '
        f'rx="{_n(radius)}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"{extra}/>'
    )


def _task_label(node: TaskNode) -> str:
    # The id, not the display name: a function used twice has one name and two ids.
    return node.task_id


def _cut(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"delay {int(seconds // size)}{unit}"
    return f"delay {seconds:g}s"


def _n(value: float) -> str:
    """A coordinate with at most one decimal, no trailing zeros."""
    return f"{value:.1f}".rstrip("0").rstrip(".")
