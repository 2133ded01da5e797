"""An app whose workflows.py fails to import (installed only by the system-check tests)."""
