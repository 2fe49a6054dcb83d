"""A coordinator process for the crash test: submits a job once, then computes it with
in-process honest volunteers, printing one line per validated WU. Run as a script."""

from __future__ import annotations

import sys
from pathlib import Path

from coordinator.jobs import JobSpec
from coordinator.service import Coordinator, det_class_key
from sims.examples import VILLIN_PDB
from sims.go import GoEngine, GoModel
from worker.identity import Identity
from worker.systems import EngineCache, system_digest
from worker.tasks import ComputeTask, compute, spot_check


def main(workdir: Path) -> None:
    coord = Coordinator.local(workdir, checkpoint_every=5, beacon_interval_s=0)
    model = GoModel.from_pdb(VILLIN_PDB)
    engine = GoEngine(model)
    job_file = workdir / "job.txt"
    if job_file.exists():
        job = job_file.read_text()
    else:
        spec = JobSpec(
            engine="go",
            system_digest=system_digest(model),
            runs=1,
            clones=3,
            gens=4,
            steps_per_wu=20_000,
            segment_steps=5000,
            report_steps=5000,
            temperature=0.8,
        )
        job = coord.submit(
            lab="crash-lab",
            system=model,
            starts=[engine.initial_state(temperature=0.8, seed=9)],
            spec=spec,
        )
        job_file.write_text(job)
    det = det_class_key(engine.determinism_class().canonical().decode())
    volunteers = [Identity.load_or_create(workdir / f"v{i}.key") for i in range(3)]
    for v in volunteers:  # the operator's own machines (remembered across restarts)
        coord.trust(v.public_key)
    engines = EngineCache()
    while not coord.job_done(job):
        for v in volunteers:
            for task in coord.request_work(v.public_key, det, 1):
                if isinstance(task, ComputeTask):
                    coord.submit_result(
                        v.public_key, task.replica, compute(task, engines=engines, identity=v)
                    )
                else:  # a spot-check or an audit
                    coord.submit_spot_check(
                        v.public_key, spot_check(task, engines=engines, identity=v)
                    )
                for val in coord.drain().validated:
                    print(f"validated {val.wu.gen} {val.wu.clone}", flush=True)
        coord.tick()
    coord.log.publish_checkpoint()
    print("done", flush=True)
    coord.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
