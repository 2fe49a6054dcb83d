"""The CPU a returned result costs, step by step, on the server and on the volunteer.

``python -m benchmarks.upload_path [--quick]``

Real signed Go results (real engine runs, real Ed25519 keys) of three sizes: villin (36
beads) with one 10-step segment and one frame, the smallest result there is; villin with 4
segments and 40 frames; and a 1,058-bead Go model (4JSV chain A) with 4 segments and 8
frames. For each, the server's per-result work outside the HTTP framework, each step alone:
``decode_result`` (the body into a result), ``precheck`` (the HTTP layer's 422 checks),
``verify_result`` (signature, price, shapes, finiteness, every digest), the Go sanity of
every boundary state (``engine.sanity_problems``: what ``verify_upload`` adds), and the
ledger's admission check (``CheckRules.check``) of the ``result validated`` entry the WU
ends in (two attestations, each result's share is half of it); then the whole sequence
per result, run as the service runs it (two replicas uploaded, then the entry admitted,
divided by two). And the volunteer's side: ``sign_result`` + ``encode_result`` +
``sign_headers``.

CPU is ``time.process_time`` per call, the best of several rounds (the minimum is what the
code costs; the rest is other processes on a shared machine). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ledger.entries as le
import ledger.log
from benchmarks.common import best_cpu_us, print_table
from coordinator.http.wire import Assignment, precheck
from coordinator.service import verify_upload
from sims.examples import VILLIN_PDB
from sims.go import GoEngine
from sims.spec import RunSpec
from sims.state import State
from worker.identity import Identity
from worker.result import WorkerResult, sign_result, verify_result
from worker.wire import decode_result, encode_result, sign_headers

WU = bytes(range(32))
JOB = bytes(range(32, 64))
ORIGIN = "http://127.0.0.1:8000"
STEPS = ("decode_result", "precheck", "verify_result", "sanity", "admission", "total")


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    name: str
    pdb: str  # file beside villin's
    chain: str | None
    steps: int
    segment_steps: int
    report_steps: int


CASES = {
    "villin_1seg": Case(
        name="villin_1seg", pdb="test.pdb", chain=None, steps=10, segment_steps=10, report_steps=10
    ),
    "villin_4seg": Case(
        name="villin_4seg",
        pdb="test.pdb",
        chain=None,
        steps=400,
        segment_steps=100,
        report_steps=10,
    ),
    "go_1058_4seg": Case(
        name="go_1058_4seg", pdb="4JSV.pdb", chain="A", steps=40, segment_steps=10, report_steps=5
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """One case's inputs: the engine, two volunteers' signed results of one WU (bodies)."""

    engine: GoEngine
    spec: RunSpec
    identities: tuple[Identity, Identity]
    bodies: tuple[bytes, bytes]
    assignments: tuple[Assignment, Assignment]
    price: le.PriceInputs
    run: Any


def prepare(case: Case) -> Prepared:
    engine = GoEngine.from_pdb(VILLIN_PDB.parent / case.pdb, chain=case.chain)
    spec = RunSpec(
        steps=case.steps,
        segment_steps=case.segment_steps,
        report_steps=case.report_steps,
        temperature=0.8,
        seed=4,
    )
    price = le.PriceInputs(
        engine="go",
        n_particles=engine.n_atoms,
        steps=case.steps,
        deadline_s=600,
        issued_at_ms=1_700_000_000_000,
    )
    run = engine.run(engine.initial_state(temperature=0.8, seed=1), spec)
    ids = (Identity.ephemeral(), Identity.ephemeral())
    bodies = tuple(encode_result(sign_result(run, wu_id=WU, identity=i, price=price)) for i in ids)
    assignments = tuple(
        Assignment(
            volunteer=i.public_key,
            wu_id=WU,
            n_segments=spec.n_segments,
            n_atoms=engine.n_atoms,
            n_frames=spec.steps // spec.report_steps,
            deadline=0.0,
            steps=spec.steps,
            input_digest=run.boundaries[0].digest(),
            segment_steps=spec.segment_steps,
            report_steps=spec.report_steps,
            temperature=spec.temperature,
            price=price,
        )
        for i in ids
    )
    return Prepared(
        engine=engine,
        spec=spec,
        identities=ids,
        bodies=(bodies[0], bodies[1]),
        assignments=(assignments[0], assignments[1]),
        price=price,
        run=run,
    )


def validated_entry(results: tuple[WorkerResult, ...]) -> le.Record:
    """The ``result validated`` record the coordinator appends for these agreeing results."""
    h0 = results[0].header
    return le.Record(
        timestamp_ms=1_700_000_001_000,
        entry=le.ResultValidated(
            wu_id=h0.wu_id,
            job_id=JOB,
            engine=h0.price.engine,
            n_particles=h0.price.n_particles,
            steps=h0.price.steps,
            deadline_s=h0.price.deadline_s,
            attestations=tuple(
                le.Attestation(
                    volunteer_key=r.header.worker_key,
                    issued_at_ms=r.header.price.issued_at_ms,
                    result_digest=r.header.digest(),
                    final_state_digest=r.header.final_digest,
                    signature=r.signature,
                    price=r.header.price,
                )
                for r in results
            ),
            spec_digest=bytes(32),
        ),
    )


def _signatures() -> Any:
    """A memo of verified signatures, where the code has one (else None)."""
    kind = getattr(ledger.log, "VerifiedSignatures", None)
    return None if kind is None else kind(capacity=4096)


def _verify_kwargs(memo: Any) -> dict[str, Any]:
    return {} if memo is None else {"verified": memo}


def _admission(memo: Any) -> ledger.log.CheckRules:
    return ledger.log.CheckRules() if memo is None else ledger.log.CheckRules(verified=memo)


def sanity(result: WorkerResult, engine: GoEngine, temperature: float) -> list[str]:
    """What ``verify_upload`` adds to ``verify_result``: each boundary state's sanity."""
    if hasattr(engine, "first_insane_state"):
        bad = engine.first_insane_state(
            result.positions, result.velocities, temperature=temperature
        )
        return [] if bad is None else bad[1]
    for k in range(1, len(result.positions)):
        state = State(positions=result.positions[k], velocities=result.velocities[k])
        problems = engine.sanity_problems(state, temperature=temperature)
        if problems:
            return problems
    return []


def best_us(fn: Callable[[], object], *, rounds: int, seconds: float) -> float:
    """CPU microseconds per call: the best of ``rounds`` rounds of about ``seconds`` each."""
    fn()
    t0 = time.process_time()
    fn()
    once = max(time.process_time() - t0, 1e-6)
    return best_cpu_us(fn, max(1, int(seconds / once)), rounds)


def measure_case(p: Prepared, *, rounds: int, seconds: float) -> dict[str, float]:
    """us per call of each step (the server's and the volunteer's) for one case; checks on
    the way that every step accepts these honest results.

    Each upload is a signature never seen before, so every verification of a result starts
    from an empty memo; the ledger's admission then finds both (as the coordinator's does)."""
    memo = _signatures()
    kw = _verify_kwargs(memo)
    admission = _admission(memo)
    body, a = p.bodies[0], p.assignments[0]
    limit = 1 << 30
    results = tuple(decode_result(b, max_bytes=limit) for b in p.bodies)
    for r, asg in zip(results, p.assignments, strict=True):
        precheck(r, asg, asg.volunteer)
        verify_upload(r, asg.expected(), engine=p.engine, temperature=p.spec.temperature, **kw)
    record = validated_entry(results)
    admission.check(None, 0, record)  # both attestations verify
    r0, exp = results[0], a.expected()
    temp = p.spec.temperature

    def total() -> None:
        fresh = _signatures()
        rules = _admission(fresh)
        for b, asg in zip(p.bodies, p.assignments, strict=True):
            r = decode_result(b, max_bytes=limit)
            precheck(r, asg, asg.volunteer)
            verify_upload(
                r, asg.expected(), engine=p.engine, temperature=temp, **_verify_kwargs(fresh)
            )
        rules.check(None, 0, record)

    def volunteer() -> None:
        signed = sign_result(p.run, wu_id=WU, identity=p.identities[0], price=p.price)
        b = encode_result(signed)
        sign_headers(p.identities[0], "POST", "/v1/results/1", b, origin=ORIGIN)

    us = {
        "decode_result": best_us(
            lambda: decode_result(body, max_bytes=limit), **_r(rounds, seconds)
        ),
        "precheck": best_us(lambda: precheck(r0, a, a.volunteer), **_r(rounds, seconds)),
        "verify_result": best_us(
            lambda: verify_result(r0, exp, **_verify_kwargs(_signatures())), **_r(rounds, seconds)
        ),
        "sanity": best_us(lambda: sanity(r0, p.engine, temp), **_r(rounds, seconds)),
        "admission": best_us(lambda: admission.check(None, 0, record), **_r(rounds, seconds)) / 2,
        "total": best_us(total, **_r(rounds, seconds)) / 2,
        "volunteer": best_us(volunteer, **_r(rounds, seconds)),
    }
    return us


def _r(rounds: int, seconds: float) -> dict[str, Any]:
    return {"rounds": rounds, "seconds": seconds}


def measure(names: list[str], *, rounds: int, seconds: float) -> dict[str, Any]:
    prepared = {name: prepare(CASES[name]) for name in names}
    us = {name: measure_case(p, rounds=rounds, seconds=seconds) for name, p in prepared.items()}
    rows = []
    for step in (*STEPS, "volunteer"):
        rows.append([step, *(f"{us[n][step]:.1f}" for n in names)])
    header = ["us per result (CPU, best)"]
    header += [f"{n} ({len(prepared[n].bodies[0]):,} B)" for n in names]
    print_table("the server's per-result work, and the volunteer's", header, rows)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return {
        "us": {n: {k: round(v, 1) for k, v in us[n].items()} for n in names},
        "body_bytes": {n: len(prepared[n].bodies[0]) for n in names},
        "load_average_1m": round(load[0], 2),
        "rounds": rounds,
        "memo": _signatures() is not None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    args = ap.parse_args()
    names = [n for n in args.cases.split(",") if n]
    rounds, seconds = (3, 0.05) if args.quick else (7, 0.3)
    metrics = measure(names, rounds=rounds, seconds=seconds)
    metrics["quick"] = args.quick
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
