"""Thermodynamics and folding kinetics of villin HP36 in the Go model.

``python -m benchmarks.go_folding [--quick]``: a temperature scan from the native state
(<Q> and the configurational heat capacity C = var(E)/T^2, whose peak is the folding
temperature Tf), then folding from an extended chain at the temperature the tests use.
Runs temperatures on both cores. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks.common import print_table
from sims.examples import VILLIN_PDB
from sims.go import GoEngine
from sims.spec import RunSpec

FOLD_T = 0.7  # the temperature of tests/test_go_engine.py and `foldnet demo`


def _equilibrium(args: tuple[float, int]) -> tuple[float, float, float, float]:
    t, steps = args
    engine = GoEngine.from_pdb(VILLIN_PDB)
    start = engine.initial_state(temperature=t, seed=1, extended=False)
    spec = RunSpec(steps=steps, segment_steps=steps // 4, report_steps=500, temperature=t, seed=7)
    obs = engine.run(start, spec).observables
    keep = slice(len(obs["q"]) // 5, None)  # drop the first 20% as equilibration
    e = obs["energy"][keep]
    q = obs["q"][keep]
    return t, float(q.mean()), float(e.var() / t**2), float(np.mean(q >= 0.8))


def _fold(args: tuple[float, int, int]) -> int | None:
    t, seed, steps = args
    engine = GoEngine.from_pdb(VILLIN_PDB)
    start = engine.initial_state(temperature=t, seed=seed)
    spec = RunSpec(
        steps=steps, segment_steps=steps // 10, report_steps=1000, temperature=t, seed=1000 + seed
    )
    r = engine.run(start, spec)
    hit = np.flatnonzero(r.observables["q"] >= 0.8)
    return int(r.frame_steps[hit[0]]) if len(hit) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="coarser grid, shorter runs (< 1 min)")
    ns = ap.parse_args()
    temps = np.round(np.arange(0.6, 1.21, 0.1 if ns.quick else 0.05), 3)
    steps = 400_000 if ns.quick else 2_000_000
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        eq = list(pool.map(_equilibrium, [(float(t), steps) for t in temps]))
        fold_steps = 1_000_000
        seeds = 2 if ns.quick else 6
        folds = list(pool.map(_fold, [(FOLD_T, s, fold_steps) for s in range(seeds)]))
    cv = np.array([c for _, _, c, _ in eq])
    tf = float(temps[int(np.argmax(cv))])
    print_table(
        "Villin HP36 Go model: temperature scan from the native state",
        ["T (eps/kB)", "<Q>", "C_conf = var(E)/T^2", "P(Q >= 0.8)"],
        [[f"{t:.2f}", f"{q:.3f}", f"{c:.1f}", f"{p:.3f}"] for t, q, c, p in eq],
    )
    print_table(
        f"Folding from an extended chain at T = {FOLD_T} ({FOLD_T / tf:.2f} Tf), "
        f"{fold_steps:,} steps",
        ["seed", "first step with Q >= 0.8"],
        [[str(s), f"{f:,}" if f is not None else "not folded"] for s, f in enumerate(folds)],
    )
    folded = [f for f in folds if f is not None]
    metrics = {
        "tf_cv_peak": tf,
        "fold_temperature": FOLD_T,
        "fold_t_over_tf": round(FOLD_T / tf, 3),
        "folded": len(folded),
        "seeds": len(folds),
        "median_fold_steps": float(np.median(folded)) if folded else None,
        "mean_q_by_t": {f"{t:.2f}": round(q, 3) for t, q, _, _ in eq},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
