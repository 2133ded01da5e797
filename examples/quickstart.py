"""The smallest workflow: three plain functions chained and run in memory.

    python examples/quickstart.py

``run_workflow`` without an ``instance_id`` stores nothing: it is the fast path for
scripts and tests. Add ``instance_id=`` and ``backend=`` to make the same run durable.
"""

from __future__ import annotations

from collections import Counter

from sayiir_core import Flow, run_workflow, task


@task
def split_words(text: str) -> list[str]:
    return text.split()


@task
async def normalise(words: list[str]) -> list[str]:
    # Async and sync tasks mix freely; sync ones run in a thread pool.
    return [word.strip(".,!?").lower() for word in words]


@task
def top_words(words: list[str]) -> list[list[object]]:
    # JSON has no tuples: return lists so the output reads back the same after a checkpoint.
    return [[word, count] for word, count in Counter(words).most_common(3)]


word_count = Flow("word_count").then(split_words).then(normalise).then(top_words).build()


def main() -> int:
    text = "The cat sat. The cat ran! A dog sat, the end."
    result = run_workflow(word_count, text)
    print(f"workflow {word_count.workflow_id!r} -> {result}")
    assert result[0] == ["the", 3]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
