"""``foldnet worker run --server`` as volunteers run it: separate processes, separate keys and
FOLDNET_HOMEs, against one service on loopback; killed mid-WU, resumed, stopped with Ctrl-C."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from http_helpers import go_job, lab_client, post_job, running_service, trust, wait_for_job

from worker.client import HttpVolunteer
from worker.identity import Identity


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FOLDNET_HOME": str(home),
        "HOME": str(home),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }


def _foldnet(*args: str, home: Path, **kw) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from coordinator.cli import main; main()", *args],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


class Lines:
    """A process's output lines as they come (read on a thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline or (
                self.proc.poll() is not None and not self._t.is_alive()
            ):
                pytest.fail(f"{text!r} never came; output:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.05)

    def finish(self, timeout: float = 180) -> str:
        self.proc.wait(timeout)
        self._t.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return "\n".join(self.lines)


def _lab_key(workdir: Path, home: Path) -> str:
    proc = _foldnet("lab", "add", "lab-a", "--workdir", str(workdir), home=home)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    key = out.strip().splitlines()[-1]
    assert key.startswith("fnlab_"), out
    again = _foldnet("lab", "add", "lab-a", "--workdir", str(workdir), home=home)
    out2, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "already exists" in out2 and "Traceback" not in out2
    return key


@pytest.mark.slow
def test_two_worker_processes_complete_a_job_submitted_over_http(tmp_path):
    key = _lab_key(tmp_path / "c", tmp_path)
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        job = post_job(lab, go_job()).json()["job"]
        (tmp_path / "v0").mkdir()  # the operator's own machine: fresh keys alone validate nothing
        trust(s, Identity.load_or_create(tmp_path / "v0" / "volunteer.key"))
        workers = [
            Lines(
                _foldnet(
                    "worker",
                    "run",
                    "--server",
                    s.url,
                    "--engine",
                    "go",
                    "--max-tasks",
                    "4",
                    "--key",
                    str(tmp_path / f"v{i}" / "volunteer.key"),
                    home=tmp_path / f"v{i}",
                )
            )
            for i in range(2)
        ]
        outputs = [w.finish() for w in workers]
        for w, out in zip(workers, outputs, strict=True):
            assert w.proc.returncode == 0, out
            assert "4 WUs computed, 4 accepted" in out, out
            assert "Traceback" not in out
        assert wait_for_job(lab, job)["state"] == "completed"
        r = lab.get(f"/v1/jobs/{job}/results")
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            assert "best_structure.pdb" in zf.namelist()
            assert zf.read("best_structure.pdb").decode().count(" CA ") == 36
        keys = {(tmp_path / f"v{i}" / "volunteer.key").read_bytes() for i in range(2)}
        assert len(keys) == 2  # separate identities


@pytest.mark.slow
def test_a_worker_killed_mid_wu_resumes_and_ctrl_c_stops_after_the_wu(tmp_path):
    key = _lab_key(tmp_path / "c", tmp_path)
    big = go_job(clones=1, gens=1, steps_per_wu=600_000, segment_steps=50_000, report_steps=5000)
    home = tmp_path / "v"
    args = ["worker", "run", "--server", "", "--engine", "go", "--key", str(home / "v.key")]
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        args[3] = s.url
        job = post_job(lab, big).json()["job"]
        home.mkdir()
        trust(s, Identity.load_or_create(home / "v.key"))
        first = Lines(_foldnet(*args, home=home))
        first.wait_for("segment 2/12 done")
        first.proc.send_signal(signal.SIGKILL)  # no chance to clean up
        first.finish()
        assert list((home / "work").glob("*.progress.npz"))

        again = Lines(_foldnet(*args, home=home))
        again.wait_for("resuming after segment")
        again.proc.send_signal(signal.SIGINT)  # first Ctrl-C: finish this WU, then stop
        out = again.finish()
        assert again.proc.returncode == 0, out
        assert "stopping after the current work unit" in out
        assert "1 WUs computed, 1 accepted" in out, out
        assert not list((home / "work").iterdir())

        other = HttpVolunteer(s.url, home=tmp_path / "o", key_path=tmp_path / "o.key")
        other.run(max_tasks=1)  # from scratch; the quorum needs both bit-identical
        other.close()
        assert wait_for_job(lab, job)["state"] == "completed"
