"""``foldnet verify-results``: passes on an honest bundle, and names what is wrong in one that
was changed: a frame, a swapped trajectory, a missing WU, an entry not in the log, a
checkpoint with a bad signature."""

from __future__ import annotations

import base64
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_foldnet
from results_helpers import compute_in_folder

from coordinator.errors import (
    BadCheckpointSignatureError,
    DataMismatchError,
    EntryNotInLogError,
    FrameMismatchError,
    ObservableMismatchError,
    TrajectorySwappedError,
    WUMissingError,
)
from coordinator.lab import CoordinatorView
from coordinator.plan import JobPlan
from coordinator.provenance import verify_results
from coordinator.trajfiles import read_xtc
from ledger import entries as le
from ledger.keys import generate_private_key
from ledger.log import Log
from ledger.note import Ed25519NoteSigner
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
