"""The ``sayiir`` command line; ``main`` is its entry point (see ``cli.main``)."""

from __future__ import annotations

from sayiir_core.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
