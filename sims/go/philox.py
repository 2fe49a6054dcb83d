"""Philox4x32-10, the counter-based generator of Salmon et al. (SC'11, "Parallel random
numbers: as easy as 1, 2, 3"), as in Random123 and HOOMD-blue.

A counter-based generator is a pure function of (key, counter): the noise on particle ``i``
at step ``n`` is the same whatever the thread count, chunking or restart point, which is
what lets a verifier recompute any segment of a trajectory alone.

All arithmetic is on ``uint64`` holding 32-bit values: numba would promote a mix of
``uint64`` and Python ints to float64, so every constant here is a typed ``np.uint64``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sims.errors import ParameterError

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
#: 2**-31: maps a 32-bit integer to [0, 2) before centring.
TWO_M31 = 4.656612873077393e-10


@njit(cache=True, inline="always")
def philox4x32_10(
    c0: np.uint64, c1: np.uint64, c2: np.uint64, c3: np.uint64, k0: np.uint64, k1: np.uint64
) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """Ten Philox rounds on the 128-bit counter (c0..c3) with the 64-bit key (k0, k1)."""
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = (p1 >> _S32) ^ c1 ^ k0
        n2 = (p0 >> _S32) ^ c3 ^ k1
        c0 = n0
        c1 = p1 & _MASK
        c2 = n2
        c3 = p0 & _MASK
    return c0, c1, c2, c3


@njit(cache=True, inline="always")
def symmetric_uniform(u: np.uint64) -> float:
    """Map a 32-bit integer to the open interval (-1, 1), symmetric about 0.

    Exact in float64 (+, * only): (u + 0.5) * 2**-31 - 1.
    """
    return (float(u) + 0.5) * TWO_M31 - 1.0


def philox(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, ...]:
    """Plain-int front end, for tests and for anyone re-deriving a stream by hand."""
    for v in (*counter, *key):
        if not 0 <= v <= 0xFFFFFFFF:
            raise ParameterError(f"Philox words are 32-bit unsigned integers, got {v}")
    out = philox4x32_10(*(np.uint64(v) for v in counter), *(np.uint64(v) for v in key))
    return tuple(int(v) for v in out)
