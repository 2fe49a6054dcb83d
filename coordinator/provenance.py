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

import hashlib
import io
import itertools
import json
import math
import os
import re
import stat
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coordinator.bundle import (
    COLUMNS,
    Best,
    Contribution,
    FileSource,
    Generation,
    JobInfo,
    Results,
    Seeded,
    Trajectory,
    csv_name,
    dssp_name,
    final_name,
    last_of_longest,
    lowest_rmsd,
    plot_name,
    ps_per_step,
    summary_doc,
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
    SummaryMismatchError,
    TrajectorySwappedError,
    UnexpectedFileError,
    UsageError,
    WitnessQuorumError,
    WUMislabelledError,
    WUMissingError,
)
from coordinator.jobs import attempt_params, wu_id
from coordinator.plan import RULES
from coordinator.trajfiles import (
    XTC_PRECISION_NM,
    nm_per_unit,
    pdb_positions,
    read_xtc_times,
    xtc_times,
)
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
from sims.go import GoModel
from sims.state import state_digest
from worker.errors import WireError
from worker.result import ResultHeader, arrays_digest
from worker.systems import (
    SystemDefinition,
    decode_system,
    encode_system,
    engine_name,
    system_digest,
)
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

FORMAT = "foldnet-provenance/2"
DIR = "provenance"
SYSTEM = f"{DIR}/system.npz"
#: How far a first generation's start positions may lie from the prepared start (engine
#: units): the engine's own copy of them (an OpenMM platform keeping single precision) may
#: round them; another start (the native fold, say) lies Angstroms away.
START_ATOL = 1e-5
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
                elif g.start is not None:  # generation 0: the job's start state
                    arrays |= {
                        "start_positions": g.start.positions,
                        "start_velocities": g.start.velocities,
                    }
                files[name] = _npz(arrays)
                p = evidence.proofs.get(g.wu_id)
                records.append(
                    {
                        "parent": parent,
                        "run": t.run,
                        "clone": t.clone,
                        "gen": g.gen,
                        "attempt": g.attempt,
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
            "spec": results.info.params.decode(),
            "origin": evidence.origin,
            "tree_size": evidence.tree_size,
            "uncovered": uncovered,
            "wus": records,
        }
        files[f"{DIR}/provenance.json"] = json.dumps(doc, indent=1).encode()
        files[SYSTEM] = encode_system(results.info.system)
        if evidence.checkpoint is not None:
            files[f"{DIR}/checkpoint.txt"] = evidence.checkpoint.encode()
        files[f"{DIR}/log.vkey"] = (evidence.log_vkey + "\n").encode()
        readme: list[tuple[str, str]] = [
            (
                f"{DIR}/wu_runR_cloneC_genG.npz",
                "one WU at full precision, exactly as its worker signed it: frames, steps,\n"
                "obs_* (observables), final_positions/final_velocities (numpy.load); for\n"
                "generation 0 also start_* (the job's start state), for an adaptive start\n"
                "start_* (its first state) and parent_* (the validated boundary state it\n"
                "came from)",
            ),
            (
                f"{DIR}/provenance.json",
                "the job's parameters (spec: each WU id is SHA-256 of the job, run, clone,\n"
                "generation, start state and these) and per WU: the signed result header and\n"
                "signature, its ledger index, the 'result validated' entry and its RFC 6962\n"
                "inclusion proof",
            ),
            (
                SYSTEM,
                "the prepared system the WUs were computed with (its digest is in the spec):\n"
                "the reference structure's source",
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


#: A zip member that inflates past this many bytes, at more than :data:`ZIP_RATIO` times its
#: stored size, is refused before it is inflated: no file foldnet results writes compresses
#: so well (JSON of hex digests about 2:1, frames barely), a zip bomb does (1000:1).
ZIP_BOMB_BYTES = 1 << 24
ZIP_RATIO = 100


def read_bundle(path: Path) -> dict[str, bytes]:
    """Every file of a results folder or zip, by its name inside the bundle (hidden files
    left out, as ``foldnet analyze`` leaves them). A link, a zip member named twice or with
    a name that leads out of the folder it is unpacked in, and a zip bomb are findings: the
    writer makes none of them, and each makes what a lab's tools read differ from what is
    verified here (or reads outside the bundle)."""
    if path.is_dir():
        return _read_folder(path)
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                return _read_zip(zf)
        except (zipfile.BadZipFile, EOFError, OSError) as e:  # a truncated or damaged zip
            raise UsageError(f"{path} is neither a results folder nor a zip: {e}") from e
    raise UsageError(f"{path} does not exist: expected a results folder or zip")


def _read_folder(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        for name in sorted(dirs + names):
            p = here / name
            if p.is_symlink():
                raise UnexpectedFileError(
                    f"{p.relative_to(root)} is a link (to {os.readlink(p)}): foldnet results "
                    "never writes one, and following it reads outside the bundle; remove it "
                    "or write the results again"
                )
        for name in sorted(names):
            p = here / name
            if not name.startswith(".") and p.is_file():
                files[p.relative_to(root).as_posix()] = p.read_bytes()
    return dict(sorted(files.items()))


def _read_zip(zf: zipfile.ZipFile) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for info in zf.infolist():
        name = info.filename
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0]:
            raise UnexpectedFileError(
                f"the zip member {name[:200]!r} is named to be unpacked outside its folder: "
                "foldnet results never writes one"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnexpectedFileError(
                f"the zip member {name[:200]!r} is a link: foldnet results never writes one"
            )
        if info.is_dir() or parts[-1].startswith("."):
            continue
        if name in files:
            raise UnexpectedFileError(
                f"the zip holds {name[:200]!r} twice: which one a lab's unzip keeps is up to "
                "the tool, so the one verified here need not be the one read"
            )
        if info.file_size > ZIP_BOMB_BYTES and info.file_size > ZIP_RATIO * max(
            1, info.compress_size
        ):
            raise BundleIncompleteError(
                f"the zip member {name[:200]} inflates from {info.compress_size:,} to "
                f"{info.file_size:,} bytes: not a file foldnet results writes (refused before "
                "inflating it)"
            )
        files[name] = zf.read(info)
    return files


def _need(files: Mapping[str, bytes], name: str) -> bytes:
    data = files.get(name)
    if data is None:
        raise BundleIncompleteError(
            f"the bundle has no {name}: expected the files foldnet results writes "
            "(write or download them again)"
        )
    return data


def _json(files: Mapping[str, bytes], name: str) -> dict[str, Any]:
    """A JSON object file of the bundle (else a finding that says what it is instead)."""
    try:
        doc = json.loads(_need(files, name))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BundleIncompleteError(f"{name} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise BundleIncompleteError(
            f"{name}: expected a JSON object, got {type(doc).__name__}: write or download the "
            "results again"
        )
    return doc


@dataclass(frozen=True, slots=True)
class _WU:
    run: int
    clone: int
    gen: int
    attempt: int
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


class _MalformedError(BundleIncompleteError):
    """A field of provenance.json or summary.json that is not what the writer writes
    (caught, and raised again naming where it is)."""


def _uint(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise _MalformedError(f"{what} must be an integer in [0, 2^63), got {str(value)[:40]!r}")
    return value


def _hex(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise _MalformedError(f"{what} must be hex text, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise _MalformedError(f"{what} is not hex: {e}") from e
    if size is not None and len(raw) != size:
        raise _MalformedError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _record(r: object) -> _WU:
    if not isinstance(r, dict):
        raise _MalformedError(f"a WU record must be an object, got {type(r).__name__}")
    raw = r.get("header")
    if not isinstance(raw, str):
        raise _MalformedError(f"header must be the canonical JSON text, got {type(raw).__name__}")
    try:
        header = decode_header(raw.encode())
    except WireError as e:
        raise _MalformedError(f"header: {e}") from e
    if header.canonical() != raw.encode():
        raise _MalformedError(
            "the header is not in its canonical encoding, so its digest is not the signed one"
        )
    if not header.boundary_digests:
        raise _MalformedError("the header has no boundary states")
    parent = r.get("parent")
    if parent is not None:
        if not isinstance(parent, dict):
            raise _MalformedError(f"parent must be an object, got {type(parent).__name__}")
        parent = (
            _hex(parent.get("wu_id"), "parent.wu_id", 32),
            _uint(parent.get("boundary"), "parent.boundary"),
        )
    proof = r.get("inclusion_proof")
    if proof is not None and not isinstance(proof, list):
        raise _MalformedError(f"inclusion_proof must be a list, got {type(proof).__name__}")
    run, clone, gen = (
        _uint(r.get("run"), "run"),
        _uint(r.get("clone"), "clone"),
        _uint(r.get("gen"), "gen"),
    )
    if r.get("data") != data_name(run, clone, gen):
        raise _MalformedError(
            f"data must be {data_name(run, clone, gen)}, got {str(r.get('data'))[:100]!r}"
        )
    return _WU(
        run=run,
        clone=clone,
        gen=gen,
        attempt=_uint(r.get("attempt"), "attempt"),
        wu_id=_hex(r.get("wu_id"), "wu_id", 32),
        header=header,
        signature=_hex(r.get("signature"), "signature", 64),
        index=None if r.get("ledger_index") is None else _uint(r["ledger_index"], "ledger_index"),
        entry=None if r.get("entry") is None else _hex(r["entry"], "entry"),
        proof=None if proof is None else tuple(_hex(h, "inclusion_proof[]", 32) for h in proof),
        data=data_name(run, clone, gen),
        parent=parent,
    )


def _records(doc: Mapping[str, Any]) -> list[_WU]:
    wus = doc.get("wus")
    if not isinstance(wus, list):
        raise BundleIncompleteError(
            f"{DIR}/provenance.json: 'wus' must be the list of WU records, got {type(wus).__name__}"
        )
    out = []
    for i, r in enumerate(wus):
        try:
            out.append(_record(r))
        except _MalformedError as e:
            where = (
                f"run {r.get('run')} clone {r.get('clone')} gen {r.get('gen')}"
                if isinstance(r, dict)
                else f"record {i}"
            )
            raise BundleIncompleteError(
                f"{DIR}/provenance.json, {str(where)[:100]}: {e}; expected the records foldnet "
                "results writes"
            ) from e
    places = Counter((w.run, w.clone, w.gen) for w in out)
    for place in sorted(p for p, n in places.items() if n > 1):
        raise BundleIncompleteError(
            f"{DIR}/provenance.json lists run {place[0]} clone {place[1]} gen {place[2]} twice: "
            "a generation has one WU"
        )
    return out


@dataclass(frozen=True, slots=True)
class _Spec:
    """The job's parameters as provenance.json carries them (``JobSpec.engine_parameters``):
    bound to every WU by its id (:func:`verify_place`)."""

    raw: bytes
    engine: str
    temperature: float
    steps_per_wu: int
    segment_steps: int
    report_steps: int
    system_digest: bytes
    adaptive: str


def _spec(doc: Mapping[str, Any]) -> _Spec:
    text = doc.get("spec")
    try:
        if not isinstance(text, str):
            raise _MalformedError(
                f"expected the job's parameters as JSON text, got {type(text).__name__}"
            )
        try:
            p = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise _MalformedError(f"not JSON: {e}") from e
        if not isinstance(p, dict):
            raise _MalformedError(f"expected a JSON object, got {type(p).__name__}")
        engine, adaptive, t = p.get("engine"), p.get("adaptive", "none"), p.get("temperature")
        if engine not in RULES or not isinstance(adaptive, str):
            raise _MalformedError(f"engine {str(engine)[:20]!r} / adaptive {str(adaptive)[:20]!r}")
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise _MalformedError(f"temperature {str(t)[:20]!r} is not a number")
        return _Spec(
            raw=text.encode(),
            engine=engine,
            temperature=float(t),
            steps_per_wu=_uint(p.get("steps_per_wu"), "steps_per_wu"),
            segment_steps=_uint(p.get("segment_steps"), "segment_steps"),
            report_steps=_uint(p.get("report_steps"), "report_steps"),
            system_digest=_hex(p.get("system_digest"), "system_digest", 32),
            adaptive=adaptive,
        )
    except _MalformedError as e:
        raise BundleIncompleteError(
            f"{DIR}/provenance.json, spec: {e}; expected the job's parameters as foldnet "
            "results writes them"
        ) from e


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


def verify_place(wu: _WU, entry: le.ResultValidated, job: str, spec: _Spec) -> None:
    """The WU is the one the job ran at the place the bundle gives it: its id (signed by its
    workers, named by its ledger entry) is the content id of (job, run, clone, gen, the state
    it started from, the job's parameters and its attempt), and the entry names this spec."""
    if entry.spec_digest is not None and entry.spec_digest != hashlib.sha256(spec.raw).digest():
        raise NotAttestedError(
            f"{wu.where}: its ledger entry names job parameters of digest "
            f"{entry.spec_digest.hex()[:16]}, not those of {DIR}/provenance.json's spec"
        )
    params = attempt_params(spec.raw, wu.attempt)
    want = wu_id(job, wu.run, wu.clone, wu.gen, wu.header.boundary_digests[0], params)
    if want != wu.wu_id:
        raise WUMislabelledError(
            f"{wu.where}: it is not the WU of run {wu.run} clone {wu.clone} gen {wu.gen}: a WU's "
            "id is SHA-256 of its job, run, clone, generation, start state and the job's "
            f"parameters, and these give {want.hex()[:16]}. A validated WU of the job was put "
            "in another's place (frames moved between trajectories or generations)"
        )


@dataclass(frozen=True, slots=True)
class _Data:
    frames: np.ndarray
    steps: np.ndarray
    observables: dict[str, np.ndarray]
    final_positions: np.ndarray
    final_velocities: np.ndarray
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
    if wu.gen == 0:  # the job's start state, which the first generation began from
        if "start_positions" not in arrays or "start_velocities" not in arrays:
            raise DataMismatchError(f"{wu.data}: a first generation without its start state")
        start = (arrays["start_positions"], arrays["start_velocities"])
    elif wu.parent is not None:
        need = ("start_positions", "start_velocities", "parent_positions", "parent_velocities")
        missing = [n for n in need if n not in arrays]
        if missing:
            raise DataMismatchError(f"{wu.data}: an adaptive start without {missing[0]!r}")
        start = (arrays["start_positions"], arrays["start_velocities"])
        parent = (arrays["parent_positions"], arrays["parent_velocities"])
    return _Data(
        frames, steps, obs, arrays["final_positions"], arrays["final_velocities"], start, parent
    )


def _claimed(summary: Mapping[str, Any]) -> dict[tuple[int, int], int]:
    """Each trajectory summary.json lists: (run, clone) -> generations."""
    trajs = summary.get("trajectories", [])
    try:
        if not isinstance(trajs, list):
            raise _MalformedError(f"'trajectories' is a {type(trajs).__name__}")
        claimed = {}
        for t in trajs:
            if not isinstance(t, dict):
                raise _MalformedError(f"a trajectory is a {type(t).__name__}")
            key = (_uint(t.get("run"), "run"), _uint(t.get("clone"), "clone"))
            claimed[key] = _uint(t.get("generations"), "generations")
    except _MalformedError as e:
        raise SummaryMismatchError(
            f"summary.json: {e}; expected each trajectory's run, clone and generations as "
            "foldnet results writes them"
        ) from e
    return claimed


def verify_chains(
    wus: Sequence[_WU], summary: Mapping[str, Any], spec: _Spec
) -> dict[tuple[int, int], list[_WU]]:
    """Each trajectory's generations are 0..k, each starts where the one before ended (an
    adaptive job's from a state its policy chose: :func:`verify_starts`), and summary.json
    claims no generation the provenance lacks."""
    by: dict[tuple[int, int], list[_WU]] = {}
    for w in wus:
        by.setdefault((w.run, w.clone), []).append(w)
        if w.parent is not None and (spec.adaptive == "none" or w.gen == 0):
            raise ChainBrokenError(
                f"{w.where} is said to start from a state of WU {w.parent[0].hex()[:16]}, but "
                + (
                    "the job is not adaptive: each generation starts where the one before ended"
                    if spec.adaptive == "none"
                    else "a trajectory's first generation starts from the job's start state"
                )
            )
    claimed = _claimed(summary)
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


def job_start_positions(system: SystemDefinition) -> np.ndarray:
    """Where a job's trajectories start (``coordinator.prepare.prepare_job``): a Go model's
    extended chain, an all-atom system's prepared (minimized) positions; the velocities are
    drawn from the plan's seed."""
    return system.extended_chain() if isinstance(system, GoModel) else system.positions


def verify_first_starts(
    wus: Sequence[_WU], data: Mapping[bytes, _Data], system: SystemDefinition
) -> None:
    """Each trajectory's first generation began from the job's start structure (the state
    its signed header begins from, at the positions the prepared system starts from), not
    from a state the operator chose (the native structure, say, which would make folding
    look instant)."""
    want = np.asarray(job_start_positions(system), np.float64)
    for w in wus:
        start = data[w.wu_id].start
        if w.gen != 0 or start is None:
            continue
        try:
            if state_digest(*start) != w.header.boundary_digests[0]:
                raise ChainBrokenError(
                    f"{w.where}: the start state in {w.data} is not the one its worker began from"
                )
        except (StateError, ValueError, TypeError) as e:
            raise DataMismatchError(f"{w.data}: the start state is not a state: {e}") from e
        got = np.asarray(start[0], np.float64)
        if got.shape != want.shape or not np.allclose(got, want, rtol=0.0, atol=START_ATOL):
            dev = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
            raise ChainBrokenError(
                f"{w.where}: it did not start from the job's start structure (the prepared "
                f"system's {'extended chain' if isinstance(system, GoModel) else 'positions'}"
                f"; {dev:.3g} away): its trajectory began where nothing the job prepared "
                "puts it"
            )


def verify_xtc(
    name: str,
    raw: bytes,
    want_nm: np.ndarray,
    steps: np.ndarray,
    others: Mapping[str, np.ndarray],
    dt_ps: float,
) -> None:
    """An XTC holds the signed frames to its precision (else: which frame and atom, or whose
    trajectory's frames it holds instead), each at the time of its signed step."""
    try:
        xyz, time = read_xtc_times(raw)
    except CorruptionError as e:
        raise FrameMismatchError(f"{name}: {e}") from e

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and bool(np.abs(a - b).max(initial=0.0) <= XTC_PRECISION_NM)

    if not close(xyz, want_nm):
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
    want_t = xtc_times(steps, dt_ps)
    if not np.array_equal(time, want_t):
        i = int(np.argmax(time != want_t))
        unit = "ps" if dt_ps > 0 else "steps (reduced units)"
        raise FrameMismatchError(
            f"{name}: frame {i} is at time {float(time[i]):g}; its signed step {int(steps[i])} "
            f"is at {float(want_t[i]):g} {unit}: the time axis was changed"
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
    derived = head[1 + len(names) :]
    known = [c.name for c in COLUMNS]
    if any(d not in known for d in derived) or len(set(derived)) != len(derived):
        raise ObservableMismatchError(
            f"{name}: columns {head}; after the signed observables expected only the derived "
            f"columns the writer makes ({', '.join(known)}), each once: a second column of a "
            "signed observable's name is read instead of the signed one by tools that take "
            "columns by name"
        )
    return derived


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


_BEST = re.compile(r"criterion: (.*) run (\d+) clone (\d+) frame (\d+) step (\d+)\b")


def verify_system(raw: bytes, spec: _Spec) -> SystemDefinition:
    """The prepared system in the bundle, if it is the one the job's WUs were computed with
    (its digest is the spec's, which every WU id binds)."""
    try:
        system = decode_system(raw)
        digest = system_digest(system)
    except WireError as e:
        raise DataMismatchError(f"{SYSTEM} is not a foldnet system: {e}") from e
    if digest != spec.system_digest or engine_name(system) != spec.engine:
        raise DataMismatchError(
            f"{SYSTEM} is not the system the job's WUs were computed with: its digest is "
            f"{digest.hex()[:16]}, the job's parameters name {spec.system_digest.hex()[:16]}"
        )
    return system


def _reference(system: SystemDefinition) -> np.ndarray | None:
    """What RMSD and Q are measured against, in the engine's units (as results.load)."""
    return system.native if isinstance(system, GoModel) else system.reference


def _results(
    job: str,
    spec: _Spec,
    system: SystemDefinition,
    trajs: Mapping[tuple[int, int], list[_WU]],
    data: Mapping[bytes, _Data],
) -> Results:
    """The verified data as the writer's own input (:class:`~coordinator.bundle.Results`), so
    that what the writer states from it (summary.json, the best structure) is stated again
    here by the same code."""
    by_id = {w.wu_id: w for gens in trajs.values() for w in gens}
    out = []
    for (run, clone), gens in sorted(trajs.items()):
        generations = []
        for w in gens:
            d = data[w.wu_id]
            seeded = None
            if w.parent is not None and d.start is not None and d.parent is not None:
                p = by_id[w.parent[0]]
                seeded = Seeded(
                    w.parent[0], w.parent[1], p.run, p.clone, p.gen, *d.parent, *d.start
                )
            generations.append(
                Generation(
                    gen=w.gen,
                    header=w.header,
                    signature=w.signature,
                    frames=d.frames,
                    steps=d.steps,
                    observables=d.observables,
                    final_positions=d.final_positions,
                    final_velocities=d.final_velocities,
                    seeded=seeded,
                    attempt=w.attempt,
                )
            )
        out.append(Trajectory.join(run, clone, generations))
    info = JobInfo(
        job=job,
        engine=spec.engine,
        temperature=spec.temperature,
        steps_per_wu=spec.steps_per_wu,
        segment_steps=spec.segment_steps,
        report_steps=spec.report_steps,
        system=system,
        reference=_reference(system),
        adaptive=spec.adaptive,
        params=spec.raw,
    )
    return Results(info, tuple(t for t in out if len(t.frames)))


def verify_best(raw: bytes, results: Results, report: VerifyReport) -> Best:
    """best_structure.pdb is a signed frame, and the frame its criterion picks: the lowest
    signed RMSD when the job has one (else the last frame of the longest trajectory, or the
    centre of an MSM state: that one is reported unchecked)."""
    text = raw.decode("utf-8", "replace")
    # the REMARKs as written (pdb_text wraps each at 69 columns), joined again
    remarks = " ".join(ln[11:].strip() for ln in text.splitlines() if ln.startswith("REMARK   1 "))
    m = _BEST.search(remarks)
    by = {(t.run, t.clone): t for t in results.trajectories}
    key = (int(m.group(2)), int(m.group(3))) if m else None
    if m is None or key not in by or int(m.group(4)) >= len(by[key].frames):
        raise StructureMismatchError(
            "best_structure.pdb names no frame of the bundle's trajectories in its REMARK"
        )
    t, i, criterion = by[key], int(m.group(4)), m.group(1)
    named = Best(criterion, t.run, t.clone, i, int(m.group(5)), t.frames[i])
    want = lowest_rmsd(results)
    if want is None:
        longest = last_of_longest(results)
        if longest is not None and longest.criterion == criterion:
            want = longest
        else:
            report.not_checked.append(
                f"that best_structure.pdb is the frame its criterion picks ({criterion[:80]}): "
                "it is a signed frame"
            )
            want = named
    if (want.run, want.clone, want.index, want.step, want.criterion) != (
        named.run,
        named.clone,
        named.index,
        named.step,
        named.criterion,
    ):
        raise StructureMismatchError(
            f"best_structure.pdb is run {named.run} clone {named.clone} frame {named.index} "
            f"step {named.step} ({named.criterion[:80]}); by its criterion it is run "
            f"{want.run} clone {want.clone} frame {want.index} step {want.step} "
            f"({want.criterion[:80]})"
        )
    scale = nm_per_unit(results.info.engine) * 10
    verify_structure("best_structure.pdb", raw, np.asarray(want.positions, np.float64) * scale)
    return want


def _first_difference(got: object, want: object, at: str = "") -> str | None:
    """Where two JSON values differ first (a key path), or None."""
    if isinstance(want, dict) and isinstance(got, dict):
        for k in sorted(set(got) | set(want)):
            if k not in want:
                return f"{at}{k} (a key the writer does not write)"
            if k not in got:
                return f"{at}{k} (missing)"
            d = _first_difference(got[k], want[k], f"{at}{k}.")
            if d is not None:
                return d
        return None
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            d = _first_difference(a, b, f"{at}{i}.")
            if d is not None:
                return d
        return None
    if type(got) is bool or type(want) is bool:
        return None if got is want else at.rstrip(".")
    return None if got == want else at.rstrip(".")


def verify_summary(
    summary: Mapping[str, Any],
    results: Results,
    best: Best | None,
    derived: Sequence[str],
    tree_size: int,
) -> None:
    """summary.json is what the writer states from the verified data, word for word
    (foldnet analyze reads its engine, adaptive policy and the starts of each generation)."""
    names = sorted(results.trajectories[0].observables) if results.trajectories else []
    want = summary_doc(results, best, derived, names)
    want["provenance"] = {"tree_size": tree_size, "uncovered": 0}
    want = json.loads(json.dumps(want))  # tuples as lists, as the file has them
    where = _first_difference(summary, want)
    if where is not None:
        path = where.split(" ")[0].split(".")
        raise SummaryMismatchError(
            f"summary.json: {where} is {json.dumps(_at(summary, path))[:120]}; the signed data "
            f"and the job's parameters say {json.dumps(_at(want, path))[:120]}"
        )


def _at(doc: object, path: Sequence[str]) -> object:
    """The value at a key path of a JSON document (None where there is none)."""
    for k in path:
        if isinstance(doc, dict):
            doc = doc.get(k)
        elif isinstance(doc, list) and k.isdigit() and int(k) < len(doc):
            doc = doc[int(k)]
        else:
            return None
    return doc


#: The names of the files labs' tools read (foldnet analyze, mdtraj scripts): one of them
#: anywhere the writer did not put it would be read without having been verified.
_DATA_NAME = re.compile(
    r"^((trajectory|observables|final|plot|dssp)_run\d+_clone\d+\.(xtc|csv|pdb|png|txt)"
    r"|topology\.pdb|best_structure\.pdb|reference\.pdb|summary\.json"
    r"|wu_run\d+_clone\d+_gen\d+\.npz|system\.npz|provenance\.json)$"
)


def verify_files(files: Mapping[str, bytes], expected: set[str]) -> None:
    """No file with a data name that the bundle does not account for (a plot, the README, a
    demo's or an analysis's own files may be there: nothing reads them as data)."""
    for name in sorted(files):
        if name not in expected and _DATA_NAME.match(name.rsplit("/", 1)[-1]):
            raise UnexpectedFileError(
                f"{name} is not a file of these results: the provenance accounts for no such "
                "file there, so nothing verified it, yet tools that read the results (foldnet "
                "analyze reads every trajectory_runR_cloneC.xtc, a zip's folders flattened) "
                "would read it. Remove it, or write the results again"
            )


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
    doc = _json(files, f"{DIR}/provenance.json")
    summary = _json(files, "summary.json")
    if doc.get("format") != FORMAT:
        raise BundleIncompleteError(
            f"{DIR}/provenance.json: expected format {FORMAT!r}, got "
            f"{str(doc.get('format'))[:40]!r}: write or download the results again with this "
            "version of foldnet"
        )
    job = doc.get("job")
    if not isinstance(job, str):
        raise BundleIncompleteError(f"{DIR}/provenance.json: 'job' must be the job's id")
    spec = _spec(doc)
    if doc.get("engine") != spec.engine:
        raise BundleIncompleteError(
            f"{DIR}/provenance.json: engine {str(doc.get('engine'))[:20]!r}, but the job's "
            f"parameters are of {spec.engine}"
        )
    try:
        bundled = _need(files, f"{DIR}/log.vkey").decode().strip()
    except UnicodeDecodeError as e:
        raise BundleIncompleteError(f"{DIR}/log.vkey is not a key (not UTF-8: {e})") from e
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
        verify_place(wu, entry, job, spec)
        data[wu.wu_id] = verify_data(wu, _need(files, wu.data))
    report.checked.append(
        f"{len(wus)} WUs of job {job[:16]}: entry in the log (inclusion proof), attestations "
        "signed by their volunteers, result header attested and signed, each WU the one the "
        "job ran at its run, clone and generation (its id), full-precision data matches the "
        "signed digests"
    )
    trajs = verify_chains(wus, summary, spec)
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
    system = verify_system(_need(files, SYSTEM), spec)
    verify_first_starts(wus, data, system)
    results = _results(job, spec, system, trajs, data)
    scale = nm_per_unit(spec.engine)
    dt_ps = ps_per_step(spec.engine)
    frames_by_file = {
        xtc_name(t.run, t.clone): t.frames.astype(np.float64) * scale for t in results.trajectories
    }
    derived: list[str] = []
    expected = {f"{DIR}/{n}" for n in ("provenance.json", "checkpoint.txt", "log.vkey")}
    expected |= {SYSTEM} | {w.data for w in wus}
    for t in results.trajectories:
        run, clone = t.run, t.clone
        verify_xtc(
            xtc_name(run, clone),
            _need(files, xtc_name(run, clone)),
            frames_by_file[xtc_name(run, clone)],
            t.steps,
            frames_by_file,
            dt_ps,
        )
        extra = verify_csv(
            csv_name(run, clone), _need(files, csv_name(run, clone)), t.steps, t.observables
        )
        derived = derived or extra
        verify_structure(
            final_name(run, clone),
            _need(files, final_name(run, clone)),
            t.generations[-1].final_positions * scale * 10,
        )
        expected |= {xtc_name(run, clone), csv_name(run, clone), final_name(run, clone)}
        expected |= {plot_name(run, clone)} | (
            {dssp_name(run, clone)} if spec.engine == "openmm" else set()
        )
    report.checked.append(
        f"{len(results.trajectories)} XTC files (to {XTC_PRECISION_NM} nm, times those of the "
        "signed steps), observables CSVs (exact) and final structures match the signed data"
    )
    best = None
    if results.trajectories:
        first = results.trajectories[0]
        verify_structure(
            "topology.pdb",
            _need(files, "topology.pdb"),
            first.frames[0].astype(np.float64) * scale * 10,
        )
        best = verify_best(_need(files, "best_structure.pdb"), results, report)
        expected |= {"topology.pdb", "best_structure.pdb"}
        report.checked.append(
            "topology.pdb and best_structure.pdb are signed frames; the best structure is "
            "the frame its criterion picks"
        )
    reference = results.info.reference
    if reference is not None:
        verify_structure(
            "reference.pdb", _need(files, "reference.pdb"), np.asarray(reference) * scale * 10
        )
        expected.add("reference.pdb")
        report.checked.append(
            "reference.pdb is the reference of the system the WUs were computed with"
            + ("" if spec.engine == "go" else " (as the system file states it)")
        )
        if spec.engine != "go":
            report.not_checked.append(
                "that the all-atom reference is the lab's: the system digest binds the "
                "force field and start, not the reference or residue names"
            )
    verify_summary(summary, results, best, derived, cp.checkpoint.size)
    expected.add("summary.json")
    report.checked.append(
        "summary.json states the job's parameters and the signed data (trajectories, "
        "generations, frames, starts, best structure)"
    )
    verify_files(files, expected)
    checked = expected - {plot_name(t.run, t.clone) for t in results.trajectories}
    checked -= {dssp_name(t.run, t.clone) for t in results.trajectories}
    rest = sorted(set(files) - checked)
    report.not_checked.append(
        "residue and atom names of topology.pdb (no signed digest covers them): compare with "
        "the structure you submitted"
    )
    if derived:
        report.not_checked.append(
            "derived CSV columns (not signed; recompute them from the frames): "
            + ", ".join(sorted(derived))
        )
    if rest:
        report.not_checked.append(
            "not derived from signed data, so not checked: " + ", ".join(rest)
        )
    report.not_checked.append(
        f"completeness: the bundle holds {len(results.trajectories)} trajectories of "
        f"{sum(len(t.generations) for t in results.trajectories)} generations in all; nothing "
        "signed says how many the job has, so compare with what you submitted (and a result "
        "retracted after this checkpoint is not known here)"
    )
    return report
