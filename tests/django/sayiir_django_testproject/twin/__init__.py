"""An app defining a workflow id the shop app uses too (installed only by check tests)."""
