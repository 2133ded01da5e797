# Celery ships no type information. mypy searches ``tests/`` for imports (the tests
# import helpers such as ``postgres_service`` as top-level modules), where the
# ``tests/celery`` directory would pass for a namespace package named ``celery``. This
# stub, found first, keeps ``celery`` what it is without stubs: every name is Any.
from typing import Any

def __getattr__(name: str) -> Any: ...
