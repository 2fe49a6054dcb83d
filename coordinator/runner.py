"""``foldnet submit`` and ``foldnet run``: a lab's job into a coordinator folder, and the
coordinator process that prepares it (in a child process) and computes it on Ray volunteers.

One coordinator process owns a folder at a time (an exclusive lock file): its scheduler lives
in memory, so a second writer would go unseen. ``submit`` therefore writes only while no
coordinator runs there; submitting to a live coordinator is the HTTP service's job.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable
from pathlib import Path

from coordinator.errors import CoordinatorError, CoordinatorUnavailableError, UsageError
from coordinator.folder import owned
from coordinator.plan import JobPlan
from coordinator.prepare import PreparedJob
from coordinator.preparer import Preparer
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


def accept_job(workdir: Path, *, lab: str, plan: JobPlan) -> str:
    """Store a lab's plan in the folder as a job to prepare (at once; ``foldnet run``
    prepares it, in a child process, before computing it); refused while a coordinator runs
    there."""
    with owned(workdir):
        coord = Coordinator.local(workdir)
        try:
            with coord.batch():  # the plan and its event together, or neither
                return coord.accept(lab=lab, plan=plan)
        finally:
            coord.close()


def prepare_pending(
    coord: Coordinator, *, on_stage: Callable[[str, str], None] | None = None
) -> dict[str, str]:
    """Prepare every job of ``coord`` still ``preparing``, one at a time in a child process
    (:class:`~coordinator.preparer.Preparer`), and store each outcome through the
    coordinator (on this thread). Returns the error of each job whose preparation failed.
    ``on_stage(job, stage)`` is told each step as it starts."""
    todo = coord.pending_preparations()
    if not todo:
        return {}
    done: queue.SimpleQueue[tuple[str, PreparedJob | str]] = queue.SimpleQueue()
    failed: dict[str, str] = {}
    with Preparer(
        on_prepared=lambda job, p: done.put((job, p)),
        on_failed=lambda job, why: done.put((job, why)),
    ) as preparer:
        for job, plan in todo:
            preparer.submit(job, plan)
        seen: dict[str, int] = {}
        for _ in todo:
            while True:
                try:
                    job, outcome = done.get(timeout=0.2)
                    break
                except queue.Empty:
                    if on_stage is not None:
                        _report_stages(preparer, todo, seen, on_stage)
            if on_stage is not None:  # the stages of a quick one, all at once
                _report_stages(preparer, todo, seen, on_stage)
            if isinstance(outcome, str):
                coord.preparation_failed(job, outcome)
                failed[job] = outcome
                continue
            try:
                coord.prepared(job, outcome)
            except CoordinatorError as e:
                coord.preparation_failed(job, str(e))
                failed[job] = str(e)
    return failed


def _report_stages(
    preparer: Preparer,
    todo: list[tuple[str, JobPlan]],
    seen: dict[str, int],
    on_stage: Callable[[str, str], None],
) -> None:
    for job, _plan in todo:
        p = preparer.progress(job)
        if p is None:
            continue
        for stage in p.stages[seen.get(job, 0) :]:
            on_stage(job, stage)
        seen[job] = len(p.stages)


def run_coordinator(
    workdir: Path,
    *,
    address: str | None,
    local_volunteers: int,
    on_progress: Callable[[Coordinator], None] | None = None,
    trusted: tuple[bytes, ...] = (),
    on_stage: Callable[[str, str], None] | None = None,
) -> dict[str, int]:
    """Prepare the jobs of the folder still ``preparing`` (``on_stage(job, stage)`` is told
    each step), then compute every job: on the volunteers of a Ray cluster at ``address``, or
    on ``local_volunteers`` local ones (their keys in ``workdir/volunteers``). Returns the
    credit per volunteer (hex key) from the ledger."""
    with owned(workdir):
        coord = Coordinator.local(workdir)
        try:
            prepare_pending(coord, on_stage=on_stage)
        except BaseException:
            coord.close()
            raise
        for key in trusted:  # the operator's own nodes of a cluster
            coord.trust(key)
        systems = {
            j.spec.system_digest: decode_system(coord.store.system(j.spec.system_digest))
            for j in coord.scheduler.jobs.values()
        }
        if not systems:
            failed = {j: p.error for j, p in coord.scheduler.pending.items() if p.state == "failed"}
            coord.close()
            if failed:
                why = "; ".join(f"job {j[:16]}: {e}" for j, e in failed.items())
                raise UsageError(f"no job in {workdir} could be prepared: {why}")
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
