"""Provenance a reviewer can check (DESIGN section 8): what a results bundle carries for every
WU it uses, and ``foldnet verify-results``, which checks it.

In ``provenance/`` of every bundle:

- ``checkpoint.txt``: the log's signed checkpoint (C2SP tlog-checkpoint signed note, witness
  cosignature lines included) that the proofs are against; ``log.vkey``: the key the log
  says it signs with (trusting it proves only that the bundle is self-consistent: pin the
  operator's key with ``--log-key``);
- ``wu_runR_cloneC_genG.npz``: the WU's frames, frame steps and observables exactly as its
  worker returned them, and its final state (positions and velocities, float64): the arrays
  whose digests the signed result header commits to (``numpy.load(allow_pickle=False)``);
- ``provenance.json``: per WU its id, the result header (canonical JSON) and the worker's
  signature, the ledger index of its ``result validated`` entry, the entry's bytes and an
  RFC 6962 inclusion proof against the checkpoint (``null`` when the entry came after it).

The verifier, in order, raises a named :class:`~coordinator.errors.ResultsVerificationError`
(exit 1) at the first thing that is false: the checkpoint's signature; the witness policy the
reader names (``--witness-key``, ``--witness-threshold``: a named witness's cosignature that
does not verify, or too few of them; without keys the cosignatures are reported unchecked);
per WU the inclusion
proof, the entry (a validated result of this WU and job, every attestation's signature by
its volunteer's key), the header (its digest attested in the entry, its signature) and the
data (recomputed digests against the header); per trajectory generations 0..k all present
and each starting from the state the one before ended in; then each file derived from the
data: XTC frames (to XTC's 0.001 nm), CSV values (exactly as ``%.6g`` of the signed ones),
final and best structures and the topology (to PDB's 0.001 A).
"""

from __future__ import annotations

import io
import itertools
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coordinator.bundle import (
    Contribution,
    FileSource,
    Results,
    csv_name,
    final_name,
    xtc_name,
)
from coordinator.errors import (
    BadCheckpointSignatureError,
    BadCosignatureError,
    BundleIncompleteError,
    ChainBrokenError,
    CorruptionError,
    DataMismatchError,
    EntryNotInLogError,
    FrameMismatchError,
    NotAttestedError,
    NotCoveredError,
    ObservableMismatchError,
    StructureMismatchError,
    TrajectorySwappedError,
    UsageError,
    WitnessQuorumError,
    WUMissingError,
)
from coordinator.trajfiles import XTC_PRECISION_NM, nm_per_unit, pdb_positions, read_xtc
from ledger import entries as le
from ledger.checkpoint import SignedCheckpoint, open_checkpoint
from ledger.cosignature import cosignature_timestamp
from ledger.errors import EntryFormatError, LedgerError, ProofError
from ledger.keys import parse_log_vkey
from ledger.log import Log
from ledger.merkle import leaf_hash, verify_inclusion
from ledger.note import NoteSignature
from ledger.witness import WitnessPolicy
from sims.errors import StateError
from sims.state import state_digest
from worker.errors import WireError
from worker.result import ResultHeader, arrays_digest
from worker.wire import decode_header

__all__ = [
    "Evidence",
    "LedgerProof",
    "VerifyReport",
    "gather_evidence",
    "provenance_source",
    "read_bundle",
    "result_indices",
    "verify_results",
]

FORMAT = "foldnet-provenance/1"
DIR = "provenance"
#: What a PDB keeps of a coordinate (three decimals of Angstrom), with float slack.
PDB_PRECISION_A = 1e-3


def data_name(run: int, clone: int, gen: int) -> str:
    return f"{DIR}/wu_run{run}_clone{clone}_gen{gen}.npz"


# -- gathering, on the coordinator's side ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerProof:
    """A WU's ``result validated`` entry: its index, its bytes and its inclusion proof at the
    checkpoint (None when the entry came after it)."""

    index: int
    entry: bytes
    proof: tuple[bytes, ...] | None


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the ledger says of a job's WUs, against one signed checkpoint."""

    origin: str
    log_vkey: str
    checkpoint: str | None  # the signed note, cosignatures included
    tree_size: int
    proofs: Mapping[bytes, LedgerProof]  # by WU id

    def uncovered(self, wu_ids: Iterable[bytes]) -> list[bytes]:
        """WUs whose entry no signed checkpoint covers yet (or that have no entry)."""
        return [w for w in wu_ids if (p := self.proofs.get(w)) is None or p.proof is None]


def result_indices(
    log: Log, start: int = 0, into: dict[bytes, int] | None = None
) -> dict[bytes, int]:
    """WU id -> ledger index of its ``result validated`` entry, for entries from ``start``."""
    out = {} if into is None else into
    for idx, _leaf, data in log.store.iter_entries(start, log.size):
        if data[0] == le.ResultValidated.TYPE:
            entry = le.decode_record(data).entry
            if isinstance(entry, le.ResultValidated):
                out[entry.wu_id] = idx
    return out


def gather_evidence(
    log: Log, wu_ids: Iterable[bytes], indices: Mapping[bytes, int], cp: SignedCheckpoint | None
) -> Evidence:
    """The entries of ``wu_ids`` and their inclusion proofs against ``cp`` (read-only)."""
    size = 0 if cp is None else cp.checkpoint.size
    proofs = {}
    for wu in wu_ids:
        idx = indices.get(wu)
        if idx is None:
            continue
        proof = tuple(log.inclusion_proof(idx, size)) if idx < size else None
        proofs[wu] = LedgerProof(idx, log.entry(idx), proof)
    vkey = "" if log.verifier is None else log.verifier.vkey
    return Evidence(log.origin, vkey, None if cp is None else cp.encode(), size, proofs)


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def provenance_source(evidence: Evidence) -> FileSource:
    """The bundle's ``provenance/`` files: a source for :func:`~coordinator.bundle.build_bundle`."""

    def source(results: Results) -> Contribution:
        files: dict[str, bytes] = {}
        records = []
        for t in results.trajectories:
            for g in t.generations:
                name = data_name(t.run, t.clone, g.gen)
                arrays = {
                    "frames": g.frames,
                    "steps": g.steps,
                    "final_positions": g.final_positions,
                    "final_velocities": g.final_velocities,
                } | {f"obs_{k}": np.asarray(v) for k, v in g.observables.items()}
                parent = None
                if g.seeded is not None:  # an adaptive start: both states, at full precision
                    sd = g.seeded
                    arrays |= {
                        "start_positions": sd.start_positions,
                        "start_velocities": sd.start_velocities,
                        "parent_positions": sd.parent_positions,
                        "parent_velocities": sd.parent_velocities,
                    }
                    parent = {"wu_id": sd.wu_id.hex(), "boundary": sd.boundary}
                files[name] = _npz(arrays)
                p = evidence.proofs.get(g.wu_id)
                records.append(
                    {
                        "parent": parent,
                        "run": t.run,
                        "clone": t.clone,
                        "gen": g.gen,
                        "wu_id": g.wu_id.hex(),
                        "data": name,
                        "header": g.header.canonical().decode(),
                        "signature": g.signature.hex(),
                        "ledger_index": None if p is None else p.index,
                        "entry": None if p is None else p.entry.hex(),
                        "inclusion_proof": None
                        if p is None or p.proof is None
                        else [h.hex() for h in p.proof],
                    }
                )
        uncovered = sum(1 for r in records if r["inclusion_proof"] is None)
        doc = {
            "format": FORMAT,
            "job": results.info.job,
            "engine": results.info.engine,
            "origin": evidence.origin,
            "tree_size": evidence.tree_size,
            "uncovered": uncovered,
            "wus": records,
        }
        files[f"{DIR}/provenance.json"] = json.dumps(doc, indent=1).encode()
        if evidence.checkpoint is not None:
            files[f"{DIR}/checkpoint.txt"] = evidence.checkpoint.encode()
        files[f"{DIR}/log.vkey"] = (evidence.log_vkey + "\n").encode()
        readme: list[tuple[str, str]] = [
            (
                f"{DIR}/wu_runR_cloneC_genG.npz",
                "one WU at full precision, exactly as its worker signed it: frames, steps,\n"
                "obs_* (observables), final_positions/final_velocities (numpy.load); for an\n"
                "adaptive start also start_* (its first state) and parent_* (the validated\n"
                "boundary state it came from)",
            ),
            (
                f"{DIR}/provenance.json",
                "per WU: the signed result header and signature, its ledger index, the\n"
                "'result validated' entry and its RFC 6962 inclusion proof",
            ),
            (
                f"{DIR}/checkpoint.txt",
                f"the ledger's signed checkpoint (size {evidence.tree_size}) the proofs are "
                "against,\nwith any witness cosignatures (verify them: foldnet verify-results "
                "RESULTS\n--witness-key VKEY)",
            ),
            (
                f"{DIR}/log.vkey",
                "the key the log says it signs with: pin the operator's own with\n"
                "foldnet verify-results RESULTS --log-key VKEY",
            ),
        ]
        if uncovered:
            readme.append(
                (
                    "NOTE",
                    f"{uncovered} WU(s) are not yet covered by a signed checkpoint: write the\n"
                    "results again once the coordinator has published one",
                )
            )
        summary = {"provenance": {"tree_size": evidence.tree_size, "uncovered": uncovered}}
        return Contribution(files=files, readme=tuple(readme), summary=summary)

    return source


# -- verifying -------------------------------------------------------------------------------


@dataclass(slots=True)
class VerifyReport:
    """What ``verify-results`` checked (each line a check that passed) and what it did not."""

    checked: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    trust: str = ""
    witnesses: tuple[str, ...] = ()  # named witnesses whose cosignature verified
    witness_threshold: int = 0  # 0: no witness policy was given


def read_bundle(path: Path) -> dict[str, bytes]:
    """Every file of a results folder or zip, by its name inside the bundle."""
    if path.is_dir():
        return {
            str(p.relative_to(path)): p.read_bytes()
            for p in sorted(path.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                return {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
        except zipfile.BadZipFile as e:
            raise UsageError(f"{path} is neither a results folder nor a zip: {e}") from e
    raise UsageError(f"{path} does not exist: expected a results folder or zip")


def _need(files: Mapping[str, bytes], name: str) -> bytes:
    data = files.get(name)
    if data is None:
        raise BundleIncompleteError(
            f"the bundle has no {name}: expected the files foldnet results writes "
            "(write or download them again)"
        )
    return data


@dataclass(frozen=True, slots=True)
class _WU:
    run: int
    clone: int
    gen: int
    wu_id: bytes
    header: ResultHeader
    signature: bytes
    index: int | None
    entry: bytes | None
    proof: tuple[bytes, ...] | None
    data: str
    parent: tuple[bytes, int] | None = None  # an adaptive start: (WU id, boundary)

    @property
    def where(self) -> str:
        return f"run {self.run} clone {self.clone} gen {self.gen} (WU {self.wu_id.hex()[:16]})"


def _records(doc: Mapping[str, Any]) -> list[_WU]:
    out = []
    try:
        for r in doc["wus"]:
            raw = r["header"].encode()
            header = decode_header(raw)
            if header.canonical() != raw:
                raise BundleIncompleteError(
                    f"run {r['run']} clone {r['clone']} gen {r['gen']}: the header is not in "
                    "its canonical encoding, so its digest is not the signed one"
                )
            out.append(
                _WU(
                    run=int(r["run"]),
                    clone=int(r["clone"]),
                    gen=int(r["gen"]),
                    wu_id=bytes.fromhex(r["wu_id"]),
                    header=header,
                    signature=bytes.fromhex(r["signature"]),
                    index=None if r["ledger_index"] is None else int(r["ledger_index"]),
                    entry=None if r["entry"] is None else bytes.fromhex(r["entry"]),
                    proof=None
                    if r["inclusion_proof"] is None
                    else tuple(bytes.fromhex(h) for h in r["inclusion_proof"]),
                    data=str(r["data"]),
                    parent=None
                    if r.get("parent") is None
                    else (bytes.fromhex(r["parent"]["wu_id"]), int(r["parent"]["boundary"])),
                )
            )
    except (KeyError, TypeError, ValueError, WireError) as e:
        raise BundleIncompleteError(
            f"{DIR}/provenance.json is malformed ({type(e).__name__}: {e}): expected the "
            "records foldnet results writes"
        ) from e
    return out


def verify_checkpoint(note: str, vkey: str) -> SignedCheckpoint:
    """The checkpoint, if its log signature verifies under ``vkey``."""
    try:
        verifier = parse_log_vkey(vkey)
    except LedgerError as e:
        raise UsageError(f"log key: {e}") from e
    try:
        return open_checkpoint(note, log_verifier=verifier)
    except LedgerError as e:
        raise BadCheckpointSignatureError(
            f"{DIR}/checkpoint.txt does not verify under the log key {verifier.vkey}: {e}. "
            "The checkpoint was altered, or is another log's: nothing in the bundle can be "
            "trusted"
        ) from e


def _who(sigs: Iterable[NoteSignature]) -> str:
    return ", ".join(f"{s.name} ({s.key_id.hex()})" for s in sigs)


def verify_witnesses(
    cp: SignedCheckpoint,
    log_vkey: str,
    witness_keys: Sequence[str],
    threshold: int | None,
    report: VerifyReport,
) -> None:
    """The checkpoint's witness cosignatures under the policy the reader names: at least
    ``threshold`` (default: all) of ``witness_keys`` cosigned this very checkpoint. It is
    what shows that the log showed others the same history (a witness cosigns only
    extensions of what it cosigned before: DESIGN section 8), so a forked view needs the
    witnesses' collusion. Without ``witness_keys`` the cosignatures are only counted, and
    the report says so. Verification is :meth:`ledger.witness.WitnessPolicy.check`'s, the
    audit's own."""
    log = parse_log_vkey(log_vkey)  # verify_checkpoint parsed it already
    cosigs = [s for s in cp.note.signatures if (s.name, s.key_id) != (log.name, log.key_id)]
    where = (
        f"{DIR}/checkpoint.txt (size {cp.checkpoint.size}, root "
        f"{cp.checkpoint.root_hash.hex()[:16]})"
    )
    if not witness_keys:
        if threshold is not None:
            raise UsageError(
                f"--witness-threshold {threshold} needs the witnesses' keys: give "
                "--witness-key VKEY for each witness you trust"
            )
        report.not_checked.append(
            f"witness cosignatures: {len(cosigs)} on the checkpoint ({_who(cosigs)}), present "
            "but unchecked: name the witnesses you trust with --witness-key VKEY"
            if cosigs
            else "witness cosignatures: the checkpoint carries none, so nothing shows that "
            "the log showed others this same history"
        )
        return
    try:
        policy = WitnessPolicy.from_vkeys(witness_keys, threshold=threshold)
    except LedgerError as e:
        raise UsageError(f"--witness-key / --witness-threshold: {e}") from e
    check = policy.check(cp.note)
    if check.invalid:
        w = check.invalid[0]
        raise BadCosignatureError(
            f"{where}: the cosignature of witness {w.name} ({w.key_id.hex()}) does not verify "
            "over this checkpoint: it was altered, forged, or made for another checkpoint. "
            "What the bundle says that witness saw is false"
        )
    unnamed = [s for s in check.unnamed if s in cosigs]
    if not check.met:
        missing = [w.name for w in policy.witnesses if w not in check.valid]
        raise WitnessQuorumError(
            f"{where}: {check.shortfall()}; no cosignature from {', '.join(missing)}"
            + (
                f"; cosignatures by keys not named with --witness-key do not count: {_who(unnamed)}"
                if unnamed
                else ""
            )
            + ". Ask the missing witnesses to cosign a checkpoint that covers the results, "
            "then write the results again (or lower --witness-threshold if fewer will do)"
        )
    when = {
        (s.name, s.key_id): datetime.fromtimestamp(cosignature_timestamp(s.signature), UTC)
        for s in cosigs
        if any((s.name, s.key_id) == (w.name, w.key_id) for w in check.valid)
    }
    report.witnesses = tuple(w.name for w in check.valid)
    report.witness_threshold = check.threshold
    report.checked.append(
        f"witness cosignatures: {len(check.valid)} of the {check.named} named witnesses "
        f"cosigned this checkpoint (threshold {check.threshold}): "
        + ", ".join(
            f"{w.name} at {when[(w.name, w.key_id)]:%Y-%m-%d %H:%M:%S} UTC" for w in check.valid
        )
    )
    if unnamed:
        report.not_checked.append(
            f"cosignatures by witnesses not named with --witness-key (ignored): {_who(unnamed)}"
        )


def verify_included(wu: _WU, cp: SignedCheckpoint) -> le.ResultValidated:
    """The WU's entry, if its inclusion proof leads to the checkpoint's root."""
    if wu.entry is None or wu.index is None:
        raise EntryNotInLogError(
            f"{wu.where}: the bundle names no ledger entry for it: expected its 'result "
            "validated' entry and inclusion proof"
        )
    if wu.proof is None:
        raise NotCoveredError(
            f"{wu.where}: its entry (ledger index {wu.index}) is after the checkpoint "
            f"(size {cp.checkpoint.size}), so nothing proves it is in the log; write the "
            "results again once the coordinator has published a newer checkpoint"
        )
    try:
        verify_inclusion(
            leaf_hash(wu.entry),
            wu.index,
            cp.checkpoint.size,
            list(wu.proof),
            cp.checkpoint.root_hash,
        )
    except ProofError as e:
        raise EntryNotInLogError(
            f"{wu.where}: its entry at ledger index {wu.index} is not in the log the "
            f"checkpoint (size {cp.checkpoint.size}) signs: {e}"
        ) from e
    try:
        entry = le.decode_record(wu.entry).entry
    except EntryFormatError as e:
        raise EntryNotInLogError(f"{wu.where}: its ledger entry does not decode: {e}") from e
    if not isinstance(entry, le.ResultValidated) or entry.wu_id != wu.wu_id:
        raise NotAttestedError(
            f"{wu.where}: ledger index {wu.index} is a {entry.KIND} entry"
            + (f" of WU {entry.wu_id.hex()[:16]}" if isinstance(entry, le.ResultValidated) else "")
            + ", not this WU's 'result validated'"
        )
    return entry


def verify_attested(wu: _WU, entry: le.ResultValidated, job: str) -> None:
    """The entry is of this job, its attestations are signed by their volunteers' keys, and
    one of them attests this very header, whose own signature verifies."""
    if entry.job_id.hex() != job:
        raise NotAttestedError(
            f"{wu.where}: the ledger entry is of job {entry.job_id.hex()[:16]}, not {job[:16]}"
        )
    for a in entry.attestations:
        try:
            Ed25519PublicKey.from_public_bytes(a.volunteer_key).verify(
                a.signature, a.message(entry.wu_id)
            )
        except (InvalidSignature, ValueError) as e:
            raise NotAttestedError(
                f"{wu.where}: the attestation of volunteer {a.volunteer_key.hex()[:16]} in "
                "the ledger entry does not verify under its key"
            ) from e
    h = wu.header
    if h.wu_id != wu.wu_id:
        raise NotAttestedError(f"{wu.where}: the result header is of WU {h.wu_id.hex()[:16]}")
    digest = h.digest()
    if not any(
        a.result_digest == digest and a.volunteer_key == h.worker_key for a in entry.attestations
    ):
        raise NotAttestedError(
            f"{wu.where}: no attestation in the ledger entry is of this result header "
            f"(digest {digest.hex()[:16]}): it is not the result the volunteers agreed on"
        )
    try:
        Ed25519PublicKey.from_public_bytes(h.worker_key).verify(wu.signature, h.message())
    except (InvalidSignature, ValueError) as e:
        raise NotAttestedError(f"{wu.where}: the result's signature does not verify") from e


@dataclass(frozen=True, slots=True)
class _Data:
    frames: np.ndarray
    steps: np.ndarray
    observables: dict[str, np.ndarray]
    final_positions: np.ndarray
    #: An adaptive start's states: (positions, velocities) it started in, and of its parent.
    start: tuple[np.ndarray, np.ndarray] | None = None
    parent: tuple[np.ndarray, np.ndarray] | None = None


def verify_data(wu: _WU, raw: bytes) -> _Data:
    """The WU's full-precision arrays, if their digests are the ones its header signs."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataMismatchError(f"{wu.data}: not a readable .npz ({e})") from e
    for name in ("frames", "steps", "final_positions", "final_velocities"):
        if name not in arrays:
            raise DataMismatchError(f"{wu.data}: no {name!r} array")
    frames, steps = arrays["frames"], arrays["steps"]
    h = wu.header
    if arrays_digest({"frames": frames, "steps": steps}) != h.frames_digest:
        raise DataMismatchError(
            f"{wu.data} ({wu.where}): the frames or their steps are not those the worker "
            "signed (their digest differs from the header's frames_digest)"
        )
    obs = {k[4:]: v for k, v in arrays.items() if k.startswith("obs_")}
    if arrays_digest(obs) != h.observables_digest:
        raise DataMismatchError(
            f"{wu.data} ({wu.where}): the observables are not those the worker signed"
        )
    try:
        final = state_digest(arrays["final_positions"], arrays["final_velocities"])
    except (StateError, ValueError, TypeError) as e:
        raise DataMismatchError(f"{wu.data}: the final state is not a state: {e}") from e
    if final != h.final_digest:
        raise DataMismatchError(
            f"{wu.data} ({wu.where}): the final state is not the one the worker signed"
        )
    start = parent = None
    if wu.parent is not None:
        need = ("start_positions", "start_velocities", "parent_positions", "parent_velocities")
        missing = [n for n in need if n not in arrays]
        if missing:
            raise DataMismatchError(f"{wu.data}: an adaptive start without {missing[0]!r}")
        start = (arrays["start_positions"], arrays["start_velocities"])
        parent = (arrays["parent_positions"], arrays["parent_velocities"])
    return _Data(frames, steps, obs, arrays["final_positions"], start, parent)


def verify_chains(
    wus: Sequence[_WU], summary: Mapping[str, Any]
) -> dict[tuple[int, int], list[_WU]]:
    """Each trajectory's generations are 0..k, each starts where the one before ended, and
    summary.json claims no generation the provenance lacks."""
    by: dict[tuple[int, int], list[_WU]] = {}
    for w in wus:
        by.setdefault((w.run, w.clone), []).append(w)
    claimed = {
        (int(t["run"]), int(t["clone"])): int(t["generations"])
        for t in summary.get("trajectories", [])
    }
    for key in sorted(set(claimed) - set(by)):
        raise WUMissingError(
            f"summary.json lists run {key[0]} clone {key[1]}, but the bundle carries none of "
            "its WUs"
        )
    for (run, clone), gens in sorted(by.items()):
        gens.sort(key=lambda w: w.gen)
        have = [w.gen for w in gens]
        if have != list(range(len(gens))):
            gap = next(i for i in range(len(have) + 1) if i not in have)
            raise WUMissingError(
                f"run {run} clone {clone}: generation {gap} has no WU in the bundle (it has "
                f"generations {have}); every frame must come from a WU it carries"
            )
        if claimed.get((run, clone), len(gens)) != len(gens):
            raise WUMissingError(
                f"run {run} clone {clone}: summary.json says {claimed[(run, clone)]} "
                f"generations, the bundle carries the WUs of {len(gens)}"
            )
        for before, after in itertools.pairwise(gens):
            if after.parent is not None:
                continue  # an adaptive start: verify_starts checks where it came from
            if after.header.boundary_digests[0] != before.header.final_digest:
                raise ChainBrokenError(
                    f"run {run} clone {clone}: generation {after.gen} does not start from the "
                    f"state generation {before.gen} ended in"
                )
    return by


def verify_starts(wus: Sequence[_WU], data: Mapping[bytes, _Data]) -> int:
    """Each adaptive start began from a validated boundary state the bundle carries: its
    parent WU is in the bundle (verified like every WU), the parent state is the one that WU's
    signed header has at that boundary, and the start state (the one this WU's header begins
    from) has the parent's positions exactly. Its velocities were redrawn from a seed (the
    policy's, coordinator/adaptive.py); recomputing them needs the engine, so they are
    bound here only by the signed digest. Returns how many starts were checked."""
    by_id = {w.wu_id: w for w in wus}
    n = 0
    for w in wus:
        if w.parent is None:
            continue
        parent_id, boundary = w.parent
        parent = by_id.get(parent_id)
        if parent is None:
            raise ChainBrokenError(
                f"{w.where} started from WU {parent_id.hex()[:16]}, which the bundle does not "
                "carry: nothing shows that state was validated"
            )
        start, origin = data[w.wu_id].start, data[w.wu_id].parent
        assert start is not None and origin is not None  # verify_data requires them
        digests = parent.header.boundary_digests
        if not 1 <= boundary < len(digests):
            raise ChainBrokenError(f"{w.where}: its parent has no boundary {boundary}")
        try:
            if state_digest(*origin) != digests[boundary]:
                raise ChainBrokenError(
                    f"{w.where}: the parent state in {w.data} is not the state {parent.where} "
                    f"signed at boundary {boundary}"
                )
            if state_digest(*start) != w.header.boundary_digests[0]:
                raise ChainBrokenError(
                    f"{w.where}: the start state in {w.data} is not the one its worker began from"
                )
        except (StateError, ValueError, TypeError) as e:
            raise DataMismatchError(f"{w.data}: an adaptive start is not a state: {e}") from e
        if not np.array_equal(start[0], origin[0]):
            raise ChainBrokenError(
                f"{w.where}: it did not start at the positions of {parent.where} boundary "
                f"{boundary}"
            )
        n += 1
    return n


def verify_xtc(
    name: str, raw: bytes, want_nm: np.ndarray, steps: np.ndarray, others: Mapping[str, np.ndarray]
) -> None:
    """An XTC holds the signed frames to its precision (else: which frame and atom, or whose
    trajectory's frames it holds instead)."""
    try:
        xyz = read_xtc(raw)
    except CorruptionError as e:
        raise FrameMismatchError(f"{name}: {e}") from e

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and bool(np.abs(a - b).max(initial=0.0) <= XTC_PRECISION_NM)

    if close(xyz, want_nm):
        return
    for other, frames in others.items():
        if other != name and close(xyz, frames):
            raise TrajectorySwappedError(
                f"{name} holds the frames of {other}: the files were swapped or renamed"
            )
    if xyz.shape != want_nm.shape:
        raise FrameMismatchError(
            f"{name}: {xyz.shape[0]} frames of {xyz.shape[1]} atoms; the signed WUs have "
            f"{want_nm.shape[0]} frames of {want_nm.shape[1]} atoms"
        )
    dev = np.abs(xyz - want_nm).max(axis=(1, 2))
    i = int(np.argmax(dev > XTC_PRECISION_NM))
    atom = int(np.abs(xyz[i] - want_nm[i]).max(axis=1).argmax())
    raise FrameMismatchError(
        f"{name}: frame {i} (step {int(steps[i])}) differs from the signed frame by "
        f"{dev[i]:.4f} nm at atom {atom}; XTC keeps {XTC_PRECISION_NM} nm"
    )


def verify_csv(
    name: str, raw: bytes, steps: np.ndarray, obs: Mapping[str, np.ndarray]
) -> list[str]:
    """The CSV's step and signed columns are the signed values (as ``%.6g``); returns the
    other (derived, unsigned) columns."""
    lines = raw.decode("utf-8", "replace").splitlines()
    if not lines:
        raise ObservableMismatchError(f"{name} is empty")
    head = lines[0].split(",")
    names = sorted(obs)
    if head[: 1 + len(names)] != ["step", *names]:
        raise ObservableMismatchError(
            f"{name}: columns {head}; expected step, then the signed observables {names}"
        )
    if len(lines) - 1 != len(steps):
        raise ObservableMismatchError(
            f"{name}: {len(lines) - 1} rows; the signed WUs have {len(steps)} frames"
        )
    for i, line in enumerate(lines[1:]):
        got = line.split(",")[: 1 + len(names)]
        want = [str(int(steps[i])), *(f"{obs[n][i]:.6g}" for n in names)]
        if got != want:
            col = next(j for j in range(len(want)) if j >= len(got) or got[j] != want[j])
            column = "step" if col == 0 else names[col - 1]
            raise ObservableMismatchError(
                f"{name}: row {i + 1} (frame {i}), {column} is "
                f"{got[col] if col < len(got) else 'missing'}; the signed value is {want[col]}"
            )
    return head[1 + len(names) :]


def verify_structure(name: str, raw: bytes, want_angstrom: np.ndarray) -> None:
    try:
        got = pdb_positions(raw.decode("utf-8", "replace"))
    except CorruptionError as e:
        raise StructureMismatchError(f"{name}: {e}") from e
    if got.shape != want_angstrom.shape:
        raise StructureMismatchError(
            f"{name}: {len(got)} atoms; the signed state has {len(want_angstrom)}"
        )
    dev = np.abs(got - want_angstrom).max(axis=1)
    if dev.max(initial=0.0) > PDB_PRECISION_A:
        atom = int(dev.argmax())
        raise StructureMismatchError(
            f"{name}: atom {atom} is {dev[atom]:.3f} A from the signed position (PDB keeps "
            f"{PDB_PRECISION_A} A)"
        )


_BEST = re.compile(r"run (\d+) clone (\d+) frame (\d+) step (\d+)")


def verify_results(
    path: Path,
    *,
    log_key: str | None = None,
    witness_keys: Sequence[str] = (),
    witness_threshold: int | None = None,
) -> VerifyReport:
    """Check a results folder or zip; raises a :class:`~coordinator.errors.ResultsVerificationError`
    at the first thing that is false, else says what it checked. ``witness_keys`` (vkey
    strings) and ``witness_threshold`` (default: all of them) are the witness policy
    (:func:`verify_witnesses`)."""
    files = read_bundle(path)
    report = VerifyReport()
    try:
        doc = json.loads(_need(files, f"{DIR}/provenance.json"))
        summary = json.loads(_need(files, "summary.json"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BundleIncompleteError(f"provenance.json or summary.json is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleIncompleteError(
            f"{DIR}/provenance.json: expected format {FORMAT!r}, got "
            f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}"
        )
    job, engine = str(doc.get("job", "")), str(doc.get("engine", ""))
    bundled = _need(files, f"{DIR}/log.vkey").decode().strip()
    if log_key is not None:
        vkey = log_key.strip()
        report.trust = f"log key given with --log-key: {vkey}"
        if bundled != vkey:
            report.trust += f" (the bundle names another: {bundled})"
    else:
        vkey = bundled
        report.trust = (
            f"log key taken from the bundle itself ({bundled}): this shows only that the "
            "bundle is self-consistent, since whoever wrote it could have signed it with a "
            "key of their own. Pin the coordinator's key with --log-key (its operator "
            "publishes it, e.g. GET /v1/ledger/log.vkey)"
        )
    note = _need(files, f"{DIR}/checkpoint.txt").decode("utf-8", "replace")
    cp = verify_checkpoint(note, vkey)
    report.checked.append(
        f"checkpoint of {cp.checkpoint.origin} at size {cp.checkpoint.size}: log signature ok"
    )
    verify_witnesses(cp, vkey, witness_keys, witness_threshold, report)
    wus = _records(doc)
    data: dict[bytes, _Data] = {}
    for wu in wus:
        entry = verify_included(wu, cp)
        verify_attested(wu, entry, job)
        data[wu.wu_id] = verify_data(wu, _need(files, wu.data))
    report.checked.append(
        f"{len(wus)} WUs: entry in the log (inclusion proof), attestations signed by their "
        "volunteers, result header attested and signed, full-precision data matches the "
        "signed digests"
    )
    trajs = verify_chains(wus, summary)
    starts = verify_starts(wus, data)
    report.checked.append(
        f"{len(trajs)} trajectories: generations complete from 0 and chained state to state"
        + (
            ""
            if not starts
            else f"; {starts} adaptive start(s) at the positions of a validated boundary state "
            "the bundle carries (velocities redrawn: bound by the signed digest only)"
        )
    )
    scale = nm_per_unit(engine)
    joined = {
        key: (
            np.concatenate([data[w.wu_id].frames for w in gens]).astype(np.float64) * scale,
            np.concatenate([data[w.wu_id].steps for w in gens]),
            {
                k: np.concatenate([data[w.wu_id].observables[k] for w in gens])
                for k in data[gens[0].wu_id].observables
            },
        )
        for key, gens in trajs.items()
    }
    frames_by_file = {xtc_name(*key): v[0] for key, v in joined.items()}
    derived: set[str] = set()
    for (run, clone), (xyz_nm, steps, obs) in sorted(joined.items()):
        verify_xtc(
            xtc_name(run, clone), _need(files, xtc_name(run, clone)), xyz_nm, steps, frames_by_file
        )
        derived.update(
            verify_csv(csv_name(run, clone), _need(files, csv_name(run, clone)), steps, obs)
        )
        last = data[trajs[(run, clone)][-1].wu_id].final_positions
        verify_structure(
            final_name(run, clone), _need(files, final_name(run, clone)), last * scale * 10
        )
    report.checked.append(
        f"{len(joined)} XTC files (to {XTC_PRECISION_NM} nm), observables CSVs (exact) and "
        "final structures match the signed data"
    )
    if joined:
        first = min(joined)
        verify_structure("topology.pdb", _need(files, "topology.pdb"), joined[first][0][0] * 10)
        best = files.get("best_structure.pdb")
        if best is not None:
            m = _BEST.search(best.decode("utf-8", "replace"))
            key = (int(m.group(1)), int(m.group(2))) if m else None
            if m is None or key not in joined or int(m.group(3)) >= len(joined[key][0]):
                raise StructureMismatchError(
                    "best_structure.pdb names no frame of the bundle's trajectories in its REMARK"
                )
            verify_structure("best_structure.pdb", best, joined[key][0][int(m.group(3))] * 10)
        report.checked.append("topology.pdb and best_structure.pdb are signed frames")
    if derived:
        report.not_checked.append(
            "derived CSV columns (not signed; recompute them from the frames): "
            + ", ".join(sorted(derived))
        )
    known = {f"{DIR}/{n}" for n in ("provenance.json", "checkpoint.txt", "log.vkey")}
    known |= {w.data for w in wus} | {"topology.pdb", "best_structure.pdb"}
    for key in joined:
        known |= {xtc_name(*key), csv_name(*key), final_name(*key)}
    rest = sorted(set(files) - known)
    if rest:
        report.not_checked.append(
            "not derived from signed data, so not checked: " + ", ".join(rest)
        )
    return report
