"""``foldnet verify-results``: passes on an honest bundle, and names what is wrong in one that
was changed: a frame, a swapped trajectory, a missing WU, an entry not in the log, a
checkpoint with a bad signature."""

from __future__ import annotations

import base64
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_foldnet
from results_helpers import compute_in_folder

from coordinator.errors import (
    BadCheckpointSignatureError,
    BadCosignatureError,
    DataMismatchError,
    EntryNotInLogError,
    FrameMismatchError,
    ObservableMismatchError,
    TrajectorySwappedError,
    UsageError,
    WitnessQuorumError,
    WUMissingError,
)
from coordinator.lab import CoordinatorView
from coordinator.plan import JobPlan
from coordinator.provenance import verify_results
from coordinator.trajfiles import read_xtc
from ledger import entries as le
from ledger.cosignature import CosignatureV1Signer
from ledger.keys import generate_private_key, load_private_key
from ledger.log import Log
from ledger.note import Ed25519NoteSigner
from ledger.witness import Witness
from sims.examples import VILLIN_PDB

GO = dict(
    engine="go", pdb=VILLIN_PDB.read_text(), source="villin", runs=1, clones=2, gens=2,
    steps_per_wu=2000, segment_steps=500, report_steps=500, temperature=0.8,
)  # fmt: skip


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> tuple[Path, str]:
    """An honest results folder, and the coordinator's log key."""
    root = tmp_path_factory.mktemp("honest")
    job = compute_in_folder(root / "coord", JobPlan.create(**GO))
    view = CoordinatorView(root / "coord")
    try:
        view.write_results(job, root / "out")
    finally:
        view.close()
    with Log.open_readonly(root / "coord" / "ledger.db") as log:
        assert log.verifier is not None
        vkey = log.verifier.vkey
    return root / "out", vkey


@pytest.fixture
def bundle(honest, tmp_path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(honest[0], out)
    return out


def _rewrite_xtc(path: Path, change) -> None:
    import mdtraj

    xyz = read_xtc(path.read_bytes())
    change(xyz)
    top = mdtraj.load_pdb(str(path.parent / "topology.pdb")).topology
    mdtraj.Trajectory(xyz, top).save_xtc(str(path), force_overwrite=True)


def _provenance(bundle: Path) -> dict:
    return json.loads((bundle / "provenance" / "provenance.json").read_text())


def _save(bundle: Path, doc: dict) -> None:
    (bundle / "provenance" / "provenance.json").write_text(json.dumps(doc))


def test_an_honest_bundle_passes_with_and_without_the_pinned_key(honest, tmp_path):
    out, vkey = honest
    report = verify_results(out, log_key=vkey)
    assert report.trust == f"log key given with --log-key: {vkey}"
    assert any("XTC" in line for line in report.checked)
    assert any("plot_run0_clone0.png" in line for line in report.not_checked)
    # the same bundle as a zip, as the HTTP service serves it
    zipped = tmp_path / "r.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for p in sorted(out.rglob("*")):
            if p.is_file():
                zf.write(p, str(p.relative_to(out)))
    assert verify_results(zipped).checked == report.checked


def test_the_command_line_says_what_it_checked_and_exits_by_kind(honest, bundle, tmp_path):
    out, vkey = honest
    key_file = tmp_path / "log.vkey"
    key_file.write_text(vkey + "\n")
    ok = run_foldnet("verify-results", str(out), "--log-key", str(key_file), home=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASSED against the pinned log key" in ok.stdout and "inclusion proof" in ok.stdout
    alone = run_foldnet("verify-results", str(out), home=tmp_path)
    assert alone.returncode == 0 and "self-consistent only" in alone.stdout, alone.stdout
    _rewrite_xtc(bundle / "trajectory_run0_clone1.xtc", lambda xyz: xyz[5].__iadd__(0.05))
    bad = run_foldnet("verify-results", str(bundle), home=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "frame_mismatch" in bad.stdout and "frame 5" in bad.stdout
    missing = run_foldnet("verify-results", str(tmp_path / "nothing"), home=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in bad.stdout + bad.stderr + missing.stderr


def test_a_changed_frame_in_the_xtc_is_named(bundle):
    def move(xyz: np.ndarray) -> None:
        xyz[6, 7, 0] += 0.1  # nm: one C-alpha of frame 6

    _rewrite_xtc(bundle / "trajectory_run0_clone0.xtc", move)
    with pytest.raises(FrameMismatchError, match=r"run0_clone0.xtc: frame 6 .* atom 7"):
        verify_results(bundle)


def test_a_changed_frame_in_the_full_precision_data_is_named(bundle):
    path = bundle / "provenance" / "wu_run0_clone1_gen1.npz"
    with np.load(path) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    arrays["frames"][2, 3, 1] += np.float32(1e-4)  # below XTC's precision, not the digest's
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    with pytest.raises(DataMismatchError, match=r"run 0 clone 1 gen 1 .*frames_digest"):
        verify_results(bundle)


def test_a_changed_observable_is_named(bundle):
    path = bundle / "observables_run0_clone0.csv"
    rows = path.read_text().splitlines()
    cells = rows[3].split(",")
    cells[2] = "0.99"  # Q
    rows[3] = ",".join(cells)
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ObservableMismatchError, match=r"row 3 .*q is 0\.99"):
        verify_results(bundle)


def test_a_trajectory_swapped_with_another_is_named(bundle):
    a, b = bundle / "trajectory_run0_clone0.xtc", bundle / "trajectory_run0_clone1.xtc"
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)
    with pytest.raises(TrajectorySwappedError, match=r"run0_clone0.xtc holds the frames of .*"):
        verify_results(bundle)


def test_a_missing_wu_is_named(bundle):
    doc = _provenance(bundle)
    doc["wus"] = [w for w in doc["wus"] if (w["clone"], w["gen"]) != (1, 0)]
    _save(bundle, doc)
    (bundle / "provenance" / "wu_run0_clone1_gen0.npz").unlink()
    with pytest.raises(WUMissingError, match="run 0 clone 1: generation 0 has no WU"):
        verify_results(bundle)


def test_a_missing_last_generation_is_named(bundle):
    doc = _provenance(bundle)
    doc["wus"] = [w for w in doc["wus"] if (w["clone"], w["gen"]) != (0, 1)]
    _save(bundle, doc)
    with pytest.raises(WUMissingError, match=r"summary\.json says 2 generations"):
        verify_results(bundle)


def test_an_entry_not_in_the_log_is_named(bundle):
    """The operator (or anyone) restates a result as validated at another time: the entry
    is well formed and its attestations verify, but the log never held it."""
    doc = _provenance(bundle)
    w = doc["wus"][1]
    record = le.decode_record(bytes.fromhex(w["entry"]))
    forged = le.Record(timestamp_ms=record.timestamp_ms + 1, entry=record.entry)
    w["entry"] = forged.encode().hex()
    _save(bundle, doc)
    with pytest.raises(EntryNotInLogError, match=r"run 0 clone 0 gen 1 .*ledger index \d+"):
        verify_results(bundle)


def test_a_checkpoint_with_a_bad_signature_is_named(honest, bundle):
    path = bundle / "provenance" / "checkpoint.txt"
    text, sig_line = path.read_text().rsplit("\n", 2)[:2]
    name, blob = sig_line.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 0x01  # one bit of the Ed25519 signature
    path.write_text(f"{text}\n{name} {base64.b64encode(bytes(raw)).decode()}\n")
    with pytest.raises(BadCheckpointSignatureError, match="does not verify under the log key"):
        verify_results(bundle, log_key=honest[1])
    with pytest.raises(BadCheckpointSignatureError):
        verify_results(bundle)  # under the bundle's own key too


def test_a_bundle_re_signed_by_another_key_passes_alone_but_not_against_the_pinned_key(
    honest, bundle
):
    """What trusting the key inside the bundle means: a forger with a key of their own can
    make the bundle self-consistent; only the pinned key tells."""
    origin = honest[1].split("+")[0]
    forger = Ed25519NoteSigner(origin, generate_private_key())
    path = bundle / "provenance" / "checkpoint.txt"
    body = path.read_text().split("\n\n")[0] + "\n"
    path.write_text(body + "\n" + forger.sign(body).line())
    (bundle / "provenance" / "log.vkey").write_text(forger.verifier.vkey + "\n")
    assert verify_results(bundle).checked  # self-consistent
    with pytest.raises(BadCheckpointSignatureError):
        verify_results(bundle, log_key=honest[1])


# -- witness cosignatures ----------------------------------------------------------------

QUIET = {"checkpoint_every": 10**6, "checkpoint_interval_s": 1e9}


def _witness(root: Path, n: int) -> Witness:
    return Witness.open(
        root / f"w{n}.db",
        name=f"witness.test/w{n}",
        signing_key=generate_private_key(),
        clock=lambda: 1_700_000_000 + n,
    )


@dataclass(frozen=True, slots=True)
class Witnessed:
    out: Path  # results written after two witnesses cosigned the covering checkpoint
    log_vkey: str
    keys: tuple[str, str, str]  # w1, w2 cosigned; w3 follows the log but did not
    later: str  # w1's cosignature line over a later checkpoint of the same log


@pytest.fixture(scope="module")
def witnessed(honest, tmp_path_factory) -> Witnessed:
    """The end-to-end path: real witnesses cosign the coordinator's latest checkpoint (as
    ``foldnet witness cosign --log`` does: Witness.cosign, then Log.add_cosignature), and the
    folder's results writer carries their cosignatures into the bundle."""
    coord = honest[0].parent / "coord"
    root = tmp_path_factory.mktemp("witnesses")
    ws = [_witness(root, n) for n in (1, 2, 3)]
    key = load_private_key(coord / "ledger.key")
    opened = {"origin": honest[1].split("+")[0], "signing_key": key, **QUIET}
    with Log.open(coord / "ledger.db", **opened) as log:
        assert log.verifier is not None
        cp = log.checkpoint()
        assert cp is not None
        for w in ws:
            w.add_log(log.verifier.vkey)
        for w in ws[:2]:
            note = w.cosign(cp.encode(), proof=[])
            mine = next(s for s in note.signatures if s.key_id == w.verifier.key_id)
            assert log.add_cosignature(mine, witness=w.verifier, tree_size=cp.checkpoint.size)
    view = CoordinatorView(coord)
    try:
        [job] = list(view.scheduler.jobs)
        view.write_results(job, root / "out")
    finally:
        view.close()
    with Log.open(coord / "ledger.db", **opened) as log:
        log.append(le.VolunteerRegistered(volunteer_key=b"\x42" * 32))
        later = log.publish_checkpoint()
        note = ws[0].cosign(
            later.encode(),
            proof=log.consistency_proof(cp.checkpoint.size, later.checkpoint.size),
        )
        line = next(s for s in note.signatures if s.key_id == ws[0].verifier.key_id).line()
    keys = tuple(w.verifier.vkey for w in ws)
    for w in ws:
        w.close()
    return Witnessed(root / "out", honest[1], keys, line)  # type: ignore[arg-type]


def _checkpoint_lines(bundle: Path) -> tuple[str, list[str]]:
    body, sigs = (bundle / "provenance" / "checkpoint.txt").read_text().split("\n\n")
    return body + "\n", sigs.splitlines(keepends=True)


def _replace_cosignature(bundle: Path, name: str, line: str) -> None:
    body, sigs = _checkpoint_lines(bundle)
    sigs = [line if s.startswith(f"\u2014 {name} ") else s for s in sigs]
    (bundle / "provenance" / "checkpoint.txt").write_text(body + "\n" + "".join(sigs))


@pytest.fixture
def cosigned(witnessed, tmp_path) -> Path:
    out = tmp_path / "cosigned"
    shutil.copytree(witnessed.out, out)
    return out


def test_the_results_writer_carries_the_witnesses_cosignatures(witnessed):
    _, sigs = _checkpoint_lines(witnessed.out)
    assert [s.split(" ")[1] for s in sigs] == [
        witnessed.log_vkey.split("+")[0],
        "witness.test/w1",
        "witness.test/w2",
    ]


def test_an_honest_cosigned_bundle_passes_with_the_witness_keys(witnessed):
    w1, w2, _ = witnessed.keys
    report = verify_results(witnessed.out, log_key=witnessed.log_vkey, witness_keys=[w1, w2])
    assert report.witnesses == ("witness.test/w1", "witness.test/w2")
    assert report.witness_threshold == 2
    line = next(c for c in report.checked if c.startswith("witness cosignatures"))
    assert "2 of the 2 named witnesses" in line and "2023-11-14 22:13:21 UTC" in line, line
    # one named of the two: it is enough, the other is reported as ignored
    one = verify_results(witnessed.out, log_key=witnessed.log_vkey, witness_keys=[w2])
    assert one.witnesses == ("witness.test/w2",)
    assert any(
        "not named with --witness-key (ignored): witness.test/w1" in n for n in one.not_checked
    )
    # none named: present, and said to be unchecked
    alone = verify_results(witnessed.out, log_key=witnessed.log_vkey)
    assert alone.witness_threshold == 0
    assert any(
        "2 on the checkpoint" in n and "present but unchecked" in n and "witness.test/w2" in n
        for n in alone.not_checked
    ), alone.not_checked


def test_a_bundle_without_cosignatures_says_there_are_none(honest):
    report = verify_results(honest[0], log_key=honest[1])
    assert any("carries none" in n for n in report.not_checked), report.not_checked


def test_a_forged_cosignature_is_named(witnessed, cosigned):
    _, sigs = _checkpoint_lines(cosigned)
    line = next(s for s in sigs if " witness.test/w1 " in s)
    name, blob = line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 0x01  # one bit of the Ed25519 signature
    _replace_cosignature(cosigned, "witness.test/w1", f"{name} {base64.b64encode(raw).decode()}\n")
    with pytest.raises(BadCosignatureError, match=r"witness witness\.test/w1 \(.*does not verify"):
        verify_results(cosigned, log_key=witnessed.log_vkey, witness_keys=witnessed.keys[:2])
    # not counted toward a threshold the other witness meets either: the bundle is false
    with pytest.raises(BadCosignatureError):
        verify_results(
            cosigned,
            log_key=witnessed.log_vkey,
            witness_keys=witnessed.keys[:2],
            witness_threshold=1,
        )
    # unchecked without the witness's key, and said so
    report = verify_results(cosigned, log_key=witnessed.log_vkey)
    assert any("present but unchecked" in n for n in report.not_checked)
    # a bad line is a finding even beside the witness's good one
    good = next(s for s in sigs if " witness.test/w1 " in s)
    body, now = _checkpoint_lines(cosigned)
    (cosigned / "provenance" / "checkpoint.txt").write_text(body + "\n" + "".join([*now, good]))
    with pytest.raises(BadCosignatureError, match=r"witness witness\.test/w1 "):
        verify_results(cosigned, log_key=witnessed.log_vkey, witness_keys=witnessed.keys[:2])


def test_a_cosignature_over_another_checkpoint_is_named(witnessed, cosigned):
    """A real cosignature by the same witness, of a later checkpoint of the same log."""
    _replace_cosignature(cosigned, "witness.test/w1", witnessed.later)
    with pytest.raises(BadCosignatureError, match="made for another checkpoint"):
        verify_results(cosigned, log_key=witnessed.log_vkey, witness_keys=witnessed.keys[:2])


def test_a_cosignature_by_an_unnamed_key_does_not_count(witnessed, cosigned):
    """A line under witness w1's name but signed by another key (its key id differs): it is
    not w1's, so w1 did not cosign, and the threshold of all named witnesses is not met."""
    impostor = CosignatureV1Signer("witness.test/w1", generate_private_key())
    body, _ = _checkpoint_lines(cosigned)
    _replace_cosignature(cosigned, "witness.test/w1", impostor.cosign(body, 1_700_000_001).line())
    with pytest.raises(
        WitnessQuorumError,
        match=r"1 valid .* requires 2 of 2; no cosignature from witness\.test/w1; cosignatures "
        r"by keys not named with --witness-key do not count: "
        rf"witness\.test/w1 \({impostor.key_id.hex()}\)",
    ):
        verify_results(cosigned, log_key=witnessed.log_vkey, witness_keys=witnessed.keys[:2])


def test_a_threshold_not_met_is_named(witnessed):
    everyone = list(witnessed.keys)  # w3 follows the log but never cosigned
    with pytest.raises(
        WitnessQuorumError, match=r"requires 3 of 3; no cosignature from witness\.test/w3\."
    ):
        verify_results(witnessed.out, log_key=witnessed.log_vkey, witness_keys=everyone)
    ok = verify_results(
        witnessed.out, log_key=witnessed.log_vkey, witness_keys=everyone, witness_threshold=2
    )
    assert ok.witnesses == ("witness.test/w1", "witness.test/w2") and ok.witness_threshold == 2
    with pytest.raises(WitnessQuorumError, match=r"0 valid .*requires 1 of 1"):
        verify_results(witnessed.out, witness_keys=[witnessed.keys[2]])


def test_a_witness_policy_that_cannot_be_used_is_a_usage_error(witnessed):
    w1, w2, _ = witnessed.keys
    with pytest.raises(UsageError, match="needs the witnesses' keys"):
        verify_results(witnessed.out, witness_threshold=1)
    with pytest.raises(UsageError, match=r"between 1 and the 2 witnesses, got 3"):
        verify_results(witnessed.out, witness_keys=[w1, w2], witness_threshold=3)
    with pytest.raises(UsageError, match="is a log key"):
        verify_results(witnessed.out, witness_keys=[witnessed.log_vkey])
    with pytest.raises(UsageError, match="listed twice"):
        verify_results(witnessed.out, witness_keys=[w1, w1])


def test_the_command_line_takes_witness_keys_and_a_threshold(witnessed, tmp_path):
    w1, w2, w3 = witnessed.keys
    w1_file = tmp_path / "w1.vkey"
    w1_file.write_text(w1 + "\n")
    args = ["verify-results", str(witnessed.out), "--log-key", witnessed.log_vkey]
    ok = run_foldnet(*args, "--witness-key", str(w1_file), "--witness-key", w2, home=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "cosigned by 2 of the 2 named witnesses (threshold 2)" in ok.stdout, ok.stdout
    short = run_foldnet(*args, "--witness-key", w1, "--witness-key", w3, home=tmp_path)
    assert short.returncode == 1, short.stdout + short.stderr
    assert "witness_quorum" in short.stdout and "witness.test/w3" in short.stdout
    bad = run_foldnet(*args, "--witness-key", w1, "--witness-threshold", "2", home=tmp_path)
    assert bad.returncode == 2 and "between 1 and the 1 witnesses" in bad.stderr, bad.stderr
    plain = run_foldnet(*args, home=tmp_path)
    assert plain.returncode == 0 and "witness cosignatures unchecked" in plain.stdout
