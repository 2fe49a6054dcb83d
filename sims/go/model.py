"""The C-alpha structure-based (Go) model of Clementi, Nymeyer and Onuchic (J Mol Biol 2000).

V = sum_bonds Kr (r - r0)^2 + sum_angles Ktheta (theta - theta0)^2
  + sum_dihedrals { K1 [1 - cos(phi - phi0)] + K3 [1 - cos 3(phi - phi0)] }
  + sum_native eps [5 (sigma/r)^12 - 6 (sigma/r)^10] + sum_non-native eps (C/r)^12 S(r)

with r0, theta0, phi0 and sigma (the native C-alpha distance of each contact) taken from the
native structure, and the published defaults Kr = 100 eps/A^2, Ktheta = 20 eps/rad^2,
K1 = eps, K3 = 0.5 eps, C = 4 A. Native contacts: residues with heavy atoms within 4.5 A and
|i - j| >= 4 (see :mod:`sims.observables`); they have no cutoff. The non-native repulsion
(all other pairs with |i - j| >= 4) is switched off smoothly between 7 and 8 A by OpenMM's
switching function S (energy, force and its derivative continuous): there (C/r)^12 is below
1.2e-3 eps, so the cut removes about 0.004 eps per bead of a compact protein, an almost
constant offset (see README, "Go engine"). The model is immutable: build it once, share it.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sims.errors import PreparedSystemError, StructureError
from sims.go import kernels
from sims.observables import NativeContacts, native_contacts
from sims.structure import Structure, read_pdb

MIN_RESIDUES = 5
MIN_BOND_A = 2.0
#: Consecutive C-alphas further apart than this mark a chain break (trans 3.8 A, cis 2.9 A).
MAX_BOND_A = 4.3


def bond_lengths(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[1:] - x[:-1], axis=1)


def bond_angles(x: np.ndarray) -> np.ndarray:
    a = x[:-2] - x[1:-1]
    b = x[2:] - x[1:-1]
    c = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.arccos(np.clip(c, -1.0, 1.0))


def dihedrals(x: np.ndarray) -> np.ndarray:
    """IUPAC dihedral angles of consecutive quadruples, in (-pi, pi]."""
    b1 = x[1:-2] - x[:-3]
    b2 = x[2:-1] - x[1:-2]
    b3 = x[3:] - x[2:-1]
    m = np.cross(b1, b2)
    n = np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=1) * np.einsum("ij,ij->i", b1, n)
    return np.arctan2(y, np.einsum("ij,ij->i", m, n))


@dataclass(frozen=True, slots=True, eq=False)
class GoModel:
    """Immutable parameters of one protein's Go model (lengths in Angstrom, energies in eps)."""

    sequence: str
    native: np.ndarray
    bond_r0: np.ndarray
    theta0: np.ndarray
    phi0: np.ndarray
    cos_phi0: np.ndarray
    sin_phi0: np.ndarray
    contacts: NativeContacts
    native_s2: np.ndarray
    kr: float = 100.0
    ktheta: float = 20.0
    k1: float = 1.0
    k3: float = 0.5
    eps: float = 1.0
    rep_c: float = 4.0
    source: str = ""
    gaps: tuple[int, ...] = ()

    #: The non-native repulsion is switched off between these distances (A). Fixed for every
    #: model (part of its digest and of the engine version), not shipped per system.
    REP_SWITCH: ClassVar[float] = 7.0
    REP_CUTOFF: ClassVar[float] = 8.0

    def __post_init__(self) -> None:
        """Refuse a model whose parts do not fit its beads (:class:`PreparedSystemError`). A
        model also arrives as data (a volunteer reads its coordinator's), and the kernels
        index its arrays without bounds checks: parts that did not fit would have them read
        and write outside their arrays."""
        native = self.native
        n = native.shape[0] if isinstance(native, np.ndarray) and native.ndim == 2 else 0
        if n < MIN_RESIDUES:
            raise PreparedSystemError(
                f"a Go model needs the native positions of at least {MIN_RESIDUES} beads, "
                f"(N, 3), got {getattr(native, 'shape', type(native).__name__)}"
            )
        pairs = getattr(self.contacts, "pairs", None)
        m = pairs.shape[0] if isinstance(pairs, np.ndarray) and pairs.ndim == 2 else 0
        parts = {
            "native": (native, "<f8", (n, 3)),
            "bond_r0": (self.bond_r0, "<f8", (n - 1,)),
            "theta0": (self.theta0, "<f8", (n - 2,)),
            "phi0": (self.phi0, "<f8", (n - 3,)),
            "cos_phi0": (self.cos_phi0, "<f8", (n - 3,)),
            "sin_phi0": (self.sin_phi0, "<f8", (n - 3,)),
            "native_s2": (self.native_s2, "<f8", (n, n)),
            "contacts.pairs": (pairs, "<i8", (m, 2)),
            "contacts.distances": (getattr(self.contacts, "distances", None), "<f8", (m,)),
        }
        for name, (a, dtype, shape) in parts.items():
            if not (isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype) and a.shape == shape):
                got = f"{a.dtype.str} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise PreparedSystemError(
                    f"a Go model of {n} beads needs {name} of {dtype} {shape}, got {got}"
                )
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise PreparedSystemError(f"a Go model's {name} holds NaN or infinity")
        if m and not (pairs.min() >= 0 and pairs.max() < n):  # type: ignore[union-attr]
            raise PreparedSystemError(f"a Go model's contacts name beads outside [0, {n})")
        constants = (self.kr, self.ktheta, self.k1, self.k3, self.eps, self.rep_c)
        if not all(type(k) in (int, float) and np.isfinite(k) for k in constants):
            raise PreparedSystemError(
                f"a Go model's force constants must be finite numbers, got {constants!r:.200}"
            )
        if not (isinstance(self.sequence, str) and isinstance(self.source, str)):
            raise PreparedSystemError("a Go model's sequence and source must be text")
        if not (
            isinstance(self.gaps, tuple)
            and all(type(g) is int and 0 <= g < n - 1 for g in self.gaps)
        ):
            raise PreparedSystemError(f"a Go model's gaps must be bonds in [0, {n - 1})")

    @classmethod
    def from_structure(cls, structure: Structure) -> GoModel:
        native = structure.ca_coordinates()
        n = len(native)
        if n < MIN_RESIDUES:
            raise StructureError(
                f"{structure.source}: chain {structure.chain} has {n} amino acids; the Go model "
                f"needs at least {MIN_RESIDUES}"
            )
        r0 = bond_lengths(native)
        if np.any(r0 < MIN_BOND_A):
            i = int(np.argmax(r0 < MIN_BOND_A))
            raise StructureError(
                f"{structure.source}: C-alpha atoms of residues {i} and {i + 1} are "
                f"{r0[i]:.2f} A apart; expected >= {MIN_BOND_A} A (duplicated atoms?)"
            )
        # A chain break (missing residues in the file) stays a bond at its native length:
        # the model is defined by the native structure, and gaps are recorded for the user.
        gaps = tuple(int(i) for i in np.flatnonzero(r0 > MAX_BOND_A))
        contacts = native_contacts(structure)
        s2 = np.zeros((n, n), dtype=np.float64)
        for (i, j), d in zip(contacts.pairs, contacts.distances, strict=True):
            s2[i, j] = s2[j, i] = d * d
        phi0 = dihedrals(native)
        arrays = [native, r0, bond_angles(native), phi0, np.cos(phi0), np.sin(phi0), s2]
        for a in arrays:
            a.setflags(write=False)
        return cls(
            sequence=structure.sequence,
            native=native,
            bond_r0=r0,
            theta0=arrays[2],
            phi0=arrays[3],
            cos_phi0=arrays[4],
            sin_phi0=arrays[5],
            contacts=contacts,
            native_s2=s2,
            source=structure.source,
            gaps=gaps,
        )

    @classmethod
    def from_pdb(cls, path: str | os.PathLike[str], *, chain: str | None = None) -> GoModel:
        return cls.from_structure(read_pdb(path, chain=chain))

    @property
    def n_beads(self) -> int:
        return int(self.native.shape[0])

    def native_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The native contacts as the kernels use them: i, j (|i - j| >= 4, sorted by (i, j))
        and sigma^2, read from ``native_s2`` (what the digest covers)."""
        i, j = np.nonzero(np.triu(self.native_s2 > 0.0, 4))
        return i.astype(np.int64), j.astype(np.int64), self.native_s2[i, j].copy()

    def kernel_args(self) -> tuple[Any, ...]:
        """The parameter tail shared by :func:`kernels.energy_forces` and :func:`kernels.baoab`
        (native contacts as a CSR index by bead, ``nat_start``, and partners ``nat_j``; at
        the end, each contact's first bead ``nat_i``)."""
        nat_i, nat_j, nat_s2 = self.native_pairs()
        return (
            self.bond_r0,
            self.theta0,
            self.cos_phi0,
            self.sin_phi0,
            kernels.native_start(nat_i, self.n_beads),
            nat_j,
            nat_s2,
            self.kr,
            self.ktheta,
            self.k1,
            self.k3,
            self.eps,
            self.rep_c * self.rep_c,
            self.REP_SWITCH,
            self.REP_CUTOFF,
            nat_i,
        )

    def energy_forces(
        self, x: np.ndarray, *, args: tuple[Any, ...] | None = None
    ) -> tuple[float, np.ndarray]:
        """Potential energy (eps) and forces (eps/A) of C-alpha positions ``x`` (A); ``args``:
        :meth:`kernel_args`, when the caller keeps them (a GoEngine does)."""
        xt = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)  # component-major
        f = np.zeros_like(xt)
        args = self.kernel_args() if args is None else args
        nl = kernels.NeighbourList(xt, args[4], args[5], self.REP_CUTOFF + 1.0)
        w = kernels.scratch(self.n_beads)
        nw = kernels.pair_scratch(len(args[5]))
        e = kernels.energy_forces(*(xt, f, w, nw, nl.pw, nl.near, nl.start, nl.pairs, *args, True))
        return float(e), np.ascontiguousarray(f.T)

    def digest(self) -> bytes:
        """SHA-256 of every parameter: two workers with equal digests simulate the same model.

        The tag (v4) moves with the engine's kernel version (3), so a model digest names the
        numbers its results were computed with. Parameters are computed once (numpy's
        trigonometry may differ in the last bit between CPUs) and shipped to workers as
        arrays, never recomputed there.
        """
        h = hashlib.sha256(b"foldnet/go-model/v4\x00")
        h.update(struct.pack("<Q", self.n_beads))
        h.update(struct.pack("<6d", self.kr, self.ktheta, self.k1, self.k3, self.eps, self.rep_c))
        h.update(struct.pack("<2d", self.REP_SWITCH, self.REP_CUTOFF))
        for a in (
            self.native,
            self.bond_r0,
            self.theta0,
            self.cos_phi0,
            self.sin_phi0,
            self.native_s2,
        ):
            h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
        return h.digest()

    def extended_chain(self, *, bend_deg: float = 150.0) -> np.ndarray:
        """A fully extended planar zigzag with the native bond lengths (the unfolded start)."""
        half = np.deg2rad((180.0 - bend_deg) / 2.0)
        x = np.zeros((self.n_beads, 3))
        for i, r in enumerate(self.bond_r0):
            sign = 1.0 if i % 2 == 0 else -1.0
            x[i + 1] = x[i] + r * np.array([np.cos(half), sign * np.sin(half), 0.0])
        return x - x.mean(axis=0)
