"""The Go engine: bit-reproducibility, forces, thermostat, and agreement with OpenMM."""

from __future__ import annotations

import math
import pickle
import platform

import numba
import numpy as np
import pytest

from sims.errors import ParameterError, SimulationError, StateError, StructureError
from sims.examples import VILLIN_PDB
from sims.go import GoEngine, GoModel, GoParameters, kernels
from sims.go import openmm_model as om
from sims.go.engine import exp_arithmetic
from sims.spec import RunSpec
from sims.state import State

#: A protein of over 500 residues shipped with pdbfixer: chain A of 4JSV (1,058 residues).
LARGE_PDB = VILLIN_PDB.parent / "4JSV.pdb"
LARGE_CHAIN = "A"

#: Folding temperature of villin HP36 in this model, measured by benchmarks.go_folding
#: (midpoint of <Q>); folding runs use 0.8 Tf (see README, "Go model temperature").
FOLD_T = 0.7


@pytest.fixture(scope="module")
def villin(villin_pdb) -> GoEngine:
    return GoEngine.from_pdb(villin_pdb)


@pytest.fixture(scope="module")
def bhl(bhl_pdb) -> GoEngine:
    return GoEngine.from_pdb(bhl_pdb)


@pytest.fixture(scope="module")
def large_model() -> GoModel:
    return GoModel.from_pdb(LARGE_PDB, chain=LARGE_CHAIN)


@pytest.fixture(scope="module")
def spec() -> RunSpec:
    return RunSpec(steps=6000, segment_steps=2000, report_steps=500, temperature=0.9, seed=99)


@pytest.fixture(scope="module")
def start(villin) -> State:
    return villin.initial_state(temperature=0.9, seed=5)


@pytest.fixture(scope="module")
def result(villin, start, spec):
    return villin.run(start, spec)


def test_one_wu_run_twice_gives_identical_digests(villin, start, spec, result):
    again = villin.run(start, spec)
    assert again.boundary_digests() == result.boundary_digests()
    assert len(result.boundaries) == spec.n_segments + 1
    assert result.boundaries[0] is start
    assert len(set(result.boundary_digests())) == spec.n_segments + 1  # it did move


def test_every_segment_recomputed_alone_is_bit_identical(villin, spec, result):
    for k in range(spec.n_segments):
        # a fresh copy of the boundary state, as a verifier would receive it over the wire
        b = pickle.loads(pickle.dumps(result.boundaries[k]))
        assert villin.run_segment(b, spec, k).digest() == result.boundaries[k + 1].digest()


def test_whole_run_equals_chained_segments_and_any_chunking(villin, start, spec, result):
    state = start
    for k in range(spec.n_segments):
        state = villin.run_segment(state, spec, k)
    assert state.digest() == result.final.digest()
    # chunking inside a segment (what report_steps does) cannot change the bits either
    runner = villin.start_segment(start, seed=1234, temperature=0.9)
    for n in (1, 7, 992, 1000):
        runner.step(n)
    whole = villin.start_segment(start, seed=1234, temperature=0.9)
    whole.step(2000)
    assert runner.state().digest() == whole.state().digest()
    assert runner.state().step == start.step + 2000


def test_thread_count_does_not_change_the_bits(villin, start, spec, result):
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            assert villin.run(start, spec).final.digest() == result.final.digest()
    finally:
        numba.set_num_threads(before)


def test_other_seed_or_temperature_gives_another_trajectory(villin, start, spec, result):
    other_seed = RunSpec(
        steps=6000, segment_steps=2000, report_steps=500, temperature=0.9, seed=100
    )
    other_t = RunSpec(steps=6000, segment_steps=2000, report_steps=500, temperature=0.95, seed=99)
    assert villin.run(start, other_seed).final.digest() != result.final.digest()
    assert villin.run(start, other_t).final.digest() != result.final.digest()


def test_result_layout(villin, spec, result):
    n_frames = spec.steps // spec.report_steps
    assert result.frames.shape == (n_frames, villin.n_atoms, 3)
    assert result.frames.dtype == np.float32
    assert list(result.frame_steps) == list(range(500, 6001, 500))
    assert set(result.observables) == {"energy", "q", "rmsd", "rg"}
    for values in result.observables.values():
        assert values.shape == (n_frames,) and np.all(np.isfinite(values))
    assert result.final.step == spec.steps
    assert "go" in str(result.determinism) and result.determinism.threads == 1
    # kernel 3 (shared bonded geometry, pairs within the cutoff only) gives other bits than
    # kernel 2: another class, which names the architecture only (no libm, no FMA)
    assert result.determinism.engine_version.startswith("kernel-3/")
    assert result.determinism.cpu == platform.machine()


def test_friction_factor_is_libm_free_and_accurate():
    for x in (-0.005, -0.0625, -1e-9, 0.0):  # the friction factors in use: no halving
        assert abs(exp_arithmetic(x) - math.exp(x)) <= np.spacing(math.exp(x))
    for x in (-0.07, -0.5, -1.0, -3.0):  # each squaring doubles the relative error
        assert abs(exp_arithmetic(x) - math.exp(x)) <= 8 * np.spacing(math.exp(x))
    with pytest.raises(ParameterError):
        exp_arithmetic(0.5)


def test_forces_are_the_negative_gradient(villin):
    rng = np.random.default_rng(3)
    x = villin.model.native + rng.normal(scale=0.4, size=villin.model.native.shape)
    _, f = villin.model.energy_forces(x)
    h = 1e-6
    numeric = np.zeros_like(x)
    for i in range(len(x)):
        for d in range(3):
            xp, xm = x.copy(), x.copy()
            xp[i, d] += h
            xm[i, d] -= h
            numeric[i, d] = -(villin.model.energy_forces(xp)[0] - villin.model.energy_forces(xm)[0])
    numeric /= 2 * h
    assert np.max(np.abs(numeric - f)) / np.max(np.abs(f)) < 1e-6


def test_native_structure_is_a_minimum_with_energy_minus_contacts(villin):
    e, f = villin.model.energy_forces(villin.model.native)
    n_contacts = len(villin.model.contacts.pairs)
    assert n_contacts == 50
    assert e == pytest.approx(-n_contacts, abs=0.05)  # only the weak (C/r)^12 tail remains
    assert np.max(np.abs(f)) < 0.01


def _nonnative_distances(model: GoModel, x: np.ndarray) -> np.ndarray:
    n = model.n_beads
    i, j = np.triu_indices(n, 4)
    keep = model.native_s2[i, j] == 0.0
    return np.linalg.norm(x[j[keep]] - x[i[keep]], axis=1)


@pytest.mark.parametrize("protein", ["villin", "bhl", "large"])
def test_energy_and_forces_agree_with_openmm_custom_forces(
    protein, villin_pdb, bhl_pdb, large_model
):
    if protein == "large":
        model = large_model
    else:
        model = GoModel.from_pdb(villin_pdb if protein == "villin" else bhl_pdb)
    if protein == "large":
        assert model.n_beads >= 500
    context = om.make_context(model, platform="Reference")
    rng = np.random.default_rng(11)
    conformations = [
        model.native,
        model.native + rng.normal(scale=0.3, size=model.native.shape),
        model.native + rng.normal(scale=1.0, size=model.native.shape),
        0.9 * model.native + rng.normal(scale=0.5, size=model.native.shape),  # squeezed
        model.extended_chain(),
    ]
    r = np.concatenate([_nonnative_distances(model, x) for x in conformations])
    # the test covers the plain repulsion, the switching region and pairs beyond the cutoff
    assert np.sum(r < model.REP_SWITCH) > 0
    assert np.sum((r >= model.REP_SWITCH) & (r < model.REP_CUTOFF)) >= 5
    assert np.sum(r >= model.REP_CUTOFF) > 0
    for x in conformations:
        e_numba, f_numba = model.energy_forces(x)
        e_openmm, f_openmm = om.energy_forces(context, x)
        assert abs(e_numba - e_openmm) <= 1e-6 * abs(e_openmm)
        assert np.max(np.abs(f_numba - f_openmm)) <= 1e-6 * np.max(np.abs(f_openmm))


def _pair(r: float, model: GoModel) -> tuple[float, float]:
    """Energy and radial force (-dV/dr) of one non-native pair at distance ``r``."""
    x = np.zeros((3, 2))
    x[0, 1] = r
    f = np.zeros_like(x)
    pairs = np.array([[0], [1]], dtype=np.int64)
    start = np.array([0, 1, 1], dtype=np.int64)
    pw = kernels.pair_scratch(1)
    near = kernels.near_scratch(1)
    args = (model.eps, model.rep_c**2, model.REP_SWITCH, model.REP_CUTOFF)
    kept = kernels.repulsion_terms(x, pw, start, pairs, near, *args)
    no_natives = np.zeros(3, dtype=np.int64)
    nw = kernels.pair_scratch(0)
    kernels.pair_forces(f, nw, no_natives, no_natives[:0], pw, near, kept, pairs)
    energy = float(pw[7, 0]) if kept else 0.0
    return energy, float(f[0, 1])


def test_repulsion_is_switched_off_smoothly_and_exactly(villin):
    model = villin.model
    rs, rc, c = model.REP_SWITCH, model.REP_CUTOFF, model.rep_c
    # below the switch: the published (C/r)^12, exactly as before
    for r in (3.0, 4.0, 6.5):
        e, f = _pair(r, model)
        assert e == pytest.approx((c / r) ** 12, rel=1e-14)
        assert f == pytest.approx(12 * (c / r) ** 12 / r, rel=1e-14)
    # energy and force continuous at both ends of the switch
    for r in (rs, rc):
        lo, hi = _pair(r - 1e-9, model), _pair(r + 1e-9, model)
        assert abs(lo[0] - hi[0]) < 1e-11 and abs(lo[1] - hi[1]) < 1e-9
    # in the switch, the force is the energy's derivative
    h = 1e-6
    for r in np.linspace(rs + 0.05, rc - 0.05, 7):
        numeric = -(_pair(r + h, model)[0] - _pair(r - h, model)[0]) / (2 * h)
        assert _pair(r, model)[1] == pytest.approx(numeric, rel=1e-6, abs=1e-12)
    # at and beyond the cutoff a pair adds nothing
    for r in (rc, rc + 1e-12, rc + 2.0):
        assert _pair(r, model) == (0.0, 0.0)


def _native_csr(model: GoModel) -> tuple[np.ndarray, np.ndarray]:
    nat_i, nat_j, _ = model.native_pairs()
    return kernels.native_start(nat_i, model.n_beads), nat_j


def _forces_with_list(model: GoModel, x: np.ndarray, r_list: float) -> tuple[float, np.ndarray]:
    xt = np.ascontiguousarray(x.T)
    nl = kernels.NeighbourList(xt, *_native_csr(model), r_list)
    args = model.kernel_args()
    f = np.zeros_like(xt)
    w = kernels.scratch(model.n_beads)
    nw = kernels.pair_scratch(len(args[5]))
    e = kernels.energy_forces(*(xt, f, w, nw, nl.pw, nl.near, nl.start, nl.pairs, *args, True))
    return e, f


def test_forces_are_the_same_bits_whatever_list_holds_them(bhl):
    model = bhl.model
    rng = np.random.default_rng(5)
    x = 0.9 * model.native + rng.normal(scale=0.5, size=model.native.shape)
    e0, f0 = _forces_with_list(model, x, model.REP_CUTOFF)
    sizes = []
    for r_list in (model.REP_CUTOFF + 0.25, model.REP_CUTOFF + 2.0, 14.0, 1e4):
        xt = np.ascontiguousarray(x.T)
        sizes.append(kernels.NeighbourList(xt, *_native_csr(model), r_list).n_pairs)
        e, f = _forces_with_list(model, x, r_list)
        assert e == e0 and f.tobytes() == f0.tobytes()
    n = model.n_beads
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == (n - 3) * (n - 4) // 2 - len(
        model.native_pairs()[0]
    )  # the last list holds every non-native pair


@pytest.mark.parametrize("r_outer", [10.0, 14.5])
def test_list_is_exactly_the_pairs_within_its_radius(large_model, r_outer):
    """Built by the cell search alone (r_outer = r_list) or filtered from a wider list."""
    model = large_model
    rng = np.random.default_rng(8)
    x = model.native + rng.normal(scale=1.0, size=model.native.shape)
    nl = kernels.NeighbourList(np.ascontiguousarray(x.T), *_native_csr(model), 10.0, r_outer)
    got = nl.pairs[:, : nl.n_pairs].T
    i, j = np.triu_indices(model.n_beads, 4)
    d = np.linalg.norm(x[j] - x[i], axis=1)
    non_native = model.native_s2[i, j] == 0.0
    keep = (d < 10.0) & non_native
    assert np.array_equal(got, np.stack([i[keep], j[keep]], axis=1))  # sorted by (i, j)
    assert np.array_equal(np.diff(nl.start), np.bincount(i[keep], minlength=model.n_beads))
    outer = nl.out_pairs[:, : int(nl.out_start[-1])].T
    keep_outer = (d < r_outer) & non_native
    assert np.array_equal(outer, np.stack([i[keep_outer], j[keep_outer]], axis=1))


def test_list_rebuilds_at_other_steps_give_identical_bits(villin, start):
    """Skins from 0.2 to 6 A rebuild the list at different steps (every few steps to almost
    never), and forced rebuilds at arbitrary chunk boundaries: the same bits every time."""
    digests = set()
    builds = []
    for skin in (0.2, 2.0, 6.0):
        engine = GoEngine(villin.model, skin=skin)
        runner = engine.start_segment(start, seed=31, temperature=0.9)
        runner.step(3000)
        digests.add(runner.state().digest())
        builds.append(runner.list_builds)
    assert builds[0] > 10 * builds[1] > 0 and builds[1] > builds[2]
    # the outer list (the cell search the thin list is filtered from) rebuilt at almost
    # every rebuild of the thin list, or almost never
    outer_builds = []
    for outer in (0.6, 12.0):
        runner = GoEngine(villin.model, skin=0.5, outer_skin=outer).start_segment(
            start, seed=31, temperature=0.9
        )
        runner.step(3000)
        digests.add(runner.state().digest())
        outer_builds.append(runner.outer_builds)
        assert runner.list_builds > 50
    assert outer_builds[0] > 10 * outer_builds[1] > 0
    forced = villin.start_segment(start, seed=31, temperature=0.9)
    for n in (1, 13, 400, 7, 1579, 1000):
        forced.step(n)
        forced.rebuild_neighbours()
    digests.add(forced.state().digest())
    assert len(digests) == 1


def test_vectorised_kernels_match_the_scalar_code_bit_for_bit(bhl):
    """LLVM vectorises the element-wise loops; Python runs the same code one float at a time
    (IEEE double, correctly rounded sqrt): the bits must not differ."""
    model = bhl.model
    rng = np.random.default_rng(2)
    x = np.ascontiguousarray((model.native + rng.normal(scale=0.4, size=model.native.shape)).T)
    args = model.kernel_args()
    bonded_args = (args[0], args[1], args[2], args[3], args[7], args[8], args[9], args[10])
    n = model.n_beads
    w_jit, w_py = kernels.scratch(n), kernels.scratch(n)
    kernels.bonded_terms(x, w_jit, 0, kernels.BLOCK, *bonded_args)
    kernels.bonded_terms.py_func(x, w_py, 0, kernels.BLOCK, *bonded_args)
    assert w_jit.tobytes() == w_py.tobytes()
    nl = kernels.NeighbourList(x, *_native_csr(model), 10.0)
    rep = (model.eps, model.rep_c**2, model.REP_SWITCH, model.REP_CUTOFF)
    pw_py, near_py = nl.pw.copy(), nl.near.copy()
    kept = kernels.repulsion_terms(x, nl.pw, nl.start, nl.pairs, nl.near, *rep)
    assert kernels.repulsion_terms.py_func(x, pw_py, nl.start, nl.pairs, near_py, *rep) == kept
    assert 0 < kept < nl.n_pairs  # pairs in the skin are dropped
    assert nl.pw.tobytes() == pw_py.tobytes() and nl.near.tobytes() == near_py.tobytes()
    nw_jit, nw_py = kernels.pair_scratch(len(args[5])), kernels.pair_scratch(len(args[5]))
    kernels.native_terms(x, nw_jit, args[15], args[5], args[6], model.eps)
    kernels.native_terms.py_func(x, nw_py, args[15], args[5], args[6], model.eps)
    assert nw_jit.tobytes() == nw_py.tobytes()
    k_jit, k_py = np.zeros((3, n)), np.zeros((3, n))
    key = (np.uint64(12345), np.uint64(678))
    kernels.philox_noise(k_jit, np.uint64(99), np.uint64(0), *key)
    kernels.philox_noise.py_func(k_py, np.uint64(99), np.uint64(0), *key)
    assert k_jit.tobytes() == k_py.tobytes()


def test_acos_is_within_two_ulp_of_libm():
    c = np.concatenate(
        [
            np.linspace(-1.0, 1.0, 200_001),
            [-1.0, -0.5, -0.0, 0.0, 0.5, 1.0, np.nextafter(0.5, 1), np.nextafter(-0.5, -1)],
            np.cos(np.random.default_rng(0).uniform(0, np.pi, 10_000)),
        ]
    )
    ours = np.array([kernels.acos(v) for v in c])
    ref = np.arccos(c)
    assert np.all(np.abs(ours - ref) <= 2 * np.spacing(ref))
    assert kernels.acos(1.0) == 0.0 and kernels.acos(-1.0) == math.pi


def test_thermostat_gives_the_requested_temperature(villin):
    t = 0.8
    spec = RunSpec(steps=200_000, segment_steps=100_000, report_steps=100, temperature=t, seed=1)
    state = villin.initial_state(temperature=t, seed=2, extended=False)
    kinetic = []
    runner = villin.start_segment(state, seed=77, temperature=t)
    for _ in range(spec.steps // spec.report_steps):
        runner.step(spec.report_steps)
        kinetic.append(np.mean(runner.state().velocities ** 2))
    # equipartition: <v_x^2> = kT/m per degree of freedom (BAOAB samples it without dt bias)
    assert np.mean(kinetic[200:]) == pytest.approx(t, rel=0.03)


@pytest.mark.slow
def test_villin_folds_from_an_extended_chain(villin):
    steps = 1_000_000
    folded = 0
    for seed in range(6):
        start = villin.initial_state(temperature=FOLD_T, seed=seed)
        assert villin.observe(start)["q"] < 0.2
        spec = RunSpec(
            steps=steps,
            segment_steps=100_000,
            report_steps=1000,
            temperature=FOLD_T,
            seed=1000 + seed,
        )
        q = villin.run(start, spec).observables["q"]
        folded += bool(np.max(q) >= 0.8)
    assert folded >= 4


def test_chain_breaks_are_kept_at_native_length(bhl_pdb):
    model = GoModel.from_pdb(bhl_pdb)
    assert model.n_beads == 133
    assert model.gaps == (7, 71, 78)
    assert model.bond_r0[7] > 6.0


def test_bad_inputs_are_clear_errors(villin, start, spec, tmp_path):
    with pytest.raises(StateError, match="35 atoms but the go system has 36"):
        villin.run(State(positions=start.positions[:35], velocities=start.velocities[:35]), spec)
    bad_t = RunSpec(steps=10, segment_steps=10, report_steps=10, temperature=50.0, seed=1)
    with pytest.raises(ParameterError, match=r"temperature must be in \(0, 5.0\]"):
        villin.run(start, bad_t)
    with pytest.raises(ParameterError, match="segment must be in"):
        villin.run_segment(start, spec, 3)
    with pytest.raises(ParameterError, match="timestep"):
        GoParameters(timestep=-0.1)
    with pytest.raises(ParameterError, match="unstable"):
        GoParameters(timestep=0.5)
    for skin in (0.0, -1.0, float("nan"), 50.0):
        with pytest.raises(ParameterError, match="skin"):
            GoEngine(villin.model, skin=skin)
    for outer in (0.5, 0.3, float("inf"), 41.0):
        with pytest.raises(ParameterError, match=r"outer-list skin must be in \(0.5, 40\]"):
            GoEngine(villin.model, skin=0.5, outer_skin=outer)
    with pytest.raises(ParameterError, match="outer list's radius must be at least"):
        kernels.NeighbourList(
            np.ascontiguousarray(start.positions.T), *_native_csr(villin.model), 9.0, 8.5
        )
    tiny = tmp_path / "tiny.pdb"
    tiny.write_text(
        "ATOM      1  CA  ALA A   1       0.000   0.000   0.000  1.00  0.00           C\n"
        "ATOM      2  CA  ALA A   2       3.800   0.000   0.000  1.00  0.00           C\n"
    )
    with pytest.raises(StructureError, match="needs at least 5"):
        GoModel.from_pdb(tiny)


def test_a_blow_up_is_a_simulation_error_not_bad_input(villin, start):
    x = np.array(start.positions)
    x[10] = x[6]  # two non-bonded beads on top of each other: infinite repulsion
    spec = RunSpec(steps=20, segment_steps=10, report_steps=10, temperature=1.0, seed=1)
    with pytest.raises(SimulationError, match="non-finite"):
        villin.run(State(positions=x, velocities=start.velocities), spec)


def test_engine_pieces_pickle(villin, result):
    model = pickle.loads(pickle.dumps(villin.model))
    assert model.digest() == villin.model.digest()
    engine = pickle.loads(pickle.dumps(villin))
    assert engine.determinism_class() == villin.determinism_class()
    assert pickle.loads(pickle.dumps(result)).final == result.final


def test_sanity_accepts_honest_states_and_names_what_is_wrong_with_garbage(villin, result):
    temperature = 0.9  # the spec's
    for state in result.boundaries:
        assert villin.sanity_problems(state, temperature=temperature) == []
    honest = result.boundaries[-1]
    assert abs(villin.kinetic_temperature(honest) - temperature) < 0.4
    hot = State(positions=honest.positions, velocities=honest.velocities * 5)  # 25x as hot
    (problem,) = villin.sanity_problems(hot, temperature=temperature)
    assert "kinetic temperature" in problem and "outside" in problem
    torn = honest.positions.copy()
    torn[10:] += 5.0  # one bond pulled apart by 5 A
    (problem,) = villin.sanity_problems(
        State(positions=torn, velocities=honest.velocities), temperature=temperature
    )
    assert problem.startswith("bond 9-10")
    (problem,) = villin.sanity_problems(honest, temperature=0.01)  # not a run at 0.01
    assert "kinetic temperature" in problem
