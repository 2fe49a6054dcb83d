"""benchmarks.pipeline on a few tiny WUs: its Ray path and its scheduler-core loops finish
(they wait for validations, so a network that cannot validate, such as one of fresh keys
alone, would hang them: this is what the timeouts below catch)."""

from __future__ import annotations

import math

import pytest

from benchmarks.pipeline import core_cycles, through_ray, verification_overhead
from sims.go import GoModel


@pytest.mark.timeout(120)
def test_the_core_loops_validate_every_wu():
    assert core_cycles(100) > 0
    overhead = verification_overhead(200, 10, 1)
    assert math.isfinite(overhead) and 1.0 <= overhead < 2.0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tiny_wus_complete_through_ray(tmp_path, monkeypatch, villin_pdb):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    wall, replicas = through_ray(
        GoModel.from_pdb(villin_pdb), clones=6, steps=10, workdir=tmp_path / "c"
    )
    assert wall > 0 and replicas >= 6
