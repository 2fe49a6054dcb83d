"""The auditor catches every kind of tampering, each with its own message; tiles; the CLI."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from ledger_helpers import (
    ORIGIN,
    Built,
    Clock,
    NewDb,
    build_ledger,
    digest,
    stored_entry,
    tamper,
)
from typer.testing import CliRunner

import ledger.audit as audit_module
from ledger import (
    CreditGranted,
    EntryRejectedError,
    Log,
    Store,
    TileReader,
    UnsafeAdmitAll,
    export_tiles,
    leaf_hash,
    verify_inclusion,
)
from ledger import run_audit as audit
from ledger.cli import app
from ledger.merkle import inclusion_proof
from ledger.tiles import encode_index, entries_path, tile_path


@pytest.fixture
def built(new_db: NewDb) -> Built:
    """A ledger on each backend (SQLite, PostgreSQL): every audit below runs on both."""
    return build_ledger(new_db("ledger"), n_wus=12, checkpoint_every=10)


_tamper = tamper
_entry = stored_entry


def _only(report: audit_module.AuditReport, kind: str) -> list[str]:
    return [str(d) for d in report.discrepancies if d.kind == kind]


def test_clean_ledger_passes(built: Built, tmp_path: Path) -> None:
    report = audit(built.path, state_file=tmp_path / "state.json", workers=1)
    assert report.ok, report.discrepancies
    # exactly the checkpoint's tree: its own 'checkpoint published' entry comes after it
    assert report.entries == report.tree_size
    assert report.notes == (
        f"1 entry after the latest valid checkpoint (size {report.tree_size:,}) is signed by no "
        "valid checkpoint yet: not audited (audit again once the log has signed a newer "
        "checkpoint)",
    )
    assert report.signatures == 2 * 12
    assert report.checkpoints >= 2 and report.consistency_checks >= 1
    assert report.entry_kinds["credit granted"] == 24
    assert sum(report.balances.values()) > 0
    assert report.state_updated
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["logs"][ORIGIN]["size"] == report.tree_size


def test_parallel_signature_verification(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches force the process pool (2 workers), which must agree with inline."""
    monkeypatch.setattr(audit_module, "_SIG_BATCH", 4)
    report = audit(built.path, workers=2)
    assert report.ok, report.discrepancies
    assert report.signatures == 24


def test_one_byte_changed(built: Built) -> None:
    data = bytearray(_entry(built.path, 7))
    data[-1] ^= 0x01
    _tamper(built.path, ("UPDATE entries SET data=? WHERE idx=7", (bytes(data),)))
    report = audit(built.path, workers=1)
    msgs = _only(report, "entry-modified")
    assert msgs and "entry 7:" in msgs[0] and "changed after it was logged" in msgs[0]
    assert _only(report, "root-mismatch")


def test_entry_deleted(built: Built) -> None:
    _tamper(built.path, ("DELETE FROM entries WHERE idx=9", ()))
    report = audit(built.path, workers=1)
    msgs = _only(report, "entry-deleted")
    assert msgs and "entry 9 missing" in msgs[0] and "deleted" in msgs[0]


def test_two_entries_swapped(built: Built) -> None:
    a, b = _entry(built.path, 6), _entry(built.path, 11)
    _tamper(
        built.path,
        ("UPDATE entries SET data=? WHERE idx=6", (b,)),
        ("UPDATE entries SET data=? WHERE idx=11", (a,)),
    )
    report = audit(built.path, workers=1)
    msgs = _only(report, "entries-swapped")
    assert msgs == [
        "[entries-swapped] entry 6: entries 6 and 11 were swapped: each holds the "
        "bytes the log recorded for the other"
    ]
    assert not _only(report, "entry-modified")


def test_log_truncated(built: Built) -> None:
    with Store.open_readonly(built.path) as s:
        size = s.checkpoints()[-1][0]
    _tamper(built.path, ("DELETE FROM entries WHERE idx >= ?", (size - 5,)))
    report = audit(built.path, workers=1)
    msgs = _only(report, "log-truncated")
    assert msgs and f"signs {size} entries, but only {size - 5} are present" in msgs[0]


def test_fork_checkpoint_replaced_at_same_size(built: Built, tmp_path: Path, new_db: NewDb) -> None:
    state = tmp_path / "state.json"
    assert audit(built.path, state_file=state, workers=1).ok
    # The operator builds another history with the same key and size and swaps checkpoints.
    other = build_ledger(new_db("fork"), n_wus=12, log_key=built.log_key, seed=1)
    with Store.open_readonly(other.path) as s:
        fsize, fnote = s.checkpoints()[-1]
    with Store.open_readonly(built.path) as s:
        size, note = s.checkpoints()[-1]
    assert fsize == size and fnote != note
    _tamper(built.path, ("UPDATE checkpoints SET note=? WHERE size=?", (fnote, size)))
    report = audit(built.path, state_file=state, workers=1)
    forks = _only(report, "fork")
    assert forks and any(f"size {size}" in m for m in forks)
    assert not report.state_updated  # the evidence is kept for the next audit too
    again = audit(built.path, state_file=state, workers=1)
    assert _only(again, "fork")


def test_checkpoint_with_bad_signature(built: Built) -> None:
    with Store.open_readonly(built.path) as s:
        size, note = s.checkpoints()[-1]
    line = note.rstrip("\n").split("\n")[-1]
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[20] ^= 0x80
    bad = note.replace(line.split(" ")[2], base64.b64encode(bytes(raw)).decode())
    _tamper(built.path, ("UPDATE checkpoints SET note=? WHERE size=?", (bad, size)))
    report = audit(built.path, workers=1)
    msgs = _only(report, "bad-checkpoint-signature")
    assert msgs and f"stored checkpoint {size}" in msgs[0] and "does not verify" in msgs[0]


def _unchecked_append(built: Built, entry: CreditGranted) -> None:
    with Log.open(
        built.path,
        origin=ORIGIN,
        signing_key=built.log_key,
        admission=UnsafeAdmitAll(),
        clock=Clock(start=1_800_000_000_000),
    ) as log:
        log.append(entry)
        log.publish_checkpoint()


def test_credit_amount_differs_from_formula(built: Built, new_db: NewDb) -> None:
    wu = built.wu_ids[0]
    report = audit(built.path, workers=1)
    assert report.ok
    _unchecked_append(
        built,
        CreditGranted(
            volunteer_key=built.volunteer_pub(2),
            wu_id=digest("wu", 2),
            formula_version=1,
            amount=999_999,
        ),
    )
    report = audit(built.path, workers=1)
    msgs = _only(report, "credit-mismatch") + _only(report, "duplicate-credit")
    assert msgs, report.discrepancies
    # a fresh WU with a wrong amount: exactly a formula mismatch
    built2 = build_ledger(new_db("b2"), n_wus=1)
    with Log.open(
        built2.path,
        origin=ORIGIN,
        signing_key=built2.log_key,
        admission=UnsafeAdmitAll(),
        clock=Clock(start=1_800_000_000_000),
    ) as log:
        from ledger_helpers import make_result

        result = make_result(built2, 77, [0, 1], issued_at_ms=1_800_000_000_000)
        log.append(result)
        log.append(
            CreditGranted(
                volunteer_key=built2.volunteer_pub(0),
                wu_id=result.wu_id,
                formula_version=1,
                amount=123_456,
            )
        )
        log.publish_checkpoint()
    report = audit(built2.path, workers=1)
    msgs = _only(report, "credit-mismatch")
    assert len(msgs) == 1 and "is 123456, but formula v1 gives" in msgs[0]
    assert wu != result.wu_id


def test_credit_with_no_validated_result(built: Built) -> None:
    _unchecked_append(
        built,
        CreditGranted(
            volunteer_key=built.volunteer_pub(0),
            wu_id=digest("made up"),
            formula_version=1,
            amount=500,
        ),
    )
    report = audit(built.path, workers=1)
    msgs = _only(report, "credit-without-result")
    assert len(msgs) == 1 and "with no validated result behind it" in msgs[0]
    assert len(report.discrepancies) == 1


def test_forged_attestation_signature(built: Built) -> None:
    from ledger_helpers import make_result

    good = make_result(built, 500, [0, 1], issued_at_ms=1_800_000_000_000)
    forged = dataclasses.replace(good.attestations[1], signature=good.attestations[0].signature)
    result = dataclasses.replace(good, attestations=(good.attestations[0], forged))
    with Log.open(
        built.path,
        origin=ORIGIN,
        signing_key=built.log_key,
        admission=UnsafeAdmitAll(),
        clock=Clock(start=1_800_000_000_001),
    ) as log:
        at = log.append(result).index
        log.publish_checkpoint()
    report = audit(built.path, workers=1)
    assert [d.index for d in report.discrepancies if d.kind == "bad-signature"] == [at]


def test_rollback_since_last_audit(built: Built, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    audit(built.path, state_file=state, workers=1)
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key) as log:
        log.append(__import__("ledger").VolunteerRegistered(volunteer_key=b"\x05" * 32))
        log.publish_checkpoint()
    assert audit(built.path, state_file=state, workers=1).ok
    saved = json.loads(state.read_text())
    saved["logs"][ORIGIN]["size"] += 1000
    state.write_text(json.dumps(saved))
    assert _only(audit(built.path, state_file=state, workers=1), "rollback")


# --------------------------------------------------------------------------- volunteers


def test_volunteer_entries_proven_by_inclusion(built: Built) -> None:
    report = audit(built.path, volunteer=built.volunteer_pub(1), workers=1)
    v = report.volunteer
    assert v is not None and v.registered
    assert v.proven == len(v.entries) > 10 and not v.unproven
    assert v.balance == report.balances[built.volunteer_pub(1)]


# --------------------------------------------------------------------------- tiles


def test_tile_paths() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(5) == "005"
    assert encode_index(1000) == "x001/000"
    assert tile_path(0, 1234067, 112) == "tile/0/x001/x234/067.p/112"
    assert tile_path(2, 0) == "tile/2/000"
    assert entries_path(3, 256) == "tile/entries/003"


def test_export_and_audit_tiles(tmp_path: Path, new_db: NewDb) -> None:
    built = build_ledger(new_db("big"), n_wus=100, checkpoint_every=200)
    out = tmp_path / "tiles"
    with Store.open_readonly(built.path) as store:
        stats = export_tiles(store, out)
        size = stats.tree_size
        assert size > 256
        assert (out / "tile/0/000").stat().st_size == 8192
        assert (out / f"tile/0/001.p/{size - 256}").is_file()
        assert (out / "tile/1/000.p/1").is_file()
        assert (out / f"tile/entries/001.p/{size - 256}").is_file()
        # the tiles serve the same proofs as the database
        reader = TileReader(out)
        root = store.root(size)
        for i in (0, 255, 256, size - 1):
            proof = inclusion_proof(i, size, reader.read_nodes)
            assert proof == inclusion_proof(i, size, store.read_nodes)
            verify_inclusion(store.read_nodes([(0, i)])[0], i, size, proof, root)
        # bundles read back to the entries
        assert [d for _, _, d in reader.iter_entries()] == [store.entry(i) for i in range(size)]
        # exporting again is idempotent
        assert export_tiles(store, out).files == stats.files
    report = audit(out, volunteer=built.volunteer_pub(0), workers=1)
    assert report.ok, report.discrepancies
    assert report.volunteer is not None and report.volunteer.proven > 0

    # one byte changed in an entry bundle
    bundle = out / "tile/entries/000"
    data = bytearray(bundle.read_bytes())
    data[20] ^= 0x04  # inside entry 0's volunteer key
    bundle.write_bytes(bytes(data))
    report = audit(out, workers=1)
    assert _only(report, "entry-modified")


# --------------------------------------------------------------------------- CLI


def test_cli_audit_exit_codes(built: Built, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        app,
        ["audit", str(built.path), "--workers", "1", "--volunteer", built.volunteer_pub(0).hex()],
    )
    assert ok.exit_code == 0, ok.output
    assert "no discrepancy" in ok.output and "inclusion proofs" in ok.output
    _tamper(built.path, ("DELETE FROM entries WHERE idx=3", ()))
    bad = runner.invoke(app, ["audit", str(built.path), "--workers", "1"])
    assert bad.exit_code == 1
    assert "entry-deleted" in bad.output
    missing = runner.invoke(app, ["audit", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2
    assert "error:" in missing.output and "Traceback" not in missing.output
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    res = runner.invoke(app, ["audit", str(garbage)])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_cli_export_and_audit_tiles(built: Built, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "tiles"
    res = runner.invoke(app, ["export", str(built.path), str(out)])
    assert res.exit_code == 0, res.output
    assert "exported" in res.output
    res = runner.invoke(
        app, ["audit", str(out), "--workers", "1", "--state", str(tmp_path / "s.json")]
    )
    assert res.exit_code == 0, res.output


def test_leaf_hash_is_sha256_of_zero_and_entry() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()


# --------------------------------------------------------------------------- signed prices


def _inflated_result(built: Built, **inflate: int) -> list[int]:
    """The operator's attack: a validated result whose attestations are genuine (the workers
    signed them) but whose credit-formula inputs the operator inflated, and the grants the
    inflated inputs price to. Appended as a dishonest log would; returns the indices."""
    from ledger_helpers import make_result

    from ledger.credit import credit_for

    at = 1_800_000_000_000
    honest = make_result(built, 900, [0, 1], issued_at_ms=at - 600_000)
    inflated = dataclasses.replace(honest, **inflate)
    with Log.open(
        built.path,
        origin=ORIGIN,
        signing_key=built.log_key,
        admission=UnsafeAdmitAll(),
        clock=Clock(start=at - 1_000, step=1_000),
    ) as log:
        out = [log.append(inflated).index]
        for i in (0, 1):
            amount = credit_for(
                1,
                engine=inflated.engine,
                n_particles=inflated.n_particles,
                steps=inflated.steps,
                deadline_s=inflated.deadline_s,
                issued_at_ms=at - 600_000,
                validated_at_ms=at,
            )
            grant = CreditGranted(
                volunteer_key=built.volunteer_pub(i),
                wu_id=inflated.wu_id,
                formula_version=1,
                amount=amount,
            )
            out.append(log.append(grant).index)
        log.publish_checkpoint()
    return out


@pytest.mark.parametrize(
    "inflate",
    [{"n_particles": 36_000}, {"steps": 10**9}, {"engine": "openmm"}, {"deadline_s": 7_200}],
    ids=["n_particles", "steps", "engine", "deadline"],
)
def test_operator_inflated_price_inputs_are_caught(
    built: Built, tmp_path: Path, inflate: dict[str, object]
) -> None:
    """Genuine worker signatures, operator-chosen prices: the auditor holds the entry to what
    the workers signed (``unsigned-price``) and reprices the grants from the signed inputs.
    (Before prices were signed, this ledger audited ``ok`` with the inflated balances.)"""
    assert audit(built.path, workers=1).ok
    result_at, *grants = _inflated_result(built, **inflate)  # type: ignore[arg-type]
    report = audit(built.path, workers=1)
    assert not report.ok
    unsigned = [d for d in report.discrepancies if d.kind == "unsigned-price"]
    assert [d.index for d in unsigned] == [result_at], report.discrepancies
    field = next(iter(inflate))
    assert field in unsigned[0].message and "signed" in unsigned[0].message
    assert not _only(report, "bad-signature")
    if field != "deadline":  # a longer deadline may not change the (capped) bonus
        mismatched = [d.index for d in report.discrepancies if d.kind == "credit-mismatch"]
        assert mismatched == grants, report.discrepancies
    # the same from an export, through the CLI
    out = tmp_path / "tiles"
    runner = CliRunner()
    assert runner.invoke(app, ["export", str(built.path), str(out)]).exit_code == 0
    res = runner.invoke(app, ["audit", str(out), "--workers", "1"])
    assert res.exit_code == 1, res.output
    assert "unsigned-price" in res.output


def _append_unchecked(built: Built, *entries: object) -> list[int]:
    with Log.open(
        built.path,
        origin=ORIGIN,
        signing_key=built.log_key,
        admission=UnsafeAdmitAll(),
        clock=Clock(start=1_800_000_000_000),
    ) as log:
        out = [log.append(e).index for e in entries]  # type: ignore[arg-type]
        log.publish_checkpoint()
    return out


def test_rewriting_what_the_workers_signed_breaks_their_signatures(built: Built) -> None:
    """The operator inflates the entry *and* the attestations' prices: now they agree, but
    the workers never signed those numbers."""
    from ledger_helpers import make_result

    honest = make_result(built, 901, [0, 1], issued_at_ms=1_799_999_000_000)
    atts = tuple(
        dataclasses.replace(
            a,
            price=dataclasses.replace(a.price, n_particles=36_000),  # type: ignore[type-var]
        )
        for a in honest.attestations
    )
    forged = dataclasses.replace(honest, n_particles=36_000, attestations=atts)
    (at,) = _append_unchecked(built, forged)
    report = audit(built.path, workers=1)
    assert [d.index for d in report.discrepancies if d.kind == "bad-signature"] == [at]
    assert not _only(report, "unsigned-price")


def test_a_v1_result_entry_is_an_unsigned_price(built: Built) -> None:
    """An entry in the old format decodes, but nobody signed its prices."""
    from ledger_helpers import make_result

    from ledger.entries import attestation_message_v1

    honest = make_result(built, 902, [0], issued_at_ms=1_799_999_000_000)
    a = honest.attestations[0]
    sig = built.volunteers[0].sign(
        attestation_message_v1(honest.wu_id, a.result_digest, a.final_state_digest)
    )
    v1 = dataclasses.replace(
        honest,
        spec_digest=None,
        attestations=(dataclasses.replace(a, price=None, signature=sig),),
    )
    assert v1.version == 1
    log = Log.open(built.path, origin=ORIGIN, signing_key=built.log_key)
    try:
        with pytest.raises(EntryRejectedError, match="unsigned-price"):
            log.append(v1)
    finally:
        log.close()
    (at,) = _append_unchecked(built, v1)
    report = audit(built.path, workers=1)
    msgs = [d for d in report.discrepancies if d.kind == "unsigned-price"]
    assert [d.index for d in msgs] == [at] and "v1 entry" in msgs[0].message
    assert not _only(report, "bad-signature")


def test_a_result_naming_another_spec_than_its_job(built: Built) -> None:
    from ledger_helpers import make_result

    honest = make_result(built, 903, [0, 1], issued_at_ms=1_799_999_000_000)
    other = dataclasses.replace(honest, spec_digest=digest("another spec"))
    (at,) = _append_unchecked(built, other)
    report = audit(built.path, workers=1)
    msgs = [d for d in report.discrepancies if d.kind == "spec-mismatch"]
    assert [d.index for d in msgs] == [at], report.discrepancies
    assert "was submitted with" in msgs[0].message
