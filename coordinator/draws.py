"""Re-derivable randomness: every coin the scheduler tosses is SHA-256 of public inputs.

Spot-checked segments, audits and who is drawn to compute or check a WU all come from a
beacon (a ledger checkpoint's root) published *after* the commitments they judge, so a worker
cannot steer them when it commits, and an auditor can recompute each of them afterwards.
"""

from __future__ import annotations

import hashlib


def _uniform(tag: bytes, *parts: bytes) -> float:
    h = hashlib.sha256(tag)
    for p in parts:
        h.update(len(p).to_bytes(4, "little"))
        h.update(p)
    return int.from_bytes(h.digest()[:8], "little") / 2**64


def unreplicated_coin(wu: bytes, volunteer: str) -> float:
    """A uniform number in [0, 1) that anyone can re-derive from the WU id and volunteer."""
    digest = hashlib.sha256(b"foldnet/adaptive/v1\x00" + wu + volunteer.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def audit_coin(segment_root: bytes, beacon: bytes) -> float:
    """Uniform in [0, 1), fixed only once the beacon exists: whether a quorum is audited."""
    digest = hashlib.sha256(b"foldnet/audit/v1\x00" + segment_root + beacon).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def spot_check_segments(
    segment_root: bytes, beacon: bytes, n_segments: int, k: int
) -> tuple[int, ...]:
    """``k`` distinct segments drawn from SHA-256(root || beacon || counter), sorted."""
    k = min(k, n_segments)
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < k:
        h = hashlib.sha256(
            b"foldnet/spot-check/v1\x00" + segment_root + beacon + counter.to_bytes(8, "little")
        ).digest()
        chosen.add(int.from_bytes(h[:8], "little") % n_segments)
        counter += 1
    return tuple(sorted(chosen))


def draw_index(beacon: bytes, subject: bytes, attempt: int, n: int) -> int:
    """Index in [0, n) of the volunteer drawn for ``subject`` (a WU replica or a check).

    ``_uniform(b"foldnet/draw/v1\\x00", beacon, subject, attempt as 4 bytes)``, its bytes
    joined here for one hash call: a request for work draws several times."""
    data = b"".join(
        (
            b"foldnet/draw/v1\x00",
            len(beacon).to_bytes(4, "little"),
            beacon,
            len(subject).to_bytes(4, "little"),
            subject,
            b"\x04\x00\x00\x00",
            attempt.to_bytes(4, "little"),
        )
    )
    return int(int.from_bytes(hashlib.sha256(data).digest()[:8], "little") / 2**64 * n)
