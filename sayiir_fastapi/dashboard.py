"""``Sayiir.dashboard()``: server-rendered pages over instances, live over SSE.

- ``/``: instances with filters (status, workflow, age) and counts per status, failures
  first; refreshed when anything changes;
- ``/instances/{id}``: input, output, error, the workflow graph coloured by step state
  (``sayiir_core.render``), the history timeline, and actions (cancel, pause, unpause,
  retry from a step, send a signal); refreshed as its history grows.

HTML comes from Jinja2 templates; the only script (``static/dashboard.js``) listens to
the page's event stream and swaps in a fresh server-rendered fragment. Actions are plain
form posts answered with a redirect; a post whose ``Origin`` is another site is refused
(403), so a page elsewhere cannot drive the dashboard with the user's cookies. Mount it
behind authentication (``dependencies=[Depends(require_staff)]``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jinja2
import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from sayiir_core import AsyncWorkflowClient, InvalidStateError, WorkflowError, WorkflowStatus
from sayiir_core.render import (
    STATUS_ORDER,
    STEP_PALETTES,
    states_summary,
    status_palette,
    step_counts,
    step_palette,
    step_states,
    timeline,
    workflow_svg,
)
from sayiir_fastapi.dependencies import WorkflowClientDep
from sayiir_fastapi.events import (
    SSE_HEADERS,
    SSE_KEEP_ALIVE,
    SSE_PREAMBLE,
    any_change,
    instance_stream,
    sse_message,
)
from sayiir_fastapi.problems import ProblemError, first_line, problem_route_class

if TYPE_CHECKING:
    from sayiir_fastapi.integration import Sayiir

PAGE_SIZE = 50
# Counts per status read at most this many rows each, then show "200+".
COUNT_CAP = 200
SHOWN_JSON_CHARACTERS = 20_000
LIST_REFRESH_SECONDS = 5.0
STREAM_SECONDS = 60.0
AGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
InstanceId = Annotated[str, Path(min_length=1, max_length=255)]


def build_dashboard(sayiir: Sayiir, *, title: str, show_tracebacks: bool) -> APIRouter:
    router = APIRouter(route_class=problem_route_class(64 * 1024), include_in_schema=False)
    pages = _Pages(sayiir, title=title, show_tracebacks=show_tracebacks)

    @router.get("/", response_class=HTMLResponse, name="sayiir_ui_list")
    async def instance_list(
        request: Request,
        client: WorkflowClientDep,
        status: Annotated[str | None, Query(max_length=32)] = None,
        workflow_id: Annotated[str | None, Query(max_length=255)] = None,
        age: Annotated[str | None, Query(max_length=8)] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> HTMLResponse:
        filters = _filters(status, workflow_id, age, cursor)
        return pages.render(request, "list.html", await pages.list_context(client, filters))

    @router.get("/fragments/list", response_class=HTMLResponse, name="sayiir_ui_list_fragment")
    async def list_fragment(
        request: Request,
        client: WorkflowClientDep,
        status: Annotated[str | None, Query(max_length=32)] = None,
        workflow_id: Annotated[str | None, Query(max_length=255)] = None,
        age: Annotated[str | None, Query(max_length=8)] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> HTMLResponse:
        filters = _filters(status, workflow_id, age, cursor)
        return pages.render(request, "_list_live.html", await pages.list_context(client, filters))

    @router.get("/events", name="sayiir_ui_list_events")
    async def list_events() -> StreamingResponse:
        """A ``change`` whenever an instance changes here, and every few seconds."""
        return StreamingResponse(
            _change_stream(sayiir), media_type="text/event-stream", headers=SSE_HEADERS
        )

    @router.get("/instances/{instance_id}", response_class=HTMLResponse, name="sayiir_ui_instance")
    async def instance_page(
        instance_id: InstanceId,
        request: Request,
        client: WorkflowClientDep,
        notice: Annotated[str | None, Query(max_length=300)] = None,
        error: Annotated[str | None, Query(max_length=300)] = None,
    ) -> HTMLResponse:
        context = await pages.instance_context(client, instance_id)
        context.update(notice=notice, error=error)
        return pages.render(request, "instance.html", context)

    @router.get(
        "/instances/{instance_id}/fragment",
        response_class=HTMLResponse,
        name="sayiir_ui_instance_fragment",
    )
    async def instance_fragment(
        instance_id: InstanceId, request: Request, client: WorkflowClientDep
    ) -> HTMLResponse:
        context = await pages.instance_context(client, instance_id)
        return pages.render(request, "_instance_live.html", context)

    @router.get("/instances/{instance_id}/graph.svg", name="sayiir_ui_graph")
    async def instance_graph(instance_id: InstanceId, client: WorkflowClientDep) -> Response:
        context = await pages.instance_context(client, instance_id)
        return Response(context["graph"], media_type="image/svg+xml")

    @router.get("/instances/{instance_id}/events", name="sayiir_ui_instance_events")
    async def instance_events(
        instance_id: InstanceId,
        client: WorkflowClientDep,
        after: Annotated[int, Query(ge=0)] = 0,
    ) -> StreamingResponse:
        """``change`` on each history event after ``after``, ``end`` once finished."""
        await client.status(instance_id)
        return StreamingResponse(
            _instance_changes(sayiir, client, instance_id, after),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    @router.post("/instances/{instance_id}/actions/{action}", name="sayiir_ui_action")
    async def instance_action(
        instance_id: InstanceId,
        action: Annotated[str, Path(max_length=32)],
        request: Request,
        client: WorkflowClientDep,
    ) -> RedirectResponse:
        _refuse_other_sites(request)
        form = await _form(request)
        back = str(request.url_for("sayiir_ui_instance", instance_id=instance_id))
        try:
            notice = await _act(
                client,
                instance_id,
                action,
                form.get("task_id"),
                form.get("signal_name"),
                form.get("payload"),
                form.get("reason"),
            )
        except (InvalidStateError, ValueError) as failure:
            return RedirectResponse(f"{back}?{urlencode({'error': first_line(str(failure))})}", 303)
        sayiir.events.publish(instance_id)
        return RedirectResponse(f"{back}?{urlencode({'notice': notice})}", 303)

    @router.get("/static/{name}", name="sayiir_ui_static")
    async def static(name: str) -> Response:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise ProblemError(404, "not_found", f"no static file {name!r}")
        text = resources.files("sayiir_fastapi").joinpath("static", name).read_text("utf-8")
        return Response(text, media_type=media_type, headers={"Cache-Control": "max-age=300"})

    return router


class _Pages:
    def __init__(self, sayiir: Sayiir, *, title: str, show_tracebacks: bool) -> None:
        self.sayiir = sayiir
        self.title = title
        self.show_tracebacks = show_tracebacks
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("sayiir_fastapi", "templates"),
            autoescape=jinja2.select_autoescape(default=True),
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters["ago"] = _ago
        self.env.filters["stamp"] = _stamp
        self.env.globals.update(status_palette=status_palette, step_palette=step_palette)

    def render(self, request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
        html = self.env.get_template(template).render(
            request=request, title=self.title, url_for=request.url_for, **context
        )
        return HTMLResponse(html)

    async def list_context(
        self, client: AsyncWorkflowClient, filters: dict[str, str | None]
    ) -> dict[str, Any]:
        cutoff = _cutoff(filters["age"])
        counts, (rows, next_cursor) = await asyncio.gather(
            self._counts(client, filters["workflow_id"], cutoff),
            self._rows(client, filters, cutoff),
        )
        query = {key: value for key, value in filters.items() if value and key != "cursor"}
        return {
            "filters": filters,
            "counts": counts,
            "rows": rows,
            "next_query": urlencode({**query, "cursor": next_cursor}) if next_cursor else None,
            "query": urlencode(query),
            "workflows": sorted(self.sayiir.workflows),
            "statuses": STATUS_ORDER,
            "ages": list(AGES),
        }

    async def _counts(
        self, client: AsyncWorkflowClient, workflow_id: str | None, cutoff: datetime | None
    ) -> list[tuple[str, str]]:
        async def count(status: str) -> tuple[str, str]:
            page = await client.list_instances(
                status=status, workflow_id=workflow_id, limit=COUNT_CAP + 1
            )
            items = [item for item in page if _recent(item, cutoff)]
            shown = f"{COUNT_CAP}+" if len(items) > COUNT_CAP else str(len(items))
            return status, shown

        return list(await asyncio.gather(*(count(status) for status in STATUS_ORDER)))

    async def _rows(
        self, client: AsyncWorkflowClient, filters: dict[str, str | None], cutoff: datetime | None
    ) -> tuple[list[WorkflowStatus], str | None]:
        try:
            page = await client.list_instances(
                status=filters["status"],
                workflow_id=filters["workflow_id"],
                limit=PAGE_SIZE,
                cursor=filters["cursor"],
            )
        except ValueError as error:  # a cursor that is none of ours
            raise ProblemError(422, "invalid_cursor", str(error)) from None
        rows = [item for item in page if _recent(item, cutoff)]
        # Newest first: an instance older than the cutoff means the rest are too.
        return rows, page.next_cursor if len(rows) == len(page) else None

    async def instance_context(
        self, client: AsyncWorkflowClient, instance_id: str
    ) -> dict[str, Any]:
        status = await client.status(instance_id)
        history = await client.history(instance_id)
        submitted = await client.input(instance_id)
        workflow = self.sayiir.workflows.get(status.workflow_id or "")
        graph = None
        states: dict[str, str] = {}
        summary: dict[str, int] = {}
        if workflow is not None:
            computed = step_states(workflow, status, history)
            states = {step: state.value for step, state in computed.items()}
            summary = states_summary(computed)
            graph = workflow_svg(workflow, computed, counts=step_counts(history))
        shown = set(states.values())
        entries = list(reversed(timeline(history)))
        return {
            "status": status,
            "palette": status_palette(status.status),
            "input_text": _json_text(submitted),
            "output_text": _json_text(status.output) if status.is_completed() else None,
            "error_line": first_line(status.error) if status.error else None,
            "error_text": status.error if self.show_tracebacks else None,
            "graph": graph,
            "legend": [(state, STEP_PALETTES[state]) for state in STEP_PALETTES if state in shown],
            "summary": summary,
            "timeline": entries,
            "show_tracebacks": self.show_tracebacks,
            "steps": list(states),
            "known_workflow": workflow is not None,
            "finished": status.is_finished(),
            # The page shows the history up to here; its stream starts after it.
            "last_seq": max((event.seq for event in history), default=0),
        }


async def _act(
    client: AsyncWorkflowClient,
    instance_id: str,
    action: str,
    task_id: str | None,
    signal_name: str | None,
    payload: str | None,
    reason: str | None,
) -> str:
    """Apply one form action; returns the notice to show."""
    by = "dashboard"
    if action == "cancel":
        status = await client.cancel(instance_id, reason=reason or None, cancelled_by=by)
        return "Cancelled." if status.is_cancelled() else "Cancel requested: at the next step."
    if action == "pause":
        status = await client.pause(instance_id, reason=reason or None, paused_by=by)
        return "Paused." if status.is_paused() else "Pause requested: at the next step."
    if action == "unpause":
        await client.unpause(instance_id)
        return "Unpaused."
    if action == "retry-from":
        if not task_id:
            raise ValueError("choose the step to retry from")
        await client.retry_from(instance_id, task_id)
        return f"Running again from {task_id}."
    if action == "signal":
        if not signal_name:
            raise ValueError("a signal needs a name")
        try:
            value = orjson.loads(payload) if payload and payload.strip() else None
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the payload is not JSON: {error}") from None
        await client.send_signal(instance_id, signal_name, value)
        return f"Signal {signal_name!r} sent."
    raise ProblemError(404, "unknown_action", f"no action {action!r}")


async def _form(request: Request) -> dict[str, str]:
    """The posted form fields (``application/x-www-form-urlencoded``; the last value wins).

    Parsed here rather than with FastAPI's ``Form``, which needs python-multipart.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    body = await request.body()
    if body and kind != "application/x-www-form-urlencoded":
        raise ProblemError(415, "unsupported_media_type", "post the form urlencoded")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProblemError(400, "malformed_form", "the form is not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


def _refuse_other_sites(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return
    if urlsplit(origin).netloc != request.headers.get("host", ""):
        raise ProblemError(403, "cross_site_post", "actions are accepted from this site only")


async def _instance_changes(
    sayiir: Sayiir, client: AsyncWorkflowClient, instance_id: str, after: int
) -> AsyncIterator[bytes]:
    yield SSE_PREAMBLE
    stream = instance_stream(
        client,
        sayiir.events,
        instance_id,
        after_seq=after,
        poll_interval=sayiir.poll_interval,
        max_seconds=STREAM_SECONDS,
    )
    try:
        async for item in stream:
            if item is None:
                yield SSE_KEEP_ALIVE
            elif item.kind == "history":
                yield sse_message(data={"seq": item.seq}, event="change", event_id=item.seq)
            else:
                yield sse_message(data={"status": item.status and item.status.status}, event="end")
    except WorkflowError:
        yield sse_message(data={}, event="end")


async def _change_stream(sayiir: Sayiir) -> AsyncIterator[bytes]:
    yield SSE_PREAMBLE
    deadline = time.monotonic() + STREAM_SECONDS
    while time.monotonic() < deadline:
        await any_change(sayiir.events, within=LIST_REFRESH_SECONDS)
        await asyncio.sleep(0.25)  # gather a burst of changes into one refresh
        yield sse_message(data={}, event="change")


def _filters(
    status: str | None, workflow_id: str | None, age: str | None, cursor: str | None
) -> dict[str, str | None]:
    if status and status not in STATUS_ORDER:
        raise ProblemError(422, "invalid_input", f"unknown status {status!r}")
    if age and age not in AGES:
        raise ProblemError(422, "invalid_input", f"unknown age {age!r}; one of {list(AGES)}")
    return {
        "status": status or None,
        "workflow_id": workflow_id or None,
        "age": age or None,
        "cursor": cursor or None,
    }


def _cutoff(age: str | None) -> datetime | None:
    return datetime.now(UTC) - AGES[age] if age else None


def _recent(status: WorkflowStatus, cutoff: datetime | None) -> bool:
    return cutoff is None or status.created_at is None or status.created_at >= cutoff


def _json_text(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()
    if len(text) > SHOWN_JSON_CHARACTERS:
        return text[:SHOWN_JSON_CHARACTERS] + f"\n… ({len(text)} characters in all)"
    return text


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if seconds < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else ""
