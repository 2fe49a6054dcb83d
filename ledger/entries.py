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
    type 2  job_submitted        v2 := job_id:bytes32  spec_digest:bytes32  lab:text
                                 v1 := job_id:bytes32  lab:text          (read, not written)
    type 3  result_validated     v2 := wu_id:bytes32  job_id:bytes32  spec_digest:bytes32
                                       engine:text  n_particles:u32  steps:u64
                                       deadline_s:u32  attestations:list<attestation2>
            attestation2            := attestation  price_terms
            price_terms             := engine:text  n_particles:u32  steps:u64
                                       deadline_s:u32   (what this worker signed)
                                 v1 := wu_id:bytes32  job_id:bytes32  engine:text
                                       n_particles:u32  steps:u64  deadline_s:u32
                                       attestations:list<attestation>  (read, not written)
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
    type 8  generation_seeded    v1 := job_id:bytes32  wu_id:bytes32  parent_wu:bytes32
                                       boundary:u32  parent_state:bytes32
                                       input_digest:bytes32  decision:bytes32  policy:text
            (an adaptive job started WU ``wu_id`` from boundary ``boundary`` of the validated
            WU ``parent_wu``; ``decision`` is the digest of the policy's recomputable choice)

``timestamp_ms`` is the ledger time (milliseconds since the Unix epoch) that the log assigned
when it appended the record; it never decreases along the log. A whole record is at most
65,535 bytes, the limit of a tlog-tiles entry bundle.

``spec_digest`` is the SHA-256 of the job's canonical engine parameters
(``coordinator.jobs.JobSpec.engine_parameters``): a job submission states it and every
validated result of the job names it, so an auditor ties each priced WU to what the lab asked.

A worker's attestation signs, with its Ed25519 key, the 158 bytes::

    b"foldnet/result-attestation/v2\\n" || wu_id || result_digest || final_state_digest
        || price_digest

where ``result_digest`` is the SHA-256 of the worker's canonical result encoding (its
commitment to everything it returned), ``final_state_digest`` the digest of the state the
next generation starts from, and ``price_digest`` = SHA-256 of the credit formula's inputs
as the worker received them with its WU (:class:`PriceInputs`)::

    b"foldnet/price/v1\\n" || engine:text || n_particles:u32 || steps:u64 || deadline_s:u32
        || issued_at_ms:u64

A v2 attestation records those inputs (``price_terms`` and its ``issued_at_ms``), so the
auditor checks each signature over exactly the numbers it prices that worker's credit with,
and a result entry whose own ``engine``/``n_particles``/``steps``/``deadline_s`` differ from
what its workers signed is a discrepancy. (v1 attestations signed the 126 bytes
``b"foldnet/result-attestation/v1\\n" || wu_id || result_digest || final_state_digest``:
their prices were the operator's word.) The ledger needs nothing else of foldnet to verify
who computed what, and at what price.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import EntryFormatError, EntryTooLargeError

__all__ = [
    "ATTESTATION_DOMAIN",
    "ATTESTATION_DOMAIN_V1",
    "MAX_ENTRY_BYTES",
    "PRICE_DOMAIN",
    "Attestation",
    "CheckpointPublished",
    "CreditGranted",
    "CreditRevoked",
    "Entry",
    "GenerationSeeded",
    "JobSubmitted",
    "PriceInputs",
    "Record",
    "ResultValidated",
    "VolunteerRegistered",
    "WitnessCosigned",
    "attestation_message",
    "attestation_message_v1",
    "decode_record",
    "encode_record",
]

#: The largest record, in bytes (an entry bundle prefixes each entry with a uint16 length).
MAX_ENTRY_BYTES = 0xFFFF
#: Domain separation prefix of the message a worker signs for a result.
ATTESTATION_DOMAIN = b"foldnet/result-attestation/v2\n"
#: The prefix v1 attestations (no prices) signed; only read, to verify old entries.
ATTESTATION_DOMAIN_V1 = b"foldnet/result-attestation/v1\n"
#: Domain separation prefix of the canonical encoding of a WU's price inputs.
PRICE_DOMAIN = b"foldnet/price/v1\n"
#: Most attestations one validated result may carry.
MAX_ATTESTATIONS = 255

_HEADER = struct.Struct(">BBQ")
_U16 = struct.Struct(">H")
_ATT = struct.Struct(">32sQ32s32s64s")
_TERMS = struct.Struct(">IQI")
_PRICE = struct.Struct(">IQIQ")
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


def attestation_message(
    wu_id: bytes, result_digest: bytes, final_state_digest: bytes, price_digest: bytes
) -> bytes:
    """The bytes a worker signs for its result of WU ``wu_id`` (see the module docstring):
    ``price_digest`` is :meth:`PriceInputs.digest` of the WU's pricing inputs it received."""
    return ATTESTATION_DOMAIN + wu_id + result_digest + final_state_digest + price_digest


def attestation_message_v1(wu_id: bytes, result_digest: bytes, final_state_digest: bytes) -> bytes:
    """What a v1 attestation signed (no prices): only to verify entries written before v2."""
    return ATTESTATION_DOMAIN_V1 + wu_id + result_digest + final_state_digest


@dataclass(frozen=True, slots=True)
class PriceInputs:
    """The WU parameters the credit formula prices (:mod:`ledger.credit`), as the worker
    received them with its WU and signed them: engine, particles, steps per WU, deadline and
    the time the WU was issued to it. Encoding ``foldnet/price/v1`` (module docstring)."""

    engine: str
    n_particles: int
    steps: int
    deadline_s: int
    issued_at_ms: int

    #: The priced fields, in encoding order (also the names a discrepancy reports).
    FIELDS: ClassVar[tuple[str, ...]] = (
        "engine",
        "n_particles",
        "steps",
        "deadline_s",
        "issued_at_ms",
    )

    def __post_init__(self) -> None:
        _text("engine", self.engine)
        if len(self.engine.encode("utf-8")) > 255:
            raise EntryFormatError(
                f"engine must be at most 255 bytes, got {len(self.engine.encode('utf-8'))}"
            )
        _uint("n_particles", self.n_particles, 32)
        _uint("steps", self.steps, 64)
        _uint("deadline_s", self.deadline_s, 32)
        _uint("issued_at_ms", self.issued_at_ms, 64)

    def encode(self) -> bytes:
        """``foldnet/price/v1``: the canonical bytes the price digest is taken over."""
        return (
            PRICE_DOMAIN
            + _enc_text(self.engine)
            + _PRICE.pack(self.n_particles, self.steps, self.deadline_s, self.issued_at_ms)
        )

    @classmethod
    def decode(cls, data: bytes) -> PriceInputs:
        """The inverse of :meth:`encode`; refuses anything else (wrong domain, trailing bytes)."""
        if not data.startswith(PRICE_DOMAIN):
            raise EntryFormatError(
                f"price inputs must start with {PRICE_DOMAIN!r}, got {data[: len(PRICE_DOMAIN)]!r}"
            )
        engine, pos = _dec_text(data, len(PRICE_DOMAIN), "engine")
        if len(data) != pos + _PRICE.size:
            raise EntryFormatError(
                f"price inputs: expected {pos + _PRICE.size} bytes, got {len(data)}"
            )
        n, steps, deadline_s, issued = _PRICE.unpack_from(data, pos)
        return cls(engine, n, steps, deadline_s, issued)

    def digest(self) -> bytes:
        """SHA-256 of :meth:`encode`: what the attestation signature covers."""
        return hashlib.sha256(self.encode()).digest()

    def differences(self, other: PriceInputs) -> list[str]:
        """``"field: expected A, got B"`` for each field where ``other`` differs from this."""
        return [
            f"{name}: expected {getattr(self, name)!r}, got {getattr(other, name)!r}"
            for name in self.FIELDS
            if getattr(self, name) != getattr(other, name)
        ]


@dataclass(frozen=True, slots=True)
class Attestation:
    """A worker's signed statement of its result for one WU, and of the WU's price inputs.

    ``price`` holds what the worker signed (v2); its ``issued_at_ms`` is the attestation's.
    ``None`` only for attestations decoded from v1 entries, whose prices nobody signed.
    """

    volunteer_key: bytes
    issued_at_ms: int
    result_digest: bytes
    final_state_digest: bytes
    signature: bytes
    price: PriceInputs | None = None

    def __post_init__(self) -> None:
        _b32("volunteer_key", self.volunteer_key)
        _uint("issued_at_ms", self.issued_at_ms, 64)
        _b32("result_digest", self.result_digest)
        _b32("final_state_digest", self.final_state_digest)
        _sig("signature", self.signature)
        if self.price is not None:
            if not isinstance(self.price, PriceInputs):
                raise EntryFormatError(
                    f"price must be PriceInputs or None, got {type(self.price).__name__}"
                )
            if self.price.issued_at_ms != self.issued_at_ms:
                raise EntryFormatError(
                    f"the signed price's issued_at_ms must be the attestation's: expected "
                    f"{self.issued_at_ms}, got {self.price.issued_at_ms}"
                )

    def message(self, wu_id: bytes) -> bytes:
        """The bytes this attestation's signature is over (v2, or v1 without a price)."""
        if self.price is None:
            return attestation_message_v1(wu_id, self.result_digest, self.final_state_digest)
        return attestation_message(
            wu_id, self.result_digest, self.final_state_digest, self.price.digest()
        )

    @classmethod
    def create(
        cls,
        *,
        private_key: Ed25519PrivateKey,
        wu_id: bytes,
        result_digest: bytes,
        final_state_digest: bytes,
        price: PriceInputs,
    ) -> Attestation:
        """Sign an attestation with a worker's key (as a worker would), over ``price``."""
        _b32("wu_id", wu_id)
        _b32("result_digest", result_digest)
        _b32("final_state_digest", final_state_digest)
        msg = attestation_message(wu_id, result_digest, final_state_digest, price.digest())
        return cls(
            volunteer_key=private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            issued_at_ms=price.issued_at_ms,
            result_digest=result_digest,
            final_state_digest=final_state_digest,
            signature=private_key.sign(msg),
            price=price,
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

    @property
    def version(self) -> int:
        return self.VERSION

    def encode_body(self) -> bytes:
        return self.volunteer_key + _enc_text(self.name)

    @classmethod
    def decode_body(cls, data: bytes, pos: int, version: int) -> tuple[VolunteerRegistered, int]:
        _need(data, pos + 32, "volunteer_key")
        name, end = _dec_text(data, pos + 32, "name")
        return cls(volunteer_key=data[pos : pos + 32], name=name), end


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    """A lab submitted a job; ``spec_digest`` is the SHA-256 of its canonical engine
    parameters (``None`` only in v1 entries, written before jobs stated it)."""

    TYPE: ClassVar[int] = 2
    VERSION: ClassVar[int] = 2
    VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)
    KIND: ClassVar[str] = "job submitted"

    job_id: bytes
    lab: str = ""
    spec_digest: bytes | None = None

    def __post_init__(self) -> None:
        _b32("job_id", self.job_id)
        _text("lab", self.lab)
        if self.spec_digest is not None:
            _b32("spec_digest", self.spec_digest)

    @property
    def version(self) -> int:
        return 1 if self.spec_digest is None else 2

    def encode_body(self) -> bytes:
        spec = b"" if self.spec_digest is None else self.spec_digest
        return self.job_id + spec + _enc_text(self.lab)

    @classmethod
    def decode_body(cls, data: bytes, pos: int, version: int) -> tuple[JobSubmitted, int]:
        _need(data, pos + 32, "job_id")
        spec: bytes | None = None
        p = pos + 32
        if version >= 2:
            _need(data, p + 32, "spec_digest")
            spec, p = data[p : p + 32], p + 32
        lab, end = _dec_text(data, p, "lab")
        return cls(job_id=data[pos : pos + 32], lab=lab, spec_digest=spec), end


@dataclass(frozen=True, slots=True)
class ResultValidated:
    """A WU's result passed validation; the agreeing workers' attestations.

    ``engine``, ``n_particles``, ``steps`` and ``deadline_s`` are the WU parameters the credit
    formula needs (:mod:`ledger.credit`), as the operator states them; each attestation
    carries the same inputs as its worker signed them, and the two must agree (the auditor
    prices with the signed ones). ``spec_digest`` names the job's spec (as its
    :class:`JobSubmitted` states it). A v1 entry (``spec_digest`` ``None``, attestations
    without prices) is still read, but nobody signed its prices.
    """

    TYPE: ClassVar[int] = 3
    VERSION: ClassVar[int] = 2
    VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)
    KIND: ClassVar[str] = "result validated"

    wu_id: bytes
    job_id: bytes
    engine: str
    n_particles: int
    steps: int
    deadline_s: int
    attestations: tuple[Attestation, ...]
    spec_digest: bytes | None = None

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
        v2 = self.spec_digest is not None
        if v2:
            _b32("spec_digest", self.spec_digest)
        unpriced = sum(a.price is None for a in self.attestations)
        if v2 and unpriced:
            raise EntryFormatError(
                f"a v2 validated result needs a signed price in every attestation; "
                f"{unpriced} of {len(self.attestations)} have none"
            )
        if not v2 and unpriced != len(self.attestations):
            raise EntryFormatError(
                "a validated result with signed prices must name its job's spec_digest"
            )

    @property
    def version(self) -> int:
        return 1 if self.spec_digest is None else 2

    def stated_price(self, issued_at_ms: int) -> PriceInputs:
        """The price inputs this entry states, for a worker issued the WU at ``issued_at_ms``."""
        return PriceInputs(self.engine, self.n_particles, self.steps, self.deadline_s, issued_at_ms)

    def encode_body(self) -> bytes:
        parts = [self.wu_id, self.job_id]
        if self.spec_digest is not None:
            parts.append(self.spec_digest)
        parts += [
            _enc_text(self.engine),
            struct.pack(
                ">IQIB", self.n_particles, self.steps, self.deadline_s, len(self.attestations)
            ),
        ]
        for a in self.attestations:
            parts.append(
                _ATT.pack(
                    a.volunteer_key,
                    a.issued_at_ms,
                    a.result_digest,
                    a.final_state_digest,
                    a.signature,
                )
            )
            if a.price is not None:
                parts.append(_enc_text(a.price.engine))
                parts.append(_TERMS.pack(a.price.n_particles, a.price.steps, a.price.deadline_s))
        return b"".join(parts)

    @classmethod
    def decode_body(cls, data: bytes, pos: int, version: int) -> tuple[ResultValidated, int]:
        _need(data, pos + 64, "wu_id/job_id")
        p = pos + 64
        spec: bytes | None = None
        if version >= 2:
            _need(data, p + 32, "spec_digest")
            spec, p = data[p : p + 32], p + 32
        engine, p = _dec_text(data, p, "engine")
        _need(data, p + 17, "WU parameters")
        n_particles, steps, deadline_s, count = struct.unpack_from(">IQIB", data, p)
        p += 17
        atts = []
        for _ in range(count):
            _need(data, p + _ATT.size, "attestations")
            key, issued, result, final, sig = _ATT.unpack_from(data, p)
            p += _ATT.size
            price = None
            if version >= 2:
                signed_engine, p = _dec_text(data, p, "the signed engine")
                _need(data, p + _TERMS.size, "the signed price")
                n, s, d = _TERMS.unpack_from(data, p)
                p += _TERMS.size
                price = PriceInputs(signed_engine, n, s, d, issued)
            atts.append(Attestation(key, issued, result, final, sig, price))
        entry = cls(
            wu_id=data[pos : pos + 32],
            job_id=data[pos + 32 : pos + 64],
            engine=engine,
            n_particles=n_particles,
            steps=steps,
            deadline_s=deadline_s,
            attestations=tuple(atts),
            spec_digest=spec,
        )
        return entry, p

    def signed_messages(self) -> list[tuple[bytes, bytes, bytes]]:
        """``(public key, signature, message)`` for every attestation."""
        return [(a.volunteer_key, a.signature, a.message(self.wu_id)) for a in self.attestations]


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

    @property
    def version(self) -> int:
        return self.VERSION

    def encode_body(self) -> bytes:
        return struct.pack(
            ">32s32sHQ", self.volunteer_key, self.wu_id, self.formula_version, self.amount
        )

    @classmethod
    def decode_body(cls, data: bytes, pos: int, version: int) -> tuple[CreditGranted, int]:
        _need(data, pos + 74, "credit")
        key, wu, formula, amount = struct.unpack_from(">32s32sHQ", data, pos)
        return cls(volunteer_key=key, wu_id=wu, formula_version=formula, amount=amount), pos + 74


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

    @property
    def version(self) -> int:
        return self.VERSION

    def encode_body(self) -> bytes:
        return struct.pack(">32s32sQ", self.volunteer_key, self.wu_id, self.amount) + _enc_text(
            self.reason
        )

    @classmethod
    def decode_body(cls, data: bytes, pos: int, version: int) -> tuple[CreditRevoked, int]:
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

    @property
    def version(self) -> int:
        return self.VERSION

    def encode_body(self) -> bytes:
        return _enc_text(self.note)

    @classmethod
    def decode_body(cls, data: bytes, pos: int, version: int) -> tuple[CheckpointPublished, int]:
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

    @property
    def version(self) -> int:
        return self.VERSION

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
    def decode_body(cls, data: bytes, pos: int, version: int) -> tuple[WitnessCosigned, int]:
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


@dataclass(frozen=True, slots=True)
class GenerationSeeded:
    """Where an adaptive job's generation started, and the digest of why (the policy's
    decision, which anyone can recompute from the validated results it names)."""

    TYPE: ClassVar[int] = 8
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "generation seeded"

    job_id: bytes
    wu_id: bytes
    parent_wu: bytes
    boundary: int
    parent_state: bytes
    input_digest: bytes
    decision: bytes
    policy: str

    def __post_init__(self) -> None:
        for name in ("job_id", "wu_id", "parent_wu", "parent_state", "input_digest", "decision"):
            _b32(name, getattr(self, name))
        _uint("boundary", self.boundary, 32)
        _text("policy", self.policy)

    @property
    def version(self) -> int:
        return self.VERSION

    def encode_body(self) -> bytes:
        return struct.pack(
            ">32s32s32sI32s32s32s",
            self.job_id,
            self.wu_id,
            self.parent_wu,
            self.boundary,
            self.parent_state,
            self.input_digest,
            self.decision,
        ) + _enc_text(self.policy)

    @classmethod
    def decode_body(cls, data: bytes, pos: int, version: int) -> tuple[GenerationSeeded, int]:
        _need(data, pos + 196, "seed")
        job, wu, parent, boundary, state, digest, decision = struct.unpack_from(
            ">32s32s32sI32s32s32s", data, pos
        )
        policy, end = _dec_text(data, pos + 196, "policy")
        return cls(
            job_id=job,
            wu_id=wu,
            parent_wu=parent,
            boundary=boundary,
            parent_state=state,
            input_digest=digest,
            decision=decision,
            policy=policy,
        ), end


Entry: TypeAlias = (
    VolunteerRegistered
    | JobSubmitted
    | ResultValidated
    | CreditGranted
    | CreditRevoked
    | CheckpointPublished
    | WitnessCosigned
    | GenerationSeeded
)

_TYPES: dict[tuple[int, int], type[Entry]] = {
    (cls.TYPE, version): cls
    for cls in (
        VolunteerRegistered,
        JobSubmitted,
        ResultValidated,
        CreditGranted,
        CreditRevoked,
        CheckpointPublished,
        WitnessCosigned,
        GenerationSeeded,
    )
    for version in getattr(cls, "VERSIONS", (cls.VERSION,))
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
    data = _HEADER.pack(entry.TYPE, entry.version, record.timestamp_ms) + entry.encode_body()
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
    entry, end = cls.decode_body(data, _HEADER.size, version)
    if end != len(data):
        raise EntryFormatError(
            f"{cls.KIND} entry has {len(data) - end} trailing bytes after its last field"
        )
    return Record(timestamp_ms=ts, entry=entry)
