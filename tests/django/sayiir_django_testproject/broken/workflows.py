from __future__ import annotations

from sayiir_core import Flow


def _discount_rate() -> float:
    return 1 / 0  # the mistake the system check must show, traceback and all


rate = _discount_rate()
discounts = Flow("discounts").then(lambda n: n * rate).build()
