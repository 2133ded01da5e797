from __future__ import annotations

from sayiir_core import Flow, task


@task
def triple(n: int) -> int:
    return n * 3


doubling = Flow("doubling").then(triple).build()
