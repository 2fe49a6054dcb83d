"""The scheduler core at the scale of a large network, in virtual time.

``python -m benchmarks.scale [--quick]``

The sans-I/O scheduler alone (the adversary benchmark's honest network, no attacker): a
large crowd of volunteers (5% the operator's own, the rest joining over the first hour on
probation) and a million WUs queued at once, each taking 10-60 minutes of a volunteer's
time (30 minutes at the median speed). It runs for a few virtual hours and measures what
an operator sizing a coordinator needs:

* CPU per event, by kind (a volunteer asking for work, a result, a spot-check, a tick, a
  beacon): the thread CPU time (``time.thread_time_ns``) of each ``Scheduler.handle`` call
  alone (not the simulation around it), so other processes on a shared machine do not
  inflate it; its distribution (p50, p99, max) per kind and over all events. A job's
  submission (the WUs created at once) is measured as memory, not in the distribution;
* memory per queued WU (what submitting the jobs allocated and kept, traced);
* the time to replay the event log after a restart (the coordinator rebuilds its scheduler
  from the events), in thread CPU time and wall time, and scaled to 10^6 events.

Full run: 100,000 volunteers, 10^6 WUs, 1.5 virtual hours. ``--quick``: 10,000 volunteers,
10^5 WUs, 1.5 virtual hours (under a minute). Ends with one JSON line, whose keys include
the issue's ``event_us_p50``, ``event_us_p99``, ``bytes_per_wu`` and ``replay_s_1m_events``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import os
import time
import tracemalloc
from array import array

from benchmarks.adversary import Config, Simulation
from benchmarks.common import print_table
from coordinator.scheduler import Event, Instruction, JobSubmitted, NetworkPolicy, Scheduler, replay


def _rss_mb() -> float:
    """Resident memory of this process (Linux ``/proc``), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _GCPauses:
    """The cyclic collector's collections of the oldest generation, timed (thread CPU): the
    longest events are these pauses, not the scheduler's own work."""

    def __init__(self) -> None:
        self.ns: list[int] = []
        self._t0 = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._t0 = time.thread_time_ns()
        else:
            self.ns.append(time.thread_time_ns() - self._t0)

    def __enter__(self) -> _GCPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def row(self) -> str:
        if not self.ns:
            return "none"
        total, longest = sum(self.ns) / 1e9, max(self.ns) / 1e6
        return f"{len(self.ns)}: {total:,.2f} s in all, longest {longest:,.0f} ms"


def _pct(ordered: array[int] | list[int], q: float) -> int:
    """The ``q`` quantile of sorted values (nearest rank: a value that was measured)."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class _Timed(Scheduler):
    """The scheduler, with the thread CPU time of every event it handles kept by kind."""

    def __init__(self, policy: NetworkPolicy | None = None) -> None:
        super().__init__(policy)
        self.ns: dict[str, array[int]] = {}
        self.timing = True

    def handle(self, event: Event) -> list[Instruction]:
        if not self.timing:
            return super().handle(event)
        t0 = time.thread_time_ns()
        try:
            return super().handle(event)
        finally:
            dt = time.thread_time_ns() - t0
            kind = type(event).__name__
            if kind not in self.ns:
                self.ns[kind] = array("q")
            self.ns[kind].append(dt)


class _Measured(Simulation):
    """The honest simulation, with every event the coordinator would log kept (for the
    replay) and every event the scheduler handles timed."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.s = self.timed = _Timed(self.policy)
        self.log: list[Event] = []
        self.submit_bytes = 0

    def _jobs(self) -> list[JobSubmitted]:
        """The adversary benchmark's jobs, with a deadline that fits WUs of 10-60 minutes
        (a volunteer at a quarter of the median speed needs two hours)."""
        return [
            dataclasses.replace(j, spec=dataclasses.replace(j.spec, deadline_s=4 * 3600.0))
            for j in super()._jobs()
        ]

    def feed(self, ev: object) -> None:
        refused = self.res.refused
        if isinstance(ev, JobSubmitted):
            # what the new WUs hold, traced (resident memory is too coarse for a small job,
            # whose objects fit in pages the process already has)
            gc.collect()
            tracemalloc.start()
            self.timed.timing = False
            super().feed(ev)
            self.timed.timing = True
            self.submit_bytes += tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
        else:
            super().feed(ev)
        # what the coordinator stores: events the scheduler took and that changed it
        if self.res.refused == refused and self.s.changed:
            self.log.append(ev)  # type: ignore[arg-type]


def _fingerprint(s: Scheduler) -> str:
    """A digest of the state a replay must rebuild: every WU's state and replicas, every
    volunteer's standing, the ready queue's order and the draw pools."""
    h = hashlib.sha256()
    for key, w in s.wus.items():
        h.update(key + w.state.encode() + repr((w.replicas, w.required, w.det_class)).encode())
    for v in s.volunteers.values():
        h.update(repr((v.id, v.trust, v.proven, v.streak, v.quota, v.seen)).encode())
    h.update(repr((list(s._ready), list(s._free), list(s._free_est))).encode())
    h.update(repr((len(s.replicas), len(s.checks), s.summary())).encode())
    return h.hexdigest()


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
    t_cal = [-time.thread_time_ns() + time.thread_time_ns() for _ in range(1001)]
    timer_ns = sorted(t_cal)[500]  # what one timing itself costs (not subtracted)
    sim = _Measured(cfg)
    t0 = time.perf_counter()
    with _GCPauses() as gc_run:
        res = sim.run()
    wall = time.perf_counter() - t0
    ns = {k: array("q", sorted(v)) for k, v in sim.timed.ns.items()}
    every = array("q", sorted(x for v in ns.values() for x in v))
    handled = len(every)
    cpu_total = sum(every) / 1e9
    rss_run = _rss_mb()
    summary = sim.s.summary()
    fingerprint = _fingerprint(sim.s)
    logged = len(sim.log)
    bytes_per_wu = sim.submit_bytes / wus
    # a restarted coordinator holds its log and a new scheduler, not the old one
    log, policy = sim.log, sim.policy
    del sim
    gc.collect()
    t1, c1 = time.perf_counter(), time.thread_time()
    with _GCPauses() as gc_replay:
        rebuilt, _ = replay(log, policy)
    replay_cpu, replay_wall = time.thread_time() - c1, time.perf_counter() - t1
    assert rebuilt.summary() == summary
    assert _fingerprint(rebuilt) == fingerprint  # the replay rebuilt the same scheduler
    replay_1m = replay_cpu * 1e6 / logged

    def us(x: float) -> str:
        return f"{x / 1e3:,.1f}"

    rows = [
        [
            kind,
            f"{len(v):,}",
            us(sum(v) / len(v)),
            us(_pct(v, 0.5)),
            us(_pct(v, 0.99)),
            us(v[-1]),
            f"{100 * sum(v) / 1e9 / cpu_total:.1f}",
        ]
        for kind, v in sorted(ns.items(), key=lambda kv: -sum(kv[1]))
    ]
    rows.append(
        [
            "all",
            f"{handled:,}",
            us(sum(every) / handled),
            us(_pct(every, 0.5)),
            us(_pct(every, 0.99)),
            us(every[-1]),
            "100.0",
        ]
    )
    print_table(
        f"{volunteers:,} volunteers, {wus:,} WUs queued, {hours:g} virtual hours "
        f"(thread CPU time per Scheduler.handle; one timing costs {timer_ns} ns)",
        ["event", "count", "CPU us/event", "p50 us", "p99 us", "max us", "% of CPU"],
        rows,
    )
    print_table(
        "totals",
        ["measure", "value"],
        [
            ["events handled (timed)", f"{handled:,}"],
            ["CPU per event, mean (us)", f"{1e6 * cpu_total / handled:,.1f}"],
            ["events per CPU-second", f"{handled / cpu_total:,.0f}"],
            ["memory per queued WU (bytes)", f"{bytes_per_wu:,.0f}"],
            ["resident memory after the run (MiB)", f"{rss_run:,.0f}"],
            ["full collections in the run (GC)", gc_run.row()],
            ["WUs validated in the run", f"{res.validated:,}"],
            ["events logged (replayed)", f"{logged:,}"],
            ["replay of the whole log, CPU (s)", f"{replay_cpu:,.1f}"],
            ["replay of the whole log, wall (s)", f"{replay_wall:,.1f}"],
            ["replay scaled to 10^6 events, CPU (s)", f"{replay_1m:,.1f}"],
            ["replayed events per CPU-second", f"{logged / replay_cpu:,.0f}"],
            ["full collections in the replay (GC)", gc_replay.row()],
            ["wall s (simulation)", f"{wall:,.1f}"],
        ],
    )
    print("scheduler state:", summary)
    return {
        "volunteers": volunteers,
        "wus": wus,
        "virtual_hours": hours,
        "events": handled,
        "event_us_p50": round(_pct(every, 0.5) / 1e3, 2),
        "event_us_p99": round(_pct(every, 0.99) / 1e3, 2),
        "event_us_max": round(every[-1] / 1e3, 2),
        "bytes_per_wu": round(bytes_per_wu),
        "replay_s_1m_events": round(replay_1m, 2),
        "cpu_us_per_event": round(1e6 * cpu_total / handled, 2),
        "cpu_us_per_event_by_kind": {
            k: round(sum(v) / len(v) / 1e3, 2) for k, v in sorted(ns.items())
        },
        "p50_p99_max_us_by_kind": {
            k: [round(_pct(v, 0.5) / 1e3, 2), round(_pct(v, 0.99) / 1e3, 2), round(v[-1] / 1e3, 2)]
            for k, v in sorted(ns.items())
        },
        "events_per_cpu_s": round(handled / cpu_total),
        "memory_kib_per_wu": round(bytes_per_wu / 1024, 3),
        "rss_mb_after_run": round(rss_run),
        "validated": res.validated,
        "events_logged": logged,
        "replay_s": round(replay_cpu, 2),
        "replay_wall_s": round(replay_wall, 2),
        "replay_events_per_s": round(logged / replay_cpu),
        "wall_s": round(wall, 1),
        "timer_ns": timer_ns,
        "gc_full_collections_s": [
            round(sum(gc_run.ns) / 1e9, 2),
            round(sum(gc_replay.ns) / 1e9, 2),
        ],
        "gc_longest_ms": round(max(gc_run.ns + gc_replay.ns, default=0) / 1e6, 1),
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
