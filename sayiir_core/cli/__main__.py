"""``python -m sayiir_core.cli``: the same as the ``sayiir`` command."""

from __future__ import annotations

import sys

from sayiir_core.cli.main import main

sys.exit(main())
