"""Adaptive sampling (issue #12): the policy is a pure function of validated data and the
beacon; seeds are only validated boundary states; restarts are exact and recomputable."""

from __future__ import annotations

import numpy as np
import pytest
from test_coordinator import Volunteer, run_until_done

from coordinator.adaptive import (
    START_WEIGHT,
    WUData,
    cell_of,
    choose,
    explore,
    restart_seed,
)
from coordinator.codec import decode_event, encode_event
from coordinator.errors import ProtocolError, SubmissionError, UsageError
from coordinator.jobs import JobSpec
from coordinator.messages import GenerationSeeded
from coordinator.plan import JobPlan
from coordinator.service import Coordinator
from ledger import run_audit
from sims.go import GoEngine, GoModel
from sims.state import State
from worker.systems import system_digest


def _wu(name: bytes, qs: list[float], rmsds: list[float], *, segment: int = 1) -> WUData:
    """A validated WU of len(qs) frames, one per step, a boundary every ``segment`` frames."""
    n = len(qs)
    return WUData(
        wu=name.ljust(32, b"\0"),
        boundary_digests=tuple(bytes([i]) * 32 for i in range(n // segment + 1)),
        first_step=0,
        segment_steps=segment,
        frame_steps=np.arange(1, n + 1),
        q=np.array(qs),
        rmsd=np.array(rmsds),
    )


DATA = [
    _wu(b"a", [0.1, 0.1, 0.1, 0.12], [9.0, 9.2, 9.1, 9.3]),  # crowded, unfolded
    _wu(b"b", [0.1, 0.11, 0.5, 0.1], [9.0, 9.1, 5.2, 9.0]),  # one excursion to Q 0.5
    _wu(b"c", [0.3, 0.31, 0.1, 0.1], [7.1, 7.2, 9.4, 9.2]),
]


def _choose(policy: str, beacon: bytes = b"beacon", **kw: object):
    args = {"starts": {}, "beacon": beacon, "job": "j", "run": 0, "clone": 1, "gen": 2} | kw
    return choose(policy, explore(DATA), **args)  # type: ignore[arg-type]


def test_the_policy_is_a_pure_function_of_the_data_and_the_beacon():
    for policy in ("least-counts", "fast"):
        a, b = _choose(policy), _choose(policy)
        assert a == b and a.digest() == b.digest()
        shuffled = choose(
            policy, explore(list(reversed(DATA))), starts={}, beacon=b"beacon", job="j", run=0,
            clone=1, gen=2,
        )  # fmt: skip
        assert shuffled == a  # arrival order changes nothing
    assert _choose("fast", gen=3).digest() != _choose("fast").digest()  # names the generation


def test_least_counts_starts_from_the_least_visited_cell_and_fast_from_progress():
    least = _choose("least-counts")
    counts = explore(DATA).counts
    assert counts[least.cell] == min(counts[c.cell] for c in explore(DATA).candidates)
    fast = _choose("fast")
    assert fast.q == 0.5 and fast.parent_wu == DATA[1].wu and fast.boundary == 3
    assert fast.cell == cell_of(0.5, 5.2)


def test_fast_ranks_a_cell_by_its_most_native_state_and_moves_on_once_started_from():
    # cell A holds Q 0.61 and 0.64 (mean 0.625), cell B Q 0.625 and 0.635 (mean 0.63): equal
    # counts, so the directed term decides, and it reads the best state, not the mean
    data = [
        _wu(b"x", [0.1] * 6 + [0.61, 0.64], [9.0] * 6 + [3.2, 3.3]),
        _wu(b"y", [0.625, 0.635], [4.2, 4.3]),
    ]
    a, b = cell_of(0.64, 3.3), cell_of(0.635, 4.3)
    assert a == cell_of(0.61, 3.2) and b == cell_of(0.625, 4.2) and a != b
    args = {"beacon": b"beacon", "job": "j", "run": 0, "clone": 1, "gen": 2}
    first = choose("fast", explore(data), starts={}, **args)  # type: ignore[arg-type]
    assert first.cell == a and first.parent_wu == data[0].wu
    assert first.q in (0.61, 0.64)  # the state within the cell is the tie-break's
    # one generation started from A counts START_WEIGHT frames there: B's bonus now wins
    second = choose("fast", explore(data), starts={a: 1}, **args)  # type: ignore[arg-type]
    assert second.cell == b and second.parent_wu == data[1].wu


def test_started_generations_count_so_that_concurrent_choices_spread():
    first = _choose("least-counts")
    second = _choose("least-counts", starts={first.cell: 1})
    assert second.cell != first.cell
    assert second.cell_count <= START_WEIGHT


def test_nothing_validated_means_no_choice_and_unknown_policies_are_refused():
    empty = explore([])
    with pytest.raises(UsageError, match="no validated boundary state"):
        choose("fast", empty, starts={}, beacon=b"", job="j", run=0, clone=0, gen=1)
    with pytest.raises(UsageError, match="no adaptive policy 'none'"):
        choose("none", explore(DATA), starts={}, beacon=b"", job="j", run=0, clone=0, gen=1)


def test_the_plan_takes_adaptive_with_a_reference_only():
    assert JobPlan.create(engine="go", pdb="x", adaptive="fast").spec(b"\0" * 32).adaptive == "fast"
    with pytest.raises(SubmissionError, match="needs one \\(--reference PDB"):
        JobPlan.create(engine="openmm", sequence="AAA", adaptive="least-counts")
    with pytest.raises(SubmissionError, match="adaptive must be one of none, least-counts, fast"):
        JobPlan.create(engine="go", pdb="x", adaptive="greedy")
    plain = JobPlan.create(engine="go", pdb="x").spec(b"\0" * 32)
    assert b"adaptive" not in plain.engine_parameters()  # plain jobs keep their digests


def test_a_seed_event_travels_through_the_event_log_codec():
    ev = GenerationSeeded("j", 0, 1, 2, b"p" * 32, 3, b"s" * 32, b"i" * 32, b"d" * 32, 5.0)
    assert decode_event(encode_event(ev)) == ev


@pytest.fixture(scope="module")
def model(villin_pdb) -> GoModel:
    return GoModel.from_pdb(villin_pdb)


def _adaptive_job(coord: Coordinator, model: GoModel, policy: str) -> str:
    spec = JobSpec(
        engine="go", system_digest=system_digest(model), runs=1, clones=3, gens=3,
        steps_per_wu=2000, segment_steps=500, report_steps=500, temperature=0.8,
        audit_rate=0.0, adaptive=policy,
    )  # fmt: skip
    start = GoEngine(model).initial_state(temperature=0.8, seed=1)
    return coord.submit(lab="lab-a", system=model, starts=[start], spec=spec)


@pytest.mark.parametrize("policy", ["least-counts", "fast"])
def test_an_adaptive_job_starts_every_generation_from_a_validated_state_recomputably(
    tmp_path, model, policy
):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    job = _adaptive_job(coord, model, policy)
    vols = [Volunteer(), Volunteer(), Volunteer("perturb", trusted=False)]
    run_until_done(coord, job, model, vols, rounds=80)
    s = coord.scheduler
    seeded = [e for e in coord.store.events() if isinstance(e, GenerationSeeded)]
    later = [w for w in s.wus.values() if w.unit.gen > 0 and w.state == "validated"]
    assert len(seeded) == len(later) == 3 * 2
    engine = GoEngine(model)
    cheats = vols[2].key.hex()
    for ev in seeded:
        parent = s.wus[ev.parent_wu]
        assert parent.state == "validated" and not parent.retracted
        replica, claim = s.canonical(ev.parent_wu)
        assert s.replicas[replica].volunteer != cheats
        assert claim.boundary_digests[ev.boundary] == ev.parent_state
        # anyone can redraw the restart from the validated state and the generation's name
        (state,) = coord.store.boundary_states(replica, [ev.boundary])
        assert state.digest() == ev.parent_state
        redo = engine.thermalized(
            state, temperature=0.8, step=ev.gen * 2000,
            seed=restart_seed(job, ev.run, ev.clone, ev.gen, ev.parent_state),
        )  # fmt: skip
        assert redo.digest() == ev.input_digest
        child = next(w for w in s.wus.values() if w.unit.input_digest == ev.input_digest)
        assert child.parent == (ev.parent_wu, ev.boundary) and child.unit.gen == ev.gen
    from ledger import entries as le

    on_ledger = [
        e
        for _i, _leaf, data in coord.log.store.iter_entries()
        if isinstance(e := le.decode_record(data).entry, le.GenerationSeeded)
    ]
    assert len(on_ledger) == len(seeded)
    by_input = {ev.input_digest: ev for ev in seeded}
    for e in on_ledger:
        ev = by_input[e.input_digest]
        assert (e.parent_wu, e.boundary, e.decision) == (ev.parent_wu, ev.boundary, ev.decision)
        assert s.wus[e.wu_id].unit.input_digest == e.input_digest and e.policy == policy
    wus = {k: (w.state, w.parent, w.unit.input_digest) for k, w in s.wus.items()}
    coord.close()
    again = Coordinator.local(tmp_path / "c", beacon_interval_s=0)  # replay: the same choices
    assert {
        k: (w.state, w.parent, w.unit.input_digest) for k, w in again.scheduler.wus.items()
    } == wus
    again.log.publish_checkpoint()
    assert run_audit(again.log.store.path, workers=1).ok
    again.close()


def test_a_seed_that_is_not_a_validated_boundary_is_refused_and_never_logged(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    job = _adaptive_job(coord, model, "least-counts")
    s = coord.scheduler
    vols = [Volunteer(), Volunteer()]
    for _ in range(20):
        for v in vols:
            v.work(coord, model)
        coord.tick()
        if any(w.unit.gen == 1 for w in s.wus.values()):
            break
    validated = next(w for w in s.wus.values() if w.state == "validated")
    unvalidated = next(w for w in s.wus.values() if w.state != "validated")
    _rep, claim = s.canonical(validated.unit.id)
    events = len(list(coord.store.events()))
    traj = next(iter(s._trajectory))
    s.seeding[traj] = 5  # white box: a trajectory waiting for its generation 5

    def seed(gen: int, parent: bytes, boundary: int, state: bytes) -> GenerationSeeded:
        return GenerationSeeded(
            job, traj.run, traj.clone, gen, parent, boundary, state, b"i" * 32, b"d" * 32
        )

    ok_state = claim.boundary_digests[1]
    for parent, boundary, state, why in (
        (unvalidated.unit.id, 1, b"x" * 32, "not validated"),
        (b"n" * 32, 1, b"x" * 32, "is not a WU of the job"),
        (validated.unit.id, 2, ok_state, "has another state at boundary 2"),
        (validated.unit.id, 99, ok_state, "has no boundary 99"),
    ):
        with pytest.raises(ProtocolError, match=f"seed parent .*{why}"):
            s.handle(seed(5, parent, boundary, state))
        assert not s.changed
    with pytest.raises(ProtocolError, match="does not wait for a start of generation 7"):
        s.handle(seed(7, validated.unit.id, 1, ok_state))
    del s.seeding[traj]
    assert len(list(coord.store.events())) == events
    s.validate_state()
    coord.close()


def test_a_restart_state_is_positions_kept_velocities_redrawn(model):
    engine = GoEngine(model)
    start = engine.initial_state(temperature=0.8, seed=3)
    a = engine.thermalized(start, temperature=0.8, seed=11, step=4000)
    b = engine.thermalized(start, temperature=0.8, seed=11, step=4000)
    assert a == b and a.step == 4000
    np.testing.assert_array_equal(a.positions, start.positions)
    assert not np.array_equal(a.velocities, start.velocities)
    assert engine.kinetic_temperature(a) == pytest.approx(0.8, rel=0.35)
    with pytest.raises(Exception, match="beads"):
        engine.thermalized(
            State(np.zeros((3, 3)), np.zeros((3, 3))), temperature=0.8, seed=1, step=0
        )


def test_a_seed_entry_has_one_canonical_encoding_and_the_rules_check_its_parent():
    from ledger.entries import GenerationSeeded as SeedEntry
    from ledger.entries import JobSubmitted, Record, decode_record, encode_record
    from ledger.rules import LedgerState

    seed = SeedEntry(
        job_id=b"\x01" * 32, wu_id=b"\x02" * 32, parent_wu=b"\x03" * 32, boundary=4,
        parent_state=b"\x05" * 32, input_digest=b"\x06" * 32, decision=b"\x07" * 32,
        policy="fast",
    )  # fmt: skip
    data = encode_record(Record(timestamp_ms=9, entry=seed))
    assert data[:2] == bytes([8, 1]) and decode_record(data).entry == seed
    assert len(data) == 10 + 196 + 2 + 4
    state = LedgerState()
    found = state.apply(0, Record(timestamp_ms=9, entry=seed))
    assert {d.kind for d in found} == {"seed-unknown-job", "seed-unvalidated-parent"}
    state.apply(1, Record(timestamp_ms=9, entry=JobSubmitted(job_id=b"\x01" * 32, lab="x")))
    found = state.apply(2, Record(timestamp_ms=9, entry=seed))
    assert [d.kind for d in found] == ["seed-unvalidated-parent"]


def _seeds_on_ledger(path) -> list:
    from ledger import entries as le
    from ledger.log import Log

    with Log.open(path, origin="foldnet.local/ledger") as log:
        return [
            e
            for _i, _leaf, data in log.store.iter_entries()
            if isinstance(e := le.decode_record(data).entry, le.GenerationSeeded)
        ]


def test_an_adaptive_job_completes_over_http(tmp_path):
    import threading

    from http_helpers import (
        add_lab,
        go_job,
        lab_client,
        post_job,
        running_service,
        trust,
        wait_for_job,
    )

    from worker.client import HttpVolunteer

    key = add_lab(tmp_path / "c", "lab-a")
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        job = post_job(lab, go_job(gens=3, adaptive="fast")).json()["job"]
        vols = [
            HttpVolunteer(s.url, home=tmp_path / f"h{i}", key_path=tmp_path / f"v{i}.key")
            for i in range(2)
        ]
        trust(s, vols[0].identity)
        threads = [threading.Thread(target=v.run, kwargs={"max_tasks": 6}) for v in vols]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        progress = wait_for_job(lab, job)
        assert progress["state"] == "completed", progress
        assert progress["plan"]["adaptive"] == "fast" and progress["wus"]["validated"] == 6
        report = run_audit(f"{s.url}/v1/ledger", workers=1)
        assert report.ok, report.discrepancies
        for v in vols:
            v.close()
    seeds = _seeds_on_ledger(tmp_path / "c" / "ledger.db")
    assert len(seeds) == 2 * 2 and {e.policy for e in seeds} == {"fast"}


def test_the_demo_runs_adaptive_sampling_over_ray(tmp_path):
    from cli_helpers import run_foldnet

    out = tmp_path / "results"
    proc = run_foldnet(
        "demo", "--out", str(out), "--runs", "1", "--clones", "2", "--gens", "3",
        "--steps-per-wu", "20000", "--adaptive", "least-counts", home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())  # the console wraps long lines
    assert "adaptive sampling (least-counts)" in text
    assert "WUs validated: 6;" in text and "PASSED" in text
    seeds = _seeds_on_ledger(out / "coordinator" / "ledger.db")
    assert len(seeds) == 2 * 2 and {e.policy for e in seeds} == {"least-counts"}


def test_an_adaptive_jobs_results_are_a_tree_that_verifies_and_analyses(tmp_path):
    import json

    from results_helpers import compute_in_folder

    from coordinator.analysis import load_results
    from coordinator.errors import ChainBrokenError
    from coordinator.lab import CoordinatorView
    from coordinator.provenance import verify_results
    from sims.examples import VILLIN_PDB

    plan = JobPlan.create(
        engine="go", pdb=VILLIN_PDB.read_text(), runs=1, clones=2, gens=3, steps_per_wu=2000,
        segment_steps=500, report_steps=500, temperature=0.8, adaptive="least-counts",
    )  # fmt: skip
    job = compute_in_folder(tmp_path / "c", plan)
    view = CoordinatorView(tmp_path / "c")
    try:
        view.write_results(job, tmp_path / "res")
    finally:
        view.close()
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert summary["adaptive"] == "least-counts"
    for t in summary["trajectories"]:
        starts = t["starts"]
        assert [s["gen"] for s in starts] == [0, 1, 2] and starts[0]["from"] == "start state"
        assert all(s["from"]["boundary"] >= 1 and s["frames"] == 4 for s in starts[1:])
    report = verify_results(tmp_path / "res")
    assert any("adaptive start(s)" in line for line in report.checked), report.checked
    data = load_results(tmp_path / "res")
    assert len(data.trajectories) == 2 * 3  # one piece per generation, never joined
    assert all(len(t.steps) == 4 for t in data.trajectories)
    # a start moved to other positions is caught
    import io

    name = next((tmp_path / "res" / "provenance").glob("wu_run0_clone0_gen2.npz"))
    with np.load(name) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    arrays["start_positions"][0, 0] += 0.5
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    name.write_bytes(buf.getvalue())
    with pytest.raises(ChainBrokenError):
        verify_results(tmp_path / "res")
