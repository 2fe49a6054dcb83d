"""The cyclic garbage collector in a long-running service process.

Measured under ``benchmarks.http``: with CPython's defaults (a young collection every 700
allocations, a full one whenever the old objects grew by a quarter) the collector took about
an eighth of the service's CPU, and each full collection walked every object the process had
(its libraries: numba, scipy, OpenMM, FastAPI ... some 300,000 objects), about 150 ms in
which no request was answered. Almost none of it is garbage: it all lives as long as the
process. So once a service has started, :func:`settle` collects what start-up left, then
freezes every object alive (``gc.freeze``: kept out of all later collections, as a pre-fork
server does for its children) and makes young collections rarer. What the service allocates
afterwards is collected as before, only in larger batches.

Only for server processes (``foldnet serve``): a test process that starts many services would
keep each one's objects in the frozen generation for good.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

#: Allocations between young collections once settled (CPython's default is 700).
YOUNG = 50_000
#: Young collections per middle one, and middle ones per full one.
MIDDLE, OLD = 20, 10


@dataclass(frozen=True, slots=True)
class Settled:
    """What :func:`settle` did: objects frozen, and the thresholds it replaced."""

    frozen: int
    thresholds_before: tuple[int, int, int]


def settle(*, young: int = YOUNG, middle: int = MIDDLE, old: int = OLD) -> Settled:
    """Collect, freeze what is alive, and set the collector's thresholds."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)
    return Settled(frozen=gc.get_freeze_count(), thresholds_before=before)
