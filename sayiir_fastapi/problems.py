"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every error of ``sayiir_core.errors`` has one HTTP status here (``STATUS_BY_ERROR``,
the most specific class wins). A document carries ``type`` (``about:blank``: the
status says it all), ``title`` (the status phrase), ``status``, ``detail`` (the error's
first line, never a traceback), ``instance`` (the request path) and ``code``, a stable
snake-case name to switch on (``instance_not_found``, ``invalid_input``...), plus
members of its own where useful (``instance_id``, ``errors``).

``ProblemRoute`` is the route class of the router and the dashboard: it turns request
validation errors, sayiir errors and anything unexpected into problem documents (the
last with a generic detail; the exception goes to the log), and bounds body sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from sayiir_core import (
    BackendError,
    DefinitionMismatchError,
    InstanceAlreadyExistsError,
    InstanceCancelledError,
    InstanceNotFoundError,
    InvalidStateError,
    LeaseLostError,
    PayloadTooLargeError,
    SerializationError,
    SignalBufferFullError,
    SignalTimeoutError,
    TaskError,
    TaskTimeoutError,
    UnknownSignalError,
    WaitTimeoutError,
    WorkflowError,
)
from sayiir_fastapi.schemas import ProblemDocument

logger = logging.getLogger("sayiir.fastapi")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Ordered most specific first: the first class an error is an instance of decides.
STATUS_BY_ERROR: tuple[tuple[type[WorkflowError], int, str], ...] = (
    (InstanceNotFoundError, 404, "instance_not_found"),
    (InstanceAlreadyExistsError, 409, "instance_already_exists"),
    (UnknownSignalError, 409, "unknown_signal"),
    (SignalBufferFullError, 409, "signal_buffer_full"),
    (InvalidStateError, 409, "invalid_state"),
    (DefinitionMismatchError, 409, "definition_mismatch"),
    (InstanceCancelledError, 409, "instance_cancelled"),
    (WaitTimeoutError, 504, "wait_timeout"),
    (PayloadTooLargeError, 413, "payload_too_large"),
    (LeaseLostError, 503, "lease_lost"),
    (BackendError, 503, "backend_unavailable"),
    # An input or payload the codec cannot store (an integer beyond 64 bits...).
    (SerializationError, 422, "not_serializable"),
    # The instance failed: the result depended on a step that failed.
    (TaskTimeoutError, 424, "task_timeout"),
    (TaskError, 424, "task_failed"),
    (SignalTimeoutError, 424, "signal_timeout"),
    (WorkflowError, 500, "workflow_error"),
)


class ProblemError(Exception):
    """Raise in an endpoint to answer with a problem document."""

    def __init__(self, status: int, code: str, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extensions = extensions


def problem_response(
    request: Request | None,
    status: int,
    code: str,
    detail: str,
    extensions: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
    body.update(extensions or {})
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {})
    )


def status_for(error: WorkflowError) -> tuple[int, str]:
    """The HTTP status and problem ``code`` of a sayiir error."""
    for error_class, status, code in STATUS_BY_ERROR:
        if isinstance(error, error_class):
            return status, code
    return 500, "workflow_error"


def first_line(text: str) -> str:
    """The message without the traceback a task error carries after a blank line."""
    return text.strip().partition("\n")[0]


def error_problem(request: Request | None, error: WorkflowError) -> JSONResponse:
    status, code = status_for(error)
    extensions: dict[str, Any] = {"error_type": type(error).__name__}
    if isinstance(error, TaskError):
        if error.instance_id is not None:
            extensions["instance_id"] = error.instance_id
        if error.task_id is not None:
            extensions["task_id"] = error.task_id
    return problem_response(request, status, code, first_line(str(error)), extensions)


def validation_problem(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = list(error.errors())
    if any(item.get("type") == "json_invalid" for item in errors):
        reason = next((str(item.get("ctx", {}).get("error", "")) for item in errors), "not JSON")
        return problem_response(
            request, 400, "malformed_json", f"the request body is not valid JSON: {reason}"
        )
    # Only where and why: the offending input may be large or private.
    cleaned = [
        {
            "loc": list(item.get("loc", ())),
            "msg": str(item.get("msg", "")),
            "type": item.get("type"),
        }
        for item in errors
    ]
    summary = "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in cleaned[:3]
    )
    return problem_response(
        request, 422, "invalid_input", f"the request is not valid: {summary}", {"errors": cleaned}
    )


class BodyTooLarge(HTTPException):
    """A request body over the router's ``max_body_bytes``.

    An ``HTTPException`` so that FastAPI's body reading lets it through unchanged.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


class _LimitedRequest(Request):
    """A request whose body may not exceed ``max_body_bytes``, chunked or not."""

    max_body_bytes = 0

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            limit = self.max_body_bytes
            declared = self.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def problem_route_class(max_body_bytes: int) -> type[APIRoute]:
    """An ``APIRoute`` class answering every error with a problem document."""
    limited = type("LimitedRequest", (_LimitedRequest,), {"max_body_bytes": max_body_bytes})

    class ProblemRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handle = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handle(limited(request.scope, request.receive))
                except ProblemError as problem:
                    return problem_response(
                        request, problem.status, problem.code, problem.detail, problem.extensions
                    )
                except BodyTooLarge as error:
                    return problem_response(request, 413, "body_too_large", str(error.detail))
                except RequestValidationError as error:
                    return validation_problem(request, error)
                except WorkflowError as error:
                    return error_problem(request, error)
                except HTTPException:
                    raise
                except Exception:
                    logger.exception("sayiir: %s %s failed", request.method, request.url.path)
                    return problem_response(
                        request, 500, "internal_error", "the server could not handle the request"
                    )

            return guarded

    return ProblemRoute


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: each status answers with a problem document."""
    return {
        status: {"model": ProblemDocument, "description": "RFC 9457 problem document"}
        for status in statuses
    }
