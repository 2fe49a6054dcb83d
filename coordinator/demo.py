"""``foldnet demo``: the whole network on one machine.

Local Ray on loopback, a SQLite coordinator with its ledger, several local volunteers with
their own keys (one of them dishonest: it returns perturbed final states), and a villin
headpiece job with runs x clones x generations and replication on. At the end: trajectories,
best Q and RMSD, WUs validated and rejected, credit per volunteer, the ledger checkpoint and
an audit of the ledger; a results folder with the best structure (PDB), per-trajectory
observables (CSV) and a plot of Q and RMSD (PNG).
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coordinator.jobs import JobSpec
from coordinator.raylocal import local_ray
from coordinator.raypool import RayPool, VolunteerSpec
from coordinator.service import Coordinator
from ledger import AuditReport, run_audit
from sims.examples import VILLIN_PDB
from sims.fileio import atomic_write_bytes, atomic_write_text
from sims.go import GoEngine, GoModel
from sims.structure import ca_pdb_text
from worker.result import WorkerResult
from worker.systems import system_digest

VOLUNTEERS = (("alice", "honest"), ("bob", "honest"), ("carol", "honest"), ("mallory", "perturb"))


@dataclass(frozen=True, slots=True)
class DemoConfig:
    runs: int = 2
    clones: int = 2
    gens: int = 8
    steps_per_wu: int = 100_000
    segment_steps: int = 20_000
    report_steps: int = 1000
    temperature: float = 0.7
    seed: int = 1


@dataclass(frozen=True, slots=True)
class Trajectory:
    run: int
    clone: int
    steps: np.ndarray
    observables: dict[str, np.ndarray]
    frames: np.ndarray


@dataclass(slots=True)
class DemoReport:
    job: str
    trajectories: list[Trajectory]
    validated: int
    rejected: int
    rejected_by: dict[str, int]
    credits: dict[str, int]
    names: dict[str, str]
    checkpoint: str
    audit: AuditReport
    files: list[Path] = field(default_factory=list)


def trajectories(coord: Coordinator, job: str) -> list[Trajectory]:
    """Each trajectory's validated generations, joined in order (canonical replica of each)."""
    by_traj: dict[tuple[int, int], dict[int, WorkerResult]] = {}
    for w in coord.scheduler.wus.values():
        if w.unit.job != job or w.state != "validated":
            continue
        replica = next(r for r in w.replicas if coord.scheduler.replicas[r].state == "valid")
        by_traj.setdefault((w.unit.run, w.unit.clone), {})[w.unit.gen] = coord.store.result(replica)
    out = []
    for (run, clone), gens in sorted(by_traj.items()):
        ordered = [gens[g] for g in sorted(gens)]
        steps = np.concatenate([r.frame_steps for r in ordered])  # counted from gen 0
        obs = {
            k: np.concatenate([r.observables[k] for r in ordered]) for k in ordered[0].observables
        }
        frames = np.concatenate([r.frames for r in ordered])
        out.append(Trajectory(run, clone, steps, obs, frames))
    return out


def observables_csv(t: Trajectory) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    names = list(t.observables)
    writer.writerow(["step", *names])
    for i, step in enumerate(t.steps):
        writer.writerow([int(step), *(f"{t.observables[n][i]:.6g}" for n in names)])
    return buf.getvalue()


def plot_png(trajs: list[Trajectory], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_q, ax_r) = plt.subplots(2, 1, figsize=(8, 6), dpi=100, sharex=True)
    for t in trajs:
        label = f"run {t.run} clone {t.clone}"
        ax_q.plot(t.steps / 1e3, t.observables["q"], lw=0.8, label=label)
        ax_r.plot(t.steps / 1e3, t.observables["rmsd"], lw=0.8, label=label)
    ax_q.set_ylabel("Q (native contacts)")
    ax_q.set_ylim(0, 1)
    ax_r.set_ylabel("C-alpha RMSD (A)")
    ax_r.set_xlabel("step (thousands)")
    ax_q.legend(fontsize=8, loc="lower right")
    ax_q.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def run_demo(
    out: Path,
    config: DemoConfig = DemoConfig(),
    *,
    on_progress: Callable[[Coordinator, str], None] | None = None,
    ray_tmpdir: str | None = None,
) -> DemoReport:
    out = out.resolve()
    model = GoModel.from_pdb(VILLIN_PDB)
    engine = GoEngine(model)
    spec = JobSpec(  # validated here, before anything is written
        engine="go",
        system_digest=system_digest(model),
        runs=config.runs,
        clones=config.clones,
        gens=config.gens,
        steps_per_wu=config.steps_per_wu,
        segment_steps=config.segment_steps,
        report_steps=config.report_steps,
        temperature=config.temperature,
    )
    engine.check_temperature(config.temperature)
    coord = Coordinator.local(out / "coordinator", checkpoint_every=50)
    starts = [
        engine.initial_state(temperature=config.temperature, seed=config.seed + run)
        for run in range(config.runs)
    ]
    job = coord.submit(lab="demo-lab", system=model, starts=starts, spec=spec)
    volunteers = [
        VolunteerSpec(
            resource=f"vol:{name}",
            key_path=str(out / "volunteers" / f"{name}.key"),
            behaviour=behaviour,
            num_cpus=0.5,
            slots=1,  # spread the work so every volunteer, mallory too, takes part
        )
        for name, behaviour in VOLUNTEERS
    ]
    tmp = ray_tmpdir or tempfile.mkdtemp(prefix="foldnet-ray-")
    with local_ray(num_cpus=2, resources={v.resource: 1 for v in volunteers}, tmpdir=tmp):
        pool = RayPool(coord, volunteers)
        names = {m.key.hex(): m.spec.resource.removeprefix("vol:") for m in pool.members}
        try:
            pool.run(
                [model],
                until=lambda: coord.job_done(job),
                timeout_s=900,
                on_progress=None if on_progress is None else (lambda: on_progress(coord, job)),
            )
        finally:
            pool.shutdown()
    if ray_tmpdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = coord.drain()
    cp = coord.log.publish_checkpoint()
    audit = run_audit(coord.log.store.path, workers=2)
    rejected_by: dict[str, int] = {}
    for inv in summary.invalidated:
        rejected_by[names.get(inv.volunteer, inv.volunteer)] = (
            rejected_by.get(names.get(inv.volunteer, inv.volunteer), 0) + 1
        )
    report = DemoReport(
        job=job,
        trajectories=trajectories(coord, job),
        validated=len(summary.validated),
        rejected=len(summary.invalidated),
        rejected_by=rejected_by,
        credits={names.get(k, k): v for k, v in coord.credits().items()},
        names=names,
        checkpoint=cp.encode(),
        audit=audit,
    )
    coord.close()
    _write_results(out, model, report, config)
    return report


def _write_results(out: Path, model: GoModel, report: DemoReport, config: DemoConfig) -> None:
    best_q, best = -1.0, None
    for t in report.trajectories:
        report.files.append(
            atomic_write_text(
                out / f"observables_run{t.run}_clone{t.clone}.csv", observables_csv(t)
            )
        )
        i = int(np.argmax(t.observables["q"]))
        if t.observables["q"][i] > best_q:
            best_q, best = float(t.observables["q"][i]), (t, i)
    if best is not None:
        t, i = best
        title = (
            f"foldnet demo best structure: run {t.run} clone {t.clone} step "
            f"{int(t.steps[i])} Q {best_q:.2f} RMSD {t.observables['rmsd'][i]:.2f} A"
        )
        report.files.append(
            atomic_write_text(
                out / "best_structure.pdb", ca_pdb_text(model.sequence, t.frames[i], title=title)
            )
        )
    report.files.append(
        atomic_write_text(out / "native.pdb", ca_pdb_text(model.sequence, model.native))
    )
    report.files.append(
        atomic_write_bytes(
            out / "q_rmsd.png",
            plot_png(
                report.trajectories, f"Villin HP36, Go model, T = {config.temperature} eps/kB"
            ),
        )
    )
    report.files.append(atomic_write_text(out / "checkpoint.txt", report.checkpoint))
