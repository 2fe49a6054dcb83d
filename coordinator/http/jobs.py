"""What a lab sees of its job over HTTP: progress (WUs, steps, ns, ETA) and the results
archive (per-trajectory observables, frames, final and best structures).

Progress and the choice of which replicas make up the results are read from the scheduler,
on the coordinator's thread; the arrays are then loaded from the store and packed on
another thread, so a large download does not stall the volunteers.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from coordinator.errors import ProtocolError
from coordinator.service import Coordinator
from coordinator.store import Store
from coordinator.trajfiles import bundle_readme, frames_nm, pdb_text, xtc_bytes
from sims.allatom.engine import TIMESTEP_FS
from worker.systems import decode_system


class NotReadyError(ProtocolError):
    """A job's results were asked for before it has any (answered 409)."""


def job_progress(
    coord: Coordinator, job: str, *, name: str, submitted_at: float, now: float
) -> dict[str, Any]:
    """A job's state (``preparing``, ``failed`` with its ``error``, ``running``,
    ``completed``, ``cancelled``), its plan and its WUs."""
    pending = coord.scheduler.pending.get(job)
    if pending is not None:
        return _pending_progress(coord, job, name=name, submitted_at=submitted_at)
    j = coord.scheduler.jobs[job]
    spec = j.spec
    counts = {"validated": 0, "in_flight": 0, "queued": 0, "failed": 0, "cancelled": 0}
    returned = 0
    for w in coord.scheduler.wus.values():
        if w.unit.job != job:
            continue
        if w.state in ("validated", "failed", "cancelled"):
            counts[w.state] += 1
        elif w.state in ("awaiting_beacon", "spot_checking") or any(
            coord.scheduler.replicas[r].state in ("assigned", "offered") for r in w.replicas
        ):
            counts["in_flight"] += 1
        else:
            counts["queued"] += 1
        returned += sum(
            1
            for r in w.replicas
            if coord.scheduler.replicas[r].state in ("returned", "valid", "invalid", "disputed")
        )
    total = spec.runs * spec.clones * spec.gens
    counts["queued"] += total - sum(counts.values())  # generations not created yet
    steps = counts["validated"] * spec.steps_per_wu
    if j.cancelled:
        state = "cancelled"
    elif j.remaining == 0:
        state = "completed"
    elif counts["failed"] and counts["in_flight"] == 0 and counts["queued"] == 0:
        state = "failed"
    else:
        state = "running"
    left = total - counts["validated"] - counts["failed"] - counts["cancelled"]
    elapsed = max(0.0, now - submitted_at)
    eta = None
    if state == "running" and counts["validated"] > 0 and elapsed > 0:
        eta = round(elapsed * left / counts["validated"], 1)
    return {
        "job": job,
        "name": name,
        "engine": spec.engine,
        "state": state,
        "plan": {
            "runs": spec.runs,
            "clones": spec.clones,
            "gens": spec.gens,
            "steps_per_wu": spec.steps_per_wu,
            "segment_steps": spec.segment_steps,
            "report_steps": spec.report_steps,
            "temperature": spec.temperature,
            "min_quorum": spec.min_quorum,
            "deadline_s": spec.deadline_s,
            "adaptive": spec.adaptive,
        },
        "wus": {"total": total, **counts, "results_returned": returned},
        "steps_simulated": steps,
        "ns_simulated": steps * TIMESTEP_FS * 1e-6 if spec.engine == "openmm" else None,
        "submitted_at": submitted_at,
        "eta_s": eta,
        "error": None,
    }


def _pending_progress(
    coord: Coordinator, job: str, *, name: str, submitted_at: float
) -> dict[str, Any]:
    """A job not prepared (yet): ``preparing``, or ``failed``/``cancelled`` before it ran."""
    p = coord.scheduler.pending[job]
    info = coord.store.job(job) or {}
    counts = {"validated": 0, "in_flight": 0, "queued": 0, "failed": 0, "cancelled": 0}
    if p.state == "preparing":
        counts["queued"] = p.wus
    elif p.state == "cancelled":
        counts["cancelled"] = p.wus
    return {
        "job": job,
        "name": name,
        "engine": p.engine,
        "state": p.state,
        "plan": info.get("parameters", {}),
        "wus": {"total": p.wus, **counts, "results_returned": 0},
        "steps_simulated": 0,
        "ns_simulated": 0.0 if p.engine == "openmm" else None,
        "submitted_at": submitted_at,
        "eta_s": None,
        "error": p.error or None,
    }


def queued_wus(coord: Coordinator, jobs: list[str]) -> int:
    """Work units of ``jobs`` not yet done (validated, failed or cancelled), generations not
    yet created included: what a lab's quota counts."""
    live = {
        j: coord.scheduler.jobs[j]
        for j in jobs
        if j in coord.scheduler.jobs
        and not coord.scheduler.jobs[j].cancelled
        and coord.scheduler.jobs[j].remaining > 0
    }
    preparing = sum(
        p.wus
        for j in jobs
        if (p := coord.scheduler.pending.get(j)) is not None and p.state == "preparing"
    )
    if not live:
        return preparing
    left = {j: job.spec.runs * job.spec.clones * job.spec.gens for j, job in live.items()}
    for w in coord.scheduler.wus.values():
        if w.unit.job in left and w.state in ("validated", "failed", "cancelled"):
            left[w.unit.job] -= 1
    return preparing + sum(left.values())


@dataclass(frozen=True, slots=True)
class ResultPlan:
    """The validated replica of every WU of a job, chosen on the coordinator's thread."""

    job: str
    system_digest: bytes
    engine: str
    temperature: float
    picks: tuple[tuple[int, int, int, int], ...]  # (run, clone, gen, replica)


def result_plan(coord: Coordinator, job: str) -> ResultPlan:
    s = coord.scheduler
    pending = s.pending.get(job)
    if pending is not None:
        why = {
            "preparing": "is still preparing: results exist once its work units run",
            "failed": f"failed in its preparation ({pending.error[:300]}): it has no results",
            "cancelled": "was cancelled before it was prepared: it has no results",
        }[pending.state]
        raise NotReadyError(f"job {job[:16]} {why}")
    picks = []
    for w in s.wus.values():
        if w.unit.job != job or w.state != "validated":
            continue
        replica = next(r for r in w.replicas if s.replicas[r].state == "valid")
        picks.append((w.unit.run, w.unit.clone, w.unit.gen, replica))
    spec = s.jobs[job].spec
    return ResultPlan(job, spec.system_digest, spec.engine, spec.temperature, tuple(sorted(picks)))


def results_zip(store: Store, plan: ResultPlan) -> bytes:
    """A zip: per trajectory an XTC file (with ``topology.pdb``), observables CSV, the frames
    at full precision (.npz) and the final structure; the best structure of the job (highest
    Q, else lowest RMSD, else last); a summary and a README saying what each file is."""
    system = decode_system(store.system(plan.system_digest))
    by_traj: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for run, clone, gen, replica in plan.picks:
        by_traj.setdefault((run, clone), []).append((gen, replica))
    buf = io.BytesIO()
    summary: dict[str, Any] = {"job": plan.job, "engine": plan.engine, "trajectories": []}
    best: tuple[float, str, np.ndarray] | None = None
    topology: str | None = None
    dt_ps = TIMESTEP_FS / 1000.0 if plan.engine == "openmm" else 0.0
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for (run, clone), gens in sorted(by_traj.items()):
            gens.sort()
            contiguous = [g for i, g in enumerate(gens) if g[0] == i]  # gens 0..k, no holes
            results = [store.result(replica) for _gen, replica in contiguous]
            if not results:
                continue
            steps = np.concatenate([r.frame_steps for r in results])
            names = sorted(results[0].observables)
            obs = {k: np.concatenate([r.observables[k] for r in results]) for k in names}
            frames = np.concatenate([r.frames for r in results])
            tag = f"run{run}_clone{clone}"
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["step", *names])
            for i, st in enumerate(steps):
                writer.writerow([int(st), *(f"{obs[n][i]:.6g}" for n in names)])
            zf.writestr(f"observables_{tag}.csv", text.getvalue())
            fbuf = io.BytesIO()
            np.savez_compressed(fbuf, frames=frames, steps=steps)
            zf.writestr(f"frames_{tag}.npz", fbuf.getvalue())
            if topology is None and len(frames):
                topology = pdb_text(system, frames[0], f"foldnet job {plan.job[:16]} topology")
                zf.writestr("topology.pdb", topology)
            if topology is not None and len(frames):
                xtc = xtc_bytes(topology, frames_nm(system, frames), steps, dt_ps)
                zf.writestr(f"trajectory_{tag}.xtc", xtc)
            final = results[-1].positions[-1]
            zf.writestr(
                f"final_{tag}.pdb",
                pdb_text(system, final, f"foldnet job {plan.job[:16]} {tag} final state"),
            )
            if "q" in obs:
                i, score = int(np.argmax(obs["q"])), float(np.max(obs["q"]))
            elif "rmsd" in obs:
                i, score = int(np.argmin(obs["rmsd"])), -float(np.min(obs["rmsd"]))
            else:
                i, score = len(frames) - 1, 0.0
            label = f"{tag} step {int(steps[i])}" + "".join(
                f" {n} {obs[n][i]:.3g}" for n in names if n != "energy"
            )
            if best is None or score > best[0]:
                best = (score, label, frames[i])
            summary["trajectories"].append(
                {"run": run, "clone": clone, "generations": len(results), "frames": len(frames)}
            )
        if best is not None:
            zf.writestr(
                "best_structure.pdb",
                pdb_text(system, best[2], f"foldnet best structure: {best[1]}"),
            )
        zf.writestr("summary.json", json.dumps(summary, indent=1))
        zf.writestr("README.txt", bundle_readme(plan.engine))
    return buf.getvalue()
