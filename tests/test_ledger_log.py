"""The log: durable appends, entries and their encoding, checkpoints, keys, credit, bad input."""

from __future__ import annotations

import base64
import dataclasses
import os
import sqlite3
import stat
import struct
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger_helpers import ORIGIN, Clock, NewDb, build_ledger, digest, make_result, raw_sql

from ledger import (
    Checkpoint,
    CheckpointSigner,
    CreditError,
    CreditGranted,
    CreditRevoked,
    EntryFormatError,
    EntryRejectedError,
    EntryTooLargeError,
    InconsistentCheckpointError,
    JobSubmitted,
    KeyFileError,
    Log,
    MerkleTree,
    NoteFormatError,
    Record,
    ResultValidated,
    SignatureError,
    UnknownKeyError,
    VolunteerRegistered,
    credit_for,
    decode_record,
    encode_record,
    leaf_hash,
    load_or_create_private_key,
    load_private_key,
    load_public_key,
    open_checkpoint,
    parse_note,
    parse_vkey,
    public_key_bytes,
    verify_consistency,
    verify_inclusion,
    write_private_key,
)
from ledger.entries import WitnessCosigned
from ledger.note import Ed25519NoteSigner, key_id

#: Reopen a signing log without publishing checkpoints on its own during a test.
QUIET = {"checkpoint_every": 10**6, "checkpoint_interval_s": 1e9}

# --------------------------------------------------------------------------- appends


def test_appends_are_durable_and_tree_matches(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"))
    with Log.open_readonly(built.path) as log:
        entries = [log.entry(i) for i in range(log.size)]
        tree = MerkleTree(leaf_hash(e) for e in entries)
        assert log.root() == tree.root()
        cp = log.checkpoint()
        assert cp is not None
        assert cp.checkpoint.root_hash == tree.root(cp.checkpoint.size)
        # every entry decodes and re-encodes to the same bytes (one canonical encoding)
        for e in entries:
            assert encode_record(decode_record(e)) == e
        # the log's proofs verify against its signed checkpoint
        size = cp.checkpoint.size
        for i in (0, size // 2, size - 1):
            verify_inclusion(
                leaf_hash(entries[i]),
                i,
                size,
                log.inclusion_proof(i, size),
                cp.checkpoint.root_hash,
            )
        verify_consistency(3, size, log.consistency_proof(3, size), tree.root(3), tree.root(size))


def test_checkpoints_published_every_n_entries(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=12, checkpoint_every=10)
    with Log.open_readonly(built.path) as log:
        sizes = [s for s, _ in log.store.checkpoints()]
        assert len(sizes) >= 3
        assert sizes == sorted(sizes)
        kinds = [log.record(i).entry.KIND for i in range(log.size)]
        assert kinds.count("checkpoint published") == len(sizes)


def test_checkpoint_note_format(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=1)
    with Log.open_readonly(built.path) as log:
        cp = log.checkpoint()
        assert cp is not None
        text = cp.encode()
    origin, size, root, blank, sig = text.split("\n")[:5]
    assert origin == ORIGIN and int(size) == cp.checkpoint.size
    assert base64.b64decode(root) == cp.checkpoint.root_hash and blank == ""
    assert sig.startswith(f"— {ORIGIN} ")
    raw = base64.b64decode(sig.split(" ")[2])
    pub = public_key_bytes(built.log_key)
    assert raw[:4] == __import__("hashlib").sha256(ORIGIN.encode() + b"\n\x01" + pub).digest()[:4]
    assert len(raw) == 68


def test_batch_with_a_bad_record_appends_nothing(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=2)
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key, **QUIET) as log:
        before, root = log.size, log.root()
        bogus = CreditGranted(
            volunteer_key=built.volunteer_pub(0),
            wu_id=digest("nothing"),
            formula_version=1,
            amount=10,
        )
        ok = VolunteerRegistered(volunteer_key=b"\x07" * 32, name="new")
        with pytest.raises(EntryRejectedError, match="no validated result"):
            log.append_batch([ok, bogus])
        assert (log.size, log.root()) == (before, root)
        # the state is rebuilt from the committed log: the good record alone still goes in
        log.append(ok)
        assert log.size == before + 1
    with Log.open_readonly(built.path) as log:
        assert log.size == before + 1


def test_log_refuses_wrong_credit_and_bad_attestation(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=1)
    clock = Clock(start=1_800_000_000_000)
    with Log.open(
        built.path, origin=ORIGIN, signing_key=built.log_key, clock=clock, **QUIET
    ) as log:
        before = log.size
        result = make_result(built, 99, [0, 1], issued_at_ms=clock.now)
        appended = log.append(result)
        wrong = CreditGranted(
            volunteer_key=built.volunteer_pub(0),
            wu_id=result.wu_id,
            formula_version=1,
            amount=10**9,
        )
        with pytest.raises(EntryRejectedError, match="formula"):
            log.append(wrong)
        forged = make_result(built, 100, [0], issued_at_ms=clock.now)
        a = forged.attestations[0]
        bad_sig = dataclasses.replace(a, result_digest=digest("other"))
        forged = dataclasses.replace(forged, attestations=(bad_sig,))
        with pytest.raises(EntryRejectedError, match="does not verify"):
            log.append(forged)
        assert log.size == before + 1 and appended.index == before


def test_ledger_time_never_decreases(new_db: NewDb) -> None:
    times = iter([5_000, 4_000, 3_000])
    with Log.open(new_db("l"), origin=ORIGIN, clock=lambda: next(times)) as log:
        a = log.append(VolunteerRegistered(volunteer_key=b"\x01" * 32))
        b = log.append(VolunteerRegistered(volunteer_key=b"\x02" * 32))
        assert (a.timestamp_ms, b.timestamp_ms) == (5_000, 5_000)


def test_store_is_append_only(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=1)
    refused = (sqlite3.DatabaseError, psycopg.Error)
    for sql in ("UPDATE entries SET data = ? WHERE idx = 0", "DELETE FROM checkpoints"):
        with raw_sql(built.path) as run, pytest.raises(refused, match="append-only"):
            run(sql, *([b"\x00"] if "?" in sql else []))
    with raw_sql(built.path) as run:
        assert run("SELECT count(*) FROM checkpoints")[0][0] == 2


def test_origin_and_key_must_match_the_log(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=1)
    from ledger import StorageError

    with pytest.raises(StorageError, match="origin"):
        Log.open(built.path, origin="other.example/log", signing_key=built.log_key)
    with pytest.raises(KeyFileError, match="signed by"):
        Log.open(built.path, origin=ORIGIN, signing_key=Ed25519PrivateKey.generate())


def test_readonly_log_refuses_appends(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=1)
    from ledger import StorageError

    with Log.open_readonly(built.path) as log, pytest.raises(StorageError, match="read-only"):
        log.append(VolunteerRegistered(volunteer_key=b"\x09" * 32))


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_signer_refuses_inconsistent_checkpoints() -> None:
    key = Ed25519PrivateKey.generate()
    tree = MerkleTree(leaf_hash(bytes([i])) for i in range(10))
    signer = CheckpointSigner(Ed25519NoteSigner(ORIGIN, key))
    signer.sign(Checkpoint(ORIGIN, 6, tree.root(6)))
    fork = MerkleTree(leaf_hash(bytes([i + 100])) for i in range(10))
    with pytest.raises(InconsistentCheckpointError, match="not consistent"):
        signer.sign(Checkpoint(ORIGIN, 6, fork.root(6)))
    with pytest.raises(InconsistentCheckpointError, match="not consistent"):
        signer.sign(Checkpoint(ORIGIN, 10, fork.root(10)), proof=fork.consistency_proof(6, 10))
    with pytest.raises(InconsistentCheckpointError, match="rollback"):
        signer.sign(Checkpoint(ORIGIN, 5, tree.root(5)))
    signed = signer.sign(Checkpoint(ORIGIN, 10, tree.root(10)), proof=tree.consistency_proof(6, 10))
    assert signed.checkpoint.size == 10


def test_bad_checkpoint_text_is_a_clear_error(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=1)
    with Log.open_readonly(built.path) as log:
        cp = log.checkpoint()
        assert cp is not None and log.verifier is not None
        text, verifier = cp.encode(), log.verifier
    assert open_checkpoint(text, log_verifier=verifier).checkpoint == cp.checkpoint
    for cut in (0, 5, len(text) // 2, text.index("\n\n") + 1, len(text) - 1):
        with pytest.raises(NoteFormatError):
            open_checkpoint(text[:cut], log_verifier=verifier)
    for garbage in (b"\xff\xfe garbage", b"\x00\x01\x02", "hello\n\n— x y\n", "a\nb\n"):
        with pytest.raises(NoteFormatError):
            open_checkpoint(garbage, log_verifier=verifier)
    bad_size = text.replace(f"\n{cp.checkpoint.size}\n", f"\n0{cp.checkpoint.size}\n", 1)
    with pytest.raises(NoteFormatError, match="canonical"):
        Checkpoint.from_body(parse_note(bad_size).text)
    # wrong key id: same name, another key -> the log's signature is unknown
    other = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    with pytest.raises(UnknownKeyError, match="no signature by a trusted key"):
        open_checkpoint(text, log_verifier=other.verifier)
    # the right key id but a corrupted signature
    sig_line = text.split("\n")[-2]
    raw = bytearray(base64.b64decode(sig_line.split(" ")[2]))
    raw[10] ^= 1
    tampered = text.replace(sig_line.split(" ")[2], base64.b64encode(bytes(raw)).decode())
    with pytest.raises(SignatureError):
        open_checkpoint(tampered, log_verifier=verifier)


def test_vkeys_round_trip_and_reject_wrong_key_id() -> None:
    signer = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    vkey = signer.verifier.vkey
    assert parse_vkey(vkey) == signer.verifier
    name, kid, blob = vkey.split("+", 2)
    wrong = f"{name}+{(int(kid, 16) ^ 1):08x}+{blob}"
    with pytest.raises(KeyFileError, match="key id"):
        parse_vkey(wrong)
    with pytest.raises(KeyFileError):
        parse_vkey("garbage")
    assert key_id(ORIGIN, 1, signer.verifier.public_key) == signer.key_id


# --------------------------------------------------------------------------- entries


def _record(entry: object, ts: int = 1) -> bytes:
    return encode_record(Record(timestamp_ms=ts, entry=entry))  # type: ignore[arg-type]


def test_entry_encoding_is_documented_and_canonical() -> None:
    v = VolunteerRegistered(volunteer_key=b"\x11" * 32, name="é")
    data = _record(v, ts=258)
    assert (
        data == bytes([1, 1]) + (258).to_bytes(8, "big") + b"\x11" * 32 + b"\x00\x02" + "é".encode()
    )
    assert decode_record(data) == Record(timestamp_ms=258, entry=v)
    c = CreditRevoked(volunteer_key=b"\x01" * 32, wu_id=b"\x02" * 32, amount=5, reason="bad")
    assert decode_record(_record(c)).entry == c
    w = WitnessCosigned(
        witness_name="w.example/1",
        witness_key=b"\x03" * 32,
        tree_size=7,
        root_hash=b"\x04" * 32,
        timestamp=9,
        signature=b"\x05" * 64,
    )
    assert decode_record(_record(w)).entry == w


def test_entries_of_unknown_type_or_version_are_refused() -> None:
    good = _record(JobSubmitted(job_id=b"\x01" * 32, lab="x"))
    with pytest.raises(EntryFormatError, match="unknown entry type 99"):
        decode_record(bytes([99]) + good[1:])
    with pytest.raises(EntryFormatError, match="no version 7"):
        decode_record(good[:1] + bytes([7]) + good[2:])
    with pytest.raises(EntryFormatError, match="trailing"):
        decode_record(good + b"\x00")
    for cut in range(len(good)):
        with pytest.raises(EntryFormatError):
            decode_record(good[:cut])
    with pytest.raises(EntryFormatError, match="UTF-8"):
        decode_record(good[:-1] + b"\xff")


def test_oversized_entry_is_refused_and_nothing_appended(new_db: NewDb) -> None:
    with Log.open(new_db("l"), origin=ORIGIN) as log:
        log.append(JobSubmitted(job_id=b"\x01" * 32, lab="ok"))
        huge = JobSubmitted(job_id=b"\x02" * 32, lab="x" * 65_500)
        with pytest.raises(EntryTooLargeError, match="65,535"):
            log.append(huge)
        with pytest.raises(EntryTooLargeError):
            log.append_batch([JobSubmitted(job_id=b"\x03" * 32), huge])
        assert log.size == 1
    with pytest.raises(EntryTooLargeError):
        decode_record(b"\x02\x01" + b"\x00" * 70_000)


def test_fields_are_checked_on_construction() -> None:
    with pytest.raises(EntryFormatError, match="32 bytes"):
        VolunteerRegistered(volunteer_key=b"short")
    with pytest.raises(EntryFormatError, match="control"):
        JobSubmitted(job_id=b"\x01" * 32, lab="a\nb")
    with pytest.raises(EntryFormatError, match="attestations"):
        ResultValidated(
            wu_id=b"\x01" * 32,
            job_id=b"\x01" * 32,
            engine="go",
            n_particles=1,
            steps=1,
            deadline_s=1,
            attestations=(),
        )
    with pytest.raises(EntryFormatError, match="not a ledger entry"):
        Record(timestamp_ms=1, entry="nope")  # type: ignore[arg-type]


def test_log_writes_its_own_checkpoint_and_cosignature_entries(new_db: NewDb) -> None:
    from ledger import CheckpointPublished

    with Log.open(new_db("l"), origin=ORIGIN) as log:
        with pytest.raises(EntryRejectedError, match="written by the log itself"):
            log.append(CheckpointPublished(note="x\n"))
        assert log.size == 0


# --------------------------------------------------------------------------- credit


def test_credit_formula_v1() -> None:
    base = dict(engine="go", n_particles=36, steps=100_000, deadline_s=3600)
    t0 = 1_700_000_000_000
    slow = credit_for(1, **base, issued_at_ms=t0, validated_at_ms=t0 + 3_600_000)
    late = credit_for(1, **base, issued_at_ms=t0, validated_at_ms=t0 + 7_200_000)
    quick = credit_for(1, **base, issued_at_ms=t0, validated_at_ms=t0 + 900_000)
    instant = credit_for(1, **base, issued_at_ms=t0, validated_at_ms=t0 + 1)
    assert late == slow == 36  # sqrt(0.75) < 1: no bonus at the deadline
    assert quick == 36 * 1732 // 1000  # sqrt(0.75 * 4) = 1.732
    assert instant == 36 * 4  # capped at 4x
    aa = credit_for(
        1, **{**base, "engine": "openmm"}, issued_at_ms=t0, validated_at_ms=t0 + 7_200_000
    )
    assert aa == 50 * 36
    with pytest.raises(CreditError, match="engine 'gromacs'"):
        credit_for(1, **{**base, "engine": "gromacs"}, issued_at_ms=t0, validated_at_ms=t0)
    with pytest.raises(CreditError, match="version 2"):
        credit_for(2, **base, issued_at_ms=t0, validated_at_ms=t0)
    with pytest.raises(CreditError, match="before"):
        credit_for(1, **base, issued_at_ms=t0, validated_at_ms=t0 - 1)


def test_unpriceable_result_appends_nothing(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=1)
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key) as log:
        before = log.size
        result = make_result(built, 50, [0, 1], issued_at_ms=1, engine="gromacs")
        with pytest.raises(CreditError):
            log.record_validated_result(result)
        assert log.size == before


def test_many_results_in_one_transaction_or_none(new_db: NewDb) -> None:
    built = build_ledger(new_db("l"), n_wus=1)
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key) as log:
        before = log.size
        t = 1_700_000_100_000
        good = [make_result(built, 60 + i, [0, 1], issued_at_ms=t) for i in range(3)]
        bad = make_result(built, 70, [0, 2], issued_at_ms=t, engine="gromacs")
        with pytest.raises(CreditError):
            log.record_validated_results([*good, bad])
        assert log.size == before  # not even the good ones
        appended = log.record_validated_results(good)
        assert len(appended) == 3 * 3  # each result and its two credits
        kinds = [type(log.record(a.index).entry) for a in appended]
        assert kinds == [ResultValidated, CreditGranted, CreditGranted] * 3
        assert log.record_validated_results([]) == []


# --------------------------------------------------------------------------- keys


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "k" / "log.key"
    key = load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(key)
    assert load_public_key(str(path)) == public_key_bytes(key)
    assert load_public_key(public_key_bytes(key).hex()) == public_key_bytes(key)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_private_key(path, key)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(path)
    (tmp_path / "junk").write_text("not a key")
    os.chmod(tmp_path / "junk", 0o600)
    with pytest.raises(KeyFileError):
        load_private_key(tmp_path / "junk")
    with pytest.raises(KeyFileError):
        load_public_key("zz")
    assert struct.calcsize(">Q") == 8


# --------------------------------------------------------------------------- signed prices


def _priced_result(key: Ed25519PrivateKey, *, issued_at_ms: int = 1_700_000_000_000) -> Any:
    from ledger import Attestation, PriceInputs

    price = PriceInputs("openmm", 582, 250_000, 3600, issued_at_ms)
    att = Attestation.create(
        private_key=key,
        wu_id=b"\x01" * 32,
        result_digest=b"\x03" * 32,
        final_state_digest=b"\x04" * 32,
        price=price,
    )
    return ResultValidated(
        wu_id=b"\x01" * 32,
        job_id=b"\x02" * 32,
        engine="openmm",
        n_particles=582,
        steps=250_000,
        deadline_s=3600,
        attestations=(att,),
        spec_digest=b"\x05" * 32,
    )


def test_v2_entries_carry_signed_prices_and_the_spec_digest() -> None:
    key = Ed25519PrivateKey.generate()
    result = _priced_result(key)
    data = _record(result, ts=7)
    assert data[:2] == bytes([3, 2])  # result_validated v2
    body = data[10:]
    assert body[:32] == b"\x01" * 32 and body[32:64] == b"\x02" * 32
    assert body[64:96] == b"\x05" * 32  # spec_digest, then the stated inputs
    att = result.attestations[0]
    terms = b"\x00\x06openmm" + struct.pack(">IQI", 582, 250_000, 3600)
    assert data.endswith(att.signature + terms)  # what the worker signed, after its signature
    back = decode_record(data)
    assert back.entry == result and encode_record(back) == data
    assert back.entry.attestations[0].price == att.price
    (pub, sig, msg) = back.entry.signed_messages()[0]
    assert msg.startswith(b"foldnet/result-attestation/v2\n") and len(msg) == 158
    assert msg.endswith(att.price.digest())
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    for cut in range(10, len(data)):
        with pytest.raises(EntryFormatError):
            decode_record(data[:cut])
    job = JobSubmitted(job_id=b"\x02" * 32, lab="lab", spec_digest=b"\x05" * 32)
    jdata = _record(job)
    assert jdata[:2] == bytes([2, 2]) and jdata[10:74] == b"\x02" * 32 + b"\x05" * 32
    assert decode_record(jdata).entry == job


def test_v1_entries_still_decode_and_reencode_byte_for_byte() -> None:
    """Entries written before prices were signed: read as v1 (no spec digest, attestations
    without prices, verified against the v1 message), and written back unchanged."""
    key = Ed25519PrivateKey.generate()
    wu, res, fin = b"\x01" * 32, b"\x03" * 32, b"\x04" * 32
    sig = key.sign(b"foldnet/result-attestation/v1\n" + wu + res + fin)
    att = struct.pack(">32sQ32s32s64s", public_key_bytes(key), 5, res, fin, sig)
    v1 = (
        bytes([3, 1])
        + (9).to_bytes(8, "big")
        + wu
        + b"\x02" * 32
        + b"\x00\x02go"
        + struct.pack(">IQIB", 36, 1000, 60, 1)
        + att
    )
    entry = decode_record(v1).entry
    assert isinstance(entry, ResultValidated)
    assert entry.version == 1 and entry.spec_digest is None
    assert entry.attestations[0].price is None
    assert encode_record(decode_record(v1)) == v1
    (pub, got_sig, msg) = entry.signed_messages()[0]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(pub).verify(got_sig, msg)
    job_v1 = bytes([2, 1]) + (9).to_bytes(8, "big") + b"\x02" * 32 + b"\x00\x01x"
    job = decode_record(job_v1).entry
    assert isinstance(job, JobSubmitted) and job.spec_digest is None and job.version == 1
    assert encode_record(decode_record(job_v1)) == job_v1


def test_signed_prices_are_checked_on_construction() -> None:
    import dataclasses as dc

    key = Ed25519PrivateKey.generate()
    result = _priced_result(key)
    att = result.attestations[0]
    with pytest.raises(EntryFormatError, match="expected 1700000000000, got 1"):
        dc.replace(att, price=dc.replace(att.price, issued_at_ms=1))
    with pytest.raises(EntryFormatError, match="signed price in every attestation"):
        dc.replace(result, attestations=(dc.replace(att, price=None),))
    with pytest.raises(EntryFormatError, match="must name its job's spec_digest"):
        dc.replace(result, spec_digest=None)


def test_the_log_refuses_unsigned_prices_and_prices_grants_from_signed_ones(
    new_db: NewDb,
) -> None:
    import dataclasses as dc

    built = build_ledger(new_db("l"), n_wus=1)
    clock = Clock(start=1_800_000_000_000)
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key, clock=clock) as log:
        honest = make_result(built, 40, [0, 1], issued_at_ms=1_800_000_000_000)
        inflated = dc.replace(honest, n_particles=36_000)
        with pytest.raises(EntryRejectedError, match=r"unsigned-price.*n_particles is 36000"):
            log.record_validated_result(inflated)
        appended = log.record_validated_result(honest)
        grants = [log.entry(a.index) for a in appended[1:]]
        amounts = {decode_record(g).entry.amount for g in grants}  # type: ignore[union-attr]
        want = credit_for(
            1,
            engine="go",
            n_particles=36,
            steps=100_000,
            deadline_s=3600,
            issued_at_ms=1_800_000_000_000,
            validated_at_ms=appended[0].timestamp_ms,
        )
        assert amounts == {want}
