"""Engine speed, side by side in one run.

``python -m benchmarks.engines [--quick]``

1. The numba Go engine against OpenMM's CPU platform running the *same* Go model through
   custom forces (sims.go.openmm_model), for villin HP36 (36 beads) and 1BHL (133 beads).
   Both single-threaded (OpenMM also with 2 threads); measurements interleaved in rounds so
   machine noise hits both alike; the best round of each is reported.
2. OpenMM all-atom (amber14 + GBn2, 4 fs) ns/day for alanine dipeptide, chignolin and villin
   with Threads=1 and 2.

Ends with one JSON line of the metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import openmm as mm

from benchmarks.common import print_table
from sims.engine import Engine
from sims.go import GoEngine
from sims.go import openmm_model as om

KELVIN_PER_EPS = 1000.0 / 8.314462618  # 1 eps = 1 kJ/mol


def _timed(fn: Callable[[int], None], n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def go_pair(pdb: str, steps_numba: int, steps_openmm: int, rounds: int) -> dict[str, float]:
    engine = GoEngine.from_pdb(pdb)
    state = engine.initial_state(temperature=0.8, seed=1, extended=False)
    runner = engine.start_segment(state, seed=3, temperature=0.8)
    runner.step(100)  # compile (or load the cache) outside the timing
    contexts: dict[int, tuple[mm.Context, mm.Integrator]] = {}
    for threads in (1, 2):
        integ = mm.LangevinMiddleIntegrator(0.8 * KELVIN_PER_EPS, 1.0, 0.0005)
        ctx = om.make_context(engine.model, platform="CPU", threads=threads, integrator=integ)
        ctx.setPositions(engine.model.native * om.NM_PER_A)
        ctx.setVelocitiesToTemperature(0.8 * KELVIN_PER_EPS, 1)
        integ.step(10)
        contexts[threads] = (ctx, integ)  # the Context must outlive its integrator's use
    best = {"numba": 0.0, "openmm_1": 0.0, "openmm_2": 0.0}
    for _ in range(rounds):
        best["numba"] = max(best["numba"], _timed(runner.step, steps_numba))
        for threads, (_ctx, integ) in contexts.items():
            key = f"openmm_{threads}"
            best[key] = max(best[key], _timed(integ.step, steps_openmm))
    return best


def allatom_ns_per_day(engine: Engine, steps: int, timestep_fs: float) -> float:
    state = engine.initial_state(temperature=300.0, seed=1)  # type: ignore[attr-defined]
    runner = engine.start_segment(state, seed=2, temperature=300.0)
    runner.step(10)
    rate = _timed(runner.step, steps)
    return rate * timestep_fs * 1e-6 * 86400


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds (< 1 minute)")
    ns = ap.parse_args()
    from sims.examples import ALANINE_DIPEPTIDE_PDB, BHL_PDB, VILLIN_PDB

    bhl = BHL_PDB
    rounds = 2 if ns.quick else 5
    go: dict[int, dict[str, float]] = {}
    go[36] = go_pair(
        str(VILLIN_PDB),
        200_000 if not ns.quick else 50_000,
        5_000 if not ns.quick else 1_000,
        rounds,
    )
    go[133] = go_pair(
        str(bhl), 40_000 if not ns.quick else 10_000, 1_000 if not ns.quick else 200, rounds
    )
    print_table(
        "Go model, same potential: numba engine vs OpenMM CPU custom forces (steps/s, best round)",
        ["beads", "numba (1 thread)", "OpenMM CPU 1 thr", "OpenMM CPU 2 thr", "numba / OpenMM-1"],
        [
            [
                str(n),
                f"{r['numba']:,.0f}",
                f"{r['openmm_1']:,.0f}",
                f"{r['openmm_2']:,.0f}",
                f"{r['numba'] / r['openmm_1']:.1f}x",
            ]
            for n, r in go.items()
        ],
    )

    from sims.allatom import AllAtomEngine

    # Minimization only has to make the start stable; --quick keeps it short.
    mini = 20 if ns.quick else 500
    systems: dict[str, Callable[[int], AllAtomEngine]] = {
        "alanine_dipeptide": lambda t: AllAtomEngine.from_pdb(
            ALANINE_DIPEPTIDE_PDB, threads=t, minimize_iterations=mini
        ),
        "chignolin": lambda t: AllAtomEngine.from_sequence(
            "YYDPETGTWY", threads=t, minimize_iterations=mini
        ),
        "villin": lambda t: AllAtomEngine.from_pdb(VILLIN_PDB, threads=t, minimize_iterations=mini),
    }
    aa_steps = {"alanine_dipeptide": 10_000, "chignolin": 2000, "villin": 500}
    aa: dict[str, dict[str, float]] = {}
    rows = []
    for name, make in systems.items():
        aa[name] = {}
        first = make(1)
        for threads in (1, 2):
            # prepare once (PDBFixer + minimization), then the same system on 2 threads
            engine = first if threads == 1 else AllAtomEngine(first.prepared, threads=threads)
            steps = aa_steps[name] // (5 if ns.quick else 1)
            aa[name][str(threads)] = round(allatom_ns_per_day(engine, steps, 4.0), 2)
        rows.append([name, str(engine.n_atoms), f"{aa[name]['1']:.1f}", f"{aa[name]['2']:.1f}"])
    print_table(
        "OpenMM all-atom, amber14 + GBn2, 4 fs, CPU platform (ns/day)",
        ["system", "atoms", "1 thread", "2 threads"],
        rows,
    )
    metrics = {
        "go_steps_per_s_36": round(go[36]["numba"]),
        "openmm_go_steps_per_s_36": round(go[36]["openmm_1"]),
        "openmm_go_2threads_steps_per_s_36": round(go[36]["openmm_2"]),
        "go_speedup_36": round(go[36]["numba"] / go[36]["openmm_1"], 1),
        "go_steps_per_s_133": round(go[133]["numba"]),
        "openmm_go_steps_per_s_133": round(go[133]["openmm_1"]),
        "openmm_go_2threads_steps_per_s_133": round(go[133]["openmm_2"]),
        "go_speedup_133": round(go[133]["numba"] / go[133]["openmm_1"], 1),
        "aa_ns_per_day": aa,
        "quick": ns.quick,
    }
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
