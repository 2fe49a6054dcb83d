"""What a lab reads from a coordinator's folder: job progress and results. The event log is
replayed into a scheduler of its own; nothing is written to the coordinator, except that
results, while no coordinator runs there, first have the ledger sign a checkpoint covering
their WUs (with the folder's ledger key), so that every WU comes with an inclusion proof."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from coordinator.databases import Databases
from coordinator.errors import MissingError, UsageError
from coordinator.folder import owned
from coordinator.provenance import Evidence, gather_evidence, result_indices
from coordinator.results import bundle_files, load, select, write_folder
from coordinator.scheduler import Scheduler, replay
from coordinator.store import Store
from ledger.keys import load_private_key
from ledger.log import Log


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
        self.workdir = Path(workdir)
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

    def results(self, job: str) -> tuple[dict[str, bytes], int]:
        """Every file of the job's results, and how many of its WUs no signed checkpoint
        covers yet (0 unless a coordinator runs in the folder and has not signed one since)."""
        plan = select(self.scheduler, job)
        evidence = ledger_evidence(self.workdir, plan.wu_ids)
        return bundle_files(load(self.store, plan), evidence), len(evidence.uncovered(plan.wu_ids))

    def write_results(self, job: str, out: Path) -> list[Path]:
        return write_folder(out, self.results(job)[0])


def ledger_evidence(workdir: Path, wu_ids: list[bytes]) -> Evidence:
    """The ledger entries of ``wu_ids`` with inclusion proofs against a signed checkpoint.

    When the latest checkpoint does not cover them all and no coordinator runs in the folder,
    the folder's ledger key signs a new one first (holding the folder's lock meanwhile);
    while a coordinator runs, the latest it signed is used and the entries after it have no
    proof (it signs one at least every minute while it appends, and when it stops)."""
    path = Databases.of_folder(workdir).ledger  # a SQLite file in it, or a PostgreSQL URL
    if "://" not in path and not Path(path).is_file():
        raise MissingError(f"no ledger database at {path}")
    with Log.open_readonly(path) as log:
        origin = log.origin
        indices = result_indices(log)
        cp = log.checkpoint()
        size = 0 if cp is None else cp.checkpoint.size
        if all(indices.get(w, -1) < size for w in wu_ids if w in indices):
            return gather_evidence(log, wu_ids, indices, cp)
    key = workdir / "ledger.key"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(owned(workdir))
        except UsageError:
            pass  # a coordinator runs in the folder: what it signed so far
        else:
            if key.is_file():
                log = stack.enter_context(
                    Log.open(path, origin=origin, signing_key=load_private_key(key))
                )
                indices = result_indices(log)  # what was appended since the first look
                return gather_evidence(log, wu_ids, indices, log.publish_checkpoint())
    with Log.open_readonly(path) as log:
        return gather_evidence(log, wu_ids, indices, log.checkpoint())
