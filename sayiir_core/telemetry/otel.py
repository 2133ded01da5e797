"""Whether OpenTelemetry is on, answered with a dictionary lookup on the hot path.

``opentelemetry-api`` is optional, and Sayiir never imports it just to find out that
nobody uses it: a tracer or meter provider can only have been set by code that
imported ``opentelemetry.trace`` / ``opentelemetry.metrics``, so until one of those is
in ``sys.modules`` every probe answers "off" at the price of one lookup. Without a
provider set (the API's default proxy), probes answer "off" too and the runtime skips
all telemetry work: no span objects, no context copies, no extra queries.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Tracer

INSTRUMENTATION_NAME = "sayiir"

_tracer_for: tuple[object, Tracer] | None = None
_meter_for: tuple[object, Meter] | None = None
_modules = sys.modules


def otel_installed() -> bool:
    """``opentelemetry-api`` can be imported (not on the hot path: it may search)."""
    if "opentelemetry" in _modules:
        return _modules["opentelemetry"] is not None
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def _tracer_provider() -> object | None:
    api: ModuleType | None = _modules.get("opentelemetry.trace")
    if api is None:
        return None
    # The API keeps the provider in a module global: reading it is cheaper than
    # get_tracer_provider(), which also looks an environment variable up each call.
    provider: object | None = getattr(api, "_TRACER_PROVIDER", None)
    if provider is None or isinstance(provider, api.ProxyTracerProvider | api.NoOpTracerProvider):
        return None
    return provider


def _meter_provider() -> object | None:
    internal: ModuleType | None = _modules.get("opentelemetry.metrics._internal")
    if internal is None:
        return None
    provider: object | None = getattr(internal, "_METER_PROVIDER", None)
    if provider is None or isinstance(
        provider, internal.NoOpMeterProvider | internal._ProxyMeterProvider
    ):
        return None
    return provider


def tracer() -> Tracer | None:
    """Sayiir's tracer when a real tracer provider is set; ``None`` otherwise (tracing off)."""
    global _tracer_for
    # Asked on every step: the provider seen last time answers with one identity test.
    api = _modules.get("opentelemetry.trace")
    cached = _tracer_for
    if api is not None and cached is not None and cached[0] is api.__dict__.get("_TRACER_PROVIDER"):
        return cached[1]
    provider = _tracer_provider()
    if provider is None:
        return None
    made: Tracer = provider.get_tracer(INSTRUMENTATION_NAME)  # type: ignore[attr-defined]
    _tracer_for = (provider, made)
    return made


def meter() -> Meter | None:
    """Sayiir's meter when a real meter provider is set; ``None`` otherwise (metrics off)."""
    global _meter_for
    internal = _modules.get("opentelemetry.metrics._internal")
    cached = _meter_for
    if (
        internal is not None
        and cached is not None
        and cached[0] is internal.__dict__.get("_METER_PROVIDER")
    ):
        return cached[1]
    provider = _meter_provider()
    if provider is None:
        return None
    made: Meter = provider.get_meter(INSTRUMENTATION_NAME)  # type: ignore[attr-defined]
    _meter_for = (provider, made)
    return made


def load_providers_from_environment() -> None:
    """Let ``OTEL_PYTHON_TRACER_PROVIDER`` / ``..._METER_PROVIDER`` take effect.

    The API loads a provider named in the environment on the first ``get_*_provider()``
    call; the probes above read the globals instead, so call the getters here.
    """
    if "OTEL_PYTHON_TRACER_PROVIDER" in os.environ and otel_installed():
        from opentelemetry import trace

        trace.get_tracer_provider()
    if "OTEL_PYTHON_METER_PROVIDER" in os.environ and otel_installed():
        from opentelemetry import metrics

        metrics.get_meter_provider()


def any_provider_set() -> bool:
    """A quick "maybe on": some tracer or meter provider is set (perhaps a no-op one)."""
    api = _modules.get("opentelemetry.trace")
    if api is not None and getattr(api, "_TRACER_PROVIDER", None) is not None:
        return True
    internal = _modules.get("opentelemetry.metrics._internal")
    return internal is not None and getattr(internal, "_METER_PROVIDER", None) is not None


def any_on() -> bool:
    """Tracing or metrics is on (a real provider is set for either)."""
    return _tracer_provider() is not None or _meter_provider() is not None


load_providers_from_environment()
