"""Bad inputs get typed errors that say what to do (issue 10, items 8, 11 and 12)."""

from __future__ import annotations

import pytest

from sayiir_core import (
    Backend,
    DefinitionMismatchError,
    Flow,
    Worker,
    WorkflowClient,
    cancel_workflow,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
)
from sayiir_core.ids import MAX_INSTANCE_ID_LENGTH
from sayiir_core.runtime.loop_thread import run_sync


def test_use_existing_refuses_an_instance_of_another_workflow(durable_backend: Backend) -> None:
    first = Flow("first").then(lambda x: x + 1).build()
    other = Flow("other").then(lambda x: x * 2).build()
    client = WorkflowClient(durable_backend)
    client.submit(first, "shared-id", 1)
    reusing = WorkflowClient(durable_backend, conflict_policy="use_existing")
    with pytest.raises(DefinitionMismatchError, match="belongs to workflow 'first'"):
        reusing.submit(other, "shared-id", 1)
    with pytest.raises(DefinitionMismatchError, match="choose another instance id"):
        run_durable_workflow(
            other, "shared-id", 1, backend=durable_backend, conflict_policy="use_existing"
        )
    # The same workflow still gets the existing instance, as documented.
    again = reusing.submit(first, "shared-id", 5)
    assert again.workflow_id == "first"
    assert again.status == client.status("shared-id").status


BAD_IDS = {
    "NUL byte": ("a\x00b", "NUL"),
    "too long": ("x" * (MAX_INSTANCE_ID_LENGTH + 1), "the limit is 255"),
    "a million characters": ("x" * 1_000_000, "the limit is 255"),
    "lone surrogate": ("a\ud800b", "lone surrogate"),
    "empty": ("", "non-empty"),
}


@pytest.mark.parametrize("bad_id", list(BAD_IDS))
def test_one_instance_id_rule_for_every_backend(durable_backend: Backend, bad_id: str) -> None:
    instance_id, says = BAD_IDS[bad_id]
    workflow = Flow("ids").then(lambda x: x).build()
    client = WorkflowClient(durable_backend)
    with pytest.raises(ValueError, match=says):
        client.submit(workflow, instance_id, 1)
    with pytest.raises(ValueError, match=says):
        run_durable_workflow(workflow, instance_id, 1, backend=durable_backend)
    with pytest.raises(ValueError, match=says):
        client.status(instance_id)
    with pytest.raises(ValueError, match=says):
        client.cancel(instance_id)
    with pytest.raises(ValueError, match=says):
        client.send_signal(instance_id, "go", None)
    with pytest.raises(ValueError, match=says):
        resume_workflow(workflow, instance_id, durable_backend)


def test_the_longest_instance_id_and_any_unicode_are_accepted(durable_backend: Backend) -> None:
    workflow = Flow("ids-ok").then(lambda x: x + 1).build()
    for instance_id in ("é" * MAX_INSTANCE_ID_LENGTH, "订单-42 🚀", "x"):
        status = run_durable_workflow(workflow, instance_id, 1, backend=durable_backend)
        assert status.output == 2
        assert WorkflowClient(durable_backend).status(instance_id).output == 2


def test_a_non_string_instance_id_is_a_type_error(durable_backend: Backend) -> None:
    workflow = Flow("ids-type").then(lambda x: x).build()
    with pytest.raises(TypeError, match="instance_id must be a str, got int"):
        WorkflowClient(durable_backend).submit(workflow, 42, 1)  # type: ignore[arg-type]


def _unbuilt() -> Flow:
    return Flow("orders").then(lambda x: x)


def test_a_flow_without_build_is_a_type_error_that_says_so(durable_backend: Backend) -> None:
    says = r"call \.build\(\) on it first"
    with pytest.raises(TypeError, match=says):
        run_workflow(_unbuilt(), 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=says):
        run_durable_workflow(_unbuilt(), "f-1", 1, backend=durable_backend)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=says):
        resume_workflow(_unbuilt(), "f-1", durable_backend)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=says):
        WorkflowClient(durable_backend).submit(_unbuilt(), "f-1", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=says):
        Worker("w", durable_backend).start([_unbuilt()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=says):
        run_sync(Worker("w", durable_backend).run([_unbuilt()]))  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"pass \[workflow\]"):
        Worker("w", durable_backend).start(_unbuilt().build())  # type: ignore[arg-type]
    assert list(WorkflowClient(durable_backend).list_instances()) == []


@pytest.mark.parametrize("url", ["sqlite:///tmp/x.db", "memory://"])
def test_a_url_passed_as_backend_says_to_use_backend_from_url(url: str) -> None:
    workflow = Flow("urls").then(lambda x: x).build()
    says = r"backend_from_url\("
    with pytest.raises(TypeError, match=says):
        run_workflow(workflow, 1, instance_id="u-1", backend=url)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=says):
        run_durable_workflow(workflow, "u-1", 1, backend=url)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=says):
        WorkflowClient(url)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=says):
        Worker("w", url)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=says):
        cancel_workflow("u-1", url)  # type: ignore[arg-type]
