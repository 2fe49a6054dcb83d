"""The ``foldnet`` command as a user runs it: a real subprocess, real Ray (loopback, private
HOME and RAY_TMPDIR), real engine, real ledger, real files."""

from __future__ import annotations

import csv
import json

import pytest
from cli_helpers import run_foldnet

from sims.structure import read_pdb


@pytest.mark.slow
def test_demo_runs_the_network_rejects_the_cheat_and_audits(tmp_path):
    out = tmp_path / "results"
    proc = run_foldnet(
        "demo",
        "--out",
        str(out),
        "--runs",
        "1",
        "--clones",
        "2",
        "--gens",
        "3",
        "--steps-per-wu",
        "100000",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "WUs validated: 6;" in text
    assert "PASSED" in text
    mallory = next(line for line in text.splitlines() if "mallory" in line and "│" in line)
    cells = [c.strip() for c in mallory.split("│") if c.strip()]
    # no credit; every result it returned was rejected (the server draws who computes what,
    # so how many it got varies from run to run)
    assert cells[1] == "0" and cells[2] == cells[3], cells
    assert cells[4] in ("probation", "banned"), cells
    with open(out / "observables_run0_clone0.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300 and set(rows[0]) == {"step", "energy", "q", "rmsd", "rg"}
    assert [int(rows[i]["step"]) for i in (0, 99, 299)] == [1000, 100_000, 300_000]
    assert len(read_pdb(out / "best_structure.pdb").amino_acids) == 36
    assert (out / "plot_run0_clone0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoint.txt").read_text().startswith("foldnet.local/ledger\n")
    audit = run_foldnet("audit", str(out / "coordinator" / "ledger.db"), home=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    # the trajectories open in mdtraj, the MSM is there, and the bundle verifies
    import mdtraj

    traj = mdtraj.load(str(out / "trajectory_run0_clone0.xtc"), top=str(out / "topology.pdb"))
    assert traj.n_frames == 300 and traj.n_atoms == 36
    assert "Markov state model" in text and "folding MFPT" in text
    doc = json.loads((out / "analysis" / "analysis.json").read_text())
    assert doc["data"]["frames"] == 600 and doc["msm"]["lag_frames"] >= 1
    verify = run_foldnet("verify-results", str(out), home=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # the lab's view of the same coordinator folder
    status = run_foldnet("status", str(out / "coordinator"), home=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "6/6" in status.stdout and "demo-lab" in status.stdout
    job = next(
        line.split("│")[1].strip().rstrip("…")
        for line in status.stdout.splitlines()
        if "demo-lab" in line
    )
    again = tmp_path / "again"
    res = run_foldnet("results", str(out / "coordinator"), job, "--out", str(again), home=tmp_path)
    assert res.returncode == 0, res.stderr
    for name in ("observables_run0_clone0.csv", "best_structure.pdb"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    assert (again / "plot_run0_clone1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checked = run_foldnet("verify-results", str(again), home=tmp_path)
    assert checked.returncode == 0 and "self-consistent only" in checked.stdout, checked.stdout
    missing = run_foldnet("results", str(out / "coordinator"), "nope", home=tmp_path)
    assert missing.returncode == 2 and "matches 0 jobs" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps-per-wu", "-5"], "steps_per_wu must be in"),
        (["--gens", "0"], "gens must be in"),
        (["--temperature", "0"], "temperature must be"),
        (["--steps-per-wu", "1000", "--segment-steps", "300"], "multiple of segment_steps"),
    ],
)
def test_bad_options_are_one_clear_line_not_a_traceback(args, message, tmp_path):
    proc = run_foldnet("demo", "--out", str(tmp_path / "o"), *args, home=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "o").exists()  # nothing written for a refused run


def test_demo_refuses_a_non_empty_results_folder(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("keep me")
    proc = run_foldnet("demo", "--out", str(tmp_path / "o"), home=tmp_path)
    assert proc.returncode == 2 and "is not empty" in proc.stderr
    assert (tmp_path / "o" / "mine.txt").read_text() == "keep me"
