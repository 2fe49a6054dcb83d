"""A lab's flow without the demo: submit a job to a coordinator folder (at once: the job is
``preparing``), run the coordinator on local Ray volunteers (loopback, private HOME and
RAY_TMPDIR), which prepares it in a child process and computes it; read status and results."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import run_foldnet

from coordinator.errors import CoordinatorError, SubmissionError
from coordinator.lab import CoordinatorView
from coordinator.plan import JobPlan
from coordinator.prepare import prepare_job
from coordinator.runner import accept_job, owned, prepare_pending, run_coordinator, submit_job
from coordinator.service import Coordinator
from ledger import run_audit
from sims.errors import StructureError

LAB = "Doe lab"
JOB = dict(
    engine="go",
    runs=1,
    clones=2,
    gens=2,
    steps_per_wu=20_000,
    segment_steps=5000,
    report_steps=1000,
    temperature=0.8,
)


def _plan(villin_pdb, **changes):
    return JobPlan.create(
        **({"pdb": villin_pdb.read_text(), "source": str(villin_pdb)} | JOB | changes)
    )


@pytest.mark.slow
def test_submit_run_status_results(tmp_path, villin_pdb):
    workdir = tmp_path / "coord"
    job = accept_job(workdir, lab=LAB, plan=_plan(villin_pdb))
    view = CoordinatorView(workdir)
    (status,) = view.jobs()
    assert (status.job, status.state, status.validated, status.wus_total) == (
        job,
        "preparing",
        0,
        4,
    )
    view.close()

    proc = run_foldnet("run", str(workdir), "--volunteers", "3", home=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "building the Go model" in proc.stdout  # the preparation's progress
    assert proc.stdout.count(" credit") >= 2 and "all jobs done" in proc.stdout

    view = CoordinatorView(workdir)
    (status,) = view.jobs()
    assert status.done and status.steps_validated == 80_000 and status.lab == LAB
    assert status.state == "completed"
    files = view.write_results(job, tmp_path / "out")
    view.close()
    assert {f.name for f in files} >= {"observables_run0_clone0.csv", "best_structure.pdb"}
    assert {"topology.pdb", "trajectory_run0_clone0.xtc", "README.txt"} <= {f.name for f in files}
    import mdtraj

    out = tmp_path / "out"
    traj = mdtraj.load(str(out / "trajectory_run0_clone0.xtc"), top=str(out / "topology.pdb"))
    rows = (out / "observables_run0_clone0.csv").read_text().splitlines()
    assert traj.n_atoms == 36 and traj.n_frames == len(rows) - 1  # a frame per CSV row
    first = mdtraj.load(str(out / "topology.pdb"))  # the topology is the first frame
    assert np.abs(traj.xyz[0] - first.xyz[0]).max() <= 1e-3
    assert run_audit(workdir / "ledger.db", workers=1).ok


def test_a_prepared_job_goes_in_as_it_is(tmp_path, villin_pdb):
    """The Python API's blocking path: prepare here, store the prepared job."""
    workdir = tmp_path / "coord"
    job = submit_job(workdir, lab=LAB, job=prepare_job(_plan(villin_pdb)))
    view = CoordinatorView(workdir)
    assert [(s.job, s.state, s.wus_total) for s in view.jobs()] == [(job, "running", 4)]
    view.close()


def test_one_coordinator_per_folder(tmp_path, villin_pdb):
    workdir = tmp_path / "coord"
    with owned(workdir), pytest.raises(CoordinatorError, match="a coordinator is running"):
        accept_job(workdir, lab=LAB, plan=_plan(villin_pdb))
    with pytest.raises(CoordinatorError, match="no jobs in"):
        run_coordinator(workdir, address=None, local_volunteers=1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sequence": "YYDPETGTWY"}, "exactly one of a PDB file or a sequence"),
        ({"engine": "gromacs"}, "unknown engine 'gromacs'"),
        ({"gens": 10**9}, "gens must be in"),
        ({"clones": 0}, "clones must be in"),
        ({"temperature": -1.0}, "temperature -1 eps/kB is outside what the go engine can run"),
        ({"temperature": 300.0}, "300 looks like kelvin"),
    ],
)
def test_bad_plans_store_nothing(tmp_path, villin_pdb, changes, message):
    with pytest.raises(SubmissionError, match=message):
        accept_job(tmp_path / "coord", lab=LAB, plan=_plan(villin_pdb, **changes))
    assert not (tmp_path / "coord").exists()


def test_a_structure_that_cannot_be_prepared_fails_its_job_and_stores_nothing_else(
    tmp_path, villin_pdb
):
    plan = _plan(villin_pdb, chain="Z")
    with pytest.raises(StructureError, match="chain 'Z' is empty or absent"):
        prepare_job(plan)  # the Python API's blocking path says it at once
    workdir = tmp_path / "coord"
    job = accept_job(workdir, lab=LAB, plan=plan)
    coord = Coordinator.local(workdir)
    try:
        ledger = coord.log.size
        failed = prepare_pending(coord)
        assert list(failed) == [job] and "chain 'Z' is empty or absent" in failed[job]
        assert coord.scheduler.pending[job].state == "failed"
        assert not coord.scheduler.jobs and not coord.scheduler.wus
        assert coord.log.size == ledger  # no "job submitted" entry
        assert coord.pending_preparations() == []
    finally:
        coord.close()
    view = CoordinatorView(workdir)
    (status,) = view.jobs()
    assert status.state == "failed" and "chain 'Z'" in status.error
    with pytest.raises(CoordinatorError, match=r"has no results: .*chain 'Z'"):
        view.write_results(job, tmp_path / "out")
    view.close()
    with pytest.raises(CoordinatorError, match=r"no job in .* could be prepared"):
        run_coordinator(workdir, address=None, local_volunteers=1)
