"""Structural observables shared by both engines: RMSD, native contacts Q, radius of gyration.

Q is defined at residue level the same way for both engines so that their numbers compare:
residues i, j (|i - j| >= 4) are in native contact when any of their heavy atoms are within
4.5 Angstrom in the reference; a contact is formed when the C-alpha distance is below
``1.2`` times its native value (Clementi, Nymeyer and Onuchic 2000 use the same 1.2 factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sims.errors import StateError
from sims.structure import Structure

CONTACT_CUTOFF_A = 4.5
MIN_SEPARATION = 4
Q_FACTOR = 1.2


@dataclass(frozen=True, slots=True, eq=False)
class NativeContacts:
    """Native contact pairs (residue indices, i < j) and their native C-alpha distances."""

    pairs: np.ndarray  # (M, 2) int64
    distances: np.ndarray  # (M,) float64, same length unit as the coordinates they came from


def native_contacts(
    structure: Structure,
    *,
    cutoff: float = CONTACT_CUTOFF_A,
    min_separation: int = MIN_SEPARATION,
) -> NativeContacts:
    """Residue pairs with heavy atoms within ``cutoff`` Angstrom and |i - j| >= min_separation.

    Vectorised with a cell list: heavy atoms are binned into cubes of side ``cutoff``, and
    only atoms in neighbouring cubes are compared, in chunks of bounded size, so the work
    grows with the number of atoms (2,000 residues: tens of milliseconds), not its square.
    """
    residues = structure.amino_acids
    ca = structure.ca_coordinates()
    xyz_list: list[tuple[float, float, float]] = []
    owner: list[int] = []
    for i, r in enumerate(residues):
        for a in r.atoms:
            if a.is_heavy:
                xyz_list.append(a.xyz)
                owner.append(i)
    xyz = np.array(xyz_list, dtype=np.float64).reshape(-1, 3)
    res = np.array(owner, dtype=np.int64)
    codes = _close_pairs(xyz, res, cutoff, min_separation, len(residues))
    n = max(1, len(residues))
    arr = np.stack([codes // n, codes % n], axis=1).astype(np.int64).reshape(-1, 2)
    dist = np.linalg.norm(ca[arr[:, 0]] - ca[arr[:, 1]], axis=1) if len(arr) else np.zeros(0)
    return NativeContacts(pairs=arr, distances=dist)


#: Atom pairs compared at once (bounds the memory of one step to ~100 MB).
_CHUNK_PAIRS = 1 << 22


def _close_pairs(
    xyz: np.ndarray, res: np.ndarray, cutoff: float, min_sep: int, n_res: int
) -> np.ndarray:
    """Sorted unique codes ``i * n_res + j`` (i < j - min_sep + 1) of residues with atoms
    within ``cutoff``."""
    if len(xyz) == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(xyz)):
        raise StateError("the structure has coordinates that are NaN or inf")
    span = xyz.max(axis=0) - xyz.min(axis=0)
    if np.any(span / cutoff > 1e6):
        raise StateError(
            f"the structure spans {float(span.max()):.3g} Angstrom; expected a protein (a PDB "
            "file's coordinates stay within 10^4)"
        )
    cell = np.floor((xyz - xyz.min(axis=0)) / cutoff).astype(np.int64) + 1
    dims = cell.max(axis=0) + 2  # an empty layer on every side: neighbours never wrap
    key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    order = np.argsort(key, kind="stable")
    key, xyz, res = key[order], xyz[order], res[order]
    cut2 = cutoff * cutoff
    found: list[np.ndarray] = []
    n = len(key)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                target = key + (dx * dims[1] + dy) * dims[2] + dz
                lo = np.searchsorted(key, target, "left")
                counts = np.searchsorted(key, target, "right") - lo
                ends = np.cumsum(counts)
                start = 0
                while start < n:  # query atoms in chunks of about _CHUNK_PAIRS pairs
                    base = ends[start - 1] if start else 0
                    stop = int(np.searchsorted(ends, base + _CHUNK_PAIRS, "right"))
                    stop = min(n, max(stop, start + 1))
                    c = counts[start:stop]
                    total = int(c.sum())
                    if total:
                        qi = np.repeat(np.arange(start, stop), c)
                        first = np.repeat(np.cumsum(c) - c, c)
                        qj = lo[qi] + (np.arange(total) - first)
                        ri, rj = res[qi], res[qj]
                        keep = rj - ri >= min_sep
                        qi, qj, ri, rj = qi[keep], qj[keep], ri[keep], rj[keep]
                        d = xyz[qi] - xyz[qj]
                        close = np.einsum("ij,ij->i", d, d) <= cut2
                        found.append(ri[close] * n_res + rj[close])
                    start = stop
    if not found:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(found))


def fraction_native_contacts(
    ca: np.ndarray, contacts: NativeContacts, *, factor: float = Q_FACTOR
) -> float:
    """Q: the fraction of native contacts whose C-alpha distance is < factor x native."""
    if len(contacts.pairs) == 0:
        return float("nan")
    d = np.linalg.norm(ca[contacts.pairs[:, 0]] - ca[contacts.pairs[:, 1]], axis=1)
    return float(np.mean(d < factor * contacts.distances))


def kabsch_rmsd(x: np.ndarray, ref: np.ndarray) -> float:
    """RMSD after optimal superposition (Kabsch 1976), reflections excluded."""
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if x.shape != ref.shape or x.ndim != 2 or x.shape[1] != 3:
        raise StateError(
            f"RMSD needs two (N, 3) arrays of one shape, got {x.shape} and {ref.shape}"
        )
    xc = x - x.mean(axis=0)
    rc = ref - ref.mean(axis=0)
    u, s, vt = np.linalg.svd(xc.T @ rc)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[-1] = -s[-1]
    e = float(np.sum(xc * xc) + np.sum(rc * rc) - 2.0 * np.sum(s))
    return float(np.sqrt(max(e, 0.0) / len(x)))


def radius_of_gyration(x: np.ndarray, masses: np.ndarray | None = None) -> float:
    x = np.asarray(x, dtype=np.float64)
    w = np.ones(len(x)) if masses is None else np.asarray(masses, dtype=np.float64)
    com = (w[:, None] * x).sum(axis=0) / w.sum()
    return float(np.sqrt((w * ((x - com) ** 2).sum(axis=1)).sum() / w.sum()))


class NativeObserver:
    """Q, RMSD to native and radius of gyration of one model's states, bit for bit what
    :func:`fraction_native_contacts`, :func:`kabsch_rmsd` and :func:`radius_of_gyration`
    give (replicas compare them exactly), with the native side computed once and numpy's
    wrappers skipped: a tiny WU's frames cost more in these than in its dynamics."""

    __slots__ = ("_cut", "_i", "_j", "_n", "_rc", "_rc2")

    def __init__(self, native: np.ndarray, contacts: NativeContacts, *, factor: float = Q_FACTOR):
        ref = np.asarray(native, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != 3:
            raise StateError(f"the native structure must be (N, 3), got {ref.shape}")
        self._n = ref.shape[0]
        self._rc = ref - ref.mean(axis=0)  # (as kabsch_rmsd centres it)
        self._rc2 = np.sum(self._rc * self._rc)
        self._i = np.ascontiguousarray(contacts.pairs[:, 0]) if len(contacts.pairs) else None
        self._j = np.ascontiguousarray(contacts.pairs[:, 1]) if len(contacts.pairs) else None
        self._cut = factor * contacts.distances

    def observe(self, x: np.ndarray) -> tuple[float, float, float]:
        """(q, rmsd, rg) of positions ``x`` ((N, 3) float64, as a State holds them)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.shape != (self._n, 3):
            raise StateError(f"expected positions of shape ({self._n}, 3), got {x.shape}")
        n = self._n
        # Q: np.linalg.norm(axis=1) is sqrt(add.reduce(x * x)) for real x; a mean of bools
        # is their count over their number.
        if self._i is None:
            q = float("nan")
        else:
            d = x[self._i] - x[self._j]
            below = np.sqrt(np.add.reduce(d * d, axis=1)) < self._cut
            q = int(np.count_nonzero(below)) / len(below)
        # RMSD after superposition; only the sign of det(u) det(vt) (each +-1) is used.
        xc = x - x.mean(axis=0)
        u, s, vt = np.linalg.svd(xc.T @ self._rc)
        if _det3(u.tolist()) * _det3(vt.tolist()) < 0:
            s[-1] = -s[-1]
        e = float(np.add.reduce(xc * xc, axis=None) + self._rc2 - 2.0 * np.add.reduce(s))
        rmsd = math.sqrt(max(e, 0.0) / n)
        # Rg with unit weights: (1 * x) is x and the weights sum to n exactly.
        com = x.sum(axis=0) / float(n)
        rg = float(np.sqrt((((x - com) ** 2).sum(axis=1)).sum() / float(n)))
        return q, rmsd, rg


def _det3(m: list[list[float]]) -> float:
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )
