"""``foldnet submit`` and ``foldnet run``: a lab's job into a coordinator folder, and the
coordinator process that computes it on Ray volunteers.

One coordinator process owns a folder at a time (an exclusive lock file): its scheduler lives
in memory, so a second writer would go unseen. ``submit`` therefore writes only while no
coordinator runs there; submitting to a live coordinator is the HTTP service's job.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from coordinator.errors import CoordinatorError, SubmissionError
from coordinator.jobs import JobSpec
from coordinator.raylocal import local_ray
from coordinator.raypool import RayPool, VolunteerSpec, discover_volunteers
from coordinator.service import Coordinator
from sims.allatom import AllAtomEngine
from sims.go import GoEngine, GoModel
from worker.systems import SystemDefinition, decode_system, system_digest


@contextmanager
def owned(workdir: Path) -> Iterator[None]:
    """Hold the folder's lock, or fail at once naming the reason."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / "coordinator.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise CoordinatorError(
                f"a coordinator is running in {workdir}: stop it first (or submit over HTTP)"
            ) from e
        yield
    finally:
        os.close(fd)


def submit_job(
    workdir: Path,
    *,
    lab: str,
    engine: str,
    pdb: Path | None,
    sequence: str | None,
    chain: str | None,
    runs: int,
    clones: int,
    gens: int,
    steps_per_wu: int,
    segment_steps: int,
    report_steps: int,
    temperature: float,
    min_quorum: int = 2,
    seed: int = 1,
) -> str:
    """Prepare the system once, validate the whole spec, then store the job."""
    if (pdb is None) == (sequence is None):
        raise SubmissionError("give exactly one of a PDB file or a sequence")
    system: SystemDefinition
    if engine == "go":
        if pdb is None:
            raise SubmissionError("the go engine needs a native structure: give a PDB file")
        system = GoModel.from_pdb(pdb, chain=chain)
        eng: GoEngine | AllAtomEngine = GoEngine(system)
    elif engine == "openmm":
        eng = (
            AllAtomEngine.from_pdb(pdb, chain=chain)
            if pdb is not None
            else AllAtomEngine.from_sequence(sequence or "")
        )
        system = eng.prepared
    else:
        raise SubmissionError(f"unknown engine {engine!r}: expected go or openmm")
    spec = JobSpec(
        engine=engine,
        system_digest=system_digest(system),
        runs=runs,
        clones=clones,
        gens=gens,
        steps_per_wu=steps_per_wu,
        segment_steps=segment_steps,
        report_steps=report_steps,
        temperature=temperature,
        min_quorum=min_quorum,
    )
    eng.check_temperature(temperature)
    starts = [eng.initial_state(temperature=temperature, seed=seed + r) for r in range(runs)]
    with owned(workdir):
        coord = Coordinator.local(workdir)
        try:
            return coord.submit(lab=lab, system=system, starts=starts, spec=spec)
        finally:
            coord.close()


def run_coordinator(
    workdir: Path,
    *,
    address: str | None,
    local_volunteers: int,
    on_progress: Callable[[Coordinator], None] | None = None,
) -> dict[str, int]:
    """Compute every job of the folder: on the volunteers of a Ray cluster at ``address``, or
    on ``local_volunteers`` local ones (their keys in ``workdir/volunteers``). Returns the
    credit per volunteer (hex key) from the ledger."""
    with owned(workdir):
        coord = Coordinator.local(workdir)
        systems = {
            j.spec.system_digest: decode_system(coord.store.system(j.spec.system_digest))
            for j in coord.scheduler.jobs.values()
        }
        if not systems:
            coord.close()
            raise CoordinatorError(f"no jobs in {workdir}: foldnet submit one first")

        def all_done() -> bool:
            return all(coord.job_done(job) for job in coord.scheduler.jobs)

        def drive(volunteers: list[VolunteerSpec]) -> None:
            if not volunteers:
                raise CoordinatorError("no volunteer nodes (vol:<id> resources) in the cluster")
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
                raise CoordinatorError("--volunteers must be between 1 and 64")
            specs = [
                VolunteerSpec(
                    resource=f"vol:local{i}",
                    slots=1,
                    num_cpus=0.5,
                    key_path=str(workdir / "volunteers" / f"local{i}.key"),
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
