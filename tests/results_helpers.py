"""Compute a small job in a coordinator folder with in-process volunteers (no Ray): real
engines, real signatures, real SQLite coordinator and ledger."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from coordinator.plan import JobPlan
from coordinator.prepare import PreparedJob, prepare_job
from coordinator.runner import submit_job
from coordinator.service import Coordinator
from worker.adversary import honest
from worker.identity import Identity
from worker.systems import EngineCache
from worker.tasks import ComputeTask, spot_check


def compute_in_folder(
    workdir: Path,
    plan: JobPlan,
    *,
    volunteers: int = 3,
    change: Callable[[PreparedJob], PreparedJob] | None = None,
) -> str:
    """Submit ``plan`` to the folder and compute it to the end; the coordinator is closed
    (and its last checkpoint signed) when this returns. ``change`` changes the prepared job
    before it is submitted (what an operator, who prepares jobs, could do)."""
    prepared = prepare_job(plan)
    if change is not None:
        prepared = change(prepared)
    job = submit_job(workdir, lab="lab-a", job=prepared)
    coord = Coordinator.local(workdir)
    try:
        engines = EngineCache()
        canonical = engines.get(prepared.system).determinism_class().canonical().decode()
        accepted = coord.accept_class(canonical)
        ids = [Identity.ephemeral() for _ in range(volunteers)]
        for i in ids:
            coord.trust(i.public_key)
        deadline = time.monotonic() + 300
        while not coord.job_done(job) and time.monotonic() < deadline:
            busy = False
            for me in ids:
                for t in coord.request_work(me.public_key, accepted.key, 2, accepted.engine):
                    busy = True
                    if isinstance(t, ComputeTask):
                        coord.submit_result(me.public_key, t.replica, honest(t, engines, me))
                    else:
                        coord.submit_spot_check(
                            me.public_key, spot_check(t, engines=engines, identity=me)
                        )
            coord.tick()  # a beacon for results that wait for one (every 0.5 s at most)
            if not busy:
                time.sleep(0.05)
        assert coord.job_done(job), "the job did not finish"
    finally:
        coord.close()
    return job
