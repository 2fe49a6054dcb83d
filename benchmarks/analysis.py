"""The science check of ``foldnet analyze``: does the MSM get villin's folding time right?

``python -m benchmarks.analysis [--quick]``: plain Go-model trajectories of villin HP36 at the
folding temperature (Tf ~ 0.78 eps/kB, the heat-capacity peak of ``benchmarks.go_folding``),
run directly with the engine (no network; two processes), written as a results folder with
the bundle's own file names and formats (topology PDB, XTC, observables CSV) and analysed by
``coordinator.analysis`` exactly as ``foldnet analyze`` does. The folding time (mean first
passage unfolded -> folded) of the MSM is compared with the one counted directly along the
same trajectories from Q alone (each frame's Q averaged over the MSM's lag, the same two
thresholds), which shares nothing with the MSM's features or clustering; both with 95%
bootstrap intervals over trajectories. Also printed: the count with frames labelled by
their microstate, and with each frame's own Q (which counts brief excursions).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import print_table
from coordinator.analysis import AnalysisParams, analyze, direct_mfpt, load_results
from coordinator.bundle import plain_go_files
from foldnet.files import atomic_write
from sims.examples import VILLIN_PDB
from sims.go import GoEngine
from sims.spec import RunSpec

TF = 0.78  # eps/kB: the folding temperature of villin HP36 in this model (README)
REPORT = 1000  # steps per frame, as a Go job reports


def _run(args: tuple[int, int]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    seed, steps = args
    engine = GoEngine.from_pdb(VILLIN_PDB)
    start = engine.initial_state(temperature=TF, seed=seed, extended=False)
    spec = RunSpec(
        steps=steps,
        segment_steps=steps // 10,
        report_steps=REPORT,
        temperature=TF,
        seed=9000 + seed,
    )
    r = engine.run(start, spec)
    return r.frame_steps, dict(r.observables), r.frames


def _labels(q: np.ndarray, params: AnalysisParams) -> np.ndarray:
    """0 unfolded, 1 folded, -1 in between, by the macrostates' Q thresholds."""
    return np.where(q <= params.q_unfolded, 0, np.where(q >= params.q_folded, 1, -1))


def _interval(values: list[float]) -> list[float] | None:
    return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) >= 2 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="4 x 1.2M steps (< 1 min)")
    ap.add_argument("--trajectories", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="steps per trajectory")
    ns = ap.parse_args()
    n_traj = ns.trajectories or (4 if ns.quick else 8)
    steps = ns.steps or (1_200_000 if ns.quick else 4_000_000)
    params = AnalysisParams(bootstrap=100 if ns.quick else 200)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(_run, [(s, steps) for s in range(n_traj)]))
    t_sim = time.perf_counter() - t0
    engine = GoEngine.from_pdb(VILLIN_PDB)
    with tempfile.TemporaryDirectory(prefix="foldnet-bench-analysis-") as d:
        for name, data in plain_go_files(engine.model, runs).items():
            atomic_write(Path(d) / name, data)
        t1 = time.perf_counter()
        a = analyze(load_results(d), params)
        t_msm = time.perf_counter() - t1
    m = a.msm
    macro = np.full(len(m.microstate_q), -1)
    macro[list(m.unfolded)] = 0
    macro[list(m.folded)] = 1
    labels = [macro[dt] for dt in a.dtrajs]
    direct, transitions, _ = direct_mfpt(labels, m.frame_steps)
    rng = np.random.default_rng(params.seed)
    boot = []
    for _ in range(params.bootstrap):
        pick = rng.integers(0, len(labels), size=len(labels))
        v, _, _ = direct_mfpt([labels[i] for i in pick], m.frame_steps)
        if v is not None:
            boot.append(v)
    # for reference: the same thresholds on each frame's own Q (it fluctuates by ~0.1 from
    # frame to frame, so this counts brief excursions as folding events)
    inst = [_labels(obs["q"], params) for _, obs, _ in runs]
    direct_inst, inst_transitions, _ = direct_mfpt(inst, m.frame_steps)
    # The direct count that shares nothing with the MSM but the Q thresholds: each frame's Q
    # averaged over the lag (a window of m.lag frames), unfolded below q_unfolded, folded
    # above q_folded, the transitions counted along the plain trajectories.
    window = max(1, m.lag)
    smooth = [
        _labels(np.convolve(obs["q"], np.ones(window) / window, mode="valid"), params)
        for _, obs, _ in runs
    ]
    direct_q, q_transitions, _ = direct_mfpt(smooth, m.frame_steps)
    boot_q = []
    for _ in range(params.bootstrap):
        pick = rng.integers(0, len(smooth), size=len(smooth))
        v, _, _ = direct_mfpt([smooth[i] for i in pick], m.frame_steps)
        if v is not None:
            boot_q.append(v)
    msm_fold = m.folding.steps
    ratio = msm_fold / direct_q if msm_fold and direct_q else None
    its = dict(zip(m.lags, m.timescales, strict=True))
    print_table(
        f"Villin HP36 Go model at T = {TF} eps/kB: {n_traj} trajectories x {steps:,} steps, "
        f"a frame every {REPORT:,}",
        ["lag (steps)", "slowest implied timescales (steps)"],
        [
            [
                f"{lag * m.frame_steps:,}" + (" *" if lag == m.lag else ""),
                ", ".join(f"{x:,.0f}" for x in ts[:3]),
            ]
            for lag, ts in its.items()
        ],
    )
    print(f"* chosen lag: {m.lag_rule}")

    def fmt(v: float | None, lo: float | None = None, hi: float | None = None) -> str:
        if v is None:
            return "-"
        return f"{v:,.0f}" + (f"  [{lo:,.0f}, {hi:,.0f}]" if lo is not None else "")

    di = _interval(boot)
    dq = _interval(boot_q)
    print_table(
        f"Folding time (mean first passage unfolded -> folded; macrostates: microstate mean Q "
        f"<= {params.q_unfolded} / >= {params.q_folded}), steps, 95% intervals",
        ["estimate", "MFPT (steps)", "transitions"],
        [
            ["MSM (TPT)", fmt(msm_fold, m.folding.low, m.folding.high), "-"],
            [
                f"direct count, Q averaged over the lag ({window * m.frame_steps:,} steps)",
                fmt(direct_q, *(dq or (None, None))),
                str(q_transitions),
            ],
            [
                "direct count, frames labelled by their microstate",
                fmt(direct, *(di or (None, None))),
                str(transitions),
            ],
            ["direct, per-frame Q (reference)", fmt(direct_inst), str(inst_transitions)],
            [
                "MSM unfolding (folded -> unfolded)",
                fmt(m.unfolding.steps, m.unfolding.low, m.unfolding.high),
                "-",
            ],
        ],
    )
    print(f"ratio MSM / direct = {ratio:.2f}  (goal 0.5-2.0)" if ratio else "ratio: -")
    metrics = {
        "mfpt_msm_steps": msm_fold,
        "mfpt_msm_interval_steps": (
            None if m.folding.low is None else [m.folding.low, m.folding.high]
        ),
        "mfpt_direct_steps": direct_q,
        "mfpt_direct_interval_steps": dq,
        "mfpt_ratio": None if ratio is None else round(ratio, 3),
        "direct_transitions": q_transitions,
        "mfpt_direct_microstate_steps": direct,
        "mfpt_direct_microstate_interval_steps": di,
        "mfpt_ratio_microstate": None if not (msm_fold and direct) else round(msm_fold / direct, 3),
        "mfpt_direct_per_frame_q_steps": direct_inst,
        "mfpt_unfolding_msm_steps": m.unfolding.steps,
        "lag_steps": m.lag * m.frame_steps,
        "slowest_its_steps": its[m.lag][0] if its.get(m.lag) else None,
        "temperature": TF,
        "trajectories": n_traj,
        "steps_per_trajectory": steps,
        "frame_steps": m.frame_steps,
        "clusters": a.clusters,
        "features": a.features,
        "tica_dim": a.tica_dim,
        "q_folded": params.q_folded,
        "q_unfolded": params.q_unfolded,
        "bootstrap": params.bootstrap,
        "simulate_s": round(t_sim, 1),
        "analyze_s": round(t_msm, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
