"""The REST API over workflows and instances (``Sayiir.router()``).

Paths, relative to the prefix the app includes it under:

- ``GET /workflows``, ``GET /workflows/{workflow_id}``: definitions and input schemas;
- ``POST /workflows/{workflow_id}/instances``: start one (201; 409 on a conflict; 422 when
  the input fails the first step's type; an ``Idempotency-Key`` header may give the id);
- ``GET /instances`` (``status``, ``workflow_id``, ``limit``, ``cursor``),
  ``GET /instances/{id}``, ``GET /instances/{id}/history``;
- ``GET /instances/{id}/result?timeout=S``: long poll (200 finished, 202 still running,
  a problem document for a failure or a cancel);
- ``GET /instances/{id}/events``: Server-Sent Events (see ``events_endpoint``);
- ``POST /instances/{id}/signals/{name}``, ``/cancel``, ``/pause``, ``/unpause``,
  ``/retry-from/{task_id}``.

Every error is an RFC 9457 problem document (``problems.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from sayiir_core import (
    AsyncWorkflowClient,
    Status,
    WaitTimeoutError,
)
from sayiir_fastapi.dependencies import WorkflowClientDep
from sayiir_fastapi.events import (
    SSE_HEADERS,
    SSE_KEEP_ALIVE,
    SSE_PREAMBLE,
    instance_stream,
    sse_message,
)
from sayiir_fastapi.inputs import WorkflowInput, describe_inputs, path_safe
from sayiir_fastapi.problems import (
    ProblemError,
    problem_response,
    problem_responses,
    problem_route_class,
)
from sayiir_fastapi.schemas import (
    MAX_INSTANCE_ID_LENGTH,
    ControlIn,
    HistoryEventOut,
    InstanceOut,
    InstancePageOut,
    StepOut,
    SubmissionIn,
    WorkflowOut,
    one_line_error,
)
from sayiir_fastapi.submissions import IdempotencyKey, Submissions, input_problem

if TYPE_CHECKING:
    from sayiir_fastapi.integration import Sayiir

logger = logging.getLogger("sayiir.fastapi")

InstanceId = Annotated[str, Path(min_length=1, max_length=MAX_INSTANCE_ID_LENGTH)]
_STATUSES = sorted({*(status.value for status in Status), *(s.reported for s in Status)})
_FAILURE_CODES = {
    "timeout": "task_timeout",
    "serialization": "not_serializable",
    "signal_timeout": "signal_timeout",
}


def build_router(
    sayiir: Sayiir,
    *,
    max_body_bytes: int,
    max_result_wait: float,
    stream_seconds: float,
    tags: list[str],
) -> APIRouter:
    """The router; see the module docstring for its paths."""
    router = APIRouter(
        route_class=problem_route_class(max_body_bytes),
        tags=list(tags),
        responses=problem_responses(400, 413, 422, 503),
    )
    inputs = describe_inputs(list(sayiir.workflows.values()))
    submissions = Submissions(sayiir, inputs)

    @router.get("/workflows", response_model=list[WorkflowOut], name="sayiir_workflows")
    async def list_workflows() -> list[WorkflowOut]:
        """The workflows this app serves, with their steps and input JSON schema."""
        return [_workflow_out(item) for item in inputs.values()]

    @router.get(
        "/workflows/{workflow_id}",
        response_model=WorkflowOut,
        responses=problem_responses(404),
        name="sayiir_workflow",
    )
    async def get_workflow(workflow_id: str) -> WorkflowOut:
        return _workflow_out(submissions.input_of(workflow_id))

    for described in inputs.values():
        if path_safe(described.workflow.workflow_id):
            submissions.add_typed_route(router, described)

    @router.post(
        "/workflows/{workflow_id}/instances",
        status_code=201,
        response_model=InstanceOut,
        responses=problem_responses(404, 409),
        # Listed only when a workflow id cannot be a literal path segment.
        include_in_schema=not all(path_safe(workflow_id) for workflow_id in inputs),
        name="sayiir_submit",
    )
    async def submit_any(
        workflow_id: str,
        body: SubmissionIn,
        request: Request,
        response: Response,
        client: WorkflowClientDep,
        idempotency_key: IdempotencyKey = None,
    ) -> InstanceOut:
        described = submissions.input_of(workflow_id)
        try:
            value = described.validate(body.input)
        except ValidationError as error:
            raise input_problem(error) from None
        return await submissions.submit(
            request, response, client, described, body.instance_id, value, idempotency_key
        )

    @router.get("/instances", response_model=InstancePageOut, name="sayiir_instances")
    async def list_instances(
        client: WorkflowClientDep,
        status: Annotated[str | None, Query(description=", ".join(_STATUSES))] = None,
        workflow_id: Annotated[str | None, Query(max_length=255)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> InstancePageOut:
        """Instances, newest first; ``next_cursor`` gives the next page."""
        if status is not None and status not in _STATUSES:
            raise ProblemError(
                422, "invalid_input", f"unknown status {status!r}; expected one of {_STATUSES}"
            )
        try:
            page = await client.list_instances(
                status=status, workflow_id=workflow_id, limit=limit, cursor=cursor
            )
        except ValueError as error:
            raise ProblemError(422, "invalid_cursor", str(error)) from None
        return InstancePageOut(
            items=[InstanceOut.of(item) for item in page], next_cursor=page.next_cursor
        )

    @router.get(
        "/instances/{instance_id}",
        response_model=InstanceOut,
        responses=problem_responses(404),
        name="sayiir_instance",
    )
    async def get_instance(instance_id: InstanceId, client: WorkflowClientDep) -> InstanceOut:
        return InstanceOut.of(await client.status(instance_id))

    @router.get(
        "/instances/{instance_id}/history",
        response_model=list[HistoryEventOut],
        responses=problem_responses(404),
        name="sayiir_history",
    )
    async def get_history(
        instance_id: InstanceId, client: WorkflowClientDep
    ) -> list[HistoryEventOut]:
        """Append-only events, oldest first (failure details without tracebacks)."""
        events = await client.history(instance_id)
        if not events:
            await client.status(instance_id)  # 404 for an unknown id
        return [HistoryEventOut.of(event) for event in events]

    @router.get(
        "/instances/{instance_id}/result",
        response_model=InstanceOut,
        responses={
            202: {"model": InstanceOut, "description": "Still running at the timeout"},
            **problem_responses(404, 409, 424),
        },
        name="sayiir_result",
    )
    async def get_result(
        instance_id: InstanceId,
        request: Request,
        response: Response,
        client: WorkflowClientDep,
        # A default, not an Annotated alias: the bound is a local of this function.
        timeout: float = Query(  # noqa: ASYNC109 - the query parameter of the long poll
            0.0, ge=0, le=max_result_wait, description="Seconds to wait"
        ),
    ) -> Any:
        """Wait up to ``timeout`` seconds: 200 with the output, 202 if still running.

        A failed instance answers 424 and a cancelled one 409, as problem documents.
        """
        try:
            status = await client.wait(instance_id, timeout=timeout)
        except WaitTimeoutError:
            response.status_code = 202
            return InstanceOut.of(await client.status(instance_id))
        if status.is_completed():
            return InstanceOut.of(status)
        extensions = {
            "instance_id": instance_id,
            "workflow_id": status.workflow_id,
            "instance_status": status.status,
        }
        if status.is_cancelled():
            return problem_response(
                request,
                409,
                "instance_cancelled",
                f"instance {instance_id!r} was cancelled"
                + (f": {status.reason}" if status.reason else ""),
                {**extensions, "reason": status.reason, "cancelled_by": status.cancelled_by},
            )
        kind = status.error_detail.kind if status.error_detail is not None else "task"
        return problem_response(
            request,
            424,
            _FAILURE_CODES.get(kind, "task_failed"),
            one_line_error(status) or f"instance {instance_id!r} failed",
            {
                **extensions,
                "error_type": status.error_type,
                "failed_task_id": status.failed_task_id,
            },
        )

    @router.get(
        "/instances/{instance_id}/events",
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
            **problem_responses(404),
        },
        response_class=StreamingResponse,
        name="sayiir_events",
    )
    async def events_endpoint(
        instance_id: InstanceId,
        client: WorkflowClientDep,
        after: Annotated[int | None, Query(ge=0, description="Send events after this seq")] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """History events as they are written (``id`` = ``seq``), then ``end``.

        Each history event is a default ``message`` whose data is the event as in
        ``/history``; when the instance has finished an ``end`` event carries its final
        status and the stream closes. A stream also closes after a while (the browser
        reconnects, sending ``Last-Event-ID``, and misses nothing).
        """
        await client.status(instance_id)  # 404 before the stream starts
        start = after if after is not None else _seq_from(last_event_id)
        stream = instance_stream(
            client,
            sayiir.events,
            instance_id,
            after_seq=start,
            poll_interval=sayiir.poll_interval,
            max_seconds=stream_seconds,
        )
        return StreamingResponse(
            _sse_body(stream), media_type="text/event-stream", headers=SSE_HEADERS
        )

    @router.post(
        "/instances/{instance_id}/signals/{signal_name}",
        status_code=202,
        response_model=InstanceOut,
        responses=problem_responses(404, 409),
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": {"description": "Any JSON value"}}}
            }
        },
        name="sayiir_signal",
    )
    async def send_signal(
        instance_id: InstanceId,
        signal_name: Annotated[str, Path(min_length=1, max_length=255)],
        request: Request,
        client: WorkflowClientDep,
    ) -> InstanceOut:
        """Buffer a signal (the JSON body is its payload; an empty body sends ``null``)."""
        raw = await request.body()
        try:
            payload = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError as error:
            raise ProblemError(
                400, "malformed_json", f"the request body is not valid JSON: {error}"
            ) from None
        await client.send_signal(instance_id, signal_name, payload)
        sayiir.events.publish(instance_id)
        return InstanceOut.of(await client.status(instance_id))

    def control(
        action: str,
        call: Callable[[AsyncWorkflowClient, str, ControlIn], Coroutine[Any, Any, Any]],
        done_status: str | None,
    ) -> None:
        async def endpoint(
            instance_id: InstanceId,
            response: Response,
            client: WorkflowClientDep,
            body: Annotated[ControlIn | None, Body()] = None,
        ) -> InstanceOut:
            status = await call(client, instance_id, body or ControlIn())
            sayiir.events.publish(instance_id)
            if done_status is not None and status.status != done_status:
                response.status_code = 202  # asked; it holds at the next checkpoint
            return InstanceOut.of(status)

        endpoint.__doc__ = _CONTROL_DOCS[action]
        router.add_api_route(
            f"/instances/{{instance_id}}/{action}",
            endpoint,
            methods=["POST"],
            response_model=InstanceOut,
            responses={202: {"model": InstanceOut}, **problem_responses(404, 409)},
            name=f"sayiir_{action}",
        )

    control(
        "cancel",
        lambda client, instance_id, body: client.cancel(
            instance_id, reason=body.reason, cancelled_by=body.by
        ),
        "cancelled",
    )
    control(
        "pause",
        lambda client, instance_id, body: client.pause(
            instance_id, reason=body.reason, paused_by=body.by
        ),
        "paused",
    )
    control("unpause", lambda client, instance_id, _body: client.unpause(instance_id), None)

    @router.post(
        "/instances/{instance_id}/retry-from/{task_id}",
        response_model=InstanceOut,
        responses=problem_responses(404, 409),
        name="sayiir_retry_from",
    )
    async def retry_from(
        instance_id: InstanceId,
        task_id: Annotated[str, Path(min_length=1, max_length=255)],
        client: WorkflowClientDep,
    ) -> InstanceOut:
        """Drop the checkpoints of ``task_id`` and later steps; the instance runs again."""
        status = await client.retry_from(instance_id, task_id)
        sayiir.events.publish(instance_id)
        return InstanceOut.of(status)

    return router


_CONTROL_DOCS = {
    "cancel": "Cancel: at once when no step runs, else at the next checkpoint (then 202).",
    "pause": "Pause: at once when no step runs, else at the next checkpoint (then 202).",
    "unpause": "Unpause a paused instance; a worker picks it up again.",
}


def _workflow_out(described: WorkflowInput) -> WorkflowOut:
    workflow = described.workflow
    return WorkflowOut(
        workflow_id=workflow.workflow_id,
        definition_hash=workflow.definition_hash,
        steps=[
            StepOut(id=node.id, kind=node.kind, predecessor_id=node.predecessor_id)
            for node in workflow.iter_nodes()
        ],
        input_schema=described.schema,
    )


def _seq_from(last_event_id: str | None) -> int:
    if last_event_id is not None and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return 0


async def _sse_body(stream: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    yield SSE_PREAMBLE
    try:
        async for item in stream:
            if item is None:
                yield SSE_KEEP_ALIVE
            elif item.kind == "history":
                data = HistoryEventOut.of(item.event).model_dump(mode="json")
                yield sse_message(data=data, event_id=item.seq)
            else:
                yield sse_message(
                    data=InstanceOut.of(item.status).model_dump(mode="json"), event="end"
                )
    except Exception as error:  # the response has started: say so in the stream, then end
        logger.exception("sayiir: event stream failed")
        yield sse_message(data={"detail": type(error).__name__}, event="error")
