"""The step message: the JSON body of the bridge's one Celery task.

One message names one attempt of one step of one instance, and the workflow definition
it belongs to. It carries no step input (that waits in the workflow database, published
with the step) and no result: the receiving worker claims the step, runs it and
checkpoints it. ``token`` is the claim token of the advance that sent the message: it
tells in logs which advance sent which copy. Whether a copy may still run is decided
by the step's own fencing token when the worker claims it, so a copy of a step that has
been checkpointed, cancelled or taken by another worker claims nothing and is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sayiir_core.backends.step_queue import StepRef

VERSION = 1


class MessageError(ValueError):
    """A message the bridge cannot read (another version, a hand-written one...)."""


@dataclass(frozen=True, slots=True)
class StepMessage:
    """What one Celery message of the bridge says."""

    instance_id: str
    step_key: str
    attempt: int
    workflow_id: str
    definition_hash: str
    token: int = 0

    @property
    def ref(self) -> StepRef:
        return StepRef(self.instance_id, self.step_key, self.attempt)

    def to_json(self) -> dict[str, Any]:
        """The message body: plain JSON types only."""
        return {
            "v": VERSION,
            "instance": self.instance_id,
            "step": self.step_key,
            "attempt": self.attempt,
            "workflow": self.workflow_id,
            "definition": self.definition_hash,
            "token": self.token,
        }

    @classmethod
    def from_json(cls, body: object) -> StepMessage:
        """Read a message body; ``MessageError`` says what is wrong with it."""
        if not isinstance(body, Mapping):
            raise MessageError(f"a step message is a JSON object, not {type(body).__name__}")
        if body.get("v") != VERSION:
            raise MessageError(
                f"step message version {body.get('v')!r}; this bridge reads {VERSION}"
            )
        try:
            message = cls(
                instance_id=body["instance"],
                step_key=body["step"],
                attempt=body["attempt"],
                workflow_id=body["workflow"],
                definition_hash=body["definition"],
                token=body.get("token", 0),
            )
        except KeyError as missing:
            raise MessageError(f"step message without {missing}") from None
        strings = (message.instance_id, message.step_key, message.workflow_id)
        if not all(isinstance(value, str) and value for value in strings):
            raise MessageError(f"step message with an empty or non-string id: {dict(body)!r}")
        if not isinstance(message.definition_hash, str):
            raise MessageError(f"step message definition must be a string: {dict(body)!r}")
        for number in (message.attempt, message.token):
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise MessageError(
                    f"step message attempt/token must be integers >= 0: {dict(body)!r}"
                )
        return message
