"""What a lab sees of its job over HTTP: progress (WUs, steps, ns, ETA) and the results
archive (:mod:`coordinator.results`, the same files ``foldnet results`` writes, as a zip).

Progress and the choice of which replicas make up the results are read from the scheduler,
on the coordinator's thread, which also signs a checkpoint covering them when needed; the
arrays are then loaded from the store, the proofs read from a read-only connection to the
ledger and everything packed on another thread, so a large download does not stall the
volunteers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.analysis import analysis_files, analyze, load_results
from coordinator.bundle import build_bundle
from coordinator.http.ledger_index import LedgerIndex
from coordinator.provenance import gather_evidence
from coordinator.results import ResultPlan, bundle_files, load, select, zip_bytes
from coordinator.service import Coordinator
from coordinator.store import Store
from ledger.checkpoint import SignedCheckpoint
from ledger.log import Log
from sims.allatom.engine import TIMESTEP_FS


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
class ResultsRequest:
    """What the coordinator's thread decides for a results download: the replicas, where
    their ledger entries are, and the signed checkpoint their proofs will be against."""

    plan: ResultPlan
    indices: dict[bytes, int]
    checkpoint: SignedCheckpoint | None
    ledger_path: Path | str  # a SQLite file, or a PostgreSQL URL
    signed: bool  # the checkpoint was signed for this request


def results_request(
    coord: Coordinator, index: LedgerIndex, job: str, *, may_sign: bool
) -> ResultsRequest:
    """On the coordinator's thread: the replicas (:func:`coordinator.results.select`) and the
    ledger indices of their entries; when the latest checkpoint does not cover them all and
    ``may_sign``, a new one is signed first."""
    plan = select(coord.scheduler, job)
    index.update(coord.log)
    indices = {w: i for w in plan.wu_ids if (i := index.results.get(w)) is not None}
    cp = coord.log.checkpoint()
    size = 0 if cp is None else cp.checkpoint.size
    signed = may_sign and any(i >= size for i in indices.values())
    if signed:
        cp = coord.log.publish_checkpoint()
    return ResultsRequest(plan, indices, cp, coord.log.store.path, signed)


def results_zip(store: Store, req: ResultsRequest) -> bytes:
    """On another thread: the arrays from the store, the proofs from a read-only connection
    to the ledger, the bundle built and zipped (:mod:`coordinator.results`)."""
    with Log.open_readonly(req.ledger_path) as log:
        evidence = gather_evidence(log, req.plan.wu_ids, req.indices, req.checkpoint)
    return zip_bytes(bundle_files(load(store, req.plan), evidence))


def analysis_inputs(store: Store, plan: ResultPlan) -> dict[str, bytes]:
    """On another thread: the files of the results that the analysis reads (no provenance:
    it checks nothing, it reads frames and observables)."""
    return build_bundle(load(store, plan))


def analysis_zip(files: Mapping[str, bytes]) -> bytes:
    """In a worker process (CPU-bound: TICA, k-means, MSM, bootstrap): the analysis of a
    job's results files, zipped (:func:`coordinator.analysis.analysis_files`)."""
    with tempfile.TemporaryDirectory(prefix="foldnet-analysis-") as d:
        for name, data in files.items():
            if "/" not in name:  # the results' own top-level files
                (Path(d) / name).write_bytes(data)
        analysis = analyze(load_results(d))
    return zip_bytes(analysis_files(analysis))
