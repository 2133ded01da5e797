"""A workflow's input at the HTTP edge: its JSON schema, its validation, its body model.

The type comes from the first step's annotation (``sayiir_core.render.entry_input_type``):
a pydantic model, a ``TypedDict``, ``list[int]``... An input that fails it is refused
with 422 before anything is stored. What is submitted is the validated value in JSON
form, which the first step validates again as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from sayiir_core import Workflow
from sayiir_core.render import entry_input_type
from sayiir_fastapi.schemas import INSTANCE_ID_PATTERN, MAX_INSTANCE_ID_LENGTH

# Workflow ids that can be a literal URL path segment (each gets its own typed operation).
_PATH_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")


@dataclass(frozen=True, slots=True)
class WorkflowInput:
    """How one workflow's input is checked and described."""

    workflow: Workflow
    annotation: Any  # None: anything JSON
    adapter: TypeAdapter[Any]
    schema: dict[str, Any]
    body_model: type[BaseModel]

    def validate(self, value: Any) -> Any:
        """The input in JSON form; raises pydantic's ``ValidationError``."""
        if self.annotation is None:
            return value
        return self.adapter.dump_python(self.adapter.validate_python(value), mode="json")


def describe_input(workflow: Workflow, model_name: str) -> WorkflowInput:
    annotation = entry_input_type(workflow)
    adapter: TypeAdapter[Any]
    try:
        adapter = TypeAdapter(annotation if annotation is not None else Any)
        schema = adapter.json_schema()
    except Exception:
        # An annotation pydantic cannot describe (a plain class): accept any JSON.
        annotation = None
        adapter = TypeAdapter(Any)
        schema = {}
    input_field: Any = (
        (Any, Field(default=None, description="Any JSON value"))
        if annotation is None
        else (annotation, Field(..., description=f"Input of workflow {workflow.workflow_id}"))
    )
    body_model = create_model(
        model_name,
        __config__=ConfigDict(extra="forbid"),
        instance_id=(
            str | None,
            Field(
                default=None,
                min_length=1,
                max_length=MAX_INSTANCE_ID_LENGTH,
                pattern=INSTANCE_ID_PATTERN,
                description="The new instance's id; made up when absent",
            ),
        ),
        input=input_field,
    )
    return WorkflowInput(workflow, annotation, adapter, schema, body_model)


def describe_inputs(workflows: list[Workflow]) -> dict[str, WorkflowInput]:
    """Each workflow's input description, with OpenAPI model names kept apart."""
    used: set[str] = set()
    described = {}
    for workflow in workflows:
        base = "".join(
            part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", workflow.workflow_id)
        )
        name = f"{base or 'Workflow'}Submission"
        suffix = 2
        while name in used:
            name = f"{base}Submission{suffix}"
            suffix += 1
        used.add(name)
        described[workflow.workflow_id] = describe_input(workflow, name)
    return described


def path_safe(workflow_id: str) -> bool:
    return bool(_PATH_SAFE.match(workflow_id))


__all__ = ["ValidationError", "WorkflowInput", "describe_inputs", "path_safe"]
