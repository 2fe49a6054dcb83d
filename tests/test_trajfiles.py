"""Trajectory files for MD tools: an XTC and its topology for both engines, read back by
mdtraj with the coordinates the result carried (to XTC's 0.001 nm)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from coordinator.errors import CorruptionError
from coordinator.trajfiles import (
    XTC_PRECISION_NM,
    frames_nm,
    pdb_positions,
    pdb_text,
    read_xtc,
    xtc_bytes,
)
from sims.examples import ALANINE_DIPEPTIDE_PDB, VILLIN_PDB


def _read(topology: str, xtc: bytes) -> mdtraj.Trajectory:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "top.pdb").write_text(topology)
        (Path(d) / "t.xtc").write_bytes(xtc)
        return mdtraj.load(f"{d}/t.xtc", top=f"{d}/top.pdb")


def _jiggle(start: np.ndarray, n: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(7)
    return start[None] + rng.normal(0.0, scale, size=(n, *start.shape))


def test_go_model_frames_in_angstrom_become_an_xtc_in_nm():
    from sims.go import GoModel

    model = GoModel.from_pdb(VILLIN_PDB)
    frames = _jiggle(model.native, 5, 0.5)  # Angstrom
    top = pdb_text(model, frames[0], "topology")
    traj = _read(top, xtc_bytes(top, frames_nm(model, frames), np.arange(5) * 1000, 0.0))
    assert (traj.n_frames, traj.n_atoms) == (5, 36)
    assert [a.name for a in traj.topology.atoms] == ["CA"] * 36
    assert np.abs(traj.xyz - frames / 10.0).max() <= XTC_PRECISION_NM
    assert list(traj.time) == [0.0, 1000.0, 2000.0, 3000.0, 4000.0]  # steps (reduced units)


def test_all_atom_frames_keep_every_atom_and_their_time_in_ps():
    from sims.allatom import AllAtomEngine

    prepared = AllAtomEngine.from_pdb(ALANINE_DIPEPTIDE_PDB).prepared
    start = np.asarray(prepared.positions, dtype=np.float64)  # nm
    frames = _jiggle(start, 4, 0.01)
    top = pdb_text(prepared, frames[0])
    traj = _read(top, xtc_bytes(top, frames_nm(prepared, frames), np.arange(4) * 2500, 0.004))
    assert traj.n_atoms == prepared.topology.getNumAtoms() == start.shape[0]
    assert np.abs(traj.xyz - frames).max() <= XTC_PRECISION_NM
    assert np.allclose(traj.time, [0.0, 10.0, 20.0, 30.0])  # every 2,500 steps of 4 fs


def test_frames_that_do_not_fit_the_topology_are_refused():
    from sims.go import GoModel

    model = GoModel.from_pdb(VILLIN_PDB)
    top = pdb_text(model, model.native)
    with pytest.raises(CorruptionError, match="frames have 35 atoms, the topology 36"):
        xtc_bytes(top, np.zeros((2, 35, 3)), np.arange(2), 0.0)
    with pytest.raises(CorruptionError, match="expected"):
        xtc_bytes(top, np.zeros((36, 3)), np.arange(1), 0.0)


def test_xtc_and_pdb_read_back_what_was_written_to_their_precision():
    from sims.go import GoModel

    model = GoModel.from_pdb(VILLIN_PDB)
    frames = _jiggle(model.native, 3, 0.5)
    top = pdb_text(model, frames[0], "topology", ("criterion: a second remark",))
    assert top.splitlines()[:2] == [
        "REMARK   1 topology",
        "REMARK   1 criterion: a second remark",
    ]
    assert np.abs(pdb_positions(top) - frames[0]).max() <= 5e-4  # Angstrom, 3 decimals
    xyz = read_xtc(xtc_bytes(top, frames_nm(model, frames), np.arange(3), 0.0))
    assert np.abs(xyz - frames / 10.0).max() <= XTC_PRECISION_NM
    with pytest.raises(CorruptionError, match="not a readable XTC"):
        read_xtc(b"not an xtc file at all")
