"""A lab's flow without the demo: submit a job to a coordinator folder, run the coordinator
on local Ray volunteers (loopback, private HOME and RAY_TMPDIR), read status and results."""

from __future__ import annotations

import pytest
from cli_helpers import run_foldnet

from coordinator.errors import CoordinatorError, SubmissionError
from coordinator.lab import CoordinatorView
from coordinator.prepare import prepare_job
from coordinator.runner import owned, run_coordinator, submit_job
from ledger import run_audit
from sims.errors import StructureError

LAB = "Doe lab"
JOB = dict(
    engine="go",
    sequence=None,
    chain=None,
    runs=1,
    clones=2,
    gens=2,
    steps_per_wu=20_000,
    segment_steps=5000,
    report_steps=1000,
    temperature=0.8,
)


@pytest.mark.slow
def test_submit_run_status_results(tmp_path, villin_pdb):
    workdir = tmp_path / "coord"
    job = submit_job(workdir, lab=LAB, job=prepare_job(pdb=villin_pdb, **JOB))
    view = CoordinatorView(workdir)
    (status,) = view.jobs()
    assert (status.job, status.validated, status.wus_total) == (job, 0, 4)
    view.close()

    proc = run_foldnet("run", str(workdir), "--volunteers", "3", home=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count(" credit") >= 2 and "all jobs done" in proc.stdout

    view = CoordinatorView(workdir)
    (status,) = view.jobs()
    assert status.done and status.steps_validated == 80_000 and status.lab == LAB
    files = view.write_results(job, tmp_path / "out")
    view.close()
    assert {f.name for f in files} >= {"observables_run0_clone0.csv", "best_structure.pdb"}
    assert run_audit(workdir / "ledger.db", workers=1).ok


def test_one_coordinator_per_folder(tmp_path, villin_pdb):
    workdir = tmp_path / "coord"
    with owned(workdir), pytest.raises(CoordinatorError, match="a coordinator is running"):
        submit_job(workdir, lab=LAB, job=prepare_job(pdb=villin_pdb, **JOB))
    with pytest.raises(CoordinatorError, match="no jobs in"):
        run_coordinator(workdir, address=None, local_volunteers=1)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"sequence": "YYDPETGTWY"}, SubmissionError, "exactly one of a PDB file or a sequence"),
        ({"engine": "gromacs"}, SubmissionError, "unknown engine 'gromacs'"),
        ({"gens": 10**9}, SubmissionError, "gens must be in"),
        ({"clones": 0}, SubmissionError, "clones must be in"),
        ({"temperature": -1.0}, SubmissionError, "temperature must be a finite number > 0"),
        ({"chain": "Z"}, StructureError, "chain 'Z' is empty or absent"),
    ],
)
def test_bad_submissions_store_nothing(tmp_path, villin_pdb, changes, error, message):
    workdir = tmp_path / "coord"
    with pytest.raises(error, match=message):
        submit_job(workdir, lab=LAB, job=prepare_job(pdb=villin_pdb, **(JOB | changes)))
    assert not (workdir / "coordinator.db").exists()
