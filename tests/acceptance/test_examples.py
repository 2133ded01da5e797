"""Every example script and every Python block in the docs runs and exits 0.

Each runs as a subprocess with this interpreter, in an empty temporary directory (so
nothing can depend on, or write into, the repository), with the repository root on
``PYTHONPATH``. New files under ``examples/`` and new blocks under ``docs/`` are picked
up automatically.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DOCS = sorted((ROOT / "docs").rglob("*.md"))
TIMEOUT = 90

# Text each example must print; a new example only has to exit 0 and print something.
EXPECTED_OUTPUT = {
    "quickstart.py": ["['the', 3]"],
    "approval_signal.py": [
        "exp-1 after start: awaiting_signal",
        "exp-1 after signal: completed -> paid by maria",
        "exp-2 (signalled early): completed -> rejected by omar",
    ],
    "fan_out_map.py": ["crawl-1: completed", "checkpoint of item 2: 2400"],
    "worker_and_client.py": ["6 completed", "workers stopped: True"],
    "routing_and_loops.py": ["[billing] refund 30 EUR", "shrink 1000 -> 7"],
    "order_processing.py": ["result: completed"],
}

_PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _doc_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for index, match in enumerate(_PYTHON_BLOCK.finditer(text)):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{doc.relative_to(ROOT)}:{line}#{index}", match.group(1)))
    return blocks


DOC_BLOCKS = _doc_blocks()


def test_examples_exist() -> None:
    assert EXAMPLES, "no examples found"


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    tree = ast.parse(script.read_text(encoding="utf-8"))
    assert any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body), (
        f"{script.name} has no main()"
    )

    result = _run([str(script)], tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{script.name} exited {result.returncode}:\n{output}"
    assert result.stdout.strip(), f"{script.name} printed nothing"
    for expected in EXPECTED_OUTPUT.get(script.name, []):
        assert expected in result.stdout, f"{expected!r} not in the output of {script.name}"
    assert not list(tmp_path.iterdir()), f"{script.name} wrote into its working directory"


@pytest.mark.parametrize(
    "code", [code for _, code in DOC_BLOCKS], ids=[name for name, _ in DOC_BLOCKS]
)
def test_doc_block_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")

    result = _run([str(script)], tmp_path)

    assert result.returncode == 0, (
        f"exited {result.returncode}:\n{code}\n--- output ---\n{result.stdout}{result.stderr}"
    )
