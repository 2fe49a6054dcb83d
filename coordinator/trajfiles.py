"""Trajectories in the files every MD tool opens: XTC frames plus a topology PDB.

VMD, PyMOL, mdtraj and MDAnalysis read a lab's results without foldnet: ``topology.pdb`` (the
system's atoms, at the first frame) and one ``trajectory_runR_cloneC.xtc`` per trajectory.
XTC keeps coordinates to 0.001 nm (GROMACS' compressed format); the full-precision frames
stay in the bundle beside it. Go-model frames are in Angstrom (C-alpha beads, one residue
each); all-atom frames are in nm; XTC takes nm.
"""

from __future__ import annotations

import io
import math
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from openmm import app

from coordinator.errors import CorruptionError
from sims.allatom import PreparedSystem
from sims.go import GoModel
from sims.structure import ca_pdb_text
from worker.systems import SystemDefinition

__all__ = [
    "XTC_PRECISION_NM",
    "frames_nm",
    "nm_per_unit",
    "pdb_positions",
    "pdb_text",
    "read_xtc",
    "read_xtc_times",
    "xtc_bytes",
    "xtc_times",
]

#: What XTC keeps of a coordinate (its default precision of 1000 per nm).
XTC_PRECISION_NM = 1e-3


def nm_per_unit(engine: str) -> float:
    """Nanometres per length unit of ``engine``'s positions (Go: Angstrom; openmm: nm)."""
    return 0.1 if engine == "go" else 1.0


def frames_nm(system: SystemDefinition, frames: np.ndarray) -> np.ndarray:
    """``frames`` (n, atoms, 3) in nm, whichever engine's units they came in."""
    xyz = np.asarray(frames, dtype=np.float64)
    return xyz / 10.0 if isinstance(system, GoModel) else xyz


def pdb_text(
    system: SystemDefinition, positions: np.ndarray, title: str = "", remarks: tuple[str, ...] = ()
) -> str:
    """One structure of ``system`` as PDB text (positions in the engine's own units), with
    ``title`` and then each of ``remarks`` as REMARK lines (wrapped at 80 columns)."""
    head = "".join(
        f"REMARK   1 {part}\n"
        for line in (title, *remarks)
        if line
        for part in textwrap.wrap(line, 69)
    )
    if isinstance(system, GoModel):
        return head + ca_pdb_text(system.sequence, positions)
    if not isinstance(system, PreparedSystem):
        raise CorruptionError(f"not a prepared system: {type(system).__name__}")
    buf = io.StringIO()
    buf.write(head)
    app.PDBFile.writeFile(system.topology, np.asarray(positions) * 10.0, buf, keepIds=True)
    return buf.getvalue()


def pdb_positions(text: str) -> np.ndarray:
    """The coordinates (Angstrom, as written) of every ATOM/HETATM line of PDB ``text``, in
    order: what a verifier compares with the positions a structure was written from."""
    rows = []
    for line in text.splitlines():
        if line.startswith(("ATOM  ", "HETATM")):
            try:
                if len(line) < 54:
                    raise CorruptionError(f"PDB line {line[:30]!r} ends before its coordinates")
                xyz = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
            except ValueError as e:
                raise CorruptionError(f"PDB line {line[:30]!r}: unreadable coordinates") from e
            if not all(math.isfinite(v) for v in xyz):
                raise CorruptionError(f"PDB line {line[:30]!r}: coordinates {xyz} are not finite")
            rows.append(xyz)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def md_topology(topology_pdb: str, xyz: np.ndarray) -> Any:
    """mdtraj's Topology of ``topology_pdb`` (read through a private temporary file), checked
    against frames ``xyz`` (frames, atoms, 3)."""
    import mdtraj

    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise CorruptionError(f"frames have shape {xyz.shape}; expected (frames, atoms, 3)")
    with tempfile.TemporaryDirectory(prefix="foldnet-top-") as d:
        path = Path(d) / "topology.pdb"
        path.write_text(topology_pdb)
        with warnings.catch_warnings():  # a CRYST1 of 1 A (OpenMM's placeholder) is dropped
            warnings.filterwarnings("ignore", "Unlikely unit cell", UserWarning)
            topology = mdtraj.load_pdb(str(path), standard_names=False).topology
    if topology.n_atoms != xyz.shape[1]:
        raise CorruptionError(f"frames have {xyz.shape[1]} atoms, the topology {topology.n_atoms}")
    return topology


def xtc_bytes(topology_pdb: str, xyz_nm: np.ndarray, steps: np.ndarray, dt_ps: float) -> bytes:
    """An XTC file of ``xyz_nm`` (frames, atoms, 3) for the atoms of ``topology_pdb``.

    ``steps`` label the frames; ``dt_ps`` (ps per step; 0 for reduced units) gives their
    time. mdtraj writes through a file, so this goes through a private temporary folder.
    """
    import mdtraj

    xyz = np.asarray(xyz_nm, dtype=np.float32)
    topology = md_topology(topology_pdb, xyz)
    time = xtc_times(steps, dt_ps)
    with tempfile.TemporaryDirectory(prefix="foldnet-xtc-") as d:
        out = Path(d) / "trajectory.xtc"
        mdtraj.Trajectory(xyz, topology, time=time).save_xtc(str(out))
        return out.read_bytes()


def xtc_times(steps: np.ndarray, dt_ps: float) -> np.ndarray:
    """The time an XTC file gives each frame (ps; the step itself for reduced units, ``dt_ps``
    0), as the file keeps it (float32)."""
    return (np.asarray(steps, dtype=np.float64) * (dt_ps if dt_ps > 0 else 1.0)).astype(np.float32)


def read_xtc(xtc: bytes) -> np.ndarray:
    """The frames (frames, atoms, 3; nm, float32) of an XTC file's bytes.

    Raises :class:`CorruptionError` for bytes that are not an XTC file."""
    return read_xtc_times(xtc)[0]


def read_xtc_times(xtc: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The frames (as :func:`read_xtc`) and the time of each (ps, float32) of an XTC file."""
    import mdtraj

    with tempfile.TemporaryDirectory(prefix="foldnet-xtc-") as d:
        path = Path(d) / "trajectory.xtc"
        path.write_bytes(xtc)
        try:
            with mdtraj.formats.XTCTrajectoryFile(str(path), "r") as f:
                xyz, time, _step, _box = f.read()
        except (OSError, ValueError, RuntimeError) as e:
            raise CorruptionError(f"not a readable XTC file: {e}") from e
    return np.asarray(xyz, dtype=np.float32), np.asarray(time, dtype=np.float32)
