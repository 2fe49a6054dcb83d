"""Ledger entries: typed, versioned records and their one canonical byte encoding.

The bytes defined here are what the Merkle tree hashes (leaf = SHA-256(0x00 || record)), what
tlog-tiles entry bundles carry, and what an auditor decodes. There is exactly one encoding of
each record, so decoding then re-encoding gives back the same bytes; anything else (unknown
type or version, truncated, trailing bytes, non-UTF-8 text) is refused with
:class:`~ledger.errors.EntryFormatError`.

Encoding (all integers unsigned big-endian)::

    record      := type:u8  version:u8  timestamp_ms:u64  body
    bytes32     := 32 bytes                 (public keys, digests, ids)
    sig64       := 64 bytes                 (Ed25519 signatures)
    text        := length:u16  UTF-8 bytes  (no control characters)
    list<T>     := count:u8  T{count}

    type 1  volunteer_registered v1 := volunteer_key:bytes32  name:text
    type 2  job_submitted        v1 := job_id:bytes32  lab:text
    type 3  result_validated     v1 := wu_id:bytes32  job_id:bytes32  engine:text
                                       n_particles:u32  steps:u64  deadline_s:u32
                                       attestations:list<attestation>
            attestation             := volunteer_key:bytes32  issued_at_ms:u64
                                       result_digest:bytes32  final_state_digest:bytes32
                                       signature:sig64
    type 4  credit_granted       v1 := volunteer_key:bytes32  wu_id:bytes32
                                       formula_version:u16  amount:u64
    type 5  credit_revoked       v1 := volunteer_key:bytes32  wu_id:bytes32  amount:u64
                                       reason:text
    type 6  checkpoint_published v1 := note:text        (the signed checkpoint note)
    type 7  witness_cosigned     v1 := witness_name:text  witness_key:bytes32
                                       tree_size:u64  root_hash:bytes32
                                       timestamp:u64  signature:sig64

``timestamp_ms`` is the ledger time (milliseconds since the Unix epoch) that the log assigned
when it appended the record; it never decreases along the log. A whole record is at most
65,535 bytes, the limit of a tlog-tiles entry bundle.

A worker's attestation signs, with its Ed25519 key, the 126 bytes::

    b"foldnet/result-attestation/v1\\n" || wu_id || result_digest || final_state_digest

where ``result_digest`` is the SHA-256 of the worker's canonical result encoding (its
commitment to everything it returned) and ``final_state_digest`` the digest of the state the
next generation starts from. The auditor checks each signature against this message, so the
ledger needs nothing else of foldnet to verify who computed what.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import EntryFormatError, EntryTooLargeError

__all__ = [
    "ATTESTATION_DOMAIN",
    "MAX_ENTRY_BYTES",
    "Attestation",
    "CheckpointPublished",
    "CreditGranted",
    "CreditRevoked",
    "Entry",
    "JobSubmitted",
    "Record",
    "ResultValidated",
    "VolunteerRegistered",
    "WitnessCosigned",
    "attestation_message",
    "decode_record",
    "encode_record",
]

#: The largest record, in bytes (an entry bundle prefixes each entry with a uint16 length).
MAX_ENTRY_BYTES = 0xFFFF
#: Domain separation prefix of the message a worker signs for a result.
ATTESTATION_DOMAIN = b"foldnet/result-attestation/v1\n"
#: Most attestations one validated result may carry.
MAX_ATTESTATIONS = 255

_HEADER = struct.Struct(">BBQ")
_U16 = struct.Struct(">H")
_ATT = struct.Struct(">32sQ32s32s64s")
_U64_MAX = (1 << 64) - 1


# ------------------------------------------------------------------------------ field checks


def _b32(name: str, value: object) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise EntryFormatError(f"{name} must be 32 bytes")


def _sig(name: str, value: object) -> None:
    if not isinstance(value, bytes) or len(value) != 64:
        raise EntryFormatError(f"{name} must be a 64-byte Ed25519 signature")


def _uint(name: str, value: object, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise EntryFormatError(f"{name} must be an integer in [0, 2**{bits}), got {value!r}")


def _text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise EntryFormatError(f"{name} must be text")
    if any(c < " " or c == "\x7f" for c in value):
        raise EntryFormatError(f"{name} must not contain control characters")
    if len(value.encode("utf-8", "surrogatepass")) > 0xFFFF:
        raise EntryFormatError(f"{name} is longer than 65,535 bytes")


def _enc_text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _dec_text(data: bytes, pos: int, name: str) -> tuple[str, int]:
    if pos + 2 > len(data):
        raise EntryFormatError(f"entry truncated in the length of {name}")
    (n,) = _U16.unpack_from(data, pos)
    end = pos + 2 + n
    if end > len(data):
        raise EntryFormatError(f"entry truncated in {name}")
    try:
        text = data[pos + 2 : end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise EntryFormatError(f"{name} is not valid UTF-8") from e
    return text, end


def _need(data: bytes, end: int, what: str) -> None:
    if end > len(data):
        raise EntryFormatError(f"entry truncated in {what}")


# ------------------------------------------------------------------------------ entry types


def attestation_message(wu_id: bytes, result_digest: bytes, final_state_digest: bytes) -> bytes:
    """The bytes a worker signs for its result of WU ``wu_id`` (see the module docstring)."""
    return ATTESTATION_DOMAIN + wu_id + result_digest + final_state_digest


@dataclass(frozen=True, slots=True)
class Attestation:
    """A worker's signed statement of its result for one WU, and when the WU was issued."""

    volunteer_key: bytes
    issued_at_ms: int
    result_digest: bytes
    final_state_digest: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _b32("volunteer_key", self.volunteer_key)
        _uint("issued_at_ms", self.issued_at_ms, 64)
        _b32("result_digest", self.result_digest)
        _b32("final_state_digest", self.final_state_digest)
        _sig("signature", self.signature)

    @classmethod
    def create(
        cls,
        *,
        private_key: Ed25519PrivateKey,
        wu_id: bytes,
        issued_at_ms: int,
        result_digest: bytes,
        final_state_digest: bytes,
    ) -> Attestation:
        """Sign an attestation with a worker's key (as a worker would)."""
        _b32("wu_id", wu_id)
        msg = attestation_message(wu_id, result_digest, final_state_digest)
        return cls(
            volunteer_key=private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            issued_at_ms=issued_at_ms,
            result_digest=result_digest,
            final_state_digest=final_state_digest,
            signature=private_key.sign(msg),
        )


@dataclass(frozen=True, slots=True)
class VolunteerRegistered:
    """A volunteer joined, identified by its Ed25519 public key."""

    TYPE: ClassVar[int] = 1
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "volunteer registered"

    volunteer_key: bytes
    name: str = ""

    def __post_init__(self) -> None:
        _b32("volunteer_key", self.volunteer_key)
        _text("name", self.name)

    def encode_body(self) -> bytes:
        return self.volunteer_key + _enc_text(self.name)

    @classmethod
    def decode_body(cls, data: bytes, pos: int) -> tuple[VolunteerRegistered, int]:
        _need(data, pos + 32, "volunteer_key")
        name, end = _dec_text(data, pos + 32, "name")
        return cls(volunteer_key=data[pos : pos + 32], name=name), end


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    """A lab submitted a job; ``job_id`` is the SHA-256 digest of its canonical spec."""

    TYPE: ClassVar[int] = 2
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "job submitted"

    job_id: bytes
    lab: str = ""

    def __post_init__(self) -> None:
        _b32("job_id", self.job_id)
        _text("lab", self.lab)

    def encode_body(self) -> bytes:
        return self.job_id + _enc_text(self.lab)

    @classmethod
    def decode_body(cls, data: bytes, pos: int) -> tuple[JobSubmitted, int]:
        _need(data, pos + 32, "job_id")
        lab, end = _dec_text(data, pos + 32, "lab")
        return cls(job_id=data[pos : pos + 32], lab=lab), end


@dataclass(frozen=True, slots=True)
class ResultValidated:
    """A WU's result passed validation; the agreeing workers' attestations.

    ``engine``, ``n_particles``, ``steps`` and ``deadline_s`` are the WU parameters the credit
    formula needs (:mod:`ledger.credit`).
    """

    TYPE: ClassVar[int] = 3
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "result validated"

    wu_id: bytes
    job_id: bytes
    engine: str
    n_particles: int
    steps: int
    deadline_s: int
    attestations: tuple[Attestation, ...]

    def __post_init__(self) -> None:
        _b32("wu_id", self.wu_id)
        _b32("job_id", self.job_id)
        _text("engine", self.engine)
        _uint("n_particles", self.n_particles, 32)
        _uint("steps", self.steps, 64)
        _uint("deadline_s", self.deadline_s, 32)
        if not isinstance(self.attestations, tuple) or not all(
            isinstance(a, Attestation) for a in self.attestations
        ):
            raise EntryFormatError("attestations must be a tuple of Attestation")
        if not 1 <= len(self.attestations) <= MAX_ATTESTATIONS:
            raise EntryFormatError(
                f"a validated result needs 1 to {MAX_ATTESTATIONS} attestations, "
                f"got {len(self.attestations)}"
            )

    def encode_body(self) -> bytes:
        parts = [
            self.wu_id,
            self.job_id,
            _enc_text(self.engine),
            struct.pack(
                ">IQIB", self.n_particles, self.steps, self.deadline_s, len(self.attestations)
            ),
        ]
        parts.extend(
            _ATT.pack(
                a.volunteer_key, a.issued_at_ms, a.result_digest, a.final_state_digest, a.signature
            )
            for a in self.attestations
        )
        return b"".join(parts)

    @classmethod
    def decode_body(cls, data: bytes, pos: int) -> tuple[ResultValidated, int]:
        _need(data, pos + 64, "wu_id/job_id")
        engine, pos2 = _dec_text(data, pos + 64, "engine")
        _need(data, pos2 + 17, "WU parameters")
        n_particles, steps, deadline_s, count = struct.unpack_from(">IQIB", data, pos2)
        p = pos2 + 17
        end = p + count * _ATT.size
        _need(data, end, "attestations")
        atts = tuple(Attestation(*_ATT.unpack_from(data, p + i * _ATT.size)) for i in range(count))
        entry = cls(
            wu_id=data[pos : pos + 32],
            job_id=data[pos + 32 : pos + 64],
            engine=engine,
            n_particles=n_particles,
            steps=steps,
            deadline_s=deadline_s,
            attestations=atts,
        )
        return entry, end

    def signed_messages(self) -> list[tuple[bytes, bytes, bytes]]:
        """``(public key, signature, message)`` for every attestation."""
        return [
            (
                a.volunteer_key,
                a.signature,
                attestation_message(self.wu_id, a.result_digest, a.final_state_digest),
            )
            for a in self.attestations
        ]


@dataclass(frozen=True, slots=True)
class CreditGranted:
    """Credit for a volunteer's share in a validated WU, priced by formula ``formula_version``."""

    TYPE: ClassVar[int] = 4
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "credit granted"

    volunteer_key: bytes
    wu_id: bytes
    formula_version: int
    amount: int

    def __post_init__(self) -> None:
        _b32("volunteer_key", self.volunteer_key)
        _b32("wu_id", self.wu_id)
        _uint("formula_version", self.formula_version, 16)
        _uint("amount", self.amount, 64)

    def encode_body(self) -> bytes:
        return struct.pack(
            ">32s32sHQ", self.volunteer_key, self.wu_id, self.formula_version, self.amount
        )

    @classmethod
    def decode_body(cls, data: bytes, pos: int) -> tuple[CreditGranted, int]:
        _need(data, pos + 74, "credit")
        key, wu, version, amount = struct.unpack_from(">32s32sHQ", data, pos)
        return cls(volunteer_key=key, wu_id=wu, formula_version=version, amount=amount), pos + 74


@dataclass(frozen=True, slots=True)
class CreditRevoked:
    """A correction: a grant withdrawn (nothing is deleted; balances subtract it)."""

    TYPE: ClassVar[int] = 5
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "credit revoked"

    volunteer_key: bytes
    wu_id: bytes
    amount: int
    reason: str = ""

    def __post_init__(self) -> None:
        _b32("volunteer_key", self.volunteer_key)
        _b32("wu_id", self.wu_id)
        _uint("amount", self.amount, 64)
        _text("reason", self.reason)

    def encode_body(self) -> bytes:
        return struct.pack(">32s32sQ", self.volunteer_key, self.wu_id, self.amount) + _enc_text(
            self.reason
        )

    @classmethod
    def decode_body(cls, data: bytes, pos: int) -> tuple[CreditRevoked, int]:
        _need(data, pos + 72, "revocation")
        key, wu, amount = struct.unpack_from(">32s32sQ", data, pos)
        reason, end = _dec_text(data, pos + 72, "reason")
        return cls(volunteer_key=key, wu_id=wu, amount=amount, reason=reason), end


@dataclass(frozen=True, slots=True)
class CheckpointPublished:
    """The log published a checkpoint; ``note`` is the signed note as it was published."""

    TYPE: ClassVar[int] = 6
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "checkpoint published"

    note: str

    def __post_init__(self) -> None:
        if not isinstance(self.note, str) or not self.note:
            raise EntryFormatError("note must be non-empty text")
        if len(self.note.encode("utf-8", "surrogatepass")) > 0xFFFF:
            raise EntryFormatError("note is longer than 65,535 bytes")

    def encode_body(self) -> bytes:
        return _enc_text(self.note)

    @classmethod
    def decode_body(cls, data: bytes, pos: int) -> tuple[CheckpointPublished, int]:
        note, end = _dec_text(data, pos, "note")
        return cls(note=note), end


@dataclass(frozen=True, slots=True)
class WitnessCosigned:
    """A witness cosigned the log's checkpoint ``(tree_size, root_hash)`` (cosignature/v1)."""

    TYPE: ClassVar[int] = 7
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "witness cosignature recorded"

    witness_name: str
    witness_key: bytes
    tree_size: int
    root_hash: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        _text("witness_name", self.witness_name)
        _b32("witness_key", self.witness_key)
        _uint("tree_size", self.tree_size, 64)
        _b32("root_hash", self.root_hash)
        _uint("timestamp", self.timestamp, 63)
        _sig("signature", self.signature)

    def encode_body(self) -> bytes:
        return _enc_text(self.witness_name) + struct.pack(
            ">32sQ32sQ64s",
            self.witness_key,
            self.tree_size,
            self.root_hash,
            self.timestamp,
            self.signature,
        )

    @classmethod
    def decode_body(cls, data: bytes, pos: int) -> tuple[WitnessCosigned, int]:
        name, p = _dec_text(data, pos, "witness_name")
        _need(data, p + 144, "cosignature")
        key, size, root, ts, sig = struct.unpack_from(">32sQ32sQ64s", data, p)
        return cls(
            witness_name=name,
            witness_key=key,
            tree_size=size,
            root_hash=root,
            timestamp=ts,
            signature=sig,
        ), p + 144


Entry: TypeAlias = (
    VolunteerRegistered
    | JobSubmitted
    | ResultValidated
    | CreditGranted
    | CreditRevoked
    | CheckpointPublished
    | WitnessCosigned
)

_TYPES: dict[tuple[int, int], type[Entry]] = {
    (cls.TYPE, cls.VERSION): cls
    for cls in (
        VolunteerRegistered,
        JobSubmitted,
        ResultValidated,
        CreditGranted,
        CreditRevoked,
        CheckpointPublished,
        WitnessCosigned,
    )
}
_KNOWN_TYPES = {t for t, _ in _TYPES}


@dataclass(frozen=True, slots=True)
class Record:
    """An entry as the log holds it: the ledger time it was appended, and the entry."""

    timestamp_ms: int
    entry: Entry

    def __post_init__(self) -> None:
        _uint("timestamp_ms", self.timestamp_ms, 64)
        if type(self.entry) not in _TYPES.values():
            raise EntryFormatError(f"{type(self.entry).__name__} is not a ledger entry type")

    def encode(self) -> bytes:
        return encode_record(self)


def encode_record(record: Record) -> bytes:
    """The canonical bytes of ``record``; raises :class:`EntryTooLargeError` over 65,535."""
    entry = record.entry
    data = _HEADER.pack(entry.TYPE, entry.VERSION, record.timestamp_ms) + entry.encode_body()
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryTooLargeError(
            f"{entry.KIND} entry is {len(data):,} bytes; the limit is {MAX_ENTRY_BYTES:,}"
        )
    return data


def decode_record(data: bytes) -> Record:
    """Decode canonical record bytes; raises :class:`EntryFormatError` for anything else."""
    if not isinstance(data, bytes):
        raise EntryFormatError(f"an entry is bytes, got {type(data).__name__}")
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryTooLargeError(f"entry is {len(data):,} bytes; the limit is {MAX_ENTRY_BYTES:,}")
    if len(data) < _HEADER.size:
        raise EntryFormatError(f"entry is {len(data)} bytes, shorter than its 10-byte header")
    etype, version, ts = _HEADER.unpack_from(data, 0)
    cls = _TYPES.get((etype, version))
    if cls is None:
        if etype in _KNOWN_TYPES:
            raise EntryFormatError(f"entry type {etype} has no version {version}")
        raise EntryFormatError(f"unknown entry type {etype}")
    entry, end = cls.decode_body(data, _HEADER.size)
    if end != len(data):
        raise EntryFormatError(
            f"{cls.KIND} entry has {len(data) - end} trailing bytes after its last field"
        )
    return Record(timestamp_ms=ts, entry=entry)
