"""What the coordinator's event log costs per event (coordinator/codec.py): encoding, in the
serial hot path of every event the scheduler takes, and decoding, on every restart's replay.

``python -m benchmarks.event_codec [--quick]``

One realistic event of each type the log holds, built as the service builds them (volunteer
keys as 64 hex digits, determinism-class keys of 16, wall-clock ``now``, 32-byte digests, a
demo job's 5 segments per WU), plus an insane result (its problem text). CPU microseconds per
call (``time.process_time``, best of the rounds), the generic encoder (the one every event
went through before the per-type encoders, still the fallback) and ``encode_event`` measured
in alternating rounds, so the machine's noise falls on both. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from functools import partial
from typing import Any

from benchmarks.common import best_cpu_us, print_table
from coordinator import codec
from coordinator.jobs import JobSpec
from coordinator.scheduler import (
    Abandoned,
    BeaconPublished,
    Claim,
    Event,
    GenerationSeeded,
    JobAccepted,
    JobCancelled,
    JobPreparationFailed,
    JobPrepared,
    JobSubmitted,
    NodeLost,
    ReplicaFailed,
    ResultReturned,
    SpotCheckReturned,
    Tick,
    VolunteerTrusted,
    WorkRequested,
)

NOW = 1_718_000_123.456789
SEGMENTS = 5  # the demo's WU: 100,000 steps in segments of 20,000


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def events() -> dict[str, Event]:
    """One realistic event of each type (and an insane result), by label."""
    key = _digest("volunteer").hex()
    det = _digest("class").hex()[:16]
    spec = JobSpec(
        engine="go",
        system_digest=_digest("system"),
        runs=2,
        clones=2,
        gens=8,
        steps_per_wu=100_000,
        segment_steps=20_000,
        report_steps=1_000,
        temperature=0.75,
    )
    claim = Claim(
        _digest("final"),
        _digest("root"),
        tuple(_digest("boundary", i) for i in range(SEGMENTS + 1)),
        det,
        frames_digest=_digest("frames"),
        observables_digest=_digest("observables"),
        segment_data=tuple(_digest("segment", i) for i in range(SEGMENTS)),
    )
    problem = "energy drift 3.2e+05 kJ/mol in segment 2 exceeds the tolerance (\u0394E \u2264 1e3)"
    insane = Claim(b"\0" * 32, b"\0" * 32, (), "", sane=False, problem=problem)
    return {
        "JobSubmitted": JobSubmitted("lab-1/job-7", spec, (_digest("s0"), _digest("s1"))),
        "JobAccepted": JobAccepted("lab-1/job-7", "go", 32, NOW),
        "JobPrepared": JobPrepared("lab-1/job-7", spec, (_digest("s0"), _digest("s1")), NOW),
        "JobPreparationFailed": JobPreparationFailed("lab-1/job-8", "PDB has no atoms", NOW),
        "WorkRequested": WorkRequested(key, det, 2, NOW, "go"),
        "ResultReturned": ResultReturned(48_213, key, claim, NOW),
        "ResultReturned/insane": ResultReturned(48_214, key, insane, NOW),
        "ReplicaFailed": ReplicaFailed(48_215, key, "worker crashed: out of memory", NOW),
        "BeaconPublished": BeaconPublished(_digest("beacon"), NOW),
        "SpotCheckReturned": SpotCheckReturned(
            913,
            key,
            (_digest("end", 1), _digest("end", 3)),
            det,
            NOW,
            None,
            (_digest("segment", 1), _digest("segment", 3)),
        ),
        "Tick": Tick(NOW),
        "NodeLost": NodeLost(key, NOW),
        "Abandoned": Abandoned(NOW),
        "JobCancelled": JobCancelled("lab-1/job-7", NOW),
        "VolunteerTrusted": VolunteerTrusted(key, NOW),
        "GenerationSeeded": GenerationSeeded(
            "lab-1/job-9",
            1,
            3,
            4,
            _digest("wu"),
            2,
            _digest("parent"),
            _digest("input"),
            _digest("decision"),
            NOW,
        ),
    }


def measure(n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per label: microseconds per call of the generic encoder, ``encode_event`` and
    ``decode_event`` (the two encoders in alternating rounds)."""
    out: dict[str, dict[str, float]] = {}
    for label, ev in events().items():
        text = codec.encode_event(ev)
        assert codec.decode_event(text) == ev, label
        generic = new = float("inf")
        for _ in range(rounds):
            generic = min(generic, best_cpu_us(partial(codec._encode_generic, ev), n, 1))
            new = min(new, best_cpu_us(partial(codec.encode_event, ev), n, 1))
        decode = best_cpu_us(partial(codec.decode_event, text), n, rounds)
        out[label] = {"generic": generic, "encode": new, "decode": decode, "chars": len(text)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls per round (noisier)")
    args = ap.parse_args()
    n, rounds = (200, 3) if args.quick else (5_000, 7)
    per = measure(n, rounds)
    rows = [
        [
            label,
            str(int(m["chars"])),
            f"{m['generic']:.2f}",
            f"{m['encode']:.2f}",
            f"{m['generic'] / m['encode']:.1f}x",
            f"{m['decode']:.2f}",
        ]
        for label, m in per.items()
    ]
    header = ["event", "chars", "generic us", "encode us", "speedup", "decode us"]
    print_table(f"event log codec, CPU us per call (best of {rounds} x {n})", header, rows)
    metrics: dict[str, Any] = {"quick": args.quick, "calls": n, "rounds": rounds}
    for label, m in per.items():
        name = label.replace("/", "_")
        for what in ("generic", "encode", "decode"):
            metrics[f"{what}_us_{name}"] = round(m[what], 3)
    print(json.dumps(metrics, sort_keys=True))


if __name__ == "__main__":
    main()
