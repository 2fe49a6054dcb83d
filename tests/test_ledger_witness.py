"""Witnesses cosign only one append-only history; k-of-n witness policies."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger_helpers import ORIGIN, build_ledger
from typer.testing import CliRunner

from ledger import (
    CosignatureV1Signer,
    InconsistentCheckpointError,
    Log,
    PolicyError,
    UnknownKeyError,
    UnsafeNoWitnessPolicy,
    VolunteerRegistered,
    Witness,
    WitnessPolicy,
    parse_note,
    run_audit,
)
from ledger.cli import app
from ledger.cosignature import cosigned_message

QUIET = {"checkpoint_every": 10**6, "checkpoint_interval_s": 1e9}


def _witness(tmp_path: Path, n: int) -> Witness:
    return Witness.open(
        tmp_path / f"w{n}.db",
        name=f"witness.test/w{n}",
        signing_key=Ed25519PrivateKey.generate(),
        clock=lambda: 1_700_000_000 + n,
    )


def test_witness_cosigns_extensions_and_refuses_forks(tmp_path: Path) -> None:
    built = build_ledger(tmp_path / "a.db", n_wus=3)
    fork = build_ledger(tmp_path / "b.db", n_wus=3, log_key=built.log_key, seed=1)
    w = _witness(tmp_path, 1)
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key, **QUIET) as log:
        assert log.verifier is not None
        w.add_log(log.verifier.vkey)
        cp1 = log.checkpoint()
        assert cp1 is not None
        note = w.cosign(cp1.encode(), proof=[])
        assert len(note.signatures) == 2
        size1 = cp1.checkpoint.size
        # the same checkpoint again (no proof needed), then a proper extension
        w.cosign(cp1.encode(), proof=[])
        log.append(VolunteerRegistered(volunteer_key=b"\x42" * 32))
        cp2 = log.publish_checkpoint()
        w.cosign(cp2.encode(), proof=log.consistency_proof(size1, cp2.checkpoint.size))
        view = w.view(ORIGIN)
        assert view is not None and view.size == cp2.checkpoint.size

        # not an extension: a smaller checkpoint
        with pytest.raises(InconsistentCheckpointError, match="smaller"):
            w.cosign(cp1.encode(), proof=[])
        # a wrong (empty / made-up) proof
        log.append(VolunteerRegistered(volunteer_key=b"\x43" * 32))
        cp3 = log.publish_checkpoint()
        with pytest.raises(InconsistentCheckpointError, match="not an extension"):
            w.cosign(cp3.encode(), proof=[])
        with pytest.raises(InconsistentCheckpointError, match="not an extension"):
            w.cosign(cp3.encode(), proof=log.consistency_proof(size1, cp3.checkpoint.size))
    # a fork: same log key, same size, another root (validly signed by the log)
    with Log.open(fork.path, origin=ORIGIN, signing_key=built.log_key, **QUIET) as flog:
        i = 0
        while flog.size < cp2.checkpoint.size:
            flog.append(VolunteerRegistered(volunteer_key=bytes([0x50 + i]) * 32))
            i += 1
        fcp = flog.publish_checkpoint()
        assert fcp.checkpoint.size == cp2.checkpoint.size
        assert fcp.checkpoint.root_hash != cp2.checkpoint.root_hash
        with pytest.raises(InconsistentCheckpointError, match="not an extension"):
            w.cosign(fcp.encode(), proof=[])
    # the refusals changed nothing, and the state survives a restart
    w.close()
    again = Witness.open(
        tmp_path / "w1.db", name="witness.test/w1", signing_key=w._signer.private_key
    )
    view = again.view(ORIGIN)
    assert view is not None and view.size == cp2.checkpoint.size
    again.close()


def test_witness_refuses_unknown_log_and_bad_signature(tmp_path: Path) -> None:
    built = build_ledger(tmp_path / "a.db", n_wus=1)
    w = _witness(tmp_path, 1)
    with Log.open_readonly(built.path) as log:
        cp = log.checkpoint()
        assert cp is not None and log.verifier is not None
        with pytest.raises(UnknownKeyError, match="does not follow"):
            w.cosign(cp.encode(), proof=[])
        other = Ed25519PrivateKey.generate()
        from ledger.note import Ed25519NoteSigner

        w.add_log(Ed25519NoteSigner(ORIGIN, other).verifier.vkey)
        with pytest.raises(UnknownKeyError):
            w.cosign(cp.encode(), proof=[])
    w.close()


def test_two_of_three_policy(tmp_path: Path) -> None:
    built = build_ledger(tmp_path / "a.db", n_wus=2)
    ws = [_witness(tmp_path, i) for i in range(3)]
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key, **QUIET) as log:
        assert log.verifier is not None
        for w in ws:
            w.add_log(log.verifier.vkey)
        cp = log.checkpoint()
        assert cp is not None
        size = cp.checkpoint.size
        one = ws[0].cosign(cp.encode(), proof=[])
        policy = WitnessPolicy([w.verifier for w in ws], threshold=2)
        with pytest.raises(PolicyError, match=r"1 valid witness cosignatures .* requires 2 of 3"):
            policy.verify(one)
        assert UnsafeNoWitnessPolicy().verify(one) == []
        # recorded in the log: the audit with 2-of-3 rejects the view with 1 cosignature
        mine = next(s for s in one.signatures if s.key_id == ws[0].verifier.key_id)
        assert log.add_cosignature(mine, witness=ws[0].verifier, tree_size=size)
        assert not log.add_cosignature(mine, witness=ws[0].verifier, tree_size=size)
    report = run_audit(built.path, witness_policy=policy, workers=1)
    assert [d.kind for d in report.discrepancies] == ["witness-quorum"]
    # a second witness cosigns: 2 of 3 satisfied
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key, **QUIET) as log:
        cp = log.checkpoint(size)
        assert cp is not None
        two = ws[1].cosign(cp.encode(), proof=[])
        sig = next(s for s in two.signatures if s.key_id == ws[1].verifier.key_id)
        log.add_cosignature(sig, witness=ws[1].verifier, tree_size=size)
        cp = log.checkpoint(size)
        assert cp is not None
        # a forged cosignature line from the third witness does not count
        forged = CosignatureV1Signer(ws[2].verifier.name, Ed25519PrivateKey.generate())
        fake = forged.cosign(cp.note.text, 5)
        fake = type(fake)(name=fake.name, key_id=ws[2].verifier.key_id, signature=fake.signature)
        got = policy.verify(parse_note(cp.note.encode() + fake.line()))
        assert {w.name for w in got} == {ws[0].verifier.name, ws[1].verifier.name}
    report = run_audit(built.path, witness_policy=policy, workers=1)
    assert report.ok, report.discrepancies
    assert len(report.witnesses) == 2
    with pytest.raises(PolicyError):
        WitnessPolicy([ws[0].verifier], threshold=2)
    for w in ws:
        w.close()


def test_cosigned_message_format() -> None:
    msg = cosigned_message("example.com/log\n3\nAAAA\n", 1679315147)
    assert msg == b"cosignature/v1\ntime 1679315147\nexample.com/log\n3\nAAAA\n"


def test_cli_witness_flow_and_quorum(tmp_path: Path) -> None:
    built = build_ledger(tmp_path / "l.db", n_wus=2)
    runner = CliRunner()
    vkeys = []
    for i in range(3):
        res = runner.invoke(
            app,
            [
                "witness",
                "init",
                "--db",
                str(tmp_path / f"w{i}.db"),
                "--key",
                str(tmp_path / f"w{i}.key"),
                "--name",
                f"witness.test/w{i}",
            ],
        )
        assert res.exit_code == 0, res.output
        vkeys.append(res.output.strip())
    with Log.open_readonly(built.path) as log:
        assert log.verifier is not None
        log_vkey = log.verifier.vkey
    for i in range(2):
        args = ["--db", str(tmp_path / f"w{i}.db"), "--key", str(tmp_path / f"w{i}.key")]
        res = runner.invoke(app, ["witness", "add-log", *args, log_vkey])
        assert res.exit_code == 0, res.output
    cosign0 = [
        "witness",
        "cosign",
        "--db",
        str(tmp_path / "w0.db"),
        "--key",
        str(tmp_path / "w0.key"),
        "--log",
        str(built.path),
    ]
    res = runner.invoke(app, cosign0)
    assert res.exit_code == 0, res.output
    audit_args = [
        "audit",
        str(built.path),
        "--workers",
        "1",
        "--log-key",
        log_vkey,
        *[arg for v in vkeys for arg in ("--witness-key", v)],
        "--min-witnesses",
        "2",
    ]
    res = runner.invoke(app, audit_args)
    assert res.exit_code == 1 and "witness-quorum" in res.output
    res = runner.invoke(
        app,
        [
            "witness",
            "cosign",
            "--db",
            str(tmp_path / "w1.db"),
            "--key",
            str(tmp_path / "w1.key"),
            "--log",
            str(built.path),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, audit_args)
    assert res.exit_code == 0, res.output
    # a witness that does not follow the log refuses, without a traceback
    res = runner.invoke(
        app,
        [
            "witness",
            "cosign",
            "--db",
            str(tmp_path / "w2.db"),
            "--key",
            str(tmp_path / "w2.key"),
            "--log",
            str(built.path),
        ],
    )
    assert res.exit_code == 2 and "add-log" in res.output and "Traceback" not in res.output
