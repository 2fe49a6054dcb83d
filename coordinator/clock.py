"""The service's clock, injectable so that tests move time instead of sleeping through it.

Wall time (:meth:`Clock.now`, Unix seconds) stamps what is shared with others: deadlines,
signed-request windows, job submission times, ledger timestamps. Monotonic time
(:meth:`Clock.monotonic`) paces what is only local: the coordinator thread's ticks, rate
limits, caches. Durations that measure this process itself (latency metrics, busy time)
stay on :func:`time.perf_counter`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock Unix seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back."""
        ...


class SystemClock:
    """The real clock: :func:`time.time` and :func:`time.monotonic`."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
