"""The ``openmm`` all-atom engine: preparation, determinism, bad input, serialization.

Systems are prepared once per module (minimization on a CPU is the slow part); villin is
capped at fewer minimizer iterations than a job's, which is enough for a short stable run.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
from pathlib import Path

import numpy as np
import openmm
import pdbfixer
import pytest
from openmm import app, unit

from sims import (
    DeterminismClass,
    ParameterError,
    RunSpec,
    SimulationError,
    State,
    StateError,
    StructureError,
    UnknownResidueError,
)
from sims.allatom import (
    AllAtomEngine,
    available_platforms,
    benchmark_ns_per_day,
    complete_pdb,
    complete_sequence,
    extended_backbone,
    find_clashes,
    openmm_seed,
)
from sims.allatom.prepare import HYDROGEN_MASS_AMU, create_relax_system
from sims.structure import read_pdb

DATA = Path(os.path.dirname(pdbfixer.__file__)) / "tests" / "data"
VILLIN = DATA / "test.pdb"
DIPEPTIDE = DATA / "alanine-dipeptide.pdb"
CHIGNOLIN = "YYDPETGTWY"

SPEC = RunSpec(steps=100, segment_steps=50, report_steps=25, temperature=300.0, seed=2024)


@pytest.fixture(scope="module")
def dipeptide() -> AllAtomEngine:
    return AllAtomEngine.from_pdb(DIPEPTIDE)


@pytest.fixture(scope="module")
def chignolin() -> AllAtomEngine:
    return AllAtomEngine.from_sequence(CHIGNOLIN, minimize_iterations=300)


@pytest.fixture(scope="module")
def villin() -> AllAtomEngine:
    return AllAtomEngine.from_pdb(VILLIN, minimize_iterations=200, polish_iterations=10)


def _assert_finite_run(engine: AllAtomEngine, spec: RunSpec = SPEC) -> None:
    state = engine.initial_state(temperature=spec.temperature, seed=7)
    result = engine.run(state, spec)
    assert len(result.boundaries) == spec.n_segments + 1
    assert result.final.step == spec.steps
    assert result.frames.shape == (spec.steps // spec.report_steps, engine.n_atoms, 3)
    assert list(result.frame_steps) == [25, 50, 75, 100]
    assert set(result.observables) == {"energy", *engine.observable_names}
    for name, values in result.observables.items():
        if name != "q":
            assert np.all(np.isfinite(values)), name
    assert np.all(np.isfinite(result.frames))


# -- preparation -----------------------------------------------------------------------------


def test_dipeptide_prepares_and_runs(dipeptide: AllAtomEngine) -> None:
    assert dipeptide.n_atoms == 22  # ACE-ALA-NME with hydrogens
    assert [r.name for r in dipeptide.topology.residues()] == ["ACE", "ALA", "NME"]
    assert math.isfinite(dipeptide.prepared.minimized_energy)
    # One residue: no native contacts, so no Q (a NaN column would be refused on upload).
    assert dipeptide.observable_names == ("rmsd_ca", "rmsd_heavy", "rg")
    _assert_finite_run(dipeptide)


def test_chignolin_built_from_sequence(chignolin: AllAtomEngine) -> None:
    assert 150 <= chignolin.n_atoms <= 180  # 166 with OpenMM 8.6 / PDBFixer 1.12
    assert chignolin.prepared.sequence == CHIGNOLIN
    assert chignolin.prepared.reference is None
    assert chignolin.observable_names == ("rg",)
    assert math.isfinite(chignolin.prepared.minimized_energy)
    assert chignolin.prepared.minimized_energy < 0
    rg = chignolin.observe(chignolin.initial_state(temperature=300.0, seed=1))["rg"]
    assert rg > 8.0  # an extended 10-mer, not a collapsed ball
    _assert_finite_run(chignolin)


def test_built_chain_has_ideal_geometry_and_no_clashes() -> None:
    residues = extended_backbone(CHIGNOLIN)
    for a, b in itertools.pairwise(residues):
        assert np.linalg.norm(a["C"] - b["N"]) == pytest.approx(1.329, abs=1e-9)
        assert np.linalg.norm(b["N"] - b["CA"]) == pytest.approx(1.458, abs=1e-9)
    model = complete_sequence(CHIGNOLIN)
    assert find_clashes(model.topology, model.positions) == []


@pytest.mark.slow
def test_villin_prepares_and_runs(villin: AllAtomEngine) -> None:
    assert 580 <= villin.n_atoms <= 620  # 596: the file already carries hydrogens
    assert villin.prepared.sequence == "MLSDEDFKAVFGMTRSAFANLPLWKQQNLKKEKGLF"
    assert math.isfinite(villin.prepared.minimized_energy)
    start = villin.observe(villin.initial_state(temperature=300.0, seed=1))
    assert start["rmsd_ca"] < 1.0 and start["rmsd_heavy"] < 1.5  # minimized, near native
    assert start["q"] > 0.9
    _assert_finite_run(villin)


def test_the_relaxation_pass_is_the_same_force_field_with_native_obc2(
    dipeptide: AllAtomEngine,
) -> None:
    """The first minimisation pass changes only the implicit solvent: GBn2's CustomGBForce is
    replaced by OpenMM's native GBSAOBCForce with OBC2's parameters; the model simulated
    (the prepared System) keeps GBn2."""
    system = dipeptide.prepared.system()
    relax = create_relax_system(system, dipeptide.topology)

    def kinds(s: openmm.System) -> list[str]:
        return sorted(type(f).__name__ for f in s.getForces())

    assert "CustomGBForce" in kinds(system) and "GBSAOBCForce" not in kinds(system)
    assert kinds(relax) == sorted(
        [k for k in kinds(system) if k != "CustomGBForce"] + ["GBSAOBCForce"]
    )
    same = sorted(
        openmm.XmlSerializer.serialize(f)
        for f in system.getForces()
        if not isinstance(f, openmm.CustomGBForce)
    )
    assert same == sorted(
        openmm.XmlSerializer.serialize(f)
        for f in relax.getForces()
        if not isinstance(f, openmm.GBSAOBCForce)
    )
    # the same energy as OpenMM's own amber14 + implicit/obc2.xml system
    obc2 = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(
        dipeptide.topology,
        constraints=app.HBonds,
        hydrogenMass=HYDROGEN_MASS_AMU * unit.amu,
    )

    def energy(s: openmm.System) -> float:
        ctx = openmm.Context(
            s,
            openmm.VerletIntegrator(0.001),
            openmm.Platform.getPlatformByName("Reference"),
        )
        ctx.setPositions(dipeptide.prepared.positions)
        e = ctx.getState(getEnergy=True).getPotentialEnergy()
        return float(e.value_in_unit(unit.kilojoule_per_mole))

    assert energy(relax) == pytest.approx(energy(obc2), abs=0.05)
    assert abs(energy(relax) - energy(system)) > 1.0  # GBn2 is another solvent model


def test_preparation_minimises_in_obc2_then_polishes_in_gbn2_repeatably() -> None:
    stages: list[str] = []
    a = AllAtomEngine.from_sequence(CHIGNOLIN, minimize_iterations=100, progress=stages.append)
    assert stages[-2:] == ["minimising", "polishing in GBn2"]
    b = AllAtomEngine.from_sequence(CHIGNOLIN, minimize_iterations=100)
    np.testing.assert_array_equal(a.prepared.positions, b.prepared.positions)
    assert a.prepared.system_xml == b.prepared.system_xml
    assert a.prepared.minimized_energy == b.prepared.minimized_energy
    # the energy recorded is the production (GBn2) system's at the prepared start
    ctx = openmm.Context(
        a.prepared.system(),
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("CPU"),
        {"Threads": "1"},
    )
    ctx.setPositions(a.prepared.positions)
    e = ctx.getState(getEnergy=True).getPotentialEnergy()
    assert a.prepared.minimized_energy == pytest.approx(
        e.value_in_unit(unit.kilojoule_per_mole), abs=1e-3
    )
    # the polish moved the start from OBC2's minimum toward GBn2's
    unpolished = AllAtomEngine.from_sequence(
        CHIGNOLIN, minimize_iterations=100, polish_iterations=1
    )
    assert a.prepared.minimized_energy < unpolished.prepared.minimized_energy
    with pytest.raises(ParameterError, match="polish_iterations must be an integer >= 0"):
        AllAtomEngine.from_pdb(DIPEPTIDE, polish_iterations=-1)


def test_preparation_is_repeatable() -> None:
    # PDBFixer places hydrogens at random and relaxes them on a threaded CPU context; both are
    # pinned, so two preparations of one input agree to the bit.
    a, b = complete_pdb(DIPEPTIDE), complete_pdb(DIPEPTIDE)
    np.testing.assert_array_equal(a.positions, b.positions)
    c, d = complete_sequence(CHIGNOLIN), complete_sequence(CHIGNOLIN)
    np.testing.assert_array_equal(c.positions, d.positions)


@pytest.mark.slow
def test_internal_gap_is_rebuilt_from_seqres(tmp_path: Path) -> None:
    path = tmp_path / "gap.pdb"
    path.write_text(
        "\n".join(
            line
            for line in VILLIN.read_text().splitlines()
            if not (line.startswith("ATOM") and 50 <= int(line[22:26]) <= 52)
        )
        + "\n"
    )
    model = complete_pdb(path)
    assert model.topology.getNumResidues() == 36
    assert 580 <= model.topology.getNumAtoms() <= 620


def test_write_pdb_round_trips(dipeptide: AllAtomEngine, tmp_path: Path) -> None:
    state = dipeptide.initial_state(temperature=300.0, seed=1)
    out = tmp_path / "frame.pdb"
    dipeptide.write_pdb(state, out)
    assert [p.name for p in tmp_path.iterdir()] == ["frame.pdb"]  # no temp file left
    structure = read_pdb(out)
    assert [r.name for r in structure.residues] == ["ACE", "ALA", "NME"]
    ca = structure.amino_acids[0].atom("CA")
    assert ca is not None
    np.testing.assert_allclose(
        ca.xyz, state.positions[dipeptide.prepared.ca_indices[0]] * 10, atol=1e-3
    )


# -- determinism -----------------------------------------------------------------------------


def test_segment_recomputed_from_boundary_is_bit_identical(chignolin: AllAtomEngine) -> None:
    spec = RunSpec(steps=60, segment_steps=20, report_steps=20, temperature=310.0, seed=99)
    start = chignolin.initial_state(temperature=310.0, seed=3)
    result = chignolin.run(start, spec)
    for k in range(spec.n_segments):
        again = chignolin.run_segment(result.boundaries[k], spec, k)
        assert again.digest() == result.boundaries[k + 1].digest(), f"segment {k}"
        assert again.step == result.boundaries[k + 1].step
    rerun = chignolin.run(chignolin.initial_state(temperature=310.0, seed=3), spec)
    assert rerun.boundary_digests() == result.boundary_digests()
    np.testing.assert_array_equal(rerun.observables["energy"], result.observables["energy"])
    other = chignolin.run(start, RunSpec(60, 20, 20, 310.0, seed=100))
    assert other.final.digest() != result.final.digest()


def test_initial_state_is_deterministic(chignolin: AllAtomEngine) -> None:
    a = chignolin.initial_state(temperature=300.0, seed=5)
    b = chignolin.initial_state(temperature=300.0, seed=5)
    c = chignolin.initial_state(temperature=300.0, seed=6)
    assert a.digest() == b.digest() and a.step == 0
    assert a.digest() != c.digest()
    np.testing.assert_array_equal(a.positions, chignolin.prepared.positions)


def test_prepared_system_pickles_and_reproduces(dipeptide: AllAtomEngine) -> None:
    # Workers receive the prepared system, not the PDB: it must give the same bits.
    clone = AllAtomEngine(pickle.loads(pickle.dumps(dipeptide.prepared)))
    state = dipeptide.initial_state(temperature=300.0, seed=1)
    assert clone.initial_state(temperature=300.0, seed=1).digest() == state.digest()
    assert clone.run(state, SPEC).final.digest() == dipeptide.run(state, SPEC).final.digest()
    assert clone.determinism_class() == dipeptide.determinism_class()


def test_determinism_class(dipeptide: AllAtomEngine) -> None:
    dc = dipeptide.determinism_class()
    assert dc.engine == "openmm"
    assert openmm.__version__ in dc.engine_version and "gbn2" in dc.engine_version
    assert (dc.platform, dc.precision, dc.threads) == ("CPU", "mixed", 1)
    assert dc.cpu
    assert ("bit_reproducible", "true") in dc.extra
    ref = AllAtomEngine(dipeptide.prepared, platform="Reference").determinism_class()
    assert (ref.platform, ref.precision) == ("Reference", "double")
    assert ref.key != dc.key


@pytest.mark.skipif("CUDA" not in available_platforms(), reason="no CUDA platform here")
def test_cuda_is_a_different_class(dipeptide: AllAtomEngine) -> None:
    dc = AllAtomEngine(dipeptide.prepared, platform="CUDA").determinism_class()
    assert (dc.platform, dc.precision) == ("CUDA", "mixed")
    assert dc.key != dipeptide.determinism_class().key


def test_openmm_seed_is_never_zero_and_stable() -> None:
    assert openmm_seed(0) == 1
    assert openmm_seed(2**31 - 2) == 2**31 - 1
    assert openmm_seed(2**31 - 1) == 1
    assert 1 <= openmm_seed(2**64 - 1) <= 2**31 - 1


def test_superseded_segment_runner_refuses(dipeptide: AllAtomEngine) -> None:
    state = dipeptide.initial_state(temperature=300.0, seed=1)
    first = dipeptide.start_segment(state, seed=1, temperature=300.0)
    dipeptide.start_segment(state, seed=2, temperature=300.0)
    with pytest.raises(SimulationError, match="superseded"):
        first.step(1)


def test_benchmark_reports_ns_per_day(dipeptide: AllAtomEngine) -> None:
    rate = benchmark_ns_per_day(dipeptide, 20, warmup=2)
    assert math.isfinite(rate) and rate > 0


# -- bad input -------------------------------------------------------------------------------


def test_not_a_pdb(tmp_path: Path) -> None:
    path = tmp_path / "notes.pdb"
    path.write_text("this is a shopping list\neggs\nmilk\n")
    with pytest.raises(StructureError, match="not a PDB file"):
        AllAtomEngine.from_pdb(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StructureError, match="no such file"):
        AllAtomEngine.from_pdb(tmp_path / "absent.pdb")


def test_unknown_residue(tmp_path: Path) -> None:
    path = tmp_path / "xyz.pdb"
    path.write_text(
        "ATOM      1  N   XYZ A   1       0.000   0.000   0.000  1.00  0.00           N\n"
        "ATOM      2  CA  XYZ A   1       1.458   0.000   0.000  1.00  0.00           C\n"
        "END\n"
    )
    with pytest.raises(UnknownResidueError, match="unknown residue 'XYZ'"):
        AllAtomEngine.from_pdb(path)


def test_absent_chain() -> None:
    with pytest.raises(StructureError, match="chain 'Z' is empty or absent"):
        AllAtomEngine.from_pdb(VILLIN, chain="Z")


def test_chain_of_only_water_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "water.pdb"
    path.write_text(
        (DATA / "alanine-dipeptide.pdb").read_text().replace("END\n", "")
        + "HETATM   11  O   HOH B 101      10.000  10.000  10.000  1.00  0.00           O\n"
        "END\n"
    )
    with pytest.raises(StructureError, match="chain 'B' is empty or absent"):
        AllAtomEngine.from_pdb(path, chain="B")


def test_chain_break_without_seqres(tmp_path: Path) -> None:
    # Villin without residues 50-52 and without SEQRES: PDBFixer cannot rebuild the gap.
    lines = [
        line
        for line in VILLIN.read_text().splitlines()
        if not line.startswith("SEQRES")
        and not (line.startswith("ATOM") and 50 <= int(line[22:26]) <= 52)
    ]
    path = tmp_path / "gap.pdb"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StructureError, match="chain break between"):
        AllAtomEngine.from_pdb(path)


def test_bad_sequence() -> None:
    with pytest.raises(UnknownResidueError, match=r"unknown residue code.*'1'.*'Z'"):
        AllAtomEngine.from_sequence("YYZ1")


def test_state_refuses_nan() -> None:
    pos = np.zeros((3, 3))
    pos[1, 2] = np.nan
    with pytest.raises(StateError, match="non-finite"):
        State(positions=pos, velocities=np.zeros((3, 3)))


def test_state_with_wrong_atom_count(dipeptide: AllAtomEngine) -> None:
    state = State(positions=np.zeros((5, 3)), velocities=np.zeros((5, 3)))
    with pytest.raises(StateError, match="5 atoms but the openmm system"):
        dipeptide.run(state, SPEC)
    with pytest.raises(StateError, match="5 atoms"):
        dipeptide.observe(state)


@pytest.mark.parametrize("temperature", [0.0, -10.0, float("nan"), 1500.0])
def test_bad_temperature(dipeptide: AllAtomEngine, temperature: float) -> None:
    with pytest.raises(ParameterError, match="temperature"):
        dipeptide.check_temperature(temperature)
    with pytest.raises(ParameterError, match="temperature"):
        dipeptide.initial_state(temperature=temperature, seed=1)


def test_temperature_above_engine_range_rejected_by_run(dipeptide: AllAtomEngine) -> None:
    state = dipeptide.initial_state(temperature=300.0, seed=1)
    spec = RunSpec(steps=10, segment_steps=10, report_steps=10, temperature=5000.0, seed=1)
    with pytest.raises(ParameterError, match=r"\(0, 1000\] kelvin"):
        dipeptide.run(state, spec)


def test_non_positive_temperature_and_steps_in_runspec() -> None:
    with pytest.raises(ParameterError, match="temperature must be finite and > 0"):
        RunSpec(steps=10, segment_steps=10, report_steps=10, temperature=0.0, seed=1)
    with pytest.raises(ParameterError, match="steps must be > 0"):
        RunSpec(steps=0, segment_steps=10, report_steps=10, temperature=300.0, seed=1)
    with pytest.raises(ParameterError, match="steps must be > 0"):
        RunSpec(steps=-5, segment_steps=10, report_steps=10, temperature=300.0, seed=1)


def test_bad_platform_and_threads(dipeptide: AllAtomEngine) -> None:
    with pytest.raises(ParameterError, match="platform must be one of"):
        AllAtomEngine(dipeptide.prepared, platform="Quantum")
    with pytest.raises(ParameterError, match="threads must be an integer"):
        AllAtomEngine(dipeptide.prepared, threads=0)
    if "CUDA" not in available_platforms():
        with pytest.raises(ParameterError, match="'CUDA' is not available"):
            AllAtomEngine(dipeptide.prepared, platform="CUDA")


# -- serialization ---------------------------------------------------------------------------


def test_pickle_round_trip(dipeptide: AllAtomEngine) -> None:
    state = dipeptide.initial_state(temperature=300.0, seed=1)
    spec = RunSpec(steps=100, segment_steps=50, report_steps=25, temperature=300.0, seed=2**64 - 1)
    dc = dipeptide.determinism_class()
    s2, spec2, dc2 = pickle.loads(pickle.dumps((state, spec, dc)))
    assert s2.digest() == state.digest() and s2.step == state.step
    assert not s2.positions.flags.writeable
    assert spec2 == spec
    assert isinstance(dc2, DeterminismClass) and dc2 == dc and dc2.key == dc.key


def test_sanity_of_an_honest_state_and_of_overheated_velocities(dipeptide: AllAtomEngine) -> None:
    state = dipeptide.run(dipeptide.initial_state(temperature=300.0, seed=3), SPEC).final
    assert 100.0 < dipeptide.kinetic_temperature(state) < 600.0
    assert dipeptide.sanity_problems(state, temperature=300.0) == []
    hot = State(positions=state.positions, velocities=state.velocities * 4)  # 16x as hot
    (problem,) = dipeptide.sanity_problems(hot, temperature=300.0)
    assert "kinetic temperature" in problem
