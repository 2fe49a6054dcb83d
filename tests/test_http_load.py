"""Load: 200 simulated volunteers pull and upload tiny WUs concurrently against one
``foldnet serve`` on loopback: no 5xx, nothing lost, nothing counted twice."""

from __future__ import annotations

import pytest

from benchmarks.http import bench


@pytest.mark.slow
def test_200_volunteers_pull_and_upload_concurrently(tmp_path):
    out = bench(volunteers=200, seconds=8.0, clones=12_000, workdir=tmp_path / "c")
    r = out["report"]
    print(
        f"\n{r.cycles_per_s:.0f} cycles/s, {r.requests / r.seconds:.0f} requests/s, "
        f"p50 {r.percentile(50):.0f} ms, p99 {r.percentile(99):.0f} ms"
    )
    assert r.server_errors == 0 and r.errors == 0, r.statuses
    assert out["lost_or_duplicated"] == 0
    assert len(set(r.uploaded)) == len(r.uploaded) > 200
    assert out["progress"]["wus"]["validated"] > 0
