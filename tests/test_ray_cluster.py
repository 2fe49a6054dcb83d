"""The Ray transport on a real multi-node local cluster (head + 3 volunteer nodes), loopback
only, with a private HOME and RAY_TMPDIR; every Ray process is stopped afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from coordinator.jobs import JobSpec
from coordinator.raypool import RayPool, VolunteerSpec, discover_volunteers
from coordinator.service import Coordinator
from ledger import run_audit
from sims.go import GoEngine, GoModel
from worker.systems import system_digest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

NODE = {"node_ip_address": "127.0.0.1", "include_dashboard": False}


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> Iterator[tuple[Cluster, dict[str, object]]]:
    home = tmp_path / "home"
    home.mkdir()
    # Ray's socket paths must fit in 107 bytes: pytest's tmp_path is too deep.
    raytmp = Path(tempfile.mkdtemp(prefix="fnray-", dir="/tmp"))
    (raytmp / "ray").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RAY_TMPDIR", str(raytmp))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # see coordinator.raylocal
    c = Cluster(
        initialize_head=True,
        head_node_args={
            **NODE,
            "num_cpus": 0,
            "temp_dir": str(raytmp / "ray"),
            "_system_config": {
                "health_check_period_ms": 500,
                "health_check_failure_threshold": 3,
                "health_check_initial_delay_ms": 0,
            },
        },
    )
    nodes = {
        f"vol:v{i}": c.add_node(
            **NODE, num_cpus=1, resources={f"vol:v{i}": 1}, labels={"volunteer-id": f"v{i}"}
        )
        for i in range(3)
    }
    assert c.address.startswith("127.0.0.1:"), c.address
    ray.init(address=c.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(raytmp, ignore_errors=True)


def _job(coord: Coordinator, model: GoModel, steps: int) -> str:
    spec = JobSpec(
        engine="go",
        system_digest=system_digest(model),
        runs=1,
        clones=2,
        gens=2,
        steps_per_wu=steps,
        segment_steps=steps // 4,
        report_steps=steps // 4,
        temperature=0.8,
    )
    start = GoEngine(model).initial_state(temperature=0.8, seed=3)
    return coord.submit(lab="lab", system=model, starts=[start], spec=spec)


def _volunteers(tmp_path, behaviours: dict[str, str] | None = None) -> list[VolunteerSpec]:
    """The joined nodes; v0 is the operator's own (trusted), the others on probation."""
    found = discover_volunteers()
    assert [v.resource for v in found] == ["vol:v0", "vol:v1", "vol:v2"]
    return [
        VolunteerSpec(
            resource=v.resource,
            key_path=str(tmp_path / f"{v.resource[4:]}.key"),
            slots=1,
            trusted=v.resource == "vol:v0",
            behaviour=(behaviours or {}).get(v.resource, "honest"),
        )
        for v in found
    ]


def test_a_job_completes_across_volunteer_nodes_and_a_node_that_never_computes_earns_nothing(
    cluster, tmp_path, villin_pdb
):
    """Issue 9's first attack over Ray: a fresh node that returns never-computed results
    (the input state at every boundary) validates nothing and earns nothing."""
    model = GoModel.from_pdb(villin_pdb)
    coord = Coordinator.local(tmp_path / "coord")
    job = _job(coord, model, 4000)
    pool = RayPool(coord, _volunteers(tmp_path, {"vol:v2": "never-computed"}))
    faker = next(m.key.hex() for m in pool.members if m.spec.resource == "vol:v2")
    pool.run([model], until=lambda: coord.job_done(job), timeout_s=300)
    pool.shutdown()
    out = coord.drain()
    assert len(out.validated) == 4
    # each WU was computed by two distinct volunteers, i.e. on two distinct nodes
    assert all(len({vol for _, vol in v.valid}) == 2 for v in out.validated)
    assert all(faker not in {vol for _, vol in v.valid} for v in out.validated)
    assert faker not in coord.credits()
    coord.log.publish_checkpoint()
    report = run_audit(coord.log.store.path, workers=1)
    assert report.ok, report.discrepancies
    assert report.entry_kinds.get("credit granted") == 8
    coord.close()


def test_a_volunteer_node_killed_mid_wu_does_not_stop_the_job(cluster, tmp_path, villin_pdb):
    c, nodes = cluster
    model = GoModel.from_pdb(villin_pdb)
    coord = Coordinator.local(tmp_path / "coord")
    job = _job(coord, model, 200_000)
    pool = RayPool(coord, _volunteers(tmp_path))
    victim = next(m for m in pool.members if m.spec.resource == "vol:v2")
    killed: list[bool] = []

    def kill_when_busy() -> None:
        if not killed and victim.in_flight:
            c.remove_node(nodes["vol:v2"], allow_graceful=False)
            killed.append(True)

    pool.run([model], until=lambda: coord.job_done(job), timeout_s=600, on_progress=kill_when_busy)
    pool.shutdown()
    assert killed and not victim.alive
    out = coord.drain()
    assert len(out.validated) == 4
    lost = [r for r in coord.scheduler.replicas.values() if r.state == "lost"]
    assert lost and all(r.volunteer == victim.key.hex() for r in lost)
    coord.log.publish_checkpoint()
    report = run_audit(coord.log.store.path, workers=1)
    assert report.ok, report.discrepancies
    credited = [(e.volunteer_key, e.wu_id) for e in _credits(coord)]
    assert len(credited) == len(set(credited)) == 8  # no credit twice
    coord.close()


def _credits(coord: Coordinator) -> list:
    from ledger import entries as le

    out = []
    for _i, _leaf, data in coord.log.store.iter_entries():
        e = le.decode_record(data).entry
        if isinstance(e, le.CreditGranted):
            out.append(e)
    return out
