"""A reference structure apart from the input (issue #11): RMSD and Q against the folded
state for a job started from its sequence, matched atom by atom by residue and name."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.errors import SubmissionError
from coordinator.plan import JobPlan
from coordinator.prepare import prepare_job
from sims.allatom import AllAtomEngine
from sims.allatom.prepare import complete_pdb, complete_sequence, prepared_system, with_reference
from sims.errors import StructureError
from sims.examples import ALANINE_DIPEPTIDE_PDB, VILLIN_PDB
from sims.structure import ONE_LETTER, read_pdb

VILLIN_SEQUENCE = "".join(ONE_LETTER[r.name] for r in read_pdb(VILLIN_PDB).amino_acids)


@pytest.fixture(scope="module")
def villin_reference():
    return complete_pdb(VILLIN_PDB)


def test_a_chain_built_from_its_sequence_is_measured_against_the_folded_reference(
    villin_reference,
):
    built = complete_sequence(VILLIN_SEQUENCE)
    model = with_reference(built, villin_reference)
    assert model.reference is not None and model.reference.shape == built.positions.shape
    prepared = prepared_system(model, _no_system(), built.positions, 0.0)
    ref_ca = prepared.reference[prepared.ca_indices]
    want_ca = np.array(
        [
            villin_reference.positions[a.index]
            for a in villin_reference.topology.atoms()
            if a.name == "CA"
        ]
    )
    np.testing.assert_array_equal(ref_ca, want_ca)  # every C-alpha, taken from the reference
    heavy = [a for a in built.topology.atoms() if a.element.symbol != "H"]
    assert len(heavy) - 2 <= len(prepared.heavy_indices) <= len(heavy)
    assert prepared.contacts is not None and len(prepared.contacts.pairs) > 20
    # the extended chain is far from the fold: the RMSD says so
    from sims.observables import kabsch_rmsd

    assert kabsch_rmsd(built.positions[prepared.ca_indices] * 10, ref_ca * 10) > 8.0


def _no_system():
    import openmm

    return openmm.System()


def test_a_reference_of_another_protein_is_refused_naming_the_residue(villin_reference):
    other = VILLIN_SEQUENCE[:5] + ("A" if VILLIN_SEQUENCE[5] != "A" else "G") + VILLIN_SEQUENCE[6:]
    with pytest.raises(StructureError, match=r"residue 6 is .* expected the same sequence"):
        with_reference(complete_sequence(other), villin_reference)
    with pytest.raises(StructureError, match="36 residues once completed, the system 10"):
        with_reference(complete_sequence(VILLIN_SEQUENCE[:10]), villin_reference)


def test_the_plan_takes_a_reference_for_openmm_only():
    pdb = VILLIN_PDB.read_text()
    plan = JobPlan.create(engine="openmm", sequence=VILLIN_SEQUENCE, reference=pdb)
    assert plan.reference == pdb and "reference" in plan.describe()
    assert "reference" not in plan.parameters()
    assert JobPlan.from_json(plan.to_json()) == plan
    with pytest.raises(SubmissionError, match="openmm jobs only: the go engine measures"):
        JobPlan.create(engine="go", pdb=pdb, reference=pdb)
    with pytest.raises(SubmissionError, match="the reference is empty"):
        JobPlan.create(engine="openmm", sequence="AA", reference="  ")


def test_a_prepared_job_measures_against_its_reference_moved_in_space():
    text = ALANINE_DIPEPTIDE_PDB.read_text()
    moved = []  # the same molecule, shifted by 5 A: RMSD after superposition is unchanged
    for line in text.splitlines():
        if line.startswith(("ATOM", "HETATM")):
            x, y, z = (float(line[30:38]) + 5, float(line[38:46]), float(line[46:54]))
            moved.append(f"{line[:30]}{x:8.3f}{y:8.3f}{z:8.3f}{line[54:]}")
        else:
            moved.append(line)
    plan = JobPlan.create(
        engine="openmm",
        pdb=text,
        reference="\n".join(moved) + "\n",
        runs=1,
        steps_per_wu=100,
        segment_steps=50,
        report_steps=50,
    )
    prepared = prepare_job(plan)
    own = AllAtomEngine.from_pdb(ALANINE_DIPEPTIDE_PDB)
    heavy = own.prepared.heavy_indices
    np.testing.assert_array_equal(prepared.system.heavy_indices, heavy)
    shift = prepared.system.reference[heavy] - own.prepared.reference[heavy]
    np.testing.assert_allclose(shift, np.tile([0.5, 0.0, 0.0], (len(heavy), 1)), atol=1e-6)
    engine = AllAtomEngine(prepared.system)
    seen = engine.observe(prepared.starts[0])
    assert seen["rmsd_heavy"] == pytest.approx(own.observe(prepared.starts[0])["rmsd_heavy"])


def test_a_reference_that_is_not_a_pdb_fails_the_preparation_naming_it():
    plan = JobPlan.create(engine="openmm", sequence="AAA", reference="HELLO\n")
    with pytest.raises(Exception, match="the reference PDB"):
        prepare_job(plan)


def test_submit_takes_a_reference_file_for_openmm_and_refuses_it_for_go(tmp_path):
    from cli_helpers import run_foldnet

    folder = tmp_path / "coord"
    go = ["submit", str(folder), "--pdb", str(VILLIN_PDB), "--reference", str(VILLIN_PDB)]
    refused = run_foldnet(*go, home=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "openmm jobs only" in refused.stderr and "Traceback" not in refused.stderr
    assert not folder.exists()
    missing = run_foldnet(
        "submit",
        str(folder),
        "--engine",
        "openmm",
        "--sequence",
        "AAA",
        "--reference",
        str(tmp_path / "nowhere.pdb"),
        home=tmp_path,
    )
    assert missing.returncode == 2 and "no PDB file at" in missing.stderr, missing.stderr
    ok = run_foldnet(
        "submit",
        str(folder),
        "--engine",
        "openmm",
        "--sequence",
        VILLIN_SEQUENCE,
        "--reference",
        str(VILLIN_PDB),
        home=tmp_path,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "against the given reference" in ok.stdout
