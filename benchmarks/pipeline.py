"""The pipeline's cost, side by side in one run.

``python -m benchmarks.pipeline [--quick]``

(a) Efficiency: WUs computed directly on the 2 cores (one process per core) against the same
    amount of computation through coordinator + Ray + validation + ledger. Replication is
    reported apart: efficiency compares compute done, so a quorum of 2 is not counted as loss.
(b) WU cycles per second (dispatch, return, verify, validate, credit, ledger append) with tiny
    WUs through Ray, and through the scheduler core alone (events in, instructions out).
(c) Verification overhead (total compute / useful compute) with adaptive replication and
    spot-checks at steady state, honest volunteers, from the scheduler core.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ray

from benchmarks import proccpu
from benchmarks.common import print_table
from benchmarks.proccpu import CpuSplit
from coordinator.jobs import JobSpec
from coordinator.raylocal import local_ray
from coordinator.raypool import RayPool, VolunteerSpec
from coordinator.scheduler import (
    BeaconPublished,
    Claim,
    Dispatch,
    DispatchSpotCheck,
    JobSubmitted,
    ResultReturned,
    Scheduler,
    SpotCheckReturned,
    Validated,
    VolunteerTrusted,
    WorkRequested,
)
from coordinator.service import Coordinator
from sims.examples import VILLIN_PDB
from sims.go import GoEngine, GoModel
from sims.spec import RunSpec
from worker.systems import system_digest

TEMPERATURE = 0.8


def _direct(steps: int) -> float:
    engine = GoEngine.from_pdb(VILLIN_PDB)
    start = engine.initial_state(temperature=TEMPERATURE, seed=1)
    spec = RunSpec(
        steps=steps,
        segment_steps=steps // 10,
        report_steps=steps // 100,
        temperature=TEMPERATURE,
        seed=5,
    )
    engine.run(
        start,
        RunSpec(steps=100, segment_steps=100, report_steps=100, temperature=TEMPERATURE, seed=1),
    )
    t0 = time.perf_counter()
    engine.run(start, spec)
    return time.perf_counter() - t0


def _spec(model: GoModel, *, clones: int, steps: int, **kw: object) -> JobSpec:
    return JobSpec(
        engine="go",
        system_digest=system_digest(model),
        runs=1,
        clones=clones,
        gens=1,
        steps_per_wu=steps,
        segment_steps=max(5, steps // 10),
        report_steps=max(5, steps // 10),
        temperature=TEMPERATURE,
        **kw,  # type: ignore[arg-type]
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RayRun:
    wall_s: float
    replicas: int  # replicas computed (spot checks not counted)
    cpu: CpuSplit | None  # where the CPU went while it ran (None without /proc)
    load: float  # the machine's 1-minute load average at its end


def through_ray(model: GoModel, *, clones: int, steps: int, workdir: Path) -> tuple[float, int]:
    """Wall time and replicas computed for ``clones`` WUs of ``steps`` through the pipeline."""
    run = measure_ray(model, clones=clones, steps=steps, workdir=workdir)
    return run.wall_s, run.replicas


def measure_ray(model: GoModel, *, clones: int, steps: int, workdir: Path) -> RayRun:
    """:func:`through_ray`, with the CPU each group of processes spent meanwhile."""
    coord = Coordinator.local(workdir, checkpoint_every=10_000)
    start = GoEngine(model).initial_state(temperature=TEMPERATURE, seed=1)
    # b0 is the operator's own machine: fresh keys alone never validate a WU (a quorum of
    # keys on probation needs an established voucher), so a network starts with one.
    vols = [
        VolunteerSpec(
            resource=f"vol:b{i}", key_path=str(workdir / f"b{i}.key"), slots=2, trusted=i == 0
        )
        for i in range(2)
    ]
    with local_ray(num_cpus=2, resources={v.resource: 1 for v in vols}):  # its own temp folder
        pool = RayPool(coord, vols)
        actors = {pid for _key, pid in ray.get([m.actor.hello.remote() for m in pool.members])}
        # Warm up: compile kernels and determinism classes in the actors, outside the timing.
        pool.run([model], until=lambda: True)
        warm = coord.submit(
            lab="bench", system=model, starts=[start], spec=_spec(model, clones=2, steps=100)
        )
        pool.run([model], until=lambda: coord.job_done(warm))
        job = coord.submit(
            lab="bench", system=model, starts=[start], spec=_spec(model, clones=clones, steps=steps)
        )
        before = proccpu.snapshot()
        t0 = time.perf_counter()
        pool.run([model], until=lambda: coord.job_done(job), timeout_s=3600)
        wall = time.perf_counter() - t0
        after = proccpu.snapshot()
        pool.shutdown()
    replicas = sum(
        1
        for r in coord.scheduler.replicas.values()
        if r.wu in {w.unit.id for w in coord.scheduler.wus.values() if w.unit.job == job}
    )
    coord.close()
    cpu = None if before is None or after is None else proccpu.split(before, after, actors=actors)
    return RayRun(wall_s=wall, replicas=replicas, cpu=cpu, load=os.getloadavg()[0])


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _drive(s: Scheduler, vols: list[str], n_wus: int, n_seg: int) -> tuple[float, float]:
    """Honest volunteers pull until every WU is validated; returns (compute, steady compute
    per validated WU over the second half)."""
    compute = steady_compute = 0.0
    validated = steady_validated = 0
    rounds = 0
    s.handle(VolunteerTrusted(vols[0], 0.0))  # the operator's own: fresh keys alone never validate
    while validated < n_wus:
        rounds += 1
        for v in vols:
            for ins in s.handle(WorkRequested(v, "c", 4, 0.0)):
                if isinstance(ins, Dispatch):
                    cost = 1.0
                    b = (ins.wu.input_digest, *(_h(ins.wu.id, k) for k in range(1, n_seg + 1)))
                    out = s.handle(ResultReturned(ins.replica, v, Claim(b[-1], _h(b), b, "c"), 0.0))
                elif isinstance(ins, DispatchSpotCheck):
                    cost = len(ins.segments) / n_seg
                    ends = tuple(_h(ins.wu.id, k + 1) for k in ins.segments)
                    out = s.handle(SpotCheckReturned(ins.check, v, ends, "c", 0.0))
                else:
                    continue
                compute += cost
                got = sum(1 for o in out if isinstance(o, Validated))
                if validated >= n_wus // 2:  # streaks are built by then: steady state
                    steady_compute += cost
                    steady_validated += got
                validated += got
        # The coordinator's checkpoint: quorums the beacon does not pick for an audit are
        # validated by it.
        got = sum(
            1 for o in s.handle(BeaconPublished(_h("beacon", rounds))) if isinstance(o, Validated)
        )
        if validated >= n_wus // 2:
            steady_validated += got
        validated += got
    return compute, steady_compute / max(1, steady_validated)


def _submit(n_wus: int, n_seg: int, checked: int = 2) -> Scheduler:
    s = Scheduler()
    spec = JobSpec(
        engine="go",
        system_digest=_h("s"),
        runs=n_wus,
        clones=1,
        gens=1,
        steps_per_wu=n_seg,
        segment_steps=1,
        report_steps=1,
        temperature=1.0,
        spot_check_segments=checked,
    )
    s.handle(JobSubmitted("j", spec, tuple(_h("start", i) for i in range(n_wus))))
    return s


def core_cycles(n_wus: int) -> float:
    """WU cycles per second through the scheduler alone (honest claims, 8 volunteers)."""
    s = _submit(n_wus, 2)
    t0 = time.perf_counter()
    _drive(s, [f"v{i}" for i in range(8)], n_wus, 2)
    return n_wus / (time.perf_counter() - t0)


def verification_overhead(n_wus: int, n_seg: int, checked: int, n_volunteers: int = 10) -> float:
    """Total compute / useful compute at steady state (adaptive replication, spot-checks of
    ``checked`` of ``n_seg`` segments), honest volunteers."""
    s = _submit(n_wus, n_seg, checked)
    _, steady = _drive(s, [f"v{i}" for i in range(n_volunteers)], n_wus, n_seg)
    return steady


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short WUs (< 1 minute in all)")
    ns = ap.parse_args()
    steps = 400_000 if ns.quick else 4_500_000  # about 2 s and 20 s of compute per WU here
    model = GoModel.from_pdb(VILLIN_PDB)

    with ProcessPoolExecutor(max_workers=2) as pool:
        direct = list(pool.map(_direct, [steps, steps]))
    t_wu = sum(direct) / 2
    with tempfile.TemporaryDirectory() as d:
        wall, replicas = through_ray(model, clones=2, steps=steps, workdir=Path(d) / "a")
        ideal = replicas * t_wu / 2  # the same compute spread perfectly over 2 cores
        efficiency = ideal / wall
        tiny = 500 if ns.quick else 3000
        tiny_run = measure_ray(model, clones=tiny, steps=10, workdir=Path(d) / "b")
    ray_cycles = tiny / tiny_run.wall_s
    cpu_ms = None if tiny_run.cpu is None else tiny_run.cpu.per_unit_ms(tiny)
    core = core_cycles(2000 if ns.quick else 20_000)
    n = 2000 if ns.quick else 10_000
    plans = [(20, 1), (10, 1), (10, 2)]  # (segments per WU, segments spot-checked)
    overheads = [verification_overhead(n, seg, k) for seg, k in plans]
    overhead = overheads[0]

    print_table(
        "(a) Pipeline efficiency (Go villin WUs, 2 cores)",
        ["WU compute (s)", "replicas", "ideal wall (s)", "pipeline wall (s)", "efficiency"],
        [[f"{t_wu:.2f}", str(replicas), f"{ideal:.2f}", f"{wall:.2f}", f"{efficiency:.3f}"]],
    )
    print_table(
        "(b) WU cycles per second (dispatch, return, verify, validate, credit, ledger)",
        ["path", "WUs", "cycles/s"],
        [
            ["Ray + coordinator + ledger", str(tiny), f"{ray_cycles:,.0f}"],
            ["scheduler core alone", "events", f"{core:,.0f}"],
        ],
    )
    if cpu_ms is not None:
        print_table(
            f"(b2) CPU per tiny WU through Ray, ms (load average {tiny_run.load:.2f} at its end)",
            ["coordinator process", "volunteer actors", "Ray's own processes", "others"],
            [[f"{cpu_ms[k]:.2f}" for k in ("coordinator", "actors", "ray", "others")]],
        )
    print_table(
        f"(c) Verification overhead at steady state: {n:,} WUs, 10 honest volunteers",
        ["segments per WU", "spot-checked", "total / useful compute", "fixed quorum of 2"],
        [
            [str(seg), str(k), f"{o:.3f}", "2.000"]
            for (seg, k), o in zip(plans, overheads, strict=True)
        ],
    )
    print(
        json.dumps(
            {
                "pipeline_efficiency": round(efficiency, 4),
                "wu_compute_s": round(t_wu, 2),
                "replication_factor": round(replicas / 2, 2),
                "wu_cycles_per_s_ray": round(ray_cycles, 1),
                "cpu_ms_per_wu_ray": cpu_ms,
                "load_avg_ray": round(tiny_run.load, 2),
                "wu_cycles_per_s_core": round(core),
                "verification_overhead": round(overhead, 4),
                "verification_overhead_by_plan": {
                    f"{k}/{seg}": round(o, 4) for (seg, k), o in zip(plans, overheads, strict=True)
                },
                "quick": ns.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
