"""The scheduler core at the scale of a large network, in virtual time.

``python -m benchmarks.scale [--quick]``

The sans-I/O scheduler alone (the adversary benchmark's honest network, no attacker): a
large crowd of volunteers (5% the operator's own, the rest joining over the first hour on
probation) and a million WUs queued at once, each taking 10-60 minutes of a volunteer's
time (30 minutes at the median speed). It runs for a few virtual hours and measures what
an operator sizing a coordinator needs:

* CPU per event, by kind (a volunteer asking for work, a result, a spot-check, a tick);
* memory per queued WU (what submitting the jobs allocated and kept, traced);
* the time to replay the event log after a restart (the coordinator rebuilds its scheduler
  from the events), and the events per second of that replay.

Full run: 100,000 volunteers, 10^6 WUs, 1.5 virtual hours. ``--quick``: 10,000 volunteers,
10^5 WUs, 1.5 virtual hours (under a minute). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import time
import tracemalloc
from collections import defaultdict

from benchmarks.adversary import Config, Simulation
from benchmarks.common import print_table
from coordinator.scheduler import JobSubmitted, replay


def _rss_mb() -> float:
    """Resident memory of this process (Linux ``/proc``), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Measured(Simulation):
    """The honest simulation, with every event kept (for the replay) and timed by kind."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.log: list[object] = []
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.submit_mb = 0.0

    def _jobs(self) -> list[JobSubmitted]:
        """The adversary benchmark's jobs, with a deadline that fits WUs of 10-60 minutes
        (a volunteer at a quarter of the median speed needs two hours)."""
        return [
            dataclasses.replace(j, spec=dataclasses.replace(j.spec, deadline_s=4 * 3600.0))
            for j in super()._jobs()
        ]

    def feed(self, ev: object) -> None:
        kind = type(ev).__name__
        refused = self.res.refused
        if kind == "JobSubmitted":
            # what the new WUs hold, traced (resident memory is too coarse for a small job,
            # whose objects fit in pages the process already has)
            gc.collect()
            tracemalloc.start()
            super().feed(ev)
            self.submit_mb += tracemalloc.get_traced_memory()[0] / 2**20
            tracemalloc.stop()
        else:
            t0 = time.process_time()
            super().feed(ev)
            self.cpu[kind] += time.process_time() - t0
            self.count[kind] += 1
        # what the coordinator stores: events the scheduler took and that changed it
        if self.res.refused == refused and self.s.changed:
            self.log.append(ev)


def measure(volunteers: int, wus: int, hours: float) -> dict[str, object]:
    cfg = Config(
        honest=volunteers,
        wus=wus,
        gens=1,
        jobs=max(4, -(-wus // 100_000)),  # a job holds at most 10^5 trajectories
        seg_s=90.0,  # 20 segments: 30 min at speed 1, 7.5 min to 2 h over the speed range
        poll_s=20.0,
        tick_s=10.0,
        beacon_s=60.0,
        max_virtual_s=hours * 3600,
    )
    sim = _Measured(cfg)
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    events = len(sim.log)
    handled = sum(sim.count.values())
    cpu_total = sum(sim.cpu.values())
    rss_run = _rss_mb()
    t1 = time.perf_counter()
    rebuilt, _ = replay(sim.log, sim.policy)  # type: ignore[arg-type]
    replay_s = time.perf_counter() - t1
    assert len(rebuilt.wus) == len(sim.s.wus)  # the replay rebuilt the same scheduler
    assert rebuilt.summary() == sim.s.summary()
    rows = [
        [kind, f"{sim.count[kind]:,}", f"{1e6 * sim.cpu[kind] / sim.count[kind]:,.1f}"]
        for kind in sorted(sim.count, key=lambda k: -sim.cpu[k])
    ]
    print_table(
        f"{volunteers:,} volunteers, {wus:,} WUs queued, {hours:g} virtual hours",
        ["event", "count", "CPU us/event"],
        rows,
    )
    summary = sim.s.summary()
    per_wu_kb = 1024 * sim.submit_mb / wus
    print_table(
        "totals",
        ["measure", "value"],
        [
            ["events handled", f"{handled:,}"],
            ["CPU per event, mean (us)", f"{1e6 * cpu_total / handled:,.1f}"],
            ["events per CPU-second", f"{handled / cpu_total:,.0f}"],
            ["memory per queued WU (KiB)", f"{per_wu_kb:,.2f}"],
            ["resident memory after the run (MiB)", f"{rss_run:,.0f}"],
            ["WUs validated in the run", f"{res.validated:,}"],
            ["replay of the whole event log (s)", f"{replay_s:,.1f}"],
            ["replayed events per second", f"{events / replay_s:,.0f}"],
            ["wall s (simulation)", f"{wall:,.1f}"],
        ],
    )
    print("scheduler state:", summary)
    return {
        "volunteers": volunteers,
        "wus": wus,
        "virtual_hours": hours,
        "events": handled,
        "cpu_us_per_event": round(1e6 * cpu_total / handled, 2),
        "cpu_us_per_event_by_kind": {
            k: round(1e6 * sim.cpu[k] / sim.count[k], 2) for k in sorted(sim.count)
        },
        "events_per_cpu_s": round(handled / cpu_total),
        "memory_kib_per_wu": round(per_wu_kb, 3),
        "rss_mb_after_run": round(rss_run),
        "validated": res.validated,
        "replay_s": round(replay_s, 2),
        "replay_events_per_s": round(events / replay_s),
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^4 volunteers, 10^5 WUs")
    ap.add_argument("--volunteers", type=int, help="override the network's size")
    ap.add_argument("--wus", type=int, help="override the WUs queued")
    ap.add_argument("--hours", type=float, help="override the virtual hours run")
    ns = ap.parse_args(argv)
    volunteers, wus, hours = (10_000, 100_000, 1.5) if ns.quick else (100_000, 1_000_000, 1.5)
    metrics = measure(ns.volunteers or volunteers, ns.wus or wus, ns.hours or hours)
    print(json.dumps(metrics | {"quick": ns.quick}))


if __name__ == "__main__":
    main()
