"""``foldnet demo``: fold villin headpiece with the Go engine and verify it by recomputation.

Until the coordinator lands this runs the engine alone: one trajectory from an extended
chain, then a verifier-style recomputation of randomly chosen segments from their boundary
states, which must match bit for bit. Results go to a folder: observables as CSV, the best
structure as a C-alpha PDB, and a plot of Q and RMSD over time.
"""

from __future__ import annotations

import csv
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pdbfixer

from sims.fileio import atomic_write_bytes, atomic_write_text
from sims.go import GoEngine
from sims.result import RunResult
from sims.spec import RunSpec
from sims.structure import ca_pdb_text

VILLIN_PDB = Path(os.path.dirname(pdbfixer.__file__)) / "tests" / "data" / "test.pdb"


@dataclass(frozen=True, slots=True)
class DemoReport:
    result: RunResult
    first_folded_step: int | None
    checked_segments: tuple[int, ...]
    mismatched_segments: tuple[int, ...]
    files: tuple[Path, ...]


def observables_csv(result: RunResult) -> str:
    buf = io.StringIO()
    names = list(result.observables)
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", *names])
    for i, step in enumerate(result.frame_steps):
        writer.writerow([int(step), *(f"{result.observables[n][i]:.6g}" for n in names)])
    return buf.getvalue()


def plot_png(result: RunResult, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax_q = plt.subplots(figsize=(8, 4), dpi=100)
    steps = result.frame_steps / 1e3
    ax_q.plot(steps, result.observables["q"], color="tab:blue", lw=0.8)
    ax_q.set_xlabel("step (thousands)")
    ax_q.set_ylabel("Q (fraction of native contacts)", color="tab:blue")
    ax_q.set_ylim(0, 1)
    ax_r = ax_q.twinx()
    ax_r.plot(steps, result.observables["rmsd"], color="tab:red", lw=0.8)
    ax_r.set_ylabel("C-alpha RMSD to native (A)", color="tab:red")
    ax_q.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def run_demo(
    *,
    steps: int,
    segment_steps: int,
    temperature: float,
    seed: int,
    out: Path,
    verify_segments: int = 3,
    progress: object = None,
) -> DemoReport:
    engine = GoEngine.from_pdb(VILLIN_PDB)
    spec = RunSpec(
        steps=steps,
        segment_steps=segment_steps,
        report_steps=min(1000, segment_steps),
        temperature=temperature,
        seed=seed,
    )
    start = engine.initial_state(temperature=temperature, seed=seed)
    result = engine.run(start, spec, progress=progress)  # type: ignore[arg-type]
    q = result.observables["q"]
    folded = np.flatnonzero(q >= 0.8)
    first = int(result.frame_steps[folded[0]]) if len(folded) else None

    # Verify as a validator would: pick segments at random, recompute each from its boundary.
    rng = random.Random(int.from_bytes(result.final.digest()[:8], "little"))
    picked = tuple(
        sorted(rng.sample(range(spec.n_segments), min(verify_segments, spec.n_segments)))
    )
    bad = tuple(
        k
        for k in picked
        if engine.run_segment(result.boundaries[k], spec, k).digest()
        != result.boundaries[k + 1].digest()
    )

    best = int(np.argmax(q))
    model = engine.model
    files = (
        atomic_write_text(out / "villin_observables.csv", observables_csv(result)),
        atomic_write_text(
            out / "villin_best.pdb",
            ca_pdb_text(
                model.sequence,
                result.frames[best],
                title=f"foldnet demo best frame step {result.frame_steps[best]} Q {q[best]:.2f}",
            ),
        ),
        atomic_write_text(out / "villin_native.pdb", ca_pdb_text(model.sequence, model.native)),
        atomic_write_bytes(
            out / "villin_q_rmsd.png",
            plot_png(result, f"Villin HP36, Go model, T = {temperature} eps/kB"),
        ),
    )
    return DemoReport(result, first, picked, bad, files)
