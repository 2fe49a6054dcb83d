"""Preparation is a job state, not a request: ``POST /v1/jobs`` answers 202 at once, the job
is ``preparing`` (in a separate process) until it runs, or ``failed`` with a clear reason and
nothing else stored; the events make a restart prepare it again. And the engine-aware rules
of the job plan, over REST."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa
from http_helpers import add_lab, lab_client, post_job, running_service, wait_prepared

from coordinator import store
from coordinator.codec import decode_event, encode_event
from coordinator.errors import ProtocolError, SubmissionError
from coordinator.jobs import JobSpec
from coordinator.plan import JobPlan
from coordinator.prepare import prepare_job
from coordinator.runner import prepare_pending
from coordinator.scheduler import (
    JobAccepted,
    JobCancelled,
    JobPreparationFailed,
    JobPrepared,
    Scheduler,
)
from coordinator.service import Coordinator
from sims.examples import VILLIN_PDB

GO = {"engine": "go", "pdb": VILLIN_PDB.read_text(), "gens": 1, "steps_per_wu": 2000,
      "segment_steps": 500, "report_steps": 500, "name": "villin"}  # fmt: skip
PEPTIDE = {"engine": "openmm", "sequence": "AAA", "clones": 1, "gens": 1, "name": "tri-Ala"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("prep") / "c"
    key = add_lab(d, "lab-a")
    with running_service(d) as s, lab_client(s.url, key) as lab:
        s.lab = lab  # type: ignore[attr-defined]
        yield s


def _counts(served) -> tuple[int, ...]:
    """(ledger entries, prepared jobs, WUs, stored systems, stored states)."""

    def count(c: Coordinator) -> tuple[int, ...]:
        with c.store._read() as conn:
            blobs = [
                int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                for t in (store.systems, store.states)
            ]
        return (c.log.size, len(c.scheduler.jobs), len(c.scheduler.wus), *blobs)

    return served.service.thread.call_sync(count)


def test_a_go_job_is_accepted_at_once_and_prepared_in_another_process(served):
    r = post_job(served.lab, GO, ready=False)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "preparing" and body["wus_total"] == 2
    assert "0.7 eps/kB" in body["description"] and "(10 tau)" in body["description"]
    progress = wait_prepared(served.lab, body["job"])
    assert progress["state"] == "running", progress
    assert progress["wus"]["queued"] == 2 and progress["plan"]["temperature"] == 0.7
    prep = progress["preparation"]
    assert prep["state"] == "prepared"
    assert prep["stages"] == ["reading the structure", "building the Go model",
                              "drawing start states"]  # fmt: skip
    assert prep["pid"] is not None and prep["pid"] != os.getpid()  # never the server's own


def test_an_openmm_peptide_is_prepared_with_the_engines_defaults(served):
    r = post_job(served.lab, PEPTIDE, ready=False)
    assert r.status_code == 202, r.text
    assert "300 K" in r.json()["description"] and "(10 ps)" in r.json()["description"]
    progress = wait_prepared(served.lab, r.json()["job"])
    assert progress["state"] == "running", progress
    assert progress["plan"]["temperature"] == 300.0
    assert progress["plan"]["report_steps"] == 2500 and progress["plan"]["segment_steps"] == 625
    prep = progress["preparation"]
    for stage in ("completing atoms", "adding hydrogens", "minimising"):
        assert stage in prep["stages"], prep
    assert prep["pid"] != os.getpid()


def test_a_preparation_that_fails_is_the_jobs_error_and_stores_nothing_else(served):
    before = _counts(served)
    bad = VILLIN_PDB.read_text().replace("LEU A  42", "XYZ A  42")
    r = post_job(served.lab, PEPTIDE | {"sequence": None, "pdb": bad}, ready=False)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    progress = wait_prepared(served.lab, job)
    assert progress["state"] == "failed", progress
    assert "the uploaded PDB, line 175: unknown residue 'XYZ'" in progress["error"], progress
    assert progress["wus"]["queued"] == 0 and progress["preparation"]["state"] == "failed"
    assert _counts(served) == before  # no ledger entry, job, WU or system
    results = served.lab.get(f"/v1/jobs/{job}/results")
    assert results.status_code == 409 and "unknown residue" in results.json()["detail"]
    cancel = served.lab.post(f"/v1/jobs/{job}/cancel")
    assert cancel.status_code == 422 and "failed in its preparation" in cancel.json()["detail"]
    listed = {j["job"]: j["state"] for j in served.lab.get("/v1/jobs").json()["jobs"]}
    assert listed[job] == "failed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"temperature": 0.7}, "temperature 0.7 K is outside 200-500 K"),
        ({"temperature": 2.0}, "looks like the Go model's reduced units (eps/kB)"),
        ({"temperature": 150.0}, "allow_unusual_temperature"),
        ({"temperature": 1500.0, "allow_unusual_temperature": True}, "at most 1000 K (kelvin)"),
        ({"reference": " "}, "the reference is empty"),
        (
            {"engine": "go", "sequence": None, "pdb": "x", "reference": "x"},
            "openmm jobs only",
        ),
    ],
)
def test_rest_refuses_temperatures_outside_the_engines_range_with_its_unit(served, change, message):
    before = served.stored()
    r = served.lab.post("/v1/jobs", json=PEPTIDE | change)
    assert r.status_code == 422 and r.json()["error"] == "invalid_job", r.text
    assert message in r.json()["detail"], r.json()
    assert served.stored() == before


def test_the_python_client_submits_a_plan_by_the_same_rules(served):
    from coordinator.labclient import LabClient
    from foldnet.errors import Invalid

    key = served.lab.headers["Authorization"].removeprefix("Bearer ")
    with LabClient(served.url, key) as client:
        answer = client.submit(JobPlan.create(**PEPTIDE))
        assert answer["state"] == "preparing" and "300 K" in answer["description"]
        assert wait_prepared(served.lab, answer["job"])["plan"]["temperature"] == 300.0
        # a plan is checked where it is made; a hand-written body is checked by the service
        with pytest.raises(Invalid, match=r"422 \(invalid_job: temperature 0.7 K"):
            client.submit(PEPTIDE | {"temperature": 0.7})


def test_rest_takes_the_go_default_and_an_unusual_temperature_when_asked(served):
    go = served.lab.post("/v1/jobs", json=GO | {"temperature": 300.0})
    assert go.status_code == 422 and "300 looks like kelvin" in go.json()["detail"]
    r = post_job(served.lab, PEPTIDE | {"temperature": 150.0, "allow_unusual_temperature": True})
    assert r.status_code == 202, r.text
    assert served.lab.get(f"/v1/jobs/{r.json()['job']}").json()["plan"]["temperature"] == 150.0


def test_a_job_preparing_when_the_service_stopped_is_prepared_at_the_next_start(tmp_path):
    d = tmp_path / "c"
    key = add_lab(d, "lab-a")
    coord = Coordinator.local(d)
    job = coord.accept(lab="lab-a", plan=JobPlan.create(**GO))  # the service died here
    coord.close()
    with running_service(d) as s, lab_client(s.url, key) as lab:
        assert wait_prepared(lab, job)["state"] == "running"
    coord = Coordinator.local(d)  # replayed: the job is prepared, its ledger entry once
    try:
        assert job in coord.scheduler.jobs and not coord.scheduler.pending
        assert len(coord.scheduler.wus) == 2
        assert coord.log.size == 1
    finally:
        coord.close()


# -- the events ------------------------------------------------------------------------------


def _spec(**kw: object) -> JobSpec:
    base: dict[str, object] = dict(engine="go", system_digest=b"\1" * 32, runs=1, clones=2,
                                   gens=1, steps_per_wu=100, segment_steps=50,
                                   report_steps=50, temperature=0.8)  # fmt: skip
    return JobSpec(**(base | kw))  # type: ignore[arg-type]


def test_preparation_events_drive_the_scheduler_and_survive_the_log():
    s = Scheduler()
    events = [
        JobAccepted("a" * 64, "go", 2, 1.0),
        JobAccepted("b" * 64, "go", 2, 1.0),
        JobAccepted("c" * 64, "openmm", 1, 1.0),
        JobPrepared("a" * 64, _spec(), (b"\2" * 32,), 2.0),
        JobPreparationFailed("b" * 64, "unknown residue 'XYZ'", 2.0),
        JobCancelled("c" * 64, 3.0),
    ]
    for ev in events:
        s.handle(ev)
        assert decode_event(encode_event(ev)) == ev
    assert len(s.jobs) == 1 and len(s.wus) == 2
    assert (s.pending["b" * 64].state, s.pending["b" * 64].error) == (
        "failed",
        "unknown residue 'XYZ'",
    )
    assert s.pending["c" * 64].state == "cancelled"
    for late in (
        JobPrepared("b" * 64, _spec(), (b"\2" * 32,), 4.0),  # failed already
        JobPrepared("c" * 64, _spec(engine="openmm", clones=1), (b"\2" * 32,), 4.0),
        JobPreparationFailed("a" * 64, "too late", 4.0),  # prepared already
    ):
        with pytest.raises(ProtocolError, match="is not being prepared"):
            s.handle(late)


def test_a_job_cancelled_while_it_prepares_keeps_nothing_of_its_preparation(tmp_path):
    coord = Coordinator.local(tmp_path / "c")
    try:
        plan = JobPlan.create(**GO)
        job = coord.accept(lab="lab-a", plan=plan)
        prepared = prepare_job(plan)
        coord.cancel(job)
        entries = coord.log.size
        assert coord.prepared(job, prepared) is False
        assert coord.log.size == entries and not coord.scheduler.wus
        assert prepare_pending(coord) == {}  # nothing left to prepare
    finally:
        coord.close()


def test_the_service_keeps_answering_while_an_all_atom_system_prepares(served):
    """The preparation (PDBFixer, hydrogens, a minimisation in GBn2) holds its own process's
    GIL, never the service's: health checks answer in milliseconds meanwhile."""
    chignolin = PEPTIDE | {"sequence": "GYDPETGTWG"}
    r = post_job(served.lab, chignolin, ready=False)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    latencies, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        health = served.lab.get("/v1/health")
        latencies.append(time.perf_counter() - t0)
        assert health.status_code == 200
        progress = served.lab.get(f"/v1/jobs/{job}").json()
        if progress["state"] != "preparing":
            break
        time.sleep(0.2)  # within the lab's request rate
    assert progress["state"] == "running", progress
    assert "minimising" in progress["preparation"]["stages"]
    assert len(latencies) >= 3, latencies  # it did prepare for a while
    assert max(latencies) < 0.5, sorted(latencies)[-5:]


def test_a_system_beyond_the_all_atom_engine_is_refused_at_once_naming_the_limit():
    mtor = VILLIN_PDB.parent / "4JSV.pdb"  # mTOR kinase, ships with pdbfixer
    plan = JobPlan.create(engine="openmm", pdb=mtor.read_text(), source="4JSV.pdb", chain="A")
    t0 = time.perf_counter()
    with pytest.raises(SubmissionError, match=r"residues; the openmm engine takes at most 600"):
        prepare_job(plan)
    assert time.perf_counter() - t0 < 30  # refused before PDBFixer or the minimiser start
    go = JobPlan.create(engine="go", pdb=mtor.read_text(), chain="A", gens=1)
    assert prepare_job(go).spec.engine == "go"  # the Go model takes it
