"""What a lab reads per all-atom frame beyond the engine's own observables: the fraction of
native contacts by Best, Hummer and Eaton and the secondary structure by DSSP.

Computed when results are written, from the validated frames alone (so anyone can recompute
them from the bundle): the workers' signed observables stay what they computed (energy, Rg,
and against the reference C-alpha and heavy-atom RMSD and the residue-level Q that the Go
engine shares). Go frames are C-alpha beads: neither measure applies to them.

Q (Best, Hummer and Eaton, PNAS 110, 17874, 2013): heavy-atom pairs of residues more than 3
apart that are within 4.5 A in the reference are native contacts; a frame's Q is the mean of
``1 / (1 + exp(beta (r - lambda r0)))`` over them, beta = 5 per A, lambda = 1.8 (all-atom).
DSSP (Kabsch and Sander 1983) as mdtraj computes it, simplified to H (helix), E (strand)
and C (coil).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.errors import CorruptionError
from coordinator.trajfiles import md_topology

__all__ = ["BHE_BETA_PER_NM", "BHE_LAMBDA", "FrameMetrics", "allatom_metrics"]

#: Native-contact distance in the reference, nm (4.5 A).
NATIVE_CUTOFF_NM = 0.45
#: Best-Hummer-Eaton's beta, per nm (5 per A), and lambda for all-atom models.
BHE_BETA_PER_NM = 50.0
BHE_LAMBDA = 1.8
#: Residues closer than this in sequence are never native contacts (|i - j| > 3).
MIN_SEQUENCE_SEPARATION = 4
#: Frames measured at once (bounds memory for long trajectories of large systems).
_CHUNK = 256


@dataclass(frozen=True, slots=True, eq=False)
class FrameMetrics:
    """Per-frame columns (``q_bhe`` when there is a reference; ``helix``, ``strand``: the
    fraction of residues in each) and per frame one DSSP letter per protein residue."""

    columns: dict[str, np.ndarray]
    dssp: tuple[str, ...]


def allatom_metrics(
    topology_pdb: str, frames_nm: np.ndarray, reference_nm: np.ndarray | None
) -> FrameMetrics:
    """Q (Best-Hummer-Eaton) against ``reference_nm`` and DSSP of ``frames_nm`` (frames,
    atoms, 3), for the atoms of ``topology_pdb``."""
    import mdtraj

    xyz = np.asarray(frames_nm, dtype=np.float64)
    topology = md_topology(topology_pdb, xyz)
    columns: dict[str, np.ndarray] = {}
    if reference_nm is not None:
        columns["q_bhe"] = _best_hummer_q(topology, xyz, np.asarray(reference_nm, np.float64))
    letters: list[str] = []
    helix, strand = np.zeros(len(xyz)), np.zeros(len(xyz))
    for start in range(0, len(xyz), _CHUNK):
        chunk = mdtraj.Trajectory(xyz[start : start + _CHUNK].astype(np.float32), topology)
        codes = mdtraj.compute_dssp(chunk, simplified=True)
        for k, row in enumerate(codes):
            protein = [c for c in row if c != "NA"]
            n = max(1, len(protein))
            helix[start + k] = sum(c == "H" for c in protein) / n
            strand[start + k] = sum(c == "E" for c in protein) / n
            letters.append("".join(c if c in "HEC" else "C" for c in protein))
    columns["helix"] = helix
    columns["strand"] = strand
    return FrameMetrics(columns=columns, dssp=tuple(letters))


def _best_hummer_q(topology: object, xyz: np.ndarray, reference: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    atoms = list(topology.atoms)  # type: ignore[attr-defined]
    heavy = np.array(
        [a.index for a in atoms if a.element is not None and a.element.symbol != "H"],
        dtype=np.int64,
    )
    if reference.shape != xyz.shape[1:]:
        raise CorruptionError(
            f"the reference has shape {reference.shape}; expected one per atom {xyz.shape[1:]}"
        )
    residue = np.array([a.residue.index for a in atoms], dtype=np.int64)
    pairs = np.array(sorted(cKDTree(reference[heavy]).query_pairs(NATIVE_CUTOFF_NM)), np.int64)
    if len(pairs) == 0:
        return np.full(len(xyz), np.nan)
    i, j = heavy[pairs[:, 0]], heavy[pairs[:, 1]]
    far = np.abs(residue[i] - residue[j]) >= MIN_SEQUENCE_SEPARATION
    i, j = i[far], j[far]
    if len(i) == 0:
        return np.full(len(xyz), np.nan)  # e.g. a dipeptide: no native contacts to form
    r0 = np.linalg.norm(reference[i] - reference[j], axis=1)
    q = np.empty(len(xyz))
    for start in range(0, len(xyz), _CHUNK):
        f = xyz[start : start + _CHUNK]
        r = np.linalg.norm(f[:, i] - f[:, j], axis=2)
        q[start : start + _CHUNK] = np.mean(
            1.0 / (1.0 + np.exp(BHE_BETA_PER_NM * (r - BHE_LAMBDA * r0))), axis=1
        )
    return q
