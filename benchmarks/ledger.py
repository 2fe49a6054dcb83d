"""Ledger benchmark: appends, proofs, full audits and tile export.

Run ``python -m benchmarks.ledger`` (a few minutes) or ``--quick`` (under a minute). Prints a
table and, last, one JSON line.

The ledger is realistic for foldnet: 1 job, registered volunteers, and per validated WU one
``result validated`` entry plus one ``credit granted`` per attester. One WU in four is
replicated (2 attesters, quorum); the rest went to reliable volunteers unreplicated (BOINC's
adaptive replication), so about 0.56 worker signatures per entry. The auditor verifies all of
them (Ed25519, ``cryptography``) on 2 worker processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    Attestation,
    CheckRules,
    CreditGranted,
    JobSubmitted,
    Log,
    ResultValidated,
    VolunteerRegistered,
    export_tiles,
    leaf_hash,
    public_key_bytes,
    run_audit,
    verify_consistency,
    verify_inclusion,
)
from ledger.entries import Entry, PriceInputs, attestation_message
from ledger.rules import price_attestation

ORIGIN = "bench.foldnet.example/ledger"
ISSUE_LEAD_MS = 600_000
#: Every WU is issued when the job is submitted (the clock starts there), so the workers
#: can sign their prices before the ledger is built.
ISSUED_AT_MS = 1_700_000_000_000
SPEC_DIGEST = hashlib.sha256(b"spec").digest()
_VOLUNTEERS: list[Ed25519PrivateKey] = []


def _key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"vol%d" % i).digest())


def _wu_id(k: int) -> bytes:
    return hashlib.sha256(b"wu%d" % k).digest()


def _result_digest(k: int, v: int) -> bytes:
    return hashlib.sha256(b"res%d/%d" % (k, v)).digest()


def _price(k: int) -> PriceInputs:
    return PriceInputs(
        engine="go" if k % 3 else "openmm",
        n_particles=36 if k % 3 else 582,
        steps=250_000,
        deadline_s=3600,
        issued_at_ms=ISSUED_AT_MS,
    )


def _final_digest(k: int) -> bytes:
    return hashlib.sha256(b"final%d" % k).digest()


def _signers(k: int, n_vol: int) -> list[int]:
    return [k % n_vol, (k + 1) % n_vol] if k % 4 == 0 else [k % n_vol]


def _sign_range(args: tuple[int, int, int]) -> bytes:
    """Worker: the attestation signatures of WUs ``start..end`` (64 bytes each, in order)."""
    start, end, n_vol = args
    if len(_VOLUNTEERS) != n_vol:
        _VOLUNTEERS[:] = [_key(i) for i in range(n_vol)]
    out = []
    for k in range(start, end):
        wu = _wu_id(k)
        price = _price(k).digest()
        for v in _signers(k, n_vol):
            message = attestation_message(wu, _result_digest(k, v), _final_digest(k), price)
            out.append(_VOLUNTEERS[v].sign(message))
    return b"".join(out)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def _wu_entries(
    k: int, n_vol: int, pubs: list[bytes], sigs: bytes, pos: int, ts: int, job: bytes
) -> tuple[list[Entry], int]:
    atts = []
    price = _price(k)
    for v in _signers(k, n_vol):
        atts.append(
            Attestation(
                volunteer_key=pubs[v],
                issued_at_ms=price.issued_at_ms,
                result_digest=_result_digest(k, v),
                final_state_digest=_final_digest(k),
                signature=sigs[pos : pos + 64],
                price=price,
            )
        )
        pos += 64
    result = ResultValidated(
        wu_id=_wu_id(k),
        job_id=job,
        engine=price.engine,
        n_particles=price.n_particles,
        steps=price.steps,
        deadline_s=price.deadline_s,
        attestations=tuple(atts),
        spec_digest=SPEC_DIGEST,
    )
    entries: list[Entry] = [result]
    for a in atts:
        amount = price_attestation(result, a, validated_at_ms=ts, version=1)
        entries.append(
            CreditGranted(
                volunteer_key=a.volunteer_key, wu_id=result.wu_id, formula_version=1, amount=amount
            )
        )
    return entries, pos


def _signatures(n_wus: int, n_vol: int, pool: ProcessPoolExecutor) -> bytes:
    step = 5000
    jobs = [(s, min(n_wus, s + step), n_vol) for s in range(0, n_wus, step)]
    return b"".join(pool.map(_sign_range, jobs))


def build(
    path: Path,
    n_entries: int,
    *,
    n_vol: int,
    pool: ProcessPoolExecutor,
    admission: CheckRules,
    batch: int = 3000,
    checkpoint_every: int = 10_000,
) -> tuple[float, int]:
    """Build a ledger of about ``n_entries``; return (seconds spent appending, entries)."""
    n_wus = int(n_entries / 2.25) + 1
    sigs = _signatures(n_wus, n_vol, pool)
    keys = [_key(i) for i in range(n_vol)]
    pubs = [public_key_bytes(k) for k in keys]
    clock = _Clock()
    job = hashlib.sha256(b"job").digest()
    appending = 0.0
    with Log.open(
        path,
        origin=ORIGIN,
        signing_key=Ed25519PrivateKey.from_private_bytes(b"\x01" * 32),
        checkpoint_every=checkpoint_every,
        checkpoint_interval_s=1e9,
        admission=admission,
        clock=clock,
    ) as log:
        log.append_batch(
            [VolunteerRegistered(volunteer_key=p, name=f"v{i}") for i, p in enumerate(pubs)]
            + [JobSubmitted(job_id=job, lab="bench", spec_digest=SPEC_DIGEST)]
        )
        clock.now += ISSUE_LEAD_MS
        pos, k = 0, 0
        while log.size < n_entries and k < n_wus:
            clock.now += 1000
            entries: list[Entry] = []
            while len(entries) < batch and k < n_wus:
                more, pos = _wu_entries(k, n_vol, pubs, sigs, pos, clock.now, job)
                entries.extend(more)
                k += 1
            t = time.perf_counter()
            log.append_batch(entries)
            appending += time.perf_counter() - t
        clock.now += 1000
        log.publish_checkpoint()
        return appending, log.size


def append_rates(tmp: Path, n: int, n_vol: int, pool: ProcessPoolExecutor) -> dict[str, float]:
    """Appends per second: batched (1000 per transaction) and one per transaction."""
    out: dict[str, float] = {}
    for name, admission in (
        ("batched_rules", CheckRules(verify_signatures=False)),
        ("batched_rules_sigs", CheckRules(verify_signatures=True)),
    ):
        secs, size = build(
            tmp / f"{name}.db",
            n,
            n_vol=n_vol,
            pool=pool,
            admission=admission,
            batch=1000,
            checkpoint_every=10**9,
        )
        out[name] = (size - n_vol - 1) / secs
    # one entry per durable transaction (fsync each)
    single = max(200, n // 50)
    with Log.open(tmp / "single.db", origin=ORIGIN, checkpoint_every=10**9) as log:
        t = time.perf_counter()
        for i in range(single):
            log.append(VolunteerRegistered(volunteer_key=hashlib.sha256(b"%d" % i).digest()))
        out["single"] = single / (time.perf_counter() - t)
    return out


def proof_times(path: Path, samples: int = 2000) -> dict[str, float]:
    rng = random.Random(1)
    with Log.open_readonly(path) as log:
        size = log.size
        root = log.root(size)
        idx = [rng.randrange(size) for _ in range(samples)]
        t = time.perf_counter()
        proofs = [log.inclusion_proof(i, size) for i in idx]
        gen = (time.perf_counter() - t) / samples
        leaves = [leaf_hash(log.entry(i)) for i in idx]
        t = time.perf_counter()
        for i, lh, p in zip(idx, leaves, proofs, strict=True):
            verify_inclusion(lh, i, size, p, root)
        ver = (time.perf_counter() - t) / samples
        olds = [rng.randrange(1, size) for _ in range(samples // 4)]
        t = time.perf_counter()
        cproofs = [log.consistency_proof(s, size) for s in olds]
        cgen = (time.perf_counter() - t) / len(olds)
        roots = [log.root(s) for s in olds]
        t = time.perf_counter()
        for s, r, p in zip(olds, roots, cproofs, strict=True):
            verify_consistency(s, size, p, r, root)
        cver = (time.perf_counter() - t) / len(olds)
    return {
        "size": size,
        "inclusion_proof_us": gen * 1e6,
        "inclusion_verify_us": ver * 1e6,
        "consistency_proof_us": cgen * 1e6,
        "consistency_verify_us": cver * 1e6,
    }


def audit_time(path: Path) -> dict[str, float]:
    t = time.perf_counter()
    report = run_audit(path, workers=2)
    secs = time.perf_counter() - t
    if not report.ok:
        raise SystemExit(f"benchmark ledger failed its audit: {report.discrepancies[:3]}")
    return {"entries": report.entries, "signatures": report.signatures, "seconds": secs}


def _table(rows: list[tuple[str, str]]) -> None:
    width = max(len(a) for a, _ in rows)
    print()
    for a, b in rows:
        print(f"  {a:<{width}}  {b}")
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (under a minute)")
    args = parser.parse_args(argv)
    small, large = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    n_append = 20_000 if args.quick else 100_000
    n_vol = 1000
    rows: list[tuple[str, str]] = [("cores", str(os.cpu_count()))]
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as d, ProcessPoolExecutor(2) as pool:
        tmp = Path(d)
        rates = append_rates(tmp, n_append, n_vol, pool)
        rows += [
            ("append, batched 1000/txn, rules", f"{rates['batched_rules']:,.0f} /s"),
            (
                "append, batched 1000/txn, rules + signatures",
                f"{rates['batched_rules_sigs']:,.0f} /s",
            ),
            ("append, one per durable txn", f"{rates['single']:,.0f} /s"),
        ]
        audits = {}
        for n in (small, large):
            path = tmp / f"audit{n}.db"
            t = time.perf_counter()
            secs, size = build(
                path, n, n_vol=n_vol, pool=pool, admission=CheckRules(verify_signatures=False)
            )
            build_total = time.perf_counter() - t
            rows.append(
                (
                    f"build {size:,} entries",
                    f"{build_total:.1f} s (appending {secs:.1f} s = {size / secs:,.0f} /s)",
                )
            )
            audits[n] = audit_time(path)
            a = audits[n]
            rows.append(
                (
                    f"full audit {a['entries']:,.0f} entries, 2 workers",
                    f"{a['seconds']:.1f} s  ({a['entries'] / a['seconds']:,.0f} entries/s, "
                    f"{a['signatures']:,.0f} signatures)",
                )
            )
        big = tmp / f"audit{large}.db"
        proofs = proof_times(big)
        rows += [
            (
                f"inclusion proof at {proofs['size']:,.0f}",
                f"{proofs['inclusion_proof_us']:.0f} us  "
                f"(verify {proofs['inclusion_verify_us']:.0f} us)",
            ),
            (
                f"consistency proof at {proofs['size']:,.0f}",
                f"{proofs['consistency_proof_us']:.0f} us  "
                f"(verify {proofs['consistency_verify_us']:.0f} us)",
            ),
        ]
        from ledger import Store

        t = time.perf_counter()
        with Store.open_readonly(big) as store:
            stats = export_tiles(store, tmp / "tiles")
        export_s = time.perf_counter() - t
        db_bytes = big.stat().st_size
        rows.append(
            (
                f"tile export of {stats.tree_size:,}",
                f"{stats.bytes / 1e6:,.1f} MB in {stats.files:,} files, {export_s:.1f} s "
                f"(database {db_bytes / 1e6:,.1f} MB)",
            )
        )
    _table(rows)
    a_large = audits[large]
    result = {
        "quick": args.quick,
        "append_per_s_batched": round(rates["batched_rules"]),
        "append_per_s_batched_with_signature_checks": round(rates["batched_rules_sigs"]),
        "append_per_s_single": round(rates["single"]),
        "inclusion_proof_us": round(proofs["inclusion_proof_us"], 1),
        "inclusion_verify_us": round(proofs["inclusion_verify_us"], 1),
        "consistency_proof_us": round(proofs["consistency_proof_us"], 1),
        "consistency_verify_us": round(proofs["consistency_verify_us"], 1),
        "proof_tree_size": proofs["size"],
        "audit_entries_per_s": round(a_large["entries"] / a_large["seconds"]),
        f"audit_{small}_s": round(audits[small]["seconds"], 2),
        f"audit_{large}_s": round(a_large["seconds"], 2),
        "audit_1m_s": round(a_large["seconds"], 2) if large == 1_000_000 else None,
        "audit_signatures": a_large["signatures"],
        "tile_export_bytes": stats.bytes,
        "tile_export_files": stats.files,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
