"""Attacks on what a lab receives: a dishonest operator who hands a lab a results bundle (with
the coordinator's own writer, fed other WUs than the ones it names, or edited afterwards), and
volunteers who want invented frames in a lab's trajectories. ``foldnet verify-results`` must
name each (a finding, never a crash) and the validator must not let them through.

The operator's forgeries go through the real writer (:func:`forge`): every derived file is
consistent with the data it was given, so only a check that binds the data to its place in
the job can tell."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import run_foldnet
from results_helpers import compute_in_folder

from coordinator.analysis import load_results
from coordinator.bundle import final_name
from coordinator.errors import AnalysisError, ProtocolError, ResultsVerificationError
from coordinator.jobs import JobSpec
from coordinator.lab import CoordinatorView, ledger_evidence
from coordinator.plan import JobPlan
from coordinator.prepare import PreparedJob
from coordinator.provenance import verify_results
from coordinator.results import (
    Parent,
    Pick,
    ResultPlan,
    bundle_files,
    load,
    select,
    write_folder,
)
from coordinator.service import Coordinator
from coordinator.trajfiles import pdb_text, read_xtc, xtc_bytes
from ledger.log import Log
from sims.examples import VILLIN_PDB
from sims.go import GoEngine, GoModel
from worker.adversary import honest
from worker.identity import Identity
from worker.result import WorkerResult, arrays_digest, segment_data_digests
from worker.systems import EngineCache, decode_system, system_digest
from worker.tasks import ComputeTask, SpotCheckResult, SpotCheckTask, spot_check

GO: dict[str, Any] = dict(
    engine="go", pdb=VILLIN_PDB.read_text(), source="villin", runs=1, clones=2, gens=2,
    steps_per_wu=2000, segment_steps=500, report_steps=500, temperature=0.8,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Job:
    coord: Path  # the coordinator folder (scheduler, store, ledger)
    job: str
    out: Path  # the honest results
    vkey: str  # the log's key, as its operator publishes it


def _computed(root: Path, **plan) -> Job:
    job = compute_in_folder(root / "coord", JobPlan.create(**(GO | plan)))
    view = CoordinatorView(root / "coord")
    try:
        view.write_results(job, root / "out")
    finally:
        view.close()
    with Log.open_readonly(root / "coord" / "ledger.db") as log:
        assert log.verifier is not None
        vkey = log.verifier.vkey
    return Job(root / "coord", job, root / "out", vkey)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Job:
    return _computed(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory) -> Job:
    return _computed(tmp_path_factory.mktemp("adaptive"), gens=3, adaptive="least-counts")


@pytest.fixture
def bundle(plain, tmp_path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(plain.out, out)
    return out


def forge(job: Job, out: Path, change: Callable[[ResultPlan], ResultPlan]) -> Path:
    """The operator's own results writer, fed the picks ``change`` makes of the honest ones:
    real validated WUs with their real ledger entries and proofs, put where they do not
    belong. Every derived file (XTC, CSV, PDBs, summary.json) is made from them as usual."""
    view = CoordinatorView(job.coord)
    try:
        plan = change(select(view.scheduler, job.job))
        evidence = ledger_evidence(job.coord, plan.wu_ids)
        write_folder(out, bundle_files(load(view.store, plan), evidence))
    finally:
        view.close()
    return out


def finding(path: Path, **kw) -> ResultsVerificationError:
    """The finding ``verify-results`` names for ``path`` (the test fails if it passes)."""
    with pytest.raises(ResultsVerificationError) as caught:
        verify_results(path, **kw)
    return caught.value


def _doc(bundle: Path) -> dict:
    return json.loads((bundle / "provenance" / "provenance.json").read_text())


def _save_doc(bundle: Path, doc: dict) -> None:
    (bundle / "provenance" / "provenance.json").write_text(json.dumps(doc))


def _by_slot(plan: ResultPlan) -> dict[tuple[int, int, int], Pick]:
    return {(p.run, p.clone, p.gen): p for p in plan.picks}


# -- WUs put where they do not belong ----------------------------------------------------------


def _duplicate(plan: ResultPlan) -> ResultPlan:
    """Clone 1 is clone 0 again (twice the data, half of it invented as independent)."""
    zero = [p for p in plan.picks if p.clone == 0]
    return dataclasses.replace(
        plan, picks=(*zero, *(dataclasses.replace(p, clone=1) for p in zero))
    )


def _swap(plan: ResultPlan) -> ResultPlan:
    """The two clones' WUs exchanged (labels no longer say which trajectory is which)."""
    return dataclasses.replace(
        plan, picks=tuple(dataclasses.replace(p, clone=1 - p.clone) for p in plan.picks)
    )


def _splice(plan: ResultPlan) -> ResultPlan:
    """Clone 0's generation 1 is clone 1's, declared an 'adaptive start' from the state clone
    1's generation 0 ended in (a validated boundary, so the start check alone holds); clone 1
    stops after its generation 0 (a trajectory may stop at any validated generation)."""
    s = _by_slot(plan)
    parent = s[(0, 1, 0)]
    spliced = dataclasses.replace(
        s[(0, 1, 1)],
        clone=0,
        parent=Parent(parent.wu_id, 4, parent.replica, 0, 1, 0),  # 2000 / 500: its last
    )
    return dataclasses.replace(plan, picks=(s[(0, 0, 0)], spliced, s[(0, 1, 0)]))


@pytest.mark.parametrize("change", [_duplicate, _swap, _splice], ids=lambda f: f.__name__[1:])
def test_wus_moved_between_trajectories_by_the_operators_writer_are_named(plain, tmp_path, change):
    out = forge(plain, tmp_path / "forged", change)
    e = finding(out, log_key=plain.vkey)
    assert e.code == "wu_mislabelled", e
    assert "is not the WU of run 0 clone" in str(e)


def test_a_generation_relabelled_in_an_adaptive_job_is_named(adaptive, tmp_path):
    """In an adaptive job every generation after the first is a start the policy chose: the
    WU of one slot's generation 2 shown as another slot's is still a validated WU, started
    from a validated boundary, but not the one the job ran there."""

    def swap_last(plan: ResultPlan) -> ResultPlan:
        picks = tuple(
            dataclasses.replace(p, clone=1 - p.clone) if p.gen == 2 else p for p in plan.picks
        )
        return dataclasses.replace(plan, picks=picks)

    out = forge(adaptive, tmp_path / "forged", swap_last)
    e = finding(out, log_key=adaptive.vkey)
    assert e.code == "wu_mislabelled", e


def test_a_trajectory_started_from_the_folded_structure_is_named(tmp_path):
    """The operator prepares jobs: it can start the trajectories from the native fold rather
    than the extended chain the plan prepares. Every WU is then validated genuinely, from
    the wrong start, and the protein 'folds' at once."""

    def folded(job: PreparedJob) -> PreparedJob:
        engine = GoEngine(job.system)
        native = engine.initial_state(temperature=0.8, seed=1, extended=False)
        return job._replace(starts=[native])

    root = tmp_path / "folded"
    plan = JobPlan.create(**(GO | {"clones": 1, "gens": 1}))
    job = compute_in_folder(root / "coord", plan, change=folded)
    view = CoordinatorView(root / "coord")
    try:
        view.write_results(job, root / "out")
    finally:
        view.close()
    e = finding(root / "out")
    assert e.code == "chain_broken" and "the job's start structure" in str(e), e


# -- summary.json, XTC times, the best and reference structures ---------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("temperature", "value"), 1.5),
        (("steps_per_wu",), 20_000),
        (("engine",), "openmm"),  # foldnet analyze reads it (features, time units)
        (("adaptive",), "fast"),
        (("trajectories", 1, "frames"), 99),
        (("trajectories", 1, "generations"), 3),
        (("best_structure", "step"), 500),
        (("observables", "signed"), ["q"]),
        (("folding_time",), "4 ns"),
    ],
    ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_an_edited_summary_is_named(bundle, path, value):
    summary = json.loads((bundle / "summary.json").read_text())
    at = summary
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    (bundle / "summary.json").write_text(json.dumps(summary))
    e = finding(bundle)
    assert e.code in ("summary_mismatch", "wu_missing"), e
    assert "summary.json" in str(e)


def test_the_starts_of_an_adaptive_summary_are_checked(adaptive, tmp_path):
    """foldnet analyze cuts an adaptive slot into its generations by summary.json's 'starts':
    moved frames would join two starts into one piece and count the jump as a transition."""
    out = tmp_path / "b"
    shutil.copytree(adaptive.out, out)
    summary = json.loads((out / "summary.json").read_text())
    starts = summary["trajectories"][0]["starts"]
    starts[0]["frames"], starts[1]["frames"] = 7, 1
    (out / "summary.json").write_text(json.dumps(summary))
    assert len(load_results(out).trajectories[0].steps) == 7  # what analyze would do
    e = finding(out)
    assert e.code == "summary_mismatch" and "starts" in str(e), e


def test_xtc_times_are_the_signed_steps(bundle):
    """The frames are right, their times ten times longer: mdtraj's and analyze's time axis
    (all-atom: ns per step from the XTC) would be wrong by ten."""
    name = bundle / "trajectory_run0_clone0.xtc"
    xyz = read_xtc(name.read_bytes())
    top = (bundle / "topology.pdb").read_text()
    steps = np.arange(1, len(xyz) + 1) * 500
    name.write_bytes(xtc_bytes(top, xyz.astype(np.float64), steps, 10.0))
    e = finding(bundle)
    assert e.code == "frame_mismatch" and "time" in str(e), e


def _system(job: Job) -> GoModel:
    """The job's Go model, as the operator has it."""
    view = CoordinatorView(job.coord)
    try:
        spec = view.scheduler.jobs[job.job].spec
        system = decode_system(view.store.system(spec.system_digest))
    finally:
        view.close()
    assert isinstance(system, GoModel)
    return system


def test_the_best_structure_is_the_frame_its_criterion_picks(plain, bundle):
    """Another signed frame (the first of the other clone) presented as the lowest RMSD."""
    system = _system(plain)
    old = (bundle / "best_structure.pdb").read_text().splitlines()
    criterion = next(line[11:] for line in old if "criterion:" in line)
    clone = 1 - int(next(line for line in old if " frame " in line).split()[5])
    with np.load(bundle / "provenance" / f"wu_run0_clone{clone}_gen0.npz") as z:
        frame = np.array(z["frames"][0])
    where = f"run 0 clone {clone} frame 0 step 500"
    (bundle / "best_structure.pdb").write_text(
        pdb_text(system, frame, "foldnet best structure", (criterion, where))
    )
    e = finding(bundle)
    assert e.code == "structure_mismatch" and "by its criterion it is" in str(e), e
    (bundle / "best_structure.pdb").unlink()
    assert finding(bundle).code == "bundle_incomplete"


def test_a_moved_reference_structure_is_named(plain, bundle):
    system = _system(plain)
    (bundle / "reference.pdb").write_text(pdb_text(system, system.native + 1.0, "reference"))
    e = finding(bundle)
    assert e.code == "structure_mismatch" and "reference.pdb" in str(e), e


def test_a_system_that_is_not_the_jobs_is_named(plain, bundle):
    """The reference is checked against the job's model, so the model must be the job's:
    the one whose digest the WUs were computed with."""
    from dataclasses import replace

    from worker.systems import encode_system

    system = _system(plain)
    moved = replace(system, native=system.native + 1.0)
    (bundle / "provenance" / "system.npz").write_bytes(encode_system(moved))
    (bundle / "reference.pdb").write_text(pdb_text(system, moved.native, "reference"))
    e = finding(bundle)
    assert e.code == "data_mismatch" and "system" in str(e), e


# -- files that are not the bundle's --------------------------------------------------------------


def test_an_added_trajectory_is_named(bundle):
    """foldnet analyze reads every trajectory_runR_cloneC.xtc of the folder: one the
    provenance does not carry would enter the lab's Markov state model unchecked."""
    for name in ("trajectory_run0_clone{}.xtc", "observables_run0_clone{}.csv"):
        shutil.copy(bundle / name.format(0), bundle / name.format(7))
    assert len(load_results(bundle).trajectories) == 3
    e = finding(bundle)
    assert e.code == "unexpected_file" and "run0_clone7" in str(e), e


def test_a_second_column_of_a_signed_observables_name_is_named(bundle):
    """The signed q exactly as signed, then a column of the same name, all 1.0: foldnet
    analyze takes columns by name (the last q wins) and would see every frame folded."""
    path = bundle / "observables_run0_clone0.csv"
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0] + ",q", *(r + ",1" for r in rows[1:])]) + "\n")
    assert (load_results(bundle).trajectories[0].observables["q"] == 1.0).all()
    e = finding(bundle)
    assert e.code == "observable_mismatch" and "each once" in str(e), e


def _zip(folder: Path, path: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, str(p.relative_to(folder)))
        for name, data in extra.items():
            zf.writestr(name, data)
    return path


def _moved_xtc(bundle: Path) -> bytes:
    xyz = read_xtc((bundle / "trajectory_run0_clone0.xtc").read_bytes()).astype(np.float64)
    steps = np.arange(1, len(xyz) + 1) * 500
    return xtc_bytes((bundle / "topology.pdb").read_text(), xyz + 0.5, steps, 0.0)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("where", ["junk/trajectory_run0_clone0.xtc", "trajectory_run0_clone0.xtc"])
def test_a_zip_with_a_second_copy_of_a_file_is_named(bundle, tmp_path, where):
    """A second member of the same name, or of the same name in a folder: which one a lab's
    unzip keeps is up to the tool (foldnet analyze flattens a zip's folders: it kept the
    invented frames, the verifier checked the genuine ones)."""
    zipped = _zip(bundle, tmp_path / "r.zip", {where: _moved_xtc(bundle)})
    e = finding(zipped)
    assert e.code == "unexpected_file" and "trajectory_run0_clone0.xtc" in str(e), e
    with pytest.raises(AnalysisError, match="twice"):
        load_results(zipped)


def test_a_link_in_a_results_folder_is_named(bundle, tmp_path):
    """The writer never makes links; one makes the verifier read outside the bundle."""
    outside = tmp_path / "outside.pdb"
    shutil.copy(bundle / final_name(0, 0), outside)
    (bundle / final_name(0, 0)).unlink()
    os.symlink(outside, bundle / final_name(0, 0))
    e = finding(bundle)
    assert e.code == "unexpected_file" and "link" in str(e), e


# -- the ledger side ---------------------------------------------------------------------------


def test_a_real_proof_for_another_tree_size_is_named(plain, bundle):
    """A genuine inclusion proof of the genuine entry, made for a smaller tree than the
    checkpoint's (what a log shows one reader and not another)."""
    doc = _doc(bundle)
    w = doc["wus"][0]
    with Log.open_readonly(plain.coord / "ledger.db") as log:
        size = doc["tree_size"]
        w["inclusion_proof"] = [h.hex() for h in log.inclusion_proof(w["ledger_index"], size - 1)]
    _save_doc(bundle, doc)
    assert finding(bundle).code == "entry_not_in_log"


# -- a bundle anyone may have written: findings, never a crash -------------------------------


def _set(i: int, key: str, value: object) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        doc["wus"][i][key] = value

    return change


MALFORMED: dict[str, Callable[[dict], None]] = {
    "header-a-number": _set(0, "header", 5),
    "header-null": _set(0, "header", None),
    "header-not-json": _set(0, "header", "garbage"),
    "run-a-string": _set(0, "run", "x"),
    "gen-huge": _set(1, "gen", 10**30),
    "proof-not-hex": _set(0, "inclusion_proof", ["zz"]),
    "index-a-string": _set(0, "ledger_index", "1"),
    "data-outside": _set(0, "data", "../../etc/passwd"),
    "parent-a-number": _set(1, "parent", 5),
    "parent-no-boundary": _set(1, "parent", {"wu_id": "00" * 32}),
    "attempt-negative": _set(0, "attempt", -1),
    "wus-an-object": lambda d: d.update(wus={}),
    "wus-of-numbers": lambda d: d.update(wus=[5]),
    "spec-a-number": lambda d: d.update(spec=5),
    "spec-not-json": lambda d: d.update(spec="{"),
    "spec-a-list": lambda d: d.update(spec="[]"),
    "spec-no-steps": lambda d: d.update(spec=json.dumps({"engine": "go"})),
    "wu-listed-twice": lambda d: d["wus"].append(d["wus"][0]),
}
SUMMARIES = {
    "summary-a-list": b"[]",
    "summary-trajectories-a-number": b'{"trajectories": 5}',
    "summary-run-a-string": b'{"trajectories": [{"run": "x", "clone": 0, "generations": 1}]}',
    "summary-generations-null": b'{"trajectories": [{"run": 0, "clone": 0, "generations": null}]}',
    "log-key-not-utf8": b"\xff\xfe",
}


@pytest.mark.parametrize("case", [*MALFORMED, *SUMMARIES])
def test_a_malformed_bundle_is_a_finding(bundle, case):
    if case in MALFORMED:
        doc = _doc(bundle)
        MALFORMED[case](doc)
        _save_doc(bundle, doc)
    else:
        name = "provenance/log.vkey" if case.startswith("log-key") else "summary.json"
        (bundle / name).write_bytes(SUMMARIES[case])
    finding(bundle)


def test_the_command_line_names_a_malformed_bundle_without_a_traceback(bundle, tmp_path):
    doc = _doc(bundle)
    doc["wus"][0]["header"] = None
    _save_doc(bundle, doc)
    proc = run_foldnet("verify-results", str(bundle), home=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bundle_incomplete" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A provenance.json that inflates a thousandfold (64 MiB here; as easily 64 GiB):
    refused from the zip's own sizes, before anything is inflated."""
    path = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open("provenance/provenance.json", "w", force_zip64=True) as f,
    ):
        for _ in range(4):
            f.write(b" " * (1 << 24))
    e = finding(path)
    assert e.code == "bundle_incomplete" and "inflates" in str(e), e


# -- volunteers: invented frames past a check from another determinism class ---------------------


def _invented_frames(task: ComputeTask, engines: EngineCache, identity: Identity) -> WorkerResult:
    """Every boundary state computed honestly (so every end state a check recomputes agrees),
    but the frames and observables a lab receives invented: each frame moved by 0.5 A and Q
    of 1 throughout (a folded protein that never was). Signed and self-consistent."""
    result = honest(task, engines, identity)
    frames = result.frames + np.float32(0.5)
    obs = {k: (np.ones_like(v) if k == "q" else v) for k, v in result.observables.items()}
    spec = task.spec
    header = dataclasses.replace(
        result.header,
        frames_digest=arrays_digest({"frames": frames, "steps": result.frame_steps}),
        observables_digest=arrays_digest(obs),
        segment_data=segment_data_digests(
            frames,
            result.frame_steps,
            obs,
            n_segments=spec.n_segments,
            segment_steps=spec.segment_steps,
            report_steps=spec.report_steps,
        ),
    )
    return dataclasses.replace(
        result,
        header=header,
        signature=identity.sign(header.message()),
        frames=frames,
        observables=obs,
    )


def _other_class(engine: GoEngine) -> str:
    """The Go class of another CPU flavour (canonical JSON), as an operator would list it."""
    real = json.loads(engine.determinism_class().canonical())
    return json.dumps(
        real | {"cpu": "aarch64/base/glibc-2.36"}, sort_keys=True, separators=(",", ":")
    )


def _reported_as(r: SpotCheckResult, identity: Identity, other: str) -> SpotCheckResult:
    """The same honest recomputation, reported from another determinism class (re-signed)."""
    unsigned = dataclasses.replace(r, determinism=other, signature=b"")
    return dataclasses.replace(unsigned, signature=identity.sign(unsigned.message()))


def test_invented_frames_do_not_pass_a_check_from_another_class(tmp_path):
    """An established volunteer with a long streak gets WUs unreplicated; only a checker of
    another determinism class is online, whose check is compared within the engine's
    tolerance. Its true boundary states agree; its frames and observables, which are what
    the lab receives, must be compared too, or the invented ones are validated."""
    model = GoModel.from_pdb(VILLIN_PDB)
    engine = GoEngine(model)
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    try:
        a, x = Identity.ephemeral(), Identity.ephemeral()
        engines_a, engines_x = EngineCache(), EngineCache()
        accepted = coord.accept_class(engine.determinism_class().canonical().decode())
        coord.trust(a.public_key)
        spec = dict(
            engine="go", system_digest=system_digest(model), runs=1, clones=2, gens=1,
            steps_per_wu=2000, segment_steps=500, report_steps=250, temperature=0.8,
            audit_rate=0.0,
        )  # fmt: skip
        start = engine.initial_state(temperature=0.8, seed=1)
        coord.request_work(a.public_key, accepted.key, 1, "go")  # A is known, then trusted
        coord.scheduler._volunteer(a.public_key.hex()).streak = 10**6  # WUs unreplicated
        job = coord.submit(lab="lab-a", system=model, starts=[start], spec=JobSpec(**spec))
        tasks = [
            t
            for t in coord.request_work(a.public_key, accepted.key, 2, "go")
            if isinstance(t, ComputeTask)
        ]
        assert tasks and all(coord.scheduler.wus[t.wu_id].required == 1 for t in tasks)
        for t in tasks:
            coord.submit_result(a.public_key, t.replica, _invented_frames(t, engines_a, a))
        coord.tick()  # the beacon: the spot checks are drawn
        coord.trust(x.public_key)
        other_json = _other_class(engine)
        other = coord.classes.add(other_json).key
        checks = [
            t for t in coord.request_work(x.public_key, other, 4) if isinstance(t, SpotCheckTask)
        ]
        assert {c.wu_id for c in checks} == {t.wu_id for t in tasks}
        for c in checks:
            report = _reported_as(spot_check(c, engines=engines_x, identity=x), x, other_json)
            bare = dataclasses.replace(report, segment_frames=())  # an older client's answer
            with pytest.raises(ProtocolError, match="must carry the frames"):
                coord.submit_spot_check(x.public_key, bare)
            coord.submit_spot_check(x.public_key, report)
        out = coord.drain()
        assert not [v for v in out.validated if v.wu.job == job], "invented frames validated"
        assert all(coord.scheduler.wus[t.wu_id].disputed for t in tasks)
        assert not out.invalidated  # a contradicted check condemns nobody alone
    finally:
        coord.close()
