"""The ``sayiir`` command line, end to end over a real SQLite file.

In-process calls go through ``main([...])``; consecutive calls share nothing but the
database file, as separate invocations would. The worker runs as a real subprocess.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import sayiir_core
from sayiir_core.backends.url import backend_from_url
from sayiir_core.cli import build_parser, main
from sayiir_core.cli.output import ASCII, UNICODE, symbols_for
from sayiir_core.runtime.loop_thread import run_sync

REPO_ROOT = Path(sayiir_core.__file__).resolve().parents[1]

FLOWS = """
import pathlib
import time

from sayiir_core import Flow, RetryPolicy, task


@task
def double(x: int) -> int:
    return x * 2


@task
def add_one(x: int) -> int:
    return x + 1


@task(retries=RetryPolicy(max_retries=1, initial_delay_secs=0.01))
def charge(amount: int) -> dict:
    # Fails until the test "fixes" the card by creating this file in the cwd.
    if pathlib.Path("card-fixed").exists():
        return {"charged": amount}
    raise ValueError("card declined")


@task
def slow(x: int) -> int:
    pathlib.Path("slow-started").touch()
    time.sleep(1.0)
    return x


greet = Flow("greet").then(double).then(add_one).build()
unbuilt = Flow("unbuilt").then(double)
payment = Flow("payment").then(double).then(charge).build()
approval = (
    Flow("approval")
    .then(double)
    .wait_for_signal("approve", name="approval")
    .then(lambda decision: decision, name="after")
    .build()
)
sluggish = Flow("sluggish").then(slow).then(add_one).build()
not_a_workflow = 42
"""


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh workflow module in a fresh cwd; returns its (unique) module name."""
    name = f"cli_flows_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FLOWS)
    monkeypatch.chdir(tmp_path)
    # The CLI puts the cwd on sys.path, as uvicorn does; undo that after the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("SAYIIR_DATABASE_URL", raising=False)
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite database that exists (inspect and control commands never create one)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run_sync(backend_from_url(url).open())
    return url


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> Any:
    """Run a command with ``--json``; stdout must be exactly one JSON document."""
    capsys.readouterr()
    assert main([*argv, "--json"]) == code
    return json.loads(capsys.readouterr().out)


# -- run ------------------------------------------------------------------------------


def test_run_completes_showing_each_step(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{flows}:greet", "--input", "3", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "✓ double (attempt 1, " in out
    assert "✓ add_one (attempt 1, " in out
    assert out.index("✓ double") < out.index("✓ add_one") < out.index("✔ completed")
    assert re.search(r"^status +completed$", out, re.MULTILINE)
    assert "output    7" in out
    # The generated instance id is printed: <workflow id>-<8 hex digits>.
    instance_id = next(line for line in out.splitlines() if line.startswith("instance"))
    assert instance_id.split()[-1].startswith("greet-")
    assert len(instance_id.split()[-1]) == len("greet-") + 8


def test_run_json_is_one_document_with_iso_times(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["run", f"{flows}:greet", "--input", "3", "--db", db, "--instance-id", "g-1"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    status = json.loads(captured.out)
    assert status["status"] == "completed"
    assert status["output"] == 7
    assert status["instance_id"] == "g-1"
    created_at = datetime.fromisoformat(status["created_at"])
    assert created_at.tzinfo is not None
    assert status["created_at"] == created_at.isoformat()  # ISO 8601, "T" separator
    # Progress goes to stderr so stdout stays parseable.
    assert "✓ double" in captured.err


def test_run_builds_an_unbuilt_flow(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_json(capsys, "run", f"{flows}:unbuilt", "--input", "21", "--db", db)
    assert status["output"] == 42


def test_run_reads_input_from_a_file(
    flows: str, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "input.json").write_text("5")
    status = run_json(capsys, "run", f"{flows}:greet", "--input", "@input.json", "--db", db)
    assert status["output"] == 11


def test_run_on_the_memory_backend(flows: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_json(capsys, "run", f"{flows}:greet", "--input", "1", "--db", "memory://")
    assert status["output"] == 3


def test_failed_run_exits_1_and_shows_the_error(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", f"{flows}:payment", "--input", "3", "--db", db, "--instance-id", "p-1"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "✗ charge (attempt 1, " in out
    assert "ValueError: card declined" in out
    assert "↻ charge: retry scheduled in " in out
    assert "✗ charge (attempt 2, " in out
    assert re.search(r"^status +failed$", out, re.MULTILINE)
    assert "failed step  charge" in out
    assert "sayiir retry-from p-1 charge" in out


def test_parked_run_then_signal_then_resume_completes(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{flows}:approval"
    assert main(["run", target, "--input", "2", "--instance-id", "a-1", "--db", db]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^status +awaiting_signal$", out, re.MULTILINE)
    assert "awaiting signal 'approve'" in out
    assert f"sayiir signal a-1 approve --payload JSON --db {db}" in out
    assert f"sayiir resume {target} a-1 --db {db}" in out

    assert main(["signal", "a-1", "approve", "--payload", '{"ok": true}', "--db", db]) == 0
    assert "Signal 'approve' sent to a-1." in capsys.readouterr().out

    assert main(["resume", target, "a-1", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "✉ approval: signal received" in out
    assert "✓ after (attempt 1, " in out
    assert re.search(r"^status +completed$", out, re.MULTILINE)
    assert 'output    {"ok": true}' in out


def test_signal_with_its_workflow_refuses_a_name_it_never_waits_for(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{flows}:approval"
    assert main(["run", target, "--input", "2", "--instance-id", "a-3", "--db", db]) == 0
    capsys.readouterr()

    assert main(["signal", "a-3", "aprove", "--workflow", target, "--db", db]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "'aprove'" in err
    assert "'approve'" in err  # the names it does wait for
    kinds = [event["kind"] for event in run_json(capsys, "history", "a-3", "--db", db)["events"]]
    assert "signal_sent" not in kinds  # refused before anything was written

    argv = ["signal", "a-3", "approve", "--payload", "true", "--workflow", target, "--db", db]
    assert main(argv) == 0
    assert "Signal 'approve' sent to a-3." in capsys.readouterr().out


def test_signal_workflow_must_be_the_instances(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["run", f"{flows}:approval", "--input", "1", "--instance-id", "a-4", "--db", db]) == 0
    )
    capsys.readouterr()
    argv = ["signal", "a-4", "approve", "--workflow", f"{flows}:greet", "--db", db]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        "error: instance 'a-4' is an instance of workflow 'approval', not of 'greet' (--workflow)\n"
    )
    assert main(["signal", "a-4", "approve", "--workflow", f"{flows}:nope", "--db", db]) == 1
    assert "has no attribute 'nope'" in capsys.readouterr().err


def test_parked_run_with_json_keeps_hints_off_stdout(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["run", f"{flows}:approval", "--input", "2", "--instance-id", "a-2", "--db", db]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "awaiting_signal"
    assert "sayiir signal a-2 approve" in captured.err


def test_conflict_policy(flows: str, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", f"{flows}:greet", "--input", "1", "--instance-id", "same", "--db", db]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "same" in err
    assert "exists" in err
    status = run_json(capsys, *argv, "--conflict-policy", "use_existing")
    assert status["output"] == 3


def test_database_from_environment(
    flows: str, db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAYIIR_DATABASE_URL", db)
    assert main(["run", f"{flows}:greet", "--input", "1", "--instance-id", "env-1"]) == 0
    monkeypatch.delenv("SAYIIR_DATABASE_URL")
    assert run_json(capsys, "status", "env-1", "--db", db)["status"] == "completed"


def test_default_database_is_sayiir_db_in_the_cwd(
    flows: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{flows}:greet", "--input", "1", "--instance-id", "d-1"]) == 0
    assert (tmp_path / "sayiir.db").exists()
    status = run_json(capsys, "status", "d-1", "--db", f"sqlite:///{tmp_path / 'sayiir.db'}")
    assert status["output"] == 3


def test_resume_with_another_workflow_is_refused(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["run", f"{flows}:approval", "--input", "1", "--instance-id", "m-1", "--db", db]) == 0
    )
    capsys.readouterr()
    assert main(["resume", f"{flows}:greet", "m-1", "--db", db]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "belongs to workflow 'approval'" in err
    assert "Traceback" not in err


# -- inspect ------------------------------------------------------------------------


def test_status_history_and_list_as_json(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{flows}:greet", "--input", "2", "--instance-id", "j-1", "--db", db]) == 0

    status = run_json(capsys, "status", "j-1", "--db", db)
    assert status["status"] == "completed"
    assert status["workflow_id"] == "greet"
    assert status["output"] == 5

    history = run_json(capsys, "history", "j-1", "--db", db)
    assert history["instance_id"] == "j-1"
    kinds = [event["kind"] for event in history["events"]]
    assert kinds[0] == "started"
    assert kinds[-1] == "completed"
    assert kinds.count("task_completed") == 2
    times = [event["at"] for event in history["events"]]
    assert times == [datetime.fromisoformat(at).isoformat() for at in times]

    listed = run_json(capsys, "list", "--db", db)
    assert [item["instance_id"] for item in listed["items"]] == ["j-1"]
    assert listed["next_cursor"] is None


def test_human_tables_are_aligned(flows: str, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", f"{flows}:greet", "--input", "2", "--instance-id", "t-1", "--db", db]) == 0
    capsys.readouterr()

    assert main(["history", "t-1", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "KIND", "STEP", "ATTEMPT", "WORKER", "DETAIL"]
    kind_column = lines[0].index("KIND")
    assert all(line[kind_column - 2 : kind_column] == "  " for line in lines[1:])
    assert any("task_completed" in line and "double" in line for line in lines)

    assert main(["list", "--db", db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["INSTANCE", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "NOTE"]
    assert lines[1].split()[:3] == ["t-1", "greet", "completed"]


def test_list_pages_with_a_cursor_and_filters(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for number in range(3):
        main(["run", f"{flows}:greet", "--input", "1", "--instance-id", f"l-{number}", "--db", db])
    main(["run", f"{flows}:payment", "--input", "1", "--instance-id", "l-bad", "--db", db])
    capsys.readouterr()

    assert main(["list", "--workflow", "greet", "--limit", "2", "--db", db]) == 0
    out = capsys.readouterr().out
    cursor_line = next(line for line in out.splitlines() if line.startswith("next cursor: "))
    cursor = cursor_line.removeprefix("next cursor: ")
    first = [line.split()[0] for line in out.splitlines()[1:3]]

    rest = run_json(
        capsys, "list", "--workflow", "greet", "--limit", "2", "--cursor", cursor, "--db", db
    )
    assert rest["next_cursor"] is None
    second = [item["instance_id"] for item in rest["items"]]
    assert sorted(first + second) == ["l-0", "l-1", "l-2"]

    failed = run_json(capsys, "list", "--status", "failed", "--db", db)
    assert [item["instance_id"] for item in failed["items"]] == ["l-bad"]
    assert failed["items"][0]["error"].startswith("ValueError: card declined\n\nTraceback")


def test_list_of_an_empty_database(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "no instances"


# -- control --------------------------------------------------------------------------


def test_pause_unpause_and_cancel(flows: str, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["submit", f"{flows}:greet", "--input", "1", "--instance-id", "c-1", "--db", db]) == 0
    )

    paused = run_json(capsys, "pause", "c-1", "--reason", "audit", "--by", "ops", "--db", db)
    assert (paused["status"], paused["reason"], paused["paused_by"]) == ("paused", "audit", "ops")

    assert run_json(capsys, "unpause", "c-1", "--db", db)["status"] == "in_progress"

    capsys.readouterr()
    assert main(["cancel", "c-1", "--reason", "duplicate", "--by", "alice", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "c-1 is cancelled." in out
    assert "cancelled by  alice" in out
    status = run_json(capsys, "status", "c-1", "--db", db)
    assert (status["status"], status["reason"], status["cancelled_by"]) == (
        "cancelled",
        "duplicate",
        "alice",
    )

    assert main(["cancel", "c-1", "--db", db]) == 1
    assert "already cancelled" in capsys.readouterr().err
    assert main(["unpause", "c-1", "--db", db]) == 1
    assert "not paused" in capsys.readouterr().err


def test_retry_from_reruns_the_failed_step_only(
    flows: str, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{flows}:payment"
    assert main(["run", target, "--input", "3", "--instance-id", "r-1", "--db", db]) == 1
    (tmp_path / "card-fixed").touch()

    assert run_json(capsys, "retry-from", "r-1", "charge", "--db", db)["status"] == "in_progress"
    status = run_json(capsys, "resume", target, "r-1", "--db", db)
    assert status["status"] == "completed"
    assert status["output"] == {"charged": 6}

    events = run_json(capsys, "history", "r-1", "--db", db)["events"]
    completed = [event["step_key"] for event in events if event["kind"] == "task_completed"]
    assert completed == ["double", "charge"]  # double's checkpoint was kept, not recomputed
    assert "retried_from" in [event["kind"] for event in events]


def test_signal_payload_must_be_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["signal", "x", "approve", "--payload", "{nope", "--db", db]) == 2
    assert capsys.readouterr().err.startswith("error: --payload is not valid JSON")


# -- errors ---------------------------------------------------------------------------


def test_invalid_input_json_is_a_usage_error(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{flows}:greet", "--input", "{'id': 1}", "--db", db]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --input is not valid JSON")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "command",
    [
        ["status", "nope"],
        ["history", "nope"],
        ["signal", "nope", "approve"],
        ["cancel", "nope"],
        ["pause", "nope"],
        ["unpause", "nope"],
        ["retry-from", "nope", "double"],
    ],
)
def test_unknown_instance(command: list[str], db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--db", db]) == 1
    err = capsys.readouterr().err
    assert err == "error: no workflow instance 'nope'\n"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:wf", "cannot import module 'no_such_module_xyz'"),
        ("{flows}:missing", "has no attribute 'missing'"),
        ("{flows}:not_a_workflow", "is a int, not a Workflow"),
        ("{flows}:double", "is a function, not a Workflow"),
        ("{flows}", "expected module:attribute"),
        ("{broken}:wf", "RuntimeError: broken at import"),
    ],
)
def test_bad_module_path(
    target: str,
    message: str,
    flows: str,
    db: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{broken}.py").write_text('raise RuntimeError("broken at import")\n')
    target = target.format(flows=flows, broken=broken)
    try:
        assert main(["run", target, "--db", db]) == 1
    finally:
        sys.modules.pop(broken, None)
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [
        ["status", "x"],
        ["wait", "x", "--timeout", "1"],
        ["list"],
        ["history", "x"],
        ["signal", "x", "approve"],
        ["cancel", "x"],
        ["pause", "x"],
        ["unpause", "x"],
        ["retry-from", "x", "double"],
    ],
)
def test_inspect_and_control_never_create_a_database(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "nested" / "typo.db"

    assert main([*command, "--db", f"sqlite:///{typo}"]) == 1

    assert not typo.parent.exists()  # neither the file nor its directory
    err = capsys.readouterr().err
    assert err.startswith(f"error: no database at {str(typo)!r}")
    assert "'sayiir run', 'submit' and 'worker' create one" in err


def test_submit_creates_the_database(flows: str, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    assert main(["submit", f"{flows}:greet", "--input", "1", "--db", f"sqlite:///{fresh}"]) == 0
    assert fresh.exists()


@pytest.mark.parametrize(
    ("argv", "error_type"),
    [
        (["status", "nope"], "InstanceNotFoundError"),
        (["list", "--db", "mysql://localhost/x"], "BackendError"),
    ],
)
def test_errors_under_json_are_a_json_document(
    argv: list[str], error_type: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--db" not in argv:
        argv = [*argv, "--db", db]
    document = run_json(capsys, *argv, code=1)
    assert document["error"]["type"] == error_type
    assert document["error"]["exit_code"] == 1
    assert document["error"]["message"]


def test_an_empty_instance_id_is_a_usage_error(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", f"{flows}:greet", "--instance-id", "", "--db", db]) == 2
    assert "--instance-id: must not be empty" in capsys.readouterr().err


def test_bad_database_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--db", "mysql://localhost/x"]) == 1
    assert "unsupported backend URL scheme 'mysql'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [[], ["list", "--limit", "0"], ["list", "--status", "sleeping"], ["frobnicate"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: sayiir" in capsys.readouterr().err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sayiir {sayiir_core.__version__}"
    assert main(["--help"]) == 0
    assert "retry-from" in capsys.readouterr().out


def test_ascii_terminals_get_ascii_marks() -> None:
    assert symbols_for(io.TextIOWrapper(io.BytesIO(), encoding="ascii")) is ASCII
    assert symbols_for(io.TextIOWrapper(io.BytesIO(), encoding="utf-8")) is UNICODE


# -- as a program ---------------------------------------------------------------------


def _python_env() -> dict[str, str]:
    paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def _start_worker(
    flows: str, db: str, cwd: Path, *targets: str, options: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "sayiir_core.cli", "worker"]
    argv += [f"{flows}:{target}" for target in targets]
    argv += ["--db", db, "--poll-interval", "0.05", "--id", "test-worker", *options]
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=_python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def _wait_until(condition: Any, worker: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if worker.poll() is not None:
            _, err = worker.communicate()
            pytest.fail(f"worker exited early with {worker.returncode}:\n{err}")
        if time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"timed out; worker log:\n{worker.communicate()[1]}")
        time.sleep(0.05)


def _stop(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)
    try:
        _, err = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail(f"worker ignored SIGTERM:\n{worker.communicate()[1]}")
    return err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be sent gracefully on Windows")
def test_worker_runs_a_submitted_instance_and_stops_on_sigterm(
    flows: str, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["submit", f"{flows}:greet", "--input", "4", "--instance-id", "w-1", "--db", db]) == 0
    )

    def completed() -> bool:
        return bool(run_json(capsys, "status", "w-1", "--db", db)["status"] == "completed")

    worker = _start_worker(flows, db, tmp_path, "greet", "payment")
    _wait_until(completed, worker)
    err = _stop(worker)

    assert worker.returncode == 0, err
    assert "worker test-worker started: workflows greet, payment" in err
    assert "[w-1] claimed (workflow greet, was in_progress)" in err
    assert "[w-1] ✓ double (attempt 1, " in err
    assert "[w-1] ✔ completed" in err
    assert "SIGTERM received" in err
    assert "worker test-worker stopped" in err
    assert "Traceback" not in err
    assert run_json(capsys, "status", "w-1", "--db", db)["output"] == 9


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be sent gracefully on Windows")
def test_wait_blocks_until_a_worker_in_another_process_finishes(
    flows: str, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    submit = ["submit", f"{flows}:greet", "--input", "4", "--instance-id", "w-2", "--db", db]
    assert main(submit) == 0
    capsys.readouterr()
    assert main(["wait", "w-2", "--timeout", "0.2", "--db", db]) == 1
    assert capsys.readouterr().err == (
        "error: instance 'w-2' did not finish within 0.2s: no worker has picked it up yet "
        "(status in_progress); is a worker serving workflow 'greet' on this database?\n"
    )

    worker = _start_worker(flows, db, tmp_path, "greet")
    try:
        status = run_json(capsys, "wait", "w-2", "--timeout", "30", "--db", db)
    finally:
        err = _stop(worker)

    assert (status["status"], status["output"]) == ("completed", 9), err


def test_wait_for_a_failed_instance_exits_1_and_shows_it(
    flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", f"{flows}:payment", "--input", "3", "--db", db, "--instance-id", "p-9"]
    assert main(argv) == 1

    status = run_json(capsys, "wait", "p-9", "--db", db, code=1)

    assert (status["status"], status["error_type"]) == ("failed", "ValueError")
    assert main(["wait", "nope", "--db", db]) == 1
    assert capsys.readouterr().err == "error: no workflow instance 'nope'\n"
    assert main(["wait", "p-9", "--timeout", "-1", "--db", db]) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be sent gracefully on Windows")
def test_sigterm_lets_the_running_step_finish_and_checkpoint(
    flows: str, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{flows}:sluggish"
    assert main(["submit", target, "--input", "5", "--instance-id", "s-1", "--db", db]) == 0
    worker = _start_worker(flows, db, tmp_path, "sluggish")
    _wait_until((tmp_path / "slow-started").exists, worker)
    err = _stop(worker)  # while `slow` sleeps

    assert worker.returncode == 0, err
    events = run_json(capsys, "history", "s-1", "--db", db)["events"]
    completed = [event["step_key"] for event in events if event["kind"] == "task_completed"]
    assert completed == ["slow"]  # finished and checkpointed; add_one never started
    status = run_json(capsys, "resume", target, "s-1", "--db", db)
    assert status["output"] == 6


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be sent gracefully on Windows")
def test_sigterm_with_no_grace_releases_the_running_step_at_once(
    flows: str, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"{flows}:sluggish"
    assert main(["submit", target, "--input", "5", "--instance-id", "s-2", "--db", db]) == 0
    worker = _start_worker(flows, db, tmp_path, "sluggish", options=("--grace", "0"))
    _wait_until((tmp_path / "slow-started").exists, worker)
    err = _stop(worker)  # while `slow` sleeps: it is not waited for

    assert worker.returncode == 0, err
    assert "shutdown grace 0.0s" in err
    assert "still running when the shutdown grace ran out" in err
    assert "[s-2] released by worker test-worker on shutdown" in err
    events = run_json(capsys, "history", "s-2", "--db", db)["events"]
    assert not [event for event in events if event["kind"] == "task_completed"]
    # Released, not left to its lease (300 s): it runs again from the start here.
    status = run_json(capsys, "resume", target, "s-2", "--db", db)
    assert status["output"] == 6


@pytest.mark.parametrize("grace", ["-1", "nan", "inf", "soon"])
def test_worker_grace_must_be_seconds(
    grace: str, flows: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", f"{flows}:greet", "--grace", grace, "--db", db]) == 2
    assert "--grace" in capsys.readouterr().err


def test_python_m_reports_errors_without_a_traceback(flows: str, db: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sayiir_core.cli", "status", "ghost", "--db", db],
        cwd=tmp_path,
        env=_python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == "error: no workflow instance 'ghost'\n"


def test_worker_shares_parallel_steps_unless_told_not_to() -> None:
    parser = build_parser()
    assert parser.parse_args(["worker", "flows:greet"]).share_steps is True
    assert parser.parse_args(["worker", "flows:greet", "--no-share-steps"]).share_steps is False
