"""Starting instances over HTTP: typed per-workflow routes, ids and ``Idempotency-Key``.

Each workflow whose id can be a literal path segment gets its own
``POST /workflows/<id>/instances`` operation whose body model carries the workflow's
input type (so OpenAPI shows it and FastAPI validates it); the generic
``/workflows/{workflow_id}/instances`` route validates the input itself.
"""

from __future__ import annotations

import inspect
import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import URLPath

from sayiir_core import AsyncWorkflowClient, InstanceAlreadyExistsError, Workflow
from sayiir_fastapi.dependencies import WorkflowClientDep
from sayiir_fastapi.inputs import WorkflowInput
from sayiir_fastapi.problems import ProblemError, problem_responses
from sayiir_fastapi.schemas import (
    INSTANCE_ID_PATTERN,
    MAX_INSTANCE_ID_LENGTH,
    InstanceOut,
)

if TYPE_CHECKING:
    from sayiir_fastapi.integration import Sayiir

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Gives the instance id; a retried request returns the same instance",
    ),
]


class Submissions:
    """Starting instances, shared by the typed per-workflow routes and the generic one."""

    def __init__(self, sayiir: Sayiir, inputs: dict[str, WorkflowInput]) -> None:
        self._sayiir = sayiir
        self._inputs = inputs
        self._locations = InstanceLocations()

    def input_of(self, workflow_id: str) -> WorkflowInput:
        described = self._inputs.get(workflow_id)
        if described is None:
            raise ProblemError(
                404,
                "workflow_not_found",
                f"no workflow {workflow_id!r} here; known: {sorted(self._inputs)}",
            )
        return described

    def add_typed_route(self, router: APIRouter, described: WorkflowInput) -> None:
        """``POST /workflows/<id>/instances`` with the workflow's own body model (OpenAPI)."""
        workflow_id = described.workflow.workflow_id

        async def endpoint(
            request: Request,
            response: Response,
            client: AsyncWorkflowClient,
            body: BaseModel,
            idempotency_key: str | None = None,
        ) -> InstanceOut:
            submitted = body.model_dump(mode="json")
            return await self.submit(
                request,
                response,
                client,
                described,
                submitted["instance_id"],
                submitted["input"],
                idempotency_key,
            )

        # The body type is made at run time: give FastAPI a signature that names it.
        keyword = inspect.Parameter.KEYWORD_ONLY
        endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("request", keyword, annotation=Request),
                inspect.Parameter("response", keyword, annotation=Response),
                inspect.Parameter("client", keyword, annotation=WorkflowClientDep),
                inspect.Parameter("body", keyword, annotation=described.body_model),
                inspect.Parameter(
                    "idempotency_key", keyword, default=None, annotation=IdempotencyKey
                ),
            ],
            return_annotation=InstanceOut,
        )
        router.add_api_route(
            f"/workflows/{workflow_id}/instances",
            endpoint,
            methods=["POST"],
            status_code=201,
            response_model=InstanceOut,
            responses=problem_responses(409),
            summary=f"Start {workflow_id}",
            description=f"Start an instance of workflow `{workflow_id}`.",
            name=f"sayiir_submit_{workflow_id}",
        )

    async def submit(
        self,
        request: Request,
        response: Response,
        client: AsyncWorkflowClient,
        described: WorkflowInput,
        instance_id: str | None,
        value: Any,
        idempotency_key: str | None,
    ) -> InstanceOut:
        if idempotency_key is not None:
            _check_key(idempotency_key)
            if instance_id is not None and instance_id != idempotency_key:
                raise ProblemError(
                    422,
                    "conflicting_ids",
                    "the body's instance_id and the Idempotency-Key header differ",
                )
            instance_id = idempotency_key
        workflow = described.workflow
        new_id = instance_id if instance_id is not None else uuid.uuid4().hex
        try:
            status = await client.submit(workflow, new_id, value)
        except InstanceAlreadyExistsError:
            if idempotency_key is None:
                raise
            await self._check_same_request(client, workflow, new_id, value)
            status = await client.status(new_id)
            response.status_code = 200
        else:
            self._sayiir.events.publish(new_id)
        response.headers["Location"] = self._locations.of(request, new_id)
        return InstanceOut.of(status)

    async def _check_same_request(
        self, client: AsyncWorkflowClient, workflow: Workflow, instance_id: str, value: Any
    ) -> None:
        """A retried request may reuse its key; another request may not."""
        record = await client.backend.get_record(instance_id)
        codec = self._sayiir.codec
        same = (
            record is not None
            and record.workflow_id == workflow.workflow_id
            and codec.decode(record.input) == codec.decode(codec.encode(value))
        )
        if not same:
            raise ProblemError(
                422,
                "idempotency_key_reused",
                f"Idempotency-Key {instance_id!r} was used for another request",
                instance_id=instance_id,
            )


class InstanceLocations:
    """The ``Location`` of a new instance: ``request.url_for("sayiir_instance", ...)``.

    ``url_for`` walks every route of the app on each call, which cost as much CPU as
    storing the instance; the path is looked up once per router providing it, then
    only the id changes. Starlette puts a ``str`` path parameter in as it is, so
    replacing a placeholder gives the same URL.
    """

    _PLACEHOLDER = "{sayiir-instance-id}"  # braces: never in a route path of its own

    def __init__(self) -> None:
        # By id of the router (routers are unhashable), kept with it so the id stays its.
        self._paths: dict[int, tuple[Any, URLPath]] = {}

    def of(self, request: Request, instance_id: str) -> str:
        # What Request.url_for does, with the route's path looked up once.
        provider = request.scope.get("router") or request.scope.get("app")
        if provider is None:
            return str(request.url_for("sayiir_instance", instance_id=instance_id))
        known = self._paths.get(id(provider))
        if known is not None and known[0] is provider:
            path = known[1]
        else:
            path = provider.url_path_for("sayiir_instance", instance_id=self._PLACEHOLDER)
            self._paths[id(provider)] = (provider, path)
        located = URLPath(
            path.replace(self._PLACEHOLDER, instance_id), protocol=path.protocol, host=path.host
        )
        return str(located.make_absolute_url(base_url=request.base_url))


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_INSTANCE_ID_LENGTH or not re.match(INSTANCE_ID_PATTERN, key):
        raise ProblemError(
            422,
            "invalid_input",
            f"Idempotency-Key must be 1-{MAX_INSTANCE_ID_LENGTH} characters without '/' "
            "or control characters",
        )


def input_problem(error: ValidationError) -> ProblemError:
    errors = [
        {"loc": ["body", "input", *item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in error.errors()
    ]
    summary = "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in errors[:3]
    )
    return ProblemError(422, "invalid_input", f"the request is not valid: {summary}", errors=errors)
