"""Seed derivation: pure functions of SHA-256, identical on every machine and process.

A WU's seed comes from its content id (see docs/architecture.md §3); segment ``k`` gets its own
seed so that any segment can be recomputed alone from its starting boundary state.
Python's built-in ``hash`` is never used: it is salted per process.
"""

from __future__ import annotations

import hashlib
import struct

from sims.errors import ParameterError

_SEGMENT_TAG = b"foldnet/segment-seed/v1\x00"
_SEED_TAG = b"foldnet/wu-seed/v1\x00"

SEED_MAX = 2**64 - 1


def seed_from_id(content_id: bytes) -> int:
    """Derive a 64-bit seed from a WU content id (any byte string)."""
    return int.from_bytes(hashlib.sha256(_SEED_TAG + content_id).digest()[:8], "little")


def segment_seed(wu_seed: int, segment: int) -> int:
    """The 64-bit seed of segment ``segment`` of the WU whose seed is ``wu_seed``."""
    if not 0 <= wu_seed <= SEED_MAX:
        raise ParameterError(f"seed must be an integer in [0, 2**64), got {wu_seed!r}")
    if segment < 0:
        raise ParameterError(f"segment index must be >= 0, got {segment}")
    data = _SEGMENT_TAG + struct.pack("<QQ", wu_seed, segment)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
