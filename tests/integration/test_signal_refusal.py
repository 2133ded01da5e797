"""Signals nobody will read are refused (issue 10, item 10).

A client that knows the instance's workflow refuses a name that workflow never waits
for (``UnknownSignalError``); every backend refuses the signal beyond
``MAX_BUFFERED_SIGNALS`` per instance (``SignalBufferFullError``, the contract suite
proves it per backend; here the CLI shows it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sayiir_core import (
    Flow,
    InstanceNotFoundError,
    InvalidStateError,
    SqliteBackend,
    UnknownSignalError,
    Workflow,
    WorkflowClient,
    run_durable_workflow,
)
from sayiir_core.backends.rules import MAX_BUFFERED_SIGNALS
from sayiir_core.cli import main
from sayiir_core.runtime.control import InstanceControl
from sayiir_core.runtime.loop_thread import run_sync


def double(x: int) -> int:
    return x * 2


def pick(x: int) -> str:
    return "big" if x > 10 else "small"


def keep(x: object) -> object:
    return x


child = Flow("child").then(double, name="child_double").wait_for_signal("child_ok").build()

# Signal waits on the main line, in a fork branch, in a route branch, in the default
# branch and in a child flow: each name counts, each once.
orders = (
    Flow("orders")
    .then(double)
    .wait_for_signal("approve", name="approval")
    .fork()
    .branch(keep, name="left")
    .branch(keep, name="right_first")
    .join(keep, name="joined")
    .route(pick, keys=["big", "small"])
    .branch("big", keep, name="big_keep")
    .branch("small", keep, name="small_keep")
    .done()
    .then_flow(child)
    .wait_for_signal("approve", name="second_approval")
    .build()
)
quiet = Flow("quiet").then(double).build()


def test_signal_names_cover_branches_and_child_flows_once_each() -> None:
    fork_and_route = (
        Flow("waits")
        .fork()
        .branch(keep, name="a")
        .branch(keep, name="b")
        .join(keep, name="j")
        .wait_for_signal("in_line", name="w1")
        .route(pick, keys=["big", "small"])
        .branch("big", keep, name="big_keep")
        .branch("small", keep, name="small_keep")
        .done()
        .then_flow(child)
        .wait_for_signal("in_line", name="w2")
        .build()
    )
    assert fork_and_route.signal_names == ("in_line", "child_ok")
    assert orders.signal_names == ("approve", "child_ok")
    assert quiet.signal_names == ()


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[InstanceControl]:
    backend = SqliteBackend(tmp_path / "signals.db")
    async with backend:
        yield InstanceControl(backend)


async def test_a_known_workflow_refuses_a_name_it_never_waits_for(
    control: InstanceControl,
) -> None:
    await control.submit(orders, "o-1", 3)
    control.know(orders)

    with pytest.raises(UnknownSignalError) as refused:
        await control.send_signal("o-1", "aprove", {"ok": True})

    assert str(refused.value) == (
        "signal 'aprove' not sent: workflow 'orders' of instance 'o-1' never waits for it; "
        "it waits for 'approve', 'child_ok'"
    )
    assert isinstance(refused.value, InvalidStateError)  # 409 in sayiir_fastapi
    assert refused.value.awaited == ("approve", "child_ok")
    assert (refused.value.instance_id, refused.value.workflow_id) == ("o-1", "orders")
    assert await control.backend.next_signal("o-1", "aprove") is None
    assert "signal_sent" not in [event.kind for event in await control.history("o-1")]

    # Names it waits for, in a child flow too, go through.
    await control.send_signal("o-1", "approve", {"ok": True})
    await control.send_signal("o-1", "child_ok", 1)
    assert await control.backend.next_signal("o-1", "child_ok") is not None


async def test_a_workflow_without_signal_waits_refuses_every_signal(
    control: InstanceControl,
) -> None:
    control.know(quiet)
    await control.submit(quiet, "q-1", 1)

    with pytest.raises(UnknownSignalError, match="it waits for no signal at all"):
        await control.send_signal("q-1", "go", None)


async def test_an_unknown_workflow_or_definition_is_left_to_the_backend_bound(
    control: InstanceControl,
) -> None:
    await InstanceControl(control.backend).submit(quiet, "q-1", 1)
    # Never told about "quiet": the name cannot be judged, the signal is buffered.
    await control.send_signal("q-1", "go", 1)
    control.know(orders)  # knows another workflow only
    await control.send_signal("q-1", "go", 2)

    # Same id, another definition: the instance's graph is not the one known here.
    changed = Flow("quiet").then(double).wait_for_signal("go").build()
    control.know(changed)
    await control.send_signal("q-1", "elsewhere", 3)
    kinds = [event.kind for event in await control.history("q-1")]
    assert kinds.count("signal_sent") == 3


async def test_an_unknown_instance_is_still_not_found(control: InstanceControl) -> None:
    control.know(orders)
    with pytest.raises(InstanceNotFoundError, match="no workflow instance 'nope'"):
        await control.send_signal("nope", "approve", 1)


def test_know_takes_built_workflows_only(tmp_path: Path) -> None:
    control = InstanceControl(SqliteBackend(tmp_path / "x.db"))
    with pytest.raises(TypeError, match=r"call \.build\(\) on it first"):
        control.know(Flow("orders").then(double))  # type: ignore[arg-type]


def test_cli_signal_to_a_full_buffer_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.db"
    backend = SqliteBackend(db)
    approval: Workflow = Flow("approval").then(double).wait_for_signal("approve").build()
    run_durable_workflow(approval, "a-1", 2, backend=backend)

    async def fill() -> None:
        async with backend:
            for n in range(MAX_BUFFERED_SIGNALS):
                await backend.send_signal("a-1", "other", b"%d" % n, 1.0)

    run_sync(fill())
    capsys.readouterr()

    # A name it does not wait for now: the awaited one would still be taken.
    assert main(["signal", "a-1", "other", "--payload", "1", "--db", f"sqlite:///{db}"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "error: signal 'other' not sent: workflow instance 'a-1' already buffers "
        f"{MAX_BUFFERED_SIGNALS} unconsumed signals (the most it may); they are consumed "
        "by its wait_for_signal steps\n"
    )


def test_a_client_given_workflows_refuses_and_reads_the_input(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'client.db'}"
    with WorkflowClient.from_url(url, workflows=[orders]) as client:
        client.submit(orders, "o-client", {"n": 1})
        with pytest.raises(UnknownSignalError, match="aprove"):
            client.send_signal("o-client", "aprove", None)
        client.send_signal("o-client", "approve", None)
        assert client.input("o-client") == {"n": 1}
        with pytest.raises(InstanceNotFoundError):
            client.input("o-missing")
