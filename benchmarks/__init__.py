"""Benchmarks: each is ``python -m benchmarks.NAME`` (``--quick`` for a run under a minute)."""
