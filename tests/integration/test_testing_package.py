"""``sayiir_core.testing`` from the outside: a third-party backend gets the whole suite.

The how-to's own files (docs/howto/custom-backend.md) are written into a fresh directory
with a stand-in ``MyBackend`` and run by pytest in a subprocess, as a backend author
would run them; the suite's tests must all run there, not only here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sayiir_core.testing
from sayiir_core.testing import AdvanceQueueContract, BackendSuite, StepQueueContract

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "howto" / "custom-backend.md"

# A stand-in for a third party's backend: a class of its own (not a subclass of ours)
# that forwards every method to one InMemoryBackend per storage path, so two objects
# made for one test share storage as two connections to one database would.
MY_BACKEND = """
from __future__ import annotations

from pathlib import Path
from typing import Any

from sayiir_core import InMemoryBackend
from sayiir_core.backends.step_queue import StepQueue

WITH_STEP_QUEUE = {with_step_queue}
_STORAGE: dict[Path, InMemoryBackend] = {{}}


class MyBackend:
    def __init__(self, path: Path) -> None:
        self._storage = _STORAGE.setdefault(path, InMemoryBackend())


def _forward(name: str) -> Any:
    def method(self: MyBackend, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._storage, name)(*args, **kwargs)

    method.__name__ = name
    return method


_QUEUE_METHODS = {{name for name in dir(StepQueue) if not name.startswith("_")}}
for _name in dir(InMemoryBackend):
    if not _name.startswith("_") and (WITH_STEP_QUEUE or _name not in _QUEUE_METHODS):
        setattr(MyBackend, _name, _forward(_name))
"""


def _howto_files() -> dict[str, str]:
    """The how-to's code blocks whose first line names a file (``# conftest.py``)."""
    blocks = re.findall(r"```\w+\n# ([\w.]+)\n(.*?)```", HOWTO.read_text(), re.DOTALL)
    return {name: f"# {name}\n{body}" for name, body in blocks}


def _test_count(suite: type) -> int:
    """How many tests a class yields: its test methods, times their parametrizations."""
    total = 0
    for name in dir(suite):
        if name.startswith("test_"):
            count = 1
            for mark in getattr(getattr(suite, name), "pytestmark", []):
                if mark.name == "parametrize":
                    count *= len(mark.args[1])
            total += count
    return total


def _run_howto_project(tmp_path: Path, *, with_step_queue: bool) -> str:
    files = _howto_files()
    assert set(files) == {"pytest.ini", "conftest.py", "test_my_backend.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "my_backend.py").write_text(MY_BACKEND.format(with_step_queue=with_step_queue))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        env=_outside_environment(),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _outside_environment() -> dict[str, str]:
    """This process's environment without what this test session set for Django.

    tests/django's conftest names its settings module for the whole session; a
    backend author's project knows nothing of it, and pytest-django would load it.
    """
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "SAYIIR_DJANGO_"))
    }


@pytest.mark.slow
def test_the_howto_project_runs_the_whole_suite_on_a_third_party_backend(
    tmp_path: Path,
) -> None:
    expected = _test_count(BackendSuite)
    assert expected >= 90  # the suite as this test was written; it only grows

    output = _run_howto_project(tmp_path, with_step_queue=True)

    assert re.search(rf"^{expected} passed in ", output, re.M), output


@pytest.mark.slow
def test_a_backend_without_a_step_queue_skips_that_part_saying_why(tmp_path: Path) -> None:
    # The optional AdvanceQueue sits on the step queue: without one it skips too.
    queue_tests = _test_count(StepQueueContract) + _test_count(AdvanceQueueContract)
    expected = _test_count(BackendSuite) - queue_tests

    output = _run_howto_project(tmp_path, with_step_queue=False)

    assert re.search(rf"^{expected} passed, {queue_tests} skipped in ", output, re.M), output
    assert "MyBackend does not implement StepQueue" in output


def test_importing_sayiir_core_does_not_import_pytest() -> None:
    # pytest is the ``testing`` extra's: the library itself must work without it.
    code = textwrap.dedent(
        """
        import sys
        import sayiir_core, sayiir_core.backends, sayiir_core.client, sayiir_core.sync
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest"))
        assert not leaked, leaked
        assert "sayiir_core.testing" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_public_names_resolve_and_are_sorted() -> None:
    names = sayiir_core.testing.__all__
    assert names == sorted(set(names))
    for name in names:
        assert getattr(sayiir_core.testing, name) is not None
    assert {"BackendContract", "BackendFactory", "BackendSuite"} <= set(names)
    assert {"FinishWatchContract", "StepQueueContract"} <= set(names)
