"""The workflows of the project: every ``Workflow`` defined in an app's ``workflows.py``.

``autodiscover()`` (run by the app's ``ready()``) imports ``<app>.workflows`` for every
installed app that has one. An import that fails is kept, not raised, so that
``manage.py check`` (and every command that runs the checks) reports it with its
traceback while ``migrate`` and the admin still work; two workflows with one id are
reported the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import traceback
from dataclasses import dataclass, field

from django.apps import apps

from sayiir_core import Workflow

MODULE_NAME = "workflows"


@dataclass(frozen=True, slots=True)
class ImportFailure:
    """A ``workflows.py`` that raised on import."""

    module: str
    error: str
    traceback: str


@dataclass(slots=True)
class Registry:
    """What autodiscovery found."""

    workflows: dict[str, Workflow] = field(default_factory=dict)
    # The modules each workflow id was found in (two modules, or two objects: a clash).
    origins: dict[str, list[str]] = field(default_factory=dict)
    failures: list[ImportFailure] = field(default_factory=list)
    discovered: bool = False

    def add(self, workflow: Workflow, module: str) -> None:
        existing = self.workflows.get(workflow.workflow_id)
        if existing is workflow:
            return
        self.origins.setdefault(workflow.workflow_id, []).append(module)
        if existing is None:
            self.workflows[workflow.workflow_id] = workflow

    @property
    def duplicates(self) -> dict[str, list[str]]:
        """Workflow ids defined more than once, with the modules defining them."""
        return {wf_id: modules for wf_id, modules in self.origins.items() if len(modules) > 1}


_registry = Registry()
_lock = threading.Lock()


def autodiscover() -> Registry:
    """Import every installed app's ``workflows`` module once and collect its workflows."""
    with _lock:
        if _registry.discovered:
            return _registry
        for config in apps.get_app_configs():
            name = f"{config.name}.{MODULE_NAME}"
            if not _has_package(config.name) or importlib.util.find_spec(name) is None:
                continue
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                _registry.failures.append(
                    ImportFailure(name, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
                continue
            for value in vars(module).values():
                if isinstance(value, Workflow):
                    _registry.add(value, name)
        _registry.discovered = True
        return _registry


def _has_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.submodule_search_locations is not None


def registry() -> Registry:
    """The discovered workflows (discovering them first if needed)."""
    return autodiscover()


def workflows() -> list[Workflow]:
    """Every discovered workflow, one per id."""
    return list(autodiscover().workflows.values())


def get_workflow(workflow_id: str) -> Workflow:
    """The discovered workflow with that id; ``LookupError`` naming the known ones."""
    found = autodiscover().workflows.get(workflow_id)
    if found is None:
        known = ", ".join(sorted(autodiscover().workflows)) or "none"
        raise LookupError(
            f"no workflow {workflow_id!r} in any app's workflows.py (discovered: {known})"
        )
    return found
