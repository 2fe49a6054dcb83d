"""The coordinator end to end in one process (no Ray): real engine, real signatures, real
SQLite, real ledger; volunteers are in-process workers, some of them dishonest."""

from __future__ import annotations

import pytest

from coordinator.jobs import JobSpec
from coordinator.service import Coordinator, det_class_key
from ledger import run_audit
from sims.go import GoEngine, GoModel
from worker.adversary import BEHAVIOURS
from worker.identity import Identity
from worker.systems import EngineCache, system_digest
from worker.tasks import ComputeTask, spot_check


class Volunteer:
    def __init__(self, behaviour: str = "honest") -> None:
        self.identity = Identity.ephemeral()
        self.engines = EngineCache()
        self.behaviour = BEHAVIOURS[behaviour]

    @property
    def key(self) -> bytes:
        return self.identity.public_key

    def det_class(self, model: GoModel) -> str:
        return det_class_key(GoEngine(model).determinism_class().canonical().decode())

    def work(self, coord: Coordinator, model: GoModel, slots: int = 2) -> int:
        tasks = coord.request_work(self.key, self.det_class(model), slots)
        for t in tasks:
            if isinstance(t, ComputeTask):
                coord.submit_result(
                    self.key, t.replica, self.behaviour(t, self.engines, self.identity)
                )
            else:
                coord.submit_spot_check(
                    self.key, spot_check(t, engines=self.engines, identity=self.identity)
                )
        return len(tasks)


@pytest.fixture(scope="module")
def model(villin_pdb) -> GoModel:
    return GoModel.from_pdb(villin_pdb)


def small_job(coord: Coordinator, model: GoModel, **kw) -> str:
    engine = GoEngine(model)
    spec = JobSpec(
        engine="go", system_digest=system_digest(model), runs=1, clones=2, gens=2,
        steps_per_wu=2000, segment_steps=500, report_steps=500, temperature=0.8, **kw,
    )  # fmt: skip
    start = engine.initial_state(temperature=0.8, seed=1)
    return coord.submit(lab="lab-a", system=model, starts=[start], spec=spec)


def run_until_done(coord, job, model, volunteers, rounds=40):
    for _ in range(rounds):
        for v in volunteers:
            v.work(coord, model)
        coord.tick()
        if coord.job_done(job):
            return
    pytest.fail(f"job not done: {coord.scheduler.summary()}")


def test_job_completes_cheaters_earn_nothing_and_the_ledger_audits(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    honest = [Volunteer(), Volunteer()]
    cheats = [Volunteer("perturb"), Volunteer("skip")]
    job = small_job(coord, model)
    run_until_done(coord, job, model, [cheats[0], honest[0], cheats[1], honest[1]])
    out = coord.drain()
    assert len(out.validated) == 4  # 2 clones x 2 gens
    cheat_ids = {c.key.hex() for c in cheats}
    assert {i.volunteer for i in out.invalidated} == cheat_ids
    credits = coord.credits()
    assert set(credits) == {h.key.hex() for h in honest}
    assert all(amount > 0 for amount in credits.values())
    coord.log.publish_checkpoint()
    report = run_audit(coord.log.store.path, workers=1)
    assert report.ok, report.discrepancies
    assert report.balances == {bytes.fromhex(k): v for k, v in credits.items()}
    coord.close()


def test_restart_replays_the_log_and_credits_nothing_twice(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    a, b = Volunteer(), Volunteer()
    job = small_job(coord, model)
    a.work(coord, model)
    b.work(coord, model)
    auditor = Volunteer()
    coord.tick()  # the beacon: gen 0 of both clones validated (or audited first)
    while coord.scheduler.summary().get("validated", 0) < 2:
        auditor.work(coord, model)
        coord.tick()
    in_flight = coord.request_work(a.key, a.det_class(model), 2)  # gen 1, never returned
    assert len(in_flight) == 2
    before = coord.credits()
    size = coord.log.size
    coord.close()

    again = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    assert again.credits() == before and again.log.size == size  # nothing re-appended
    assert all(r.state != "assigned" for r in again.scheduler.replicas.values())
    run_until_done(again, job, model, [a, b, Volunteer()])
    total = again.credits()
    assert sum(total.values()) > sum(before.values())
    again.log.publish_checkpoint()
    assert run_audit(again.log.store.path, workers=1).ok
    again.close()


def test_idle_polling_does_not_grow_the_event_log(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    idle = Volunteer()
    assert idle.work(coord, model) == 0  # no job yet: registers the volunteer, once
    logged = len(list(coord.store.events()))
    for _ in range(50):
        assert idle.work(coord, model) == 0
        coord.tick()
    assert len(list(coord.store.events())) == logged
    coord.close()
