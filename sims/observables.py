"""Structural observables shared by both engines: RMSD, native contacts Q, radius of gyration.

Q is defined at residue level the same way for both engines so that their numbers compare:
residues i, j (|i - j| >= 4) are in native contact when any of their heavy atoms are within
4.5 Angstrom in the reference; a contact is formed when the C-alpha distance is below
``1.2`` times its native value (Clementi, Nymeyer and Onuchic 2000 use the same 1.2 factor).
"""

from __future__ import annotations

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
    """Residue pairs with heavy atoms within ``cutoff`` Angstrom and |i - j| >= min_separation."""
    residues = structure.amino_acids
    heavy = [np.array([a.xyz for a in r.atoms if a.is_heavy], dtype=np.float64) for r in residues]
    ca = structure.ca_coordinates()
    pairs: list[tuple[int, int]] = []
    cut2 = cutoff * cutoff
    for i in range(len(residues)):
        for j in range(i + min_separation, len(residues)):
            d = heavy[i][:, None, :] - heavy[j][None, :, :]
            if np.min(np.einsum("abk,abk->ab", d, d)) <= cut2:
                pairs.append((i, j))
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    dist = np.linalg.norm(ca[arr[:, 0]] - ca[arr[:, 1]], axis=1) if len(arr) else np.zeros(0)
    return NativeContacts(pairs=arr, distances=dist)


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
