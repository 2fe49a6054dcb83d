"""Small helpers shared by the benchmarks: a plain table printer, CPU time per call."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def best_cpu_us(fn: Callable[[], object], n: int, rounds: int) -> float:
    """CPU microseconds per call of ``fn``: the best of ``rounds`` rounds of ``n`` calls (the
    best, not the mean: on a shared machine the others only ever add)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6
