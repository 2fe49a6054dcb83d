"""benchmarks.pipeline on a few tiny WUs: its Ray path and its scheduler-core loops finish
(they wait for validations, so a network that cannot validate, such as one of fresh keys
alone, would hang them: this is what the timeouts below catch)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.pipeline import core_cycles, verification_overhead


@pytest.mark.timeout(120)
def test_the_core_loops_validate_every_wu():
    assert core_cycles(100) > 0
    overhead = verification_overhead(200, 10, 1)
    assert math.isfinite(overhead) and 1.0 <= overhead < 2.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_wus_complete_through_ray(tmp_path):
    """In a process of its own, as the benchmark runs (Ray started in the test process would
    outlive ``ray.shutdown`` in ways that upset other tests' clusters)."""
    code = (
        "import sys; from pathlib import Path; from benchmarks.pipeline import through_ray; "
        "from sims.examples import VILLIN_PDB; from sims.go import GoModel; "
        "wall, n = through_ray(GoModel.from_pdb(VILLIN_PDB), clones=6, steps=10, "
        "workdir=Path(sys.argv[1])); print('RESULT', wall, n)"
    )
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "RAY_TMPDIR": str(tmp_path / "ray"),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c")],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
        timeout=280, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    _, wall, replicas = line.split()
    assert float(wall) > 0 and int(replicas) >= 6
