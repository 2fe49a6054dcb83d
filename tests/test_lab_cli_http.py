"""A lab's command line against a running ``foldnet serve``: submit, status, results, cancel;
a wrong key or a bad plan is one clear line and exit code 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli_helpers import run_foldnet
from http_helpers import add_lab, lab_client, running_service, trust, wait_for_job, wait_prepared

from sims.examples import VILLIN_PDB
from worker.client import HttpVolunteer


def foldnet(*args: str, key: str, home: Path) -> subprocess.CompletedProcess[str]:
    return run_foldnet(*args, home=home, env={"FOLDNET_API_KEY": key, "COLUMNS": "200"})


PLAN = ["--runs", "1", "--clones", "1", "--gens", "1", "--steps-per-wu", "1000",
        "--segment-steps", "500", "--report-steps", "500", "--temperature", "0.8"]  # fmt: skip


def test_a_lab_submits_follows_downloads_and_cancels_from_the_command_line(tmp_path):
    key = add_lab(tmp_path / "c", "lab-a")
    with running_service(tmp_path / "c") as s:
        sub = foldnet("submit", s.url, "--pdb", str(VILLIN_PDB), *PLAN, key=key, home=tmp_path)
        assert sub.returncode == 0, sub.stdout + sub.stderr
        job = sub.stdout.split("submitted job ")[1].split()[0]
        assert len(job) == 64
        st = foldnet("status", s.url, key=key, home=tmp_path)
        assert st.returncode == 0 and job[:16] in st.stdout and "0/1" in st.stdout, st.stdout
        with lab_client(s.url, key) as lab:
            assert wait_prepared(lab, job)["state"] == "running"

        for i in range(2):  # two volunteers compute the one WU, one after the other
            vol = HttpVolunteer(s.url, home=tmp_path / f"h{i}", key_path=tmp_path / f"v{i}.key")
            if i == 0:
                trust(s, vol.identity)  # the operator's machine: fresh keys alone validate nothing
            vol.run(max_tasks=1)
            vol.close()
        with lab_client(s.url, key) as lab:
            assert wait_for_job(lab, job)["state"] == "completed"
        st = foldnet("status", s.url, key=key, home=tmp_path)
        assert "1/1" in st.stdout, st.stdout
        out = tmp_path / "results"
        res = foldnet("results", s.url, job[:12], "--out", str(out), key=key, home=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert (out / "best_structure.pdb").read_text().count(" CA ") == 36

        second = foldnet("submit", s.url, "--pdb", str(VILLIN_PDB), *PLAN, key=key, home=tmp_path)
        job2 = second.stdout.split("submitted job ")[1].split()[0]
        can = foldnet("cancel", s.url, job2, key=key, home=tmp_path)
        assert can.returncode == 0 and "cancelled" in can.stdout, can.stdout + can.stderr


def test_wrong_key_and_bad_plan_are_one_clear_line(tmp_path):
    add_lab(tmp_path / "c", "lab-a")
    with running_service(tmp_path / "c") as s:
        bad = foldnet("status", s.url, key="fnlab_wrong", home=tmp_path)
        assert bad.returncode == 2 and ("401" in bad.stderr or "403" in bad.stderr), bad.stderr
        assert "Traceback" not in bad.stderr
        key = add_lab(tmp_path / "c", "lab-b")
        absurd = [*PLAN[:-2], "--temperature", "0.8", "--gens", "1000000000"]
        big = foldnet("submit", s.url, "--pdb", str(VILLIN_PDB), *absurd, key=key, home=tmp_path)
        # the plan is checked before anything is sent, by the same rules as the service's
        assert big.returncode == 2 and "gens must be in" in big.stderr, big.stderr
        assert "Traceback" not in big.stderr
        cold = foldnet("submit", s.url, "--engine", "openmm", "--sequence", "AAA",
                       "--temperature", "0.7", key=key, home=tmp_path)  # fmt: skip
        assert cold.returncode == 2 and "0.7 K is outside 200-500 K" in cold.stderr, cold.stderr
    down = foldnet("status", s.url, key=key, home=tmp_path)  # the service is gone
    assert down.returncode == 3 and "cannot reach" in down.stderr  # a fault: exit 3


def test_a_revoked_key_is_refused_by_the_running_service(tmp_path, monkeypatch):
    import coordinator.http.access as http_access

    monkeypatch.setattr(http_access, "LAB_KEY_CACHE_S", 0.0)  # no waiting for the cache here
    key = add_lab(tmp_path / "c", "lab-a")
    with running_service(tmp_path / "c") as s:
        assert foldnet("status", s.url, key=key, home=tmp_path).returncode == 0
        rev = foldnet(
            "lab", "revoke", "lab-a", "--workdir", str(tmp_path / "c"), key="", home=tmp_path
        )
        assert rev.returncode == 0, rev.stdout + rev.stderr
        after = foldnet("status", s.url, key=key, home=tmp_path)
        assert after.returncode == 2 and "403" in after.stderr, after.stderr
    again = foldnet(
        "lab", "revoke", "lab-a", "--workdir", str(tmp_path / "c"), key="", home=tmp_path
    )
    assert again.returncode == 2 and "no lab named 'lab-a' with a valid key" in again.stderr
