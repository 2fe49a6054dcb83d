"""The ``foldnet`` command as a user runs it: a real subprocess, real engine, real files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sims.structure import read_pdb


def _foldnet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    code = "from coordinator.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_demo_folds_villin_verifies_segments_and_writes_results(tmp_path):
    out = tmp_path / "results"
    proc = _foldnet(
        "demo", "--steps", "400000", "--segment-steps", "20000", "--out", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bit-identical" in proc.stdout
    assert "folded (Q >= 0.8) first at" in proc.stdout
    with open(out / "villin_observables.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 400 and set(rows[0]) == {"step", "energy", "q", "rmsd", "rg"}
    assert max(float(r["q"]) for r in rows) >= 0.8  # seed 1 folds by step ~240k at T = 0.7
    assert len(read_pdb(out / "villin_best.pdb").amino_acids) == 36
    assert (out / "villin_q_rmsd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--steps", "-5"], "steps must be > 0"),
        (["demo", "--temperature", "0"], "temperature must be finite and > 0"),
        (["demo", "--steps", "1000", "--segment-steps", "300"], "multiple of segment_steps"),
    ],
)
def test_bad_options_are_one_clear_line_not_a_traceback(args, message, tmp_path):
    proc = _foldnet(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "o").exists()  # nothing written for a refused run
