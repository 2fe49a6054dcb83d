"""A worker's signed result (docs/architecture.md §5) and its verification.

The header is everything but the arrays' bytes; arrays are bound to it through digests. Its
canonical encoding is JSON with sorted keys, no spaces, byte strings as lowercase hex and
floats as ``repr`` (shortest round-trip), and ``result_digest`` = SHA-256 of those bytes.
The worker signs the ledger's attestation message (``ledger.entries.attestation_message``)
over (WU id, result digest, final-state digest, price digest), so the same 64-byte signature
goes into the ledger and an auditor can check it without the result itself. The price digest
is ``ledger.entries.PriceInputs.digest`` of the credit formula's inputs as the worker received
them with its task (engine, particles, steps per WU, deadline, issue time); the header
carries them too (``price``), so the coordinator refuses a result priced otherwise than its
WU, and the ledger records exactly what each worker signed.

Arrays digest: SHA-256 over ``b"foldnet/arrays/v1\\x00"`` then, for each named array in
sorted name order, ``u64le(len(name)) || name || u64le(ndim) || u64le(dim)... || dtype
string || little-endian C-order bytes``.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ledger.entries import PriceInputs, attestation_message
from ledger.errors import SignatureError
from ledger.merkle import leaf_hash, merkle_root
from ledger.signatures import VerifiedSignatures, verify_signature
from sims.result import RunResult
from sims.state import all_finite, state_digests
from worker.errors import ResultError, ResultSignatureError
from worker.identity import Identity

RESULT_VERSION = 3
_ARRAYS_TAG = b"foldnet/arrays/v1\x00"
_F64 = np.dtype(np.float64)


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> bytes:
    h = hashlib.sha256(_ARRAYS_TAG)
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        raw = name.encode()
        dt = a.dtype
        if dt.kind in "fiub" and dt.str[0] in "<|" and a.flags.c_contiguous:
            data: bytes | memoryview = a.data  # already the bytes to hash, in place
        else:
            le = a.astype(dt.newbyteorder("<"), copy=False)
            dt = le.dtype
            data = np.ascontiguousarray(le).tobytes()
        h.update(
            struct.pack(f"<Q{len(raw)}sQ{a.ndim}Q", len(raw), raw, a.ndim, *a.shape)
            + dt.str.encode()
        )
        h.update(data)
    return h.digest()


def segment_data_digests(
    frames: np.ndarray,
    frame_steps: np.ndarray,
    observables: Mapping[str, np.ndarray],
    *,
    n_segments: int,
    segment_steps: int,
    report_steps: int,
) -> tuple[bytes, ...]:
    """One digest per segment of the frames, frame steps and observables reported inside it.

    Frame ``i`` is reported ``(i + 1) * report_steps`` steps into the WU, so it belongs to
    segment ``((i + 1) * report_steps - 1) // segment_steps``. A spot-checker who recomputes
    one segment gets the same digest for it, so frames and observables are checked exactly
    as boundary states are (a segment without frames digests its empty frame arrays).
    """
    n = len(frames)
    if report_steps >= 1 and segment_steps >= 1:
        obs = {name: np.asarray(v) for name, v in observables.items()}
        parts = [segment_frames(k, n, segment_steps, report_steps) for k in range(n_segments)]
        return tuple(
            segment_digest(
                frames[part], frame_steps[part], {name: v[part] for name, v in obs.items()}
            )
            for part in parts
        )
    seg = (np.arange(1, n + 1, dtype=np.int64) * report_steps - 1) // segment_steps
    out = []
    for k in range(n_segments):
        mask = seg == k
        out.append(
            segment_digest(
                frames[mask],
                frame_steps[mask],
                {name: np.asarray(v)[mask] for name, v in observables.items()},
            )
        )
    return tuple(out)


def segment_frames(k: int, n_frames: int, segment_steps: int, report_steps: int) -> slice:
    """Which of a WU's ``n_frames`` frames segment ``k`` reports (``report_steps``,
    ``segment_steps`` >= 1). Frame i lies in segment k iff k * segment_steps <= (i + 1) *
    report_steps - 1 < (k + 1) * segment_steps: i in [k*S // R, (k+1)*S // R)."""
    return slice(
        min(n_frames, k * segment_steps // report_steps),
        min(n_frames, (k + 1) * segment_steps // report_steps),
    )


def segment_digest(
    frames: np.ndarray, frame_steps: np.ndarray, observables: Mapping[str, np.ndarray]
) -> bytes:
    """The digest of one segment's frames, steps and (when it has frames) observables."""
    arrays: dict[str, np.ndarray] = {
        "frames": np.asarray(frames, np.float32),
        "steps": np.asarray(frame_steps, np.int64),
    }
    if len(frame_steps):
        arrays |= {f"obs_{name}": np.asarray(v, np.float64) for name, v in observables.items()}
    return arrays_digest(arrays)


def segment_root(boundary_digests: tuple[bytes, ...]) -> bytes:
    """RFC 6962 Merkle root over the boundary-state digests: the worker's commitment."""
    return merkle_root([leaf_hash(d) for d in boundary_digests])


@dataclass(frozen=True, slots=True)
class ResultHeader:
    wu_id: bytes
    worker_key: bytes
    determinism: str  # canonical JSON of sims.result.DeterminismClass
    boundary_digests: tuple[bytes, ...]
    segment_root: bytes
    final_digest: bytes
    frames_digest: bytes
    observables_digest: bytes
    n_atoms: int
    wall_time_s: float
    #: The credit formula's inputs as the worker received them with its WU (signed).
    price: PriceInputs
    version: int = RESULT_VERSION
    #: Digest of the frames and observables of each segment (:func:`segment_data_digests`).
    segment_data: tuple[bytes, ...] = ()

    def canonical(self) -> bytes:
        """The signed encoding: JSON, keys sorted, no spaces, bytes as hex, the wall time as
        the ``repr`` of its float. Written directly when every field has its plain type (a
        verified result's header is encoded on both sides of an upload, 2-4 times a cycle):
        the same bytes as :meth:`_canonical_json`, at a third of its cost; anything else
        goes through ``json``."""
        p = self.price
        if (
            type(self.n_atoms) is int
            and type(self.version) is int
            and type(self.determinism) is str
            and type(p.engine) is str
            and type(p.n_particles) is int
            and type(p.steps) is int
            and type(p.deadline_s) is int
            and type(p.issued_at_ms) is int
        ):
            return (
                f'{{"boundary_digests":[{_hex_list(self.boundary_digests)}],'
                f'"determinism":{_json_str(self.determinism)},'
                f'"final_digest":"{self.final_digest.hex()}",'
                f'"frames_digest":"{self.frames_digest.hex()}",'
                f'"n_atoms":{self.n_atoms},'
                f'"observables_digest":"{self.observables_digest.hex()}",'
                f'"price":{{"deadline_s":{p.deadline_s},"engine":{_json_str(p.engine)},'
                f'"issued_at_ms":{p.issued_at_ms},"n_particles":{p.n_particles},'
                f'"steps":{p.steps}}},'
                f'"segment_data":[{_hex_list(self.segment_data)}],'
                f'"segment_root":"{self.segment_root.hex()}",'
                f'"version":{self.version},'
                f'"wall_time_s":"{float(self.wall_time_s)!r}",'
                f'"worker_key":"{self.worker_key.hex()}",'
                f'"wu_id":"{self.wu_id.hex()}"}}'
            ).encode()
        return self._canonical_json()

    def _canonical_json(self) -> bytes:
        """:meth:`canonical` by ``json.dumps``: the definition the direct form must match."""
        d: dict[str, Any] = {
            "boundary_digests": [b.hex() for b in self.boundary_digests],
            "determinism": self.determinism,
            "final_digest": self.final_digest.hex(),
            "frames_digest": self.frames_digest.hex(),
            "n_atoms": self.n_atoms,
            "observables_digest": self.observables_digest.hex(),
            "price": price_fields(self.price),
            "segment_data": [b.hex() for b in self.segment_data],
            "segment_root": self.segment_root.hex(),
            "version": self.version,
            "wall_time_s": repr(float(self.wall_time_s)),
            "worker_key": self.worker_key.hex(),
            "wu_id": self.wu_id.hex(),
        }
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()

    def message(self) -> bytes:
        """What the worker signs: the ledger's attestation message for this header."""
        return attestation_message(
            self.wu_id, self.digest(), self.final_digest, self.price.digest()
        )


#: A JSON string as ``json.dumps`` writes one inside :meth:`ResultHeader.canonical` (ASCII,
#: escaped): the same C function.
_json_str = json.encoder.encode_basestring_ascii


def _hex_list(digests: tuple[bytes, ...]) -> str:
    return ",".join(f'"{d.hex()}"' for d in digests)


def price_fields(price: PriceInputs) -> dict[str, Any]:
    """The price inputs as JSON fields (a result header's and a task's ``price``)."""
    return {name: getattr(price, name) for name in PriceInputs.FIELDS}


@dataclass(frozen=True, slots=True, eq=False)
class WorkerResult:
    """A signed result: header, signature and the arrays the header commits to.

    ``positions``/``velocities`` hold every boundary state, shape (segments + 1, N, 3),
    float64; ``frames`` are float32 (F, N, 3); ``observables`` one float64 array per name.
    Everything is plain data (bytes, ints, floats, numpy arrays): safe to pickle across Ray
    and to serialise as JSON + .npz over HTTP.
    """

    header: ResultHeader
    signature: bytes
    positions: np.ndarray
    velocities: np.ndarray
    frames: np.ndarray
    frame_steps: np.ndarray
    observables: Mapping[str, np.ndarray]

    @property
    def result_digest(self) -> bytes:
        return self.header.digest()


def sign_result(
    run: RunResult, *, wu_id: bytes, identity: Identity, price: PriceInputs
) -> WorkerResult:
    """Sign ``run`` as the result of WU ``wu_id``, priced with ``price`` (the task's)."""
    positions = np.stack([b.positions for b in run.boundaries])
    velocities = np.stack([b.velocities for b in run.boundaries])
    digests = tuple(run.boundary_digests())
    observables = {k: np.asarray(v, dtype=np.float64) for k, v in run.observables.items()}
    header = ResultHeader(
        wu_id=wu_id,
        worker_key=identity.public_key,
        determinism=run.determinism.canonical().decode(),
        boundary_digests=digests,
        segment_root=segment_root(digests),
        final_digest=digests[-1],
        frames_digest=arrays_digest({"frames": run.frames, "steps": run.frame_steps}),
        observables_digest=arrays_digest(observables),
        n_atoms=int(positions.shape[1]),
        wall_time_s=float(run.wall_time_s),
        price=price,
        segment_data=segment_data_digests(
            run.frames,
            run.frame_steps,
            observables,
            n_segments=len(digests) - 1,
            segment_steps=run.spec.segment_steps,
            report_steps=run.spec.report_steps,
        ),
    )
    sig = identity.sign(header.message())
    return WorkerResult(
        header, sig, positions, velocities, run.frames, run.frame_steps, observables
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Expected:
    """What a returned result must be, from the WU handed out: the one description
    :func:`verify_result` (and the coordinator's ``verify_upload``) checks a result against."""

    wu_id: bytes
    worker_key: bytes  # the volunteer the WU was sent to
    input_digest: bytes
    n_segments: int
    n_atoms: int
    n_frames: int
    segment_steps: int
    report_steps: int
    price: PriceInputs  # exactly what the WU was priced with


def verify_result(
    result: WorkerResult, expected: Expected, *, verified: VerifiedSignatures | None = None
) -> None:
    """Check everything a result claims that can be checked without recomputing it.

    Raises :class:`ResultError` naming the first problem; returns None when the result is
    well formed: right WU and key, valid signature, the signed price inputs exactly the WU's
    (``price``), shapes, finite values, every digest recomputed from the arrays, the segment
    root recomputed from the digests. ``verified``: the process's memo of verified
    signatures, which then remembers this one (so the ledger need not verify it again).
    """
    wu_id, worker_key, price = expected.wu_id, expected.worker_key, expected.price
    n_segments, n_atoms, n_frames = expected.n_segments, expected.n_atoms, expected.n_frames
    h = result.header
    if h.version != RESULT_VERSION:
        raise ResultError(
            f"result version {h.version} is not supported (expected {RESULT_VERSION})"
        )
    if h.wu_id != wu_id:
        raise ResultError(f"result is for WU {h.wu_id.hex()[:16]}, expected {wu_id.hex()[:16]}")
    if h.worker_key != worker_key:
        raise ResultError("result is signed by another key than the volunteer it was sent to")
    verify = verify_signature if verified is None else verified.verify
    try:
        verify(h.worker_key, result.signature, h.message())
    except SignatureError as e:
        raise ResultSignatureError("the result's signature does not verify") from e
    if h.price != price:
        raise ResultError(
            "the result's signed price inputs are not the WU's: "
            + "; ".join(price.differences(h.price))
        )
    want = (n_segments + 1, n_atoms, 3)
    for name in ("positions", "velocities"):
        a = getattr(result, name)
        if not isinstance(a, np.ndarray) or a.shape != want or a.dtype != _F64:
            got = getattr(a, "shape", type(a).__name__)
            raise ResultError(f"{name} must be float64 {want}, got {got}")
        if not all_finite(a):
            raise ResultError(f"{name} contain NaN or inf")
    if result.frames.shape != (n_frames, n_atoms, 3) or result.frame_steps.shape != (n_frames,):
        raise ResultError(
            f"expected {n_frames} frames of {n_atoms} atoms, got {result.frames.shape}"
        )
    if not all_finite(np.asarray(result.frames)):
        raise ResultError("frames contain NaN or inf")
    for name, obs in result.observables.items():
        values = np.asarray(obs)
        if values.shape != (n_frames,):
            raise ResultError(f"observable {name!r} must have one value per frame ({n_frames})")
        if name == "energy" and not bool(np.isfinite(values).all()):
            raise ResultError("energies contain NaN or inf")
    if h.n_atoms != n_atoms or len(h.boundary_digests) != n_segments + 1:
        raise ResultError("header sizes do not match the WU")
    digests = state_digests(result.positions, result.velocities)
    if digests != h.boundary_digests:
        pairs = zip(digests, h.boundary_digests, strict=True)
        bad = next(k for k, (a, b) in enumerate(pairs) if a != b)
        raise ResultError(f"boundary state {bad} does not match its digest in the header")
    if digests[0] != expected.input_digest:
        raise ResultError("the first boundary state is not the WU's input state")
    if h.final_digest != digests[-1]:
        raise ResultError("final_digest is not the digest of the last boundary state")
    if h.segment_root != segment_root(digests):
        raise ResultError("segment_root is not the Merkle root of the boundary digests")
    if h.frames_digest != arrays_digest({"frames": result.frames, "steps": result.frame_steps}):
        raise ResultError("frames do not match frames_digest")
    if h.observables_digest != arrays_digest(dict(result.observables)):
        raise ResultError("observables do not match observables_digest")
    per_segment = segment_data_digests(
        result.frames,
        result.frame_steps,
        result.observables,
        n_segments=n_segments,
        segment_steps=expected.segment_steps,
        report_steps=expected.report_steps,
    )
    if h.segment_data != per_segment:
        raise ResultError(
            f"segment_data: expected the digest of each of the {n_segments} segments' frames "
            "and observables, and they do not match the arrays"
        )
    if not (math.isfinite(h.wall_time_s) and h.wall_time_s >= 0):
        raise ResultError(f"wall_time_s must be finite and >= 0, got {h.wall_time_s}")
