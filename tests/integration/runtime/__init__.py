"""Behaviour tests of the runtime and the public faces (sync, clients, workers)."""
