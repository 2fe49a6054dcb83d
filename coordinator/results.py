"""A job's results as a lab gets them: trajectories joined across generations, observables as
CSV, the best structure as PDB, a plot of Q and RMSD. Read from the coordinator's store only
(the canonical, validated replica of every WU), so it works on a live or a finished run."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator.scheduler import Scheduler
from coordinator.store import Store
from coordinator.trajfiles import bundle_readme, frames_nm, xtc_bytes
from foldnet.files import atomic_write
from sims.go import GoModel
from sims.structure import ca_pdb_text


@dataclass(frozen=True, slots=True)
class Trajectory:
    run: int
    clone: int
    steps: np.ndarray
    observables: dict[str, np.ndarray]
    frames: np.ndarray


def trajectories(scheduler: Scheduler, store: Store, job: str) -> list[Trajectory]:
    """Each trajectory's validated generations, in order (the canonical replica of each).

    Only results whose agreeing replicas bound every frame and observable are used; a
    generation that was retracted (a convicted key vouched for a fake) or that waits for a
    re-check ends its trajectory there, so nothing built on it reaches the lab."""
    by_traj: dict[tuple[int, int], dict[int, int]] = {}
    for w in scheduler.wus.values():
        if w.unit.job != job or w.state != "validated" or w.retracted:
            continue
        if w.reverify is not None:
            by_traj.setdefault((w.unit.run, w.unit.clone), {})[w.unit.gen] = -1
            continue
        replica = next(r for r in w.replicas if scheduler.replicas[r].state in ("valid", "revoked"))
        by_traj.setdefault((w.unit.run, w.unit.clone), {})[w.unit.gen] = replica
    out = []
    for (run, clone), gens in sorted(by_traj.items()):
        usable = []
        for g in range(len(gens)):
            if gens.get(g, -1) < 0:
                break
            usable.append(g)
        if not usable:
            continue
        ordered = [store.result(gens[g]) for g in usable]
        steps = np.concatenate([r.frame_steps for r in ordered])  # counted from gen 0
        names = ordered[0].observables
        obs = {k: np.concatenate([r.observables[k] for r in ordered]) for k in names}
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


def write_results(out: Path, model: GoModel, trajs: list[Trajectory], *, title: str) -> list[Path]:
    """Per trajectory an XTC (with ``topology.pdb``) and the observables; the best structure
    (highest Q), the native, the plot and a README of the files."""
    files = [
        atomic_write(out / f"observables_run{t.run}_clone{t.clone}.csv", observables_csv(t))
        for t in trajs
    ]
    best = max(
        ((t, int(np.argmax(t.observables["q"]))) for t in trajs),
        key=lambda ti: float(ti[0].observables["q"][ti[1]]),
        default=None,
    )
    if best is not None:
        t, i = best
        remark = (
            f"foldnet best structure: run {t.run} clone {t.clone} step {int(t.steps[i])} "
            f"Q {t.observables['q'][i]:.2f} RMSD {t.observables['rmsd'][i]:.2f} A"
        )
        pdb = ca_pdb_text(model.sequence, t.frames[i], title=remark)
        files.append(atomic_write(out / "best_structure.pdb", pdb))
    files.append(atomic_write(out / "native.pdb", ca_pdb_text(model.sequence, model.native)))
    topology = next(
        (
            ca_pdb_text(model.sequence, t.frames[0], title="topology")
            for t in trajs
            if len(t.frames)
        ),
        None,
    )
    if topology is not None:
        files.append(atomic_write(out / "topology.pdb", topology))
        for t in trajs:
            xtc = xtc_bytes(topology, frames_nm(model, t.frames), t.steps, 0.0)
            files.append(atomic_write(out / f"trajectory_run{t.run}_clone{t.clone}.xtc", xtc))
    if trajs:
        files.append(atomic_write(out / "q_rmsd.png", plot_png(trajs, title)))
    files.append(atomic_write(out / "README.txt", bundle_readme("go", folder=True)))
    return files
