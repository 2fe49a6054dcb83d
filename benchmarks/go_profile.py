"""Where a step of the numba Go engine goes, kernel by kernel.

``python -m benchmarks.go_profile [--quick] [--size 36|133|large]``

Each kernel of a step is timed alone, inside a numba loop (no dispatch from Python), in
thread CPU time, best of interleaved rounds, on a conformation 1,000 steps from the native
state at T = 0.8; the list searches are charged per step at the rate the same run rebuilds
them. The sum of the parts falls a few ns short of a whole step (the integrator's loops,
and caches shared between kernels). Ends with one JSON line: ns per bead-step of each part.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
from numba import njit

from benchmarks.common import print_table
from benchmarks.engines import LARGE_CHAIN, LARGE_PDB_NAME
from sims.go import GoEngine, kernels


@njit
def _bonded(reps, x, f, w, bond_r0, theta0, cos_phi0, sin_phi0, kr, kt, k1, k3):
    for _ in range(reps):
        kernels.bonded(x, f, w, bond_r0, theta0, cos_phi0, sin_phi0, kr, kt, k1, k3, False)


@njit
def _native(reps, x, nw, nat_i, nat_j, nat_s2, eps):
    for _ in range(reps):
        kernels.native_terms(x, nw, nat_i, nat_j, nat_s2, eps)


@njit
def _repulsion(reps, x, pw, start, pairs, near, eps, c2, r_switch, r_cut):
    m = 0
    for _ in range(reps):
        m = kernels.repulsion_terms(x, pw, start, pairs, near, eps, c2, r_switch, r_cut)
    return m


@njit
def _pair_forces(reps, f, nw, nat_start, nat_j, pw, near, m, pairs):
    for _ in range(reps):
        kernels.pair_forces(f, nw, nat_start, nat_j, pw, near, m, pairs)


@njit
def _philox(reps, kick):
    for s in range(reps):
        kernels.philox_noise(kick, np.uint64(s), np.uint64(0), np.uint64(1), np.uint64(2))


@njit
def _check(reps, x, x_ref, skin):
    c = 0
    for _ in range(reps):
        c += kernels.needs_rebuild(x, x_ref, skin)
    return c


@njit
def _filter(reps, x, out_start, out_pairs, r_list, start, pairs, x_ref):
    for _ in range(reps):
        kernels.filter_neighbours(x, out_start, out_pairs, r_list, start, pairs, x_ref)


@njit
def _search(reps, x, nat_start, nat_j, r_list, start, pairs, x_ref):
    for _ in range(reps):
        kernels.build_neighbours(x, nat_start, nat_j, r_list, start, pairs, x_ref)


def profile(engine: GoEngine, rounds: int, scale: float) -> dict[str, dict[str, float]]:
    """ns per bead of each part (best round) and its charge per bead-step."""
    n = engine.n_atoms
    state = engine.initial_state(temperature=0.8, seed=1, extended=False)
    runner = engine.start_segment(state, seed=3, temperature=0.8)
    runner.step(1000)
    probe = engine.start_segment(state, seed=3, temperature=0.8)
    probe.step(10_000)
    per_list = 10_000 / probe.list_builds
    per_search = 10_000 / probe.outer_builds
    x = runner.state().positions.T.copy()
    f = np.zeros_like(x)
    a = engine.kernel_args
    bond_r0, theta0, cp, sp, nat_start, nat_j, nat_s2, kr, kt, k1, k3 = a[:11]
    eps, c2, r_switch, r_cut, nat_i = a[11:16]
    nl = kernels.NeighbourList(x, nat_start, nat_j, r_cut + engine.skin, r_cut + engine.outer_skin)
    w = kernels.scratch(n)
    nw = kernels.pair_scratch(len(nat_j))
    kick = np.empty((3, n))
    kept = _repulsion(1, x, nl.pw, nl.start, nl.pairs, nl.near, eps, c2, r_switch, r_cut)
    start, pairs, x_ref = nl.start.copy(), nl.pairs.copy(), nl.x_ref.copy()
    out_start, out_pairs, x_out = nl.out_start.copy(), nl.out_pairs.copy(), nl.x_out.copy()
    reps = max(1, int(scale * 300_000 / n))
    parts: dict[str, tuple[Callable[[int], object], int, float]] = {
        "bonded terms": (
            lambda k: _bonded(k, x, f, w, bond_r0, theta0, cp, sp, kr, kt, k1, k3),
            reps,
            1.0,
        ),
        "native contacts": (lambda k: _native(k, x, nw, nat_i, nat_j, nat_s2, eps), reps, 1.0),
        "repulsion": (
            lambda k: _repulsion(
                k, x, nl.pw, nl.start, nl.pairs, nl.near, eps, c2, r_switch, r_cut
            ),
            reps,
            1.0,
        ),
        "pair forces (sums)": (
            lambda k: _pair_forces(k, f, nw, nat_start, nat_j, nl.pw, nl.near, kept, nl.pairs),
            reps,
            1.0,
        ),
        "Philox noise": (lambda k: _philox(k, kick), reps, 1.0),
        "list check": (lambda k: _check(k, x, nl.x_ref, engine.skin), reps, 1.0),
        "thin list (filter)": (
            lambda k: _filter(
                k, x, nl.out_start, nl.out_pairs, r_cut + engine.skin, start, pairs, x_ref
            ),
            max(1, reps // 10),
            per_list,
        ),
        "outer list (cell search)": (
            lambda k: _search(
                k, x, nat_start, nat_j, r_cut + engine.outer_skin, out_start, out_pairs, x_out
            ),
            max(1, reps // 50),
            per_search,
        ),
        "whole step": (runner.step, max(1, reps // 4), 1.0),
    }
    for fn, _, _ in parts.values():
        fn(1)  # compile outside the timing
    best = dict.fromkeys(parts, float("inf"))
    for _ in range(rounds):
        for name, (fn, k, _) in parts.items():
            t0 = time.thread_time_ns()
            fn(k)
            best[name] = min(best[name], (time.thread_time_ns() - t0) / k / n)
    return {
        name: {"ns_per_bead": best[name], "ns_per_bead_step": best[name] / parts[name][2]}
        for name in parts
    } | {
        "_lists": {
            "steps_per_list": per_list,
            "steps_per_search": per_search,
            "listed_pairs": float(nl.n_pairs),
            "outer_pairs": float(nl.out_start[-1]),
            "kept_pairs": float(kept),
            "native_contacts": float(len(nat_j)),
        }
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    ap.add_argument("--size", choices=("36", "133", "large"), default="large")
    ns = ap.parse_args()
    from sims.examples import BHL_PDB, VILLIN_PDB

    path, chain = {
        "36": (VILLIN_PDB, None),
        "133": (BHL_PDB, None),
        "large": (VILLIN_PDB.parent / LARGE_PDB_NAME, LARGE_CHAIN),
    }[ns.size]
    engine = GoEngine.from_pdb(path, chain=chain)
    result = profile(engine, rounds=5 if ns.quick else 15, scale=0.3 if ns.quick else 1.0)
    lists = result.pop("_lists")
    parts_sum = sum(v["ns_per_bead_step"] for k, v in result.items() if k != "whole step")
    rows = [
        [name, f"{v['ns_per_bead']:.2f}", f"{v['ns_per_bead_step']:.2f}"]
        for name, v in result.items()
    ]
    rows.append(["sum of the parts", "", f"{parts_sum:.2f}"])
    print_table(
        f"Go engine, {engine.n_atoms} beads: thread CPU ns, best of rounds "
        f"(thin list every {lists['steps_per_list']:.1f} steps, cell search every "
        f"{lists['steps_per_search']:.1f}; {lists['listed_pairs']:.0f} listed pairs, "
        f"{lists['kept_pairs']:.0f} within the cutoff, {lists['native_contacts']:.0f} "
        "native contacts)",
        ["part", "ns per bead (one call)", "ns per bead-step"],
        rows,
    )
    metrics: dict[str, object] = {"n_beads": engine.n_atoms, "quick": ns.quick}
    for name, v in result.items():
        key = name.split(" (")[0].replace(" ", "_").lower()
        metrics[f"ns_per_bead_step_{key}"] = round(v["ns_per_bead_step"], 2)
    metrics["ns_per_bead_step_sum_of_parts"] = round(parts_sum, 2)
    metrics |= {k: round(v, 1) for k, v in lists.items()}
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
