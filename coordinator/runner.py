"""``foldnet submit`` and ``foldnet run``: a lab's job into a coordinator folder, and the
coordinator process that computes it on Ray volunteers.

One coordinator process owns a folder at a time (an exclusive lock file): its scheduler lives
in memory, so a second writer would go unseen. ``submit`` therefore writes only while no
coordinator runs there; submitting to a live coordinator is the HTTP service's job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from coordinator.errors import CoordinatorUnavailableError, UsageError
from coordinator.folder import owned
from coordinator.prepare import PreparedJob
from coordinator.raylocal import local_ray
from coordinator.raypool import RayPool, VolunteerSpec, discover_volunteers
from coordinator.service import Coordinator
from worker.systems import decode_system


def submit_job(workdir: Path, *, lab: str, job: PreparedJob) -> str:
    """Store a prepared job (:func:`coordinator.prepare.prepare_job`, which validated it) in
    the folder; refused while a coordinator runs there."""
    with owned(workdir):
        coord = Coordinator.local(workdir)
        try:
            return coord.submit(lab=lab, system=job.system, starts=job.starts, spec=job.spec)
        finally:
            coord.close()


def run_coordinator(
    workdir: Path,
    *,
    address: str | None,
    local_volunteers: int,
    on_progress: Callable[[Coordinator], None] | None = None,
    trusted: tuple[bytes, ...] = (),
) -> dict[str, int]:
    """Compute every job of the folder: on the volunteers of a Ray cluster at ``address``, or
    on ``local_volunteers`` local ones (their keys in ``workdir/volunteers``). Returns the
    credit per volunteer (hex key) from the ledger."""
    with owned(workdir):
        coord = Coordinator.local(workdir)
        for key in trusted:  # the operator's own nodes of a cluster
            coord.trust(key)
        systems = {
            j.spec.system_digest: decode_system(coord.store.system(j.spec.system_digest))
            for j in coord.scheduler.jobs.values()
        }
        if not systems:
            coord.close()
            raise UsageError(f"no jobs in {workdir}: foldnet submit one first")

        def all_done() -> bool:
            return all(coord.job_done(job) for job in coord.scheduler.jobs)

        def drive(volunteers: list[VolunteerSpec]) -> None:
            if not volunteers:
                raise CoordinatorUnavailableError(
                    "no volunteer nodes (vol:<id> resources) in the cluster"
                )
            pool = RayPool(coord, volunteers)
            try:
                pool.run(
                    list(systems.values()),
                    until=all_done,
                    timeout_s=30 * 86400,
                    on_progress=None if on_progress is None else (lambda: on_progress(coord)),
                )
            finally:
                pool.shutdown()

        if address is not None:
            import ray

            ray.init(address=address, log_to_driver=False)
            try:
                drive(discover_volunteers())
            finally:
                ray.shutdown()
        else:
            if not 1 <= local_volunteers <= 64:
                raise UsageError("--volunteers must be between 1 and 64")
            specs = [
                VolunteerSpec(
                    resource=f"vol:local{i}",
                    slots=1,
                    num_cpus=0.5,
                    key_path=str(workdir / "volunteers" / f"local{i}.key"),
                    trusted=True,  # this machine's own volunteers are the operator's
                )
                for i in range(local_volunteers)
            ]
            resources = {s.resource: 1.0 for s in specs}
            with local_ray(num_cpus=os.cpu_count() or 1, resources=resources):
                drive(specs)
        coord.log.publish_checkpoint()
        credits = coord.credits()
        coord.close()
        return credits
