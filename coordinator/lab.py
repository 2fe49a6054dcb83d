"""What a lab reads from a coordinator's folder: job progress and results. Read-only: the
event log is replayed into a scheduler of its own, nothing is written to the coordinator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coordinator.databases import Databases
from coordinator.errors import MissingError, ProtocolError, UsageError
from coordinator.results import trajectories, write_results
from coordinator.scheduler import Scheduler, replay
from coordinator.store import Store
from sims.go import GoModel
from worker.systems import decode_system


@dataclass(frozen=True, slots=True)
class JobStatus:
    job: str
    lab: str
    engine: str
    wus_total: int
    validated: int
    in_flight: int
    failed: int
    steps_validated: int
    #: preparing (until ``foldnet run`` prepares it), failed (``error`` says why),
    #: cancelled, running or completed
    state: str = "running"
    error: str = ""

    @property
    def done(self) -> bool:
        return self.validated == self.wus_total


class CoordinatorView:
    """A read-only view of a coordinator folder (``coordinator.db`` inside it, or the
    PostgreSQL database it remembers)."""

    def __init__(self, workdir: str | Path) -> None:
        db = Databases.of_folder(workdir).coordinator
        if "://" not in db and not Path(db).is_file():
            raise MissingError(f"no coordinator database at {db}")
        self.store = Store.open(db)
        self.scheduler: Scheduler = replay(self.store.events())[0]

    def close(self) -> None:
        self.store.close()

    def jobs(self) -> list[JobStatus]:
        out = []
        for job, p in self.scheduler.pending.items():
            info = self.store.job(job) or {}
            out.append(
                JobStatus(
                    job=job,
                    lab=str(info.get("lab", "")),
                    engine=p.engine,
                    wus_total=p.wus,
                    validated=0,
                    in_flight=0,
                    failed=0,
                    steps_validated=0,
                    state=p.state,
                    error=p.error,
                )
            )
        for job, j in self.scheduler.jobs.items():
            info = self.store.job(job) or {}
            wus = [w for w in self.scheduler.wus.values() if w.unit.job == job]
            validated = sum(1 for w in wus if w.state == "validated")
            out.append(
                JobStatus(
                    job=job,
                    lab=str(info.get("lab", "")),
                    engine=j.spec.engine,
                    wus_total=j.spec.runs * j.spec.clones * j.spec.gens,
                    validated=validated,
                    in_flight=sum(1 for w in wus if w.state not in ("validated", "failed")),
                    failed=sum(1 for w in wus if w.state == "failed"),
                    steps_validated=validated * j.spec.steps_per_wu,
                    state="cancelled"
                    if j.cancelled
                    else "completed"
                    if j.remaining == 0
                    else "running",
                )
            )
        return out

    def write_results(self, job: str, out: Path) -> list[Path]:
        p = self.scheduler.pending.get(job)
        if p is not None:
            why = p.error if p.state == "failed" else f"it is {p.state}"
            raise ProtocolError(f"job {job[:16]} has no results: {why}")
        j = self.scheduler.jobs.get(job)
        if j is None:
            known = ", ".join(self.scheduler.jobs) or "none"
            raise MissingError(f"no job {job!r} here; jobs: {known}")
        system = decode_system(self.store.system(j.spec.system_digest))
        if not isinstance(system, GoModel):
            raise UsageError("results of all-atom jobs are written by the HTTP service")
        trajs = trajectories(self.scheduler, self.store, job)
        title = f"job {job[:12]}: Go model, T = {j.spec.temperature} eps/kB"
        return write_results(out, system, trajs, title=title)
