"""Sayiir for Celery: an existing Celery fleet runs the steps of durable workflows.

``SayiirCelery(app, backend=..., workflows=[...])`` registers one task on the app; every
step is claimed, run and checkpointed by the task of whichever worker gets its Celery
message (a chain's next step by the task that ran the one before, for up to
``continue_for`` seconds). See ``docs/integrations/celery.md``.
"""

from __future__ import annotations

from sayiir_celery.bridge import STEP_TASK, SWEEP_TASK, SayiirCelery
from sayiir_celery.client import BridgeClient
from sayiir_celery.config_check import CeleryConfigError, ConfigProblem
from sayiir_celery.messages import MessageError, StepMessage
from sayiir_celery.routing import Route

__all__ = [  # noqa: RUF022 - plain sorted(), the order tests/unit/test_public_api.py checks
    "BridgeClient",
    "CeleryConfigError",
    "ConfigProblem",
    "MessageError",
    "Route",
    "STEP_TASK",
    "SWEEP_TASK",
    "SayiirCelery",
    "StepMessage",
]
