"""One results writer for both paths (a coordinator folder, the HTTP service) and both engines:
submit, compute with real engines and signatures, write the results; mdtraj loads every
trajectory with its topology and gets the signed full-precision frames (to 0.001 nm), and
``verify-results`` passes on the honest bundle."""

from __future__ import annotations

import io
import json
import tempfile
import threading
import zipfile
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from http_helpers import add_lab, go_job, lab_client, post_job, running_service, trust, wait_for_job
from results_helpers import compute_in_folder

from coordinator.errors import MissingError, ProtocolError
from coordinator.lab import CoordinatorView
from coordinator.plan import JobPlan
from coordinator.provenance import read_bundle, verify_results
from coordinator.runner import accept_job
from coordinator.trajfiles import XTC_PRECISION_NM
from sims.examples import ALANINE_DIPEPTIDE_PDB, VILLIN_PDB
from worker.client import HttpVolunteer

GO = dict(
    engine="go", pdb=VILLIN_PDB.read_text(), source="villin", runs=1, clones=2, gens=2,
    steps_per_wu=2000, segment_steps=500, report_steps=500, temperature=0.8,
)  # fmt: skip
OPENMM = dict(
    engine="openmm", pdb=ALANINE_DIPEPTIDE_PDB.read_text(), source="alanine dipeptide",
    runs=1, clones=2, gens=2, steps_per_wu=200, segment_steps=50, report_steps=50,
)  # fmt: skip


def check_bundle(
    files: dict[str, bytes], *, engine: str, atoms: int | None, frames: int, reference: bool = True
) -> None:
    """What every bundle must hold: each trajectory loads in mdtraj with the topology and
    has the signed frames; the CSVs and README match the files present."""
    summary = json.loads(files["summary.json"])
    assert summary["engine"] == engine
    assert summary["temperature"]["unit"] == ("eps/kB" if engine == "go" else "K")
    assert [(t["run"], t["clone"], t["generations"]) for t in summary["trajectories"]] == [
        (0, 0, 2),
        (0, 1, 2),
    ]
    scale = 0.1 if engine == "go" else 1.0  # engine units -> nm
    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            (Path(d) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(d) / name).write_bytes(data)
        for clone in (0, 1):
            traj = mdtraj.load(f"{d}/trajectory_run0_clone{clone}.xtc", top=f"{d}/topology.pdb")
            signed = []
            for gen in (0, 1):
                with np.load(f"{d}/provenance/wu_run0_clone{clone}_gen{gen}.npz") as z:
                    assert z["frames"].dtype == np.float32
                    signed.append(z["frames"] * scale)
            full = np.concatenate(signed)
            assert (
                (traj.n_frames, traj.n_atoms) == (frames, atoms or traj.n_atoms) == full.shape[:2]
            )
            assert np.abs(traj.xyz - full).max() <= XTC_PRECISION_NM
            rows = (Path(d) / f"observables_run0_clone{clone}.csv").read_text().splitlines()
            assert rows[0].startswith("step,energy,") and len(rows) == frames + 1
            assert (Path(d) / f"plot_run0_clone{clone}.png").read_bytes()[:4] == b"\x89PNG"
    readme = files["README.txt"].decode()
    for name in files:
        pattern = name.replace("run0_clone0", "runR_cloneC").replace("run0_clone1", "runR_cloneC")
        for gen in (0, 1):
            pattern = pattern.replace(f"runR_cloneC_gen{gen}", "runR_cloneC_genG")
        assert pattern in readme, f"{name} is not in the README"
    assert "criterion:" in files["best_structure.pdb"].decode()
    assert ("reference.pdb" in files) == reference  # a structure is its own reference


@pytest.fixture(scope="module")
def go_folder(tmp_path_factory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("go") / "coord"
    return workdir, compute_in_folder(workdir, JobPlan.create(**GO))


def test_folder_go_results_load_in_mdtraj_and_verify(go_folder, tmp_path):
    workdir, job = go_folder
    view = CoordinatorView(workdir)
    try:
        written = view.write_results(job, tmp_path / "out")
    finally:
        view.close()
    files = read_bundle(tmp_path / "out")
    assert {str(p.relative_to(tmp_path / "out")) for p in written} == set(files)
    check_bundle(files, engine="go", atoms=36, frames=8)
    best = files["best_structure.pdb"].decode()
    assert "lowest rmsd to the reference structure" in best
    report = verify_results(tmp_path / "out")
    assert "only that the bundle is self-consistent" in report.trust
    assert any("4 WUs" in line for line in report.checked)


def test_results_of_a_job_without_any_or_unknown_are_refused(tmp_path, go_folder):
    workdir = tmp_path / "coord"
    job = accept_job(workdir, lab="lab-a", plan=JobPlan.create(**GO))
    view = CoordinatorView(workdir)
    try:
        with pytest.raises(ProtocolError, match="has no results: it is still preparing"):
            view.results(job)
        with pytest.raises(MissingError, match="no job 'nope' here"):
            view.results("nope")
    finally:
        view.close()


@pytest.mark.slow
def test_folder_openmm_results_load_in_mdtraj_and_verify(tmp_path):
    job = compute_in_folder(tmp_path / "coord", JobPlan.create(**OPENMM))
    view = CoordinatorView(tmp_path / "coord")
    try:
        view.write_results(job, tmp_path / "out")
    finally:
        view.close()
    files = read_bundle(tmp_path / "out")
    check_bundle(files, engine="openmm", atoms=22, frames=8)
    assert b"lowest rmsd_ca" in files["best_structure.pdb"]
    assert json.loads(files["summary.json"])["timestep"] == {"value": 4.0, "unit": "fs"}
    # derived from the frames: Q by Best-Hummer-Eaton and the secondary structure (DSSP)
    header = files["observables_run0_clone0.csv"].decode().splitlines()[0].split(",")
    assert header[-3:] == ["q_bhe", "helix", "strand"], header
    dssp = files["dssp_run0_clone0.txt"].decode().splitlines()
    assert len(dssp) == 8 and all(set(line.split()[1]) <= set("HEC") for line in dssp)
    assert "dssp_runR_cloneC.txt" in files["README.txt"].decode()
    report = verify_results(tmp_path / "out")
    assert any("q_bhe" in line for line in report.not_checked), report.not_checked


def _http_job(tmp_path: Path, body: dict, engines: tuple[str, ...]) -> tuple[bytes, str]:
    key = add_lab(tmp_path / "c", "lab-a")
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        job = post_job(lab, body).json()["job"]
        vols = [
            HttpVolunteer(
                s.url, home=tmp_path / f"h{i}", key_path=tmp_path / f"v{i}.key", engines=engines
            )
            for i in range(2)
        ]
        trust(s, vols[0].identity)
        threads = [threading.Thread(target=v.run, kwargs={"max_tasks": 4}) for v in vols]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for v in vols:
            v.close()
        assert wait_for_job(lab, job)["state"] == "completed"
        r = lab.get(f"/v1/jobs/{job}/results")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        return r.content, lab.get("/v1/ledger/log.vkey").text.strip()


def test_http_go_results_load_in_mdtraj_and_verify_against_the_pinned_key(tmp_path):
    data, vkey = _http_job(tmp_path, go_job(), ("go",))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    check_bundle(files, engine="go", atoms=36, frames=8)
    (tmp_path / "r.zip").write_bytes(data)
    report = verify_results(tmp_path / "r.zip", log_key=vkey)
    assert report.trust.startswith("log key given with --log-key")
    doc = json.loads(files["provenance/provenance.json"])
    assert doc["uncovered"] == 0 and len(doc["wus"]) == 4  # the service signed a checkpoint


@pytest.mark.slow
def test_http_openmm_results_load_in_mdtraj_and_verify(tmp_path):
    # A chain built from a sequence: no reference, and too few frames for a Markov state
    # model, so the best structure is the last frame of the longest trajectory.
    body = {k: v for k, v in OPENMM.items() if k not in ("source", "pdb")}
    body |= {"sequence": "AAA", "name": "tri-Ala", "audit_rate": 0.0}
    data, vkey = _http_job(tmp_path, body, ("openmm",))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    check_bundle(files, engine="openmm", atoms=None, frames=8, reference=False)
    best = json.loads(files["summary.json"])["best_structure"]
    assert best["criterion"].endswith("the last frame of the longest trajectory")
    assert b"REMARK   1 criterion: no reference structure" in files["best_structure.pdb"]
    (tmp_path / "r.zip").write_bytes(data)
    verify_results(tmp_path / "r.zip", log_key=vkey)
