"""Adaptive sampling against plain Project/Run/Clone/Gen, through the real coordinator.

``python -m benchmarks.adaptive [--quick]``: one Go-model job per policy (``none``,
``least-counts``, ``fast``) and seed, each run by a real :class:`Coordinator` (scheduler,
store, ledger, signed results, quorum 2) with two trusted in-process volunteers, at equal
width (concurrent trajectories) and budget (generations). Measured: the aggregate steps
simulated until the first frame with Q >= 0.9, and separately with C-alpha RMSD <= 2 A
(steps of every WU computed before that frame's WU, plus the frame's offset in it). The two
volunteers share one memo of runs, so a WU's second replica costs nothing: honest replicas
are bit-identical anyway, and the measure is about sampling, not replication. Audits are off
(``min_audit_rate=0``) for the same reason.

The case: villin HP36 at T = 0.98 eps/kB, well above its folding temperature (Tf ~ 0.78),
from extended chains, 8 trajectories at once in WUs of 10,000 steps with a boundary (a
candidate seed) at every frame (1,000 steps). There the folded state (Q >= 0.9) is a rare
excursion: at T = 0.95 plain sampling needed a median 5 x 10^6 aggregate steps, at 1.0
single trajectories of 6 x 10^6 steps never reached it, and 0.98 is where plain sampling
needs more than 10^7 (the budget, 10^7 aggregate steps or 125 generations, bounds what a run
may cost on two shared cores; a run that never folds within it counts as the whole budget,
so a median of censored runs is a lower bound, and so is the speed-up over it). That is the
situation adaptive sampling is for: a policy that restarts from the least explored states
(``least-counts``) or from the states nearest the fold (``fast``) climbs towards it in
stages instead of waiting for one rare fluctuation, and short WUs let it choose often. (At T
= 0.7 single villin trajectories fold on their own within a few hundred thousand steps, 3 of
4 within 3 x 10^5, and there is little to gain.) ``--quick``: T = 0.7, 2 trajectories, WUs
of 5,000 steps, a budget of 400,000 aggregate steps and 3 seeds: a smoke run whose numbers
are not the claim. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.common import print_table

POLICIES = ("none", "least-counts", "fast")
#: The stores live in memory where there is a tmpfs: the benchmark measures sampling, and
#: an fsync per event only slows every policy alike.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
Q_FOLDED = 0.9
RMSD_FOLDED_A = 2.0


@dataclass(frozen=True, slots=True)
class Case:
    temperature: float
    width: int  # trajectories at once (runs; one clone each)
    steps_per_wu: int
    gens: int  # the budget: generations per trajectory
    seeds: int
    segment_steps: int = 1000  # boundaries (candidate seeds) every this many steps
    report_steps: int = 1000

    @property
    def budget_steps(self) -> int:
        return self.width * self.gens * self.steps_per_wu


FULL = Case(temperature=0.98, width=8, steps_per_wu=10_000, gens=125, seeds=5)
QUICK = Case(temperature=0.7, width=2, steps_per_wu=5_000, gens=40, seeds=3)


class _MemoEngine:
    """An engine whose ``run`` is computed once per (input, spec): the two volunteers of
    the benchmark share it, so the quorum's second replica is free."""

    def __init__(self, engine: Any, memo: dict[Any, Any]) -> None:
        self._engine = engine
        self._memo = memo

    def run(self, state: Any, spec: Any, **kw: Any) -> Any:
        key = (state.digest(), state.step, spec)
        if key not in self._memo:
            self._memo[key] = self._engine.run(state, spec, **kw)
        return self._memo[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _one(args: tuple[str, int, Case]) -> dict[str, Any]:
    from coordinator.jobs import JobSpec
    from coordinator.policy import NetworkPolicy
    from coordinator.service import Coordinator, det_class_key
    from sims.examples import VILLIN_PDB
    from sims.go import GoEngine, GoModel
    from worker.identity import Identity
    from worker.systems import EngineCache, system_digest
    from worker.tasks import ComputeTask, compute, spot_check

    policy, seed, case = args
    model = GoModel.from_pdb(VILLIN_PDB)
    engine = GoEngine(model)
    memo: dict[Any, Any] = {}

    class Engines(EngineCache):
        def get(self, system: Any) -> Any:
            return _MemoEngine(super().get(system), memo)

    engines = Engines()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="foldnet-adaptive-", dir=_SCRATCH) as d:
        coord = Coordinator.local(
            d, beacon_interval_s=0, checkpoint_every=1_000_000,
            policy=NetworkPolicy(min_audit_rate=0.0),
        )  # fmt: skip
        spec = JobSpec(
            engine="go", system_digest=system_digest(model), runs=case.width, clones=1,
            gens=case.gens, steps_per_wu=case.steps_per_wu,
            segment_steps=case.segment_steps, report_steps=case.report_steps,
            temperature=case.temperature, audit_rate=0.0, adaptive=policy,
            deadline_s=86_400,
        )  # fmt: skip
        starts = [
            engine.initial_state(temperature=case.temperature, seed=10_000 * seed + run)
            for run in range(case.width)
        ]
        job = coord.submit(lab="bench", system=model, starts=starts, spec=spec)
        vols = [Identity.ephemeral() for _ in range(2)]
        canonical = engine.determinism_class().canonical().decode()
        cls = coord.accept_class(canonical)
        assert cls.key == det_class_key(canonical)
        for v in vols:
            coord.trust(v.public_key)
        computed = 0  # aggregate steps of distinct WUs computed so far
        first: dict[str, int | None] = {"q": None, "rmsd": None}
        seen: set[bytes] = set()
        while not coord.job_done(job) and None in first.values():
            tasks = 0
            for v in vols:
                for t in coord.request_work(v.public_key, cls.key, case.width, cls.engine):
                    tasks += 1
                    if not isinstance(t, ComputeTask):  # a spot-check of an unreplicated WU
                        coord.submit_spot_check(
                            v.public_key, spot_check(t, engines=engines, identity=v)
                        )
                        continue
                    result = compute(t, engines=engines, identity=v)
                    if t.wu_id not in seen:
                        seen.add(t.wu_id)
                        q = result.observables["q"]
                        rmsd = result.observables["rmsd"]
                        offsets = result.frame_steps - t.input_state.step
                        for name, hit in (
                            ("q", np.flatnonzero(q >= Q_FOLDED)),
                            ("rmsd", np.flatnonzero(rmsd <= RMSD_FOLDED_A)),
                        ):
                            if first[name] is None and len(hit):
                                first[name] = computed + int(offsets[hit[0]])
                        computed += case.steps_per_wu
                    coord.submit_result(v.public_key, t.replica, result)
            coord.tick()
            if tasks == 0 and not coord.scheduler.seeding:
                break  # nothing left to hand out (the budget is spent)
        coord.close()
    return {
        "policy": policy,
        "seed": seed,
        "steps_to_q": first["q"],
        "steps_to_rmsd": first["rmsd"],
        "computed_steps": computed,
        "seconds": time.perf_counter() - t0,
    }


def _median(values: list[int | None], budget: int) -> tuple[float, int]:
    """The median, a run that never folded counting as the whole budget (a lower bound
    then), and how many runs did not fold."""
    censored = sum(v is None for v in values)
    return float(statistics.median(budget if v is None else v for v in values)), censored


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run under a minute")
    p.add_argument("--workers", type=int, default=2, help="processes (one run each)")
    for name in ("seeds", "width", "gens", "steps_per_wu"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    args = p.parse_args(argv)
    case = QUICK if args.quick else FULL
    given = {
        k: getattr(args, k)
        for k in ("seeds", "width", "gens", "steps_per_wu", "temperature")
        if getattr(args, k) is not None
    }
    case = dataclasses.replace(case, **given)
    # plain and fast seed by seed first, least-counts last: on a loaded machine the speed-up
    # is complete first, and the per-seed lines below tell how far a long run has got
    order = [(p, s) for s in range(case.seeds) for p in ("none", "fast")]
    order += [("least-counts", s) for s in range(case.seeds)]
    jobs = [(policy, seed, case) for policy, seed in order]
    print(
        f"villin HP36 Go model, T = {case.temperature} eps/kB, width {case.width}, WUs of "
        f"{case.steps_per_wu:,} steps (a boundary every {case.segment_steps:,}), budget "
        f"{case.gens} generations "
        f"({case.budget_steps:,} aggregate steps), {case.seeds} seeds",
        flush=True,
    )
    runs = []
    with ProcessPoolExecutor(args.workers) as pool:
        for r in pool.map(_one, jobs):  # in order; printed as they come, for a long run
            runs.append(r)
            print(
                f"  {r['policy']:>12} seed {r['seed']}: Q >= 0.9 at {r['steps_to_q']}, "
                f"RMSD <= 2 A at {r['steps_to_rmsd']} ({r['seconds']:.0f} s)",
                flush=True,
            )
    rows = []
    metrics: dict[str, Any] = {
        "temperature": case.temperature,
        "width": case.width,
        "steps_per_wu": case.steps_per_wu,
        "budget_steps": case.budget_steps,
        "seeds": case.seeds,
    }
    for policy in POLICIES:
        mine = [r for r in runs if r["policy"] == policy]
        q, q_cens = _median([r["steps_to_q"] for r in mine], case.budget_steps)
        rm, rm_cens = _median([r["steps_to_rmsd"] for r in mine], case.budget_steps)
        key = policy.replace("-", "_")
        metrics[f"steps_to_fold_{key}"] = q
        metrics[f"steps_to_rmsd2_{key}"] = rm
        metrics[f"unfolded_runs_{key}"] = q_cens
        metrics[f"per_seed_q_{key}"] = [r["steps_to_q"] for r in mine]
        metrics[f"per_seed_rmsd2_{key}"] = [r["steps_to_rmsd"] for r in mine]
        rows.append(
            [
                policy,
                f"{q:,.0f}" + (f" ({q_cens} never)" if q_cens else ""),
                f"{rm:,.0f}" + (f" ({rm_cens} never)" if rm_cens else ""),
                ", ".join("-" if r["steps_to_q"] is None else f"{r['steps_to_q']:,}" for r in mine),
            ]
        )
    best = min(metrics["steps_to_fold_least_counts"], metrics["steps_to_fold_fast"])
    metrics["speedup_best"] = round(metrics["steps_to_fold_none"] / max(best, 1.0), 2)
    # plain sampling's median counted an unfolded run as the budget: the speed-up is then a
    # lower bound (as long as the best policy's own median is not censored)
    metrics["speedup_is_lower_bound"] = metrics["unfolded_runs_none"] >= (case.seeds + 1) // 2
    print_table(
        "first fold, aggregate steps (median over seeds)",
        ["policy", "median steps to Q >= 0.9", "median steps to RMSD <= 2 A", "per seed (Q)"],
        rows,
    )
    bound = " (at least: plain sampling's median is the budget)"
    print(
        f"speedup of the best policy over plain sampling: {metrics['speedup_best']}x"
        + (bound if metrics["speedup_is_lower_bound"] else "")
    )
    print(json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()
