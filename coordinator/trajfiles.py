"""Trajectories in the files every MD tool opens: XTC frames plus a topology PDB.

VMD, PyMOL, mdtraj and MDAnalysis read a lab's results without foldnet: ``topology.pdb`` (the
system's atoms, at the first frame) and one ``trajectory_runR_cloneC.xtc`` per trajectory.
XTC keeps coordinates to 0.001 nm (GROMACS' compressed format); the full-precision frames
stay in the bundle beside it. Go-model frames are in Angstrom (C-alpha beads, one residue
each); all-atom frames are in nm; XTC takes nm.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from openmm import app

from coordinator.errors import CorruptionError
from sims.allatom import PreparedSystem
from sims.go import GoModel
from sims.structure import ca_pdb_text
from worker.systems import SystemDefinition

__all__ = ["XTC_PRECISION_NM", "bundle_readme", "frames_nm", "pdb_text", "xtc_bytes"]

#: What XTC keeps of a coordinate (its default precision of 1000 per nm).
XTC_PRECISION_NM = 1e-3


def frames_nm(system: SystemDefinition, frames: np.ndarray) -> np.ndarray:
    """``frames`` (n, atoms, 3) in nm, whichever engine's units they came in."""
    xyz = np.asarray(frames, dtype=np.float64)
    return xyz / 10.0 if isinstance(system, GoModel) else xyz


def pdb_text(system: SystemDefinition, positions: np.ndarray, title: str = "") -> str:
    """One structure of ``system`` as PDB text (positions in the engine's own units)."""
    if isinstance(system, GoModel):
        return ca_pdb_text(system.sequence, positions, title=title)
    if not isinstance(system, PreparedSystem):
        raise CorruptionError(f"not a prepared system: {type(system).__name__}")
    buf = io.StringIO()
    if title:
        buf.write(f"REMARK   1 {title[:68]}\n")
    app.PDBFile.writeFile(system.topology, np.asarray(positions) * 10.0, buf, keepIds=True)
    return buf.getvalue()


def xtc_bytes(topology_pdb: str, xyz_nm: np.ndarray, steps: np.ndarray, dt_ps: float) -> bytes:
    """An XTC file of ``xyz_nm`` (frames, atoms, 3) for the atoms of ``topology_pdb``.

    ``steps`` label the frames; ``dt_ps`` (ps per step; 0 for reduced units) gives their
    time. mdtraj writes through a file, so this goes through a private temporary folder.
    """
    import mdtraj

    xyz = np.asarray(xyz_nm, dtype=np.float32)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise CorruptionError(f"frames have shape {xyz.shape}; expected (frames, atoms, 3)")
    with tempfile.TemporaryDirectory(prefix="foldnet-xtc-") as d:
        top_path = Path(d) / "topology.pdb"
        top_path.write_text(topology_pdb)
        topology = mdtraj.load_pdb(str(top_path), standard_names=False).topology
        if topology.n_atoms != xyz.shape[1]:
            raise CorruptionError(
                f"frames have {xyz.shape[1]} atoms, the topology {topology.n_atoms}"
            )
        time = np.asarray(steps, dtype=np.float64) * (dt_ps if dt_ps > 0 else 1.0)
        out = Path(d) / "trajectory.xtc"
        mdtraj.Trajectory(xyz, topology, time=time).save_xtc(str(out))
        return out.read_bytes()


def bundle_readme(engine: str, *, folder: bool = False) -> str:
    """What each file of a job's results is: the HTTP bundle's, or (``folder``) what
    ``foldnet results`` writes from a coordinator folder."""
    units = (
        "Go model: C-alpha beads in Angstrom (XTC: nm); time in steps of 0.005 tau"
        if engine == "go"
        else "all-atom: nm; XTC time in ps (4 fs steps)"
    )
    lines = [
        f"foldnet results ({engine}; {units})",
        "",
        "topology.pdb                  the system's atoms (at the first frame): open the XTCs",
        '                              with it, e.g. mdtraj.load("trajectory_run0_clone0.xtc",',
        '                              top="topology.pdb") or vmd topology.pdb trajectory_*.xtc',
        "trajectory_runR_cloneC.xtc    one trajectory, every generation joined (0.001 nm)",
        "observables_runR_cloneC.csv   per frame: step, energy, Q (fraction of native contacts),",
        "                              RMSD to the reference, radius of gyration",
        "best_structure.pdb            highest Q of the job (else lowest RMSD): the criterion and",
        "                              the frame are in its REMARK",
    ]
    if folder:
        lines += [
            "native.pdb                    the reference (native) structure",
            "q_rmsd.png                    Q and RMSD of every trajectory",
        ]
    else:
        lines += [
            "frames_runR_cloneC.npz        the same frames at full precision (frames, steps)",
            "final_runR_cloneC.pdb         the trajectory's last validated state",
            "summary.json                  the generations and frames of each trajectory",
        ]
    lines += [
        "",
        "Every frame comes from results that agreeing volunteers computed and the coordinator",
        "validated; none from a retracted result.",
        "",
    ]
    return "\n".join(lines)
