"""Simulation state: positions and velocities at full precision, and their digest.

The digest is what workers commit to and validators compare, so its byte layout is fixed
and documented (docs/architecture.md §5): SHA-256 over

    b"foldnet/state/v1\\x00" || u64le(n_atoms) || u64le(3)
    || positions as float64 little-endian, C order || velocities, same layout

Units are the engine's own (Go model: Angstrom and Angstrom per reduced time unit; OpenMM:
nm and nm/ps); the determinism class names the engine, so digests of different engines are
never compared.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from sims.errors import StateError

_DIGEST_TAG = b"foldnet/state/v1\x00"
_LE_F64 = np.dtype("<f8")


def _as_coords(name: str, value: Any, n_atoms: int | None) -> np.ndarray:
    if type(value) is np.ndarray and value.dtype == _LE_F64:
        # The common case (an engine's or another State's array) skips the conversions'
        # checks: a tiny WU builds a few dozen States on each side, so they add up.
        arr = np.array(value, copy=True)
    else:
        try:
            raw = np.asarray(value)
            if np.iscomplexobj(raw):  # numpy would drop the imaginary part with only a warning
                raise StateError(f"{name} must be real numbers, got complex values")
            arr = np.array(raw, dtype=_LE_F64, copy=True)
        except (TypeError, ValueError) as e:
            raise StateError(f"{name} must be an (N, 3) array of numbers: {e}") from e
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise StateError(f"{name} must have shape (N, 3), got {arr.shape}")
    if arr.shape[0] == 0:
        raise StateError(f"{name} is empty: expected at least one atom")
    if n_atoms is not None and arr.shape[0] != n_atoms:
        raise StateError(
            f"{name} has {arr.shape[0]} atoms but positions have {n_atoms}: expected equal counts"
        )
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise StateError(
            f"{name} contains a non-finite value (NaN or inf) at atom {bad[0]}, "
            f"component {'xyz'[bad[1]]}: expected finite numbers"
        )
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, slots=True, eq=False)
class State:
    """An immutable snapshot: positions, velocities and the step they belong to.

    Arrays are copied, converted to little-endian float64 and made read-only on creation,
    so a State can be shared between threads and processes without defensive copies.
    """

    positions: np.ndarray
    velocities: np.ndarray
    step: int = 0

    def __post_init__(self) -> None:
        pos = _as_coords("positions", self.positions, None)
        vel = _as_coords("velocities", self.velocities, pos.shape[0])
        if isinstance(self.step, bool) or not isinstance(self.step, int | np.integer):
            raise StateError(f"step must be an integer, got {type(self.step).__name__}")
        if self.step < 0:
            raise StateError(f"step must be >= 0, got {self.step}")
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "velocities", vel)
        object.__setattr__(self, "step", int(self.step))

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    def digest(self) -> bytes:
        """SHA-256 over the fixed little-endian layout documented in the module."""
        return state_digest(self.positions, self.velocities)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self.step == other.step and self.digest() == other.digest()

    def __hash__(self) -> int:
        return int.from_bytes(self.digest()[:8], "little") ^ self.step

    def __reduce__(self) -> tuple[Any, ...]:
        return (State, (np.array(self.positions), np.array(self.velocities), self.step))


def state_digest(positions: np.ndarray, velocities: np.ndarray) -> bytes:
    """Digest of raw arrays, for callers that hold arrays rather than a :class:`State`."""
    pos = np.ascontiguousarray(positions, dtype=_LE_F64)
    vel = np.ascontiguousarray(velocities, dtype=_LE_F64)
    if pos.shape != vel.shape or pos.ndim != 2 or pos.shape[1] != 3:
        raise StateError(
            f"positions and velocities must both be (N, 3); got {pos.shape} and {vel.shape}"
        )
    h = hashlib.sha256(_DIGEST_TAG)
    h.update(struct.pack("<QQ", pos.shape[0], 3))
    h.update(pos.tobytes(order="C"))
    h.update(vel.tobytes(order="C"))
    return h.digest()


def state_digests(positions: np.ndarray, velocities: np.ndarray) -> tuple[bytes, ...]:
    """:func:`state_digest` of each state of stacked arrays (S, N, 3), with the tag and
    shape hashed once: the same bytes are hashed, so the digests are the same."""
    pos = np.ascontiguousarray(positions, dtype=_LE_F64)
    vel = np.ascontiguousarray(velocities, dtype=_LE_F64)
    if pos.shape != vel.shape or pos.ndim != 3 or pos.shape[2] != 3:
        raise StateError(
            f"positions and velocities must both be (S, N, 3); got {pos.shape} and {vel.shape}"
        )
    base = hashlib.sha256(_DIGEST_TAG)
    base.update(struct.pack("<QQ", pos.shape[1], 3))
    out = []
    for k in range(pos.shape[0]):
        h = base.copy()
        h.update(pos[k])
        h.update(vel[k])
        out.append(h.digest())
    return tuple(out)


def all_finite(a: np.ndarray) -> bool:
    """Whether every value of the array ``a`` is finite. The methods cost half of
    ``np.all(np.isfinite(a))`` on the small arrays of a result (no dispatch through
    ``np.all``); a sum would be cheaper still, but warns when values overflow or infinities
    cancel."""
    return bool(np.isfinite(a).all())
