"""Q (Best-Hummer-Eaton) and DSSP per all-atom frame, computed from frames and a reference."""

from __future__ import annotations

import io

import numpy as np
import pytest
from openmm import app

from coordinator.errors import CorruptionError
from coordinator.framemetrics import allatom_metrics
from sims.allatom.prepare import complete_pdb, complete_sequence, with_reference
from sims.examples import ALANINE_DIPEPTIDE_PDB, VILLIN_PDB
from sims.structure import ONE_LETTER, read_pdb


def _pdb(model) -> str:
    buf = io.StringIO()
    app.PDBFile.writeFile(model.topology, model.positions * 10.0, buf, keepIds=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def villin():
    return complete_pdb(VILLIN_PDB)


def test_the_native_fold_has_q_one_and_villins_three_helices(villin):
    noisy = villin.positions + np.random.default_rng(1).normal(0, 0.01, villin.positions.shape)
    m = allatom_metrics(_pdb(villin), np.stack([villin.positions, noisy]), villin.positions)
    assert m.columns["q_bhe"][0] == pytest.approx(1.0, abs=1e-4)
    assert 0.9 < m.columns["q_bhe"][1] < 1.0
    assert len(m.dssp) == 2 and len(m.dssp[0]) == 36
    assert m.dssp[0].count("H") >= 15 and m.columns["strand"][0] == 0.0
    runs = [r for r in m.dssp[0].split("C") if r]
    assert len(runs) == 3, m.dssp[0]  # HP36: three helices
    assert m.columns["helix"][0] == pytest.approx(m.dssp[0].count("H") / 36)


def test_an_extended_chain_has_few_native_contacts_and_no_helix(villin):
    seq = "".join(ONE_LETTER[r.name] for r in read_pdb(VILLIN_PDB).amino_acids)
    built = with_reference(complete_sequence(seq), villin)
    reference = np.where(np.isfinite(built.reference), built.reference, built.positions)
    m = allatom_metrics(_pdb(built), built.positions[None], reference)
    assert m.columns["q_bhe"][0] < 0.3
    assert m.columns["helix"][0] == 0.0 and set(m.dssp[0]) <= {"C", "E"}


def test_a_dipeptide_has_no_native_contacts_and_no_reference_means_no_q():
    dipeptide = complete_pdb(ALANINE_DIPEPTIDE_PDB)
    frames = dipeptide.positions[None]
    assert np.isnan(allatom_metrics(_pdb(dipeptide), frames, dipeptide.positions).columns["q_bhe"])
    assert set(allatom_metrics(_pdb(dipeptide), frames, None).columns) == {"helix", "strand"}


def test_frames_that_do_not_fit_the_topology_are_refused(villin):
    with pytest.raises(CorruptionError, match=r"expected \(frames, atoms, 3\)"):
        allatom_metrics(_pdb(villin), villin.positions, None)
    with pytest.raises(CorruptionError, match="frames have 5 atoms"):
        allatom_metrics(_pdb(villin), villin.positions[None, :5], None)
    with pytest.raises(CorruptionError, match="the reference has shape"):
        allatom_metrics(_pdb(villin), villin.positions[None], villin.positions[:5])
