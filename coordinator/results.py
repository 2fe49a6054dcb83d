"""A job's results, by either path (``foldnet results`` on a coordinator folder, ``GET
/v1/jobs/{job}/results``) and for either engine, in four steps:

1. :func:`select` reads the scheduler only: which replica of which WU (the coordinator's
   thread, over HTTP);
2. :func:`load` reads the store only: those replicas' signed headers, frames, observables
   and final states (any thread);
3. :func:`coordinator.provenance.gather_evidence` reads the ledger: each WU's entry and its
   inclusion proof against a signed checkpoint;
4. :func:`bundle_files` builds every file (:func:`coordinator.bundle.build_bundle`, pure),
   then :func:`write_folder` writes them atomically or :func:`zip_bytes` packs them.

Only validated, unretracted results reach a lab: a retracted WU is skipped, and a
trajectory stops at the first generation that waits for a re-check or is missing, so
nothing built on it is delivered.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator.bundle import Generation, JobInfo, Results, Seeded, Trajectory, build_bundle
from coordinator.errors import MissingError, ProtocolError
from coordinator.provenance import Evidence, provenance_source
from coordinator.scheduler import Scheduler
from coordinator.store import Store
from foldnet.files import atomic_write
from sims.go import GoModel
from worker.systems import decode_system

__all__ = [
    "NotReadyError",
    "Parent",
    "Pick",
    "ResultPlan",
    "bundle_files",
    "load",
    "select",
    "write_folder",
    "zip_bytes",
]


class NotReadyError(ProtocolError):
    """A job's results were asked for before it has any (answered 409, exit 2)."""


@dataclass(frozen=True, slots=True)
class Parent:
    """Where an adaptive generation started: boundary ``boundary`` of validated WU ``wu_id``
    (its canonical replica ``replica``; it is run ``run``, clone ``clone``, gen ``gen``)."""

    wu_id: bytes
    boundary: int
    replica: int
    run: int
    clone: int
    gen: int


@dataclass(frozen=True, slots=True)
class Pick:
    run: int
    clone: int
    gen: int
    replica: int
    wu_id: bytes
    parent: Parent | None = None
    attempt: int = 0  # > 0: computed again after a retraction (part of the WU's id)


@dataclass(frozen=True, slots=True)
class ResultPlan:
    """The validated replica of every usable WU of a job, chosen from the scheduler."""

    job: str
    engine: str
    temperature: float
    system_digest: bytes
    steps_per_wu: int
    segment_steps: int
    report_steps: int
    picks: tuple[Pick, ...]  # by (run, clone, gen); gens 0..k of each trajectory
    adaptive: str = "none"
    #: The job's canonical engine parameters (``JobSpec.engine_parameters``): with each WU's
    #: place and start, what its id is the digest of.
    params: bytes = b""

    @property
    def wu_ids(self) -> list[bytes]:
        return [p.wu_id for p in self.picks]


def select(scheduler: Scheduler, job: str) -> ResultPlan:
    """Each trajectory's usable generations: validated, not retracted, 0..k with none
    waiting for a re-check (the canonical replica of each: valid, else one whose credit was
    revoked later, which agreed all the same)."""
    pending = scheduler.pending.get(job)
    if pending is not None:
        why = {
            "preparing": "it is still preparing: results exist once its work units run",
            "failed": f"it failed in its preparation ({pending.error[:300]})",
            "cancelled": "it was cancelled before it was prepared",
        }.get(pending.state, f"it is {pending.state}")
        raise NotReadyError(f"job {job[:16]} has no results: {why}")
    j = scheduler.jobs.get(job)
    if j is None:
        known = ", ".join(k[:16] for k in scheduler.jobs) or "none"
        raise MissingError(f"no job {job!r} here; jobs: {known}")
    by_traj: dict[tuple[int, int], dict[int, Pick | None]] = {}
    for w in scheduler.wus.values():
        u = w.unit
        if u.job != job or w.state != "validated" or w.retracted:
            continue
        gens = by_traj.setdefault((u.run, u.clone), {})
        if w.reverify is not None:
            gens[u.gen] = None
            continue
        states = {r: scheduler.replicas[r].state for r in w.replicas}
        replica = next((r for r, s in states.items() if s == "valid"), None)
        if replica is None:
            replica = next((r for r, s in states.items() if s == "revoked"), None)
        parent = None
        if w.parent is not None:
            parent_wu, boundary = w.parent
            pu = scheduler.wus[parent_wu].unit
            parent_replica = scheduler.canonical(parent_wu)[0]
            parent = Parent(parent_wu, boundary, parent_replica, pu.run, pu.clone, pu.gen)
        gens[u.gen] = (
            None
            if replica is None
            else Pick(u.run, u.clone, u.gen, replica, u.id, parent, u.attempt)
        )
    picks: list[Pick] = []
    for _key, gens in sorted(by_traj.items()):
        g = 0
        while (p := gens.get(g)) is not None:
            picks.append(p)
            g += 1
    spec = j.spec
    return ResultPlan(
        job=job,
        engine=spec.engine,
        temperature=spec.temperature,
        system_digest=spec.system_digest,
        steps_per_wu=spec.steps_per_wu,
        segment_steps=spec.segment_steps,
        report_steps=spec.report_steps,
        picks=tuple(picks),
        adaptive=spec.adaptive,
        params=spec.engine_parameters(),
    )


def load(store: Store, plan: ResultPlan) -> Results:
    """The picked results from the store: signed headers, frames, observables, final states."""
    system = decode_system(store.system(plan.system_digest))
    if isinstance(system, GoModel):
        reference: np.ndarray | None = system.native
    else:
        reference = system.reference
    by_traj: dict[tuple[int, int], list[Generation]] = {}
    for p in plan.picks:
        header, signature = store.signed_header(p.replica)
        a = store.result_arrays(p.replica)
        seeded = None
        if p.parent is not None:  # an adaptive start: its state, and the state it came from
            restart = store.state(header.boundary_digests[0])
            (origin,) = store.boundary_states(p.parent.replica, [p.parent.boundary])
            seeded = Seeded(
                wu_id=p.parent.wu_id,
                boundary=p.parent.boundary,
                run=p.parent.run,
                clone=p.parent.clone,
                gen=p.parent.gen,
                parent_positions=np.array(origin.positions),
                parent_velocities=np.array(origin.velocities),
                start_positions=np.array(restart.positions),
                start_velocities=np.array(restart.velocities),
            )
        by_traj.setdefault((p.run, p.clone), []).append(
            Generation(
                gen=p.gen,
                header=header,
                signature=signature,
                frames=np.array(a["frames"]),
                steps=np.array(a["frame_steps"]),
                observables={k[4:]: np.array(v) for k, v in a.items() if k.startswith("obs_")},
                final_positions=np.array(a["positions"][-1]),
                final_velocities=np.array(a["velocities"][-1]),
                seeded=seeded,
                attempt=p.attempt,
                start=None if p.gen else store.state(header.boundary_digests[0]),
            )
        )
    info = JobInfo(
        job=plan.job,
        engine=plan.engine,
        temperature=plan.temperature,
        steps_per_wu=plan.steps_per_wu,
        segment_steps=plan.segment_steps,
        report_steps=plan.report_steps,
        system=system,
        reference=reference,
        adaptive=plan.adaptive,
        params=plan.params,
    )
    trajs = tuple(Trajectory.join(r, c, gens) for (r, c), gens in sorted(by_traj.items()))
    return Results(info, trajs)


def bundle_files(results: Results, evidence: Evidence) -> dict[str, bytes]:
    """Every file of the results, the provenance of every WU included."""
    return build_bundle(results, sources=(provenance_source(evidence),))


def write_folder(out: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Each file written atomically under ``out`` (folders made as needed)."""
    return [atomic_write(out / name, data) for name, data in files.items()]


def zip_bytes(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
