"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 signatures (type 0x01).

A note is UTF-8 text ending in a newline, a blank line, and one or more signature lines::

    <text, ending in "\\n">
    <blank line>
    — <key name> <base64(4-byte key id || signature)>

The key id of an Ed25519 key is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``. Per the
spec a verifier ignores signatures from unknown keys (name *and* key id must both match), must
verify a signature from a known key, rejects the note when one of those fails, and rejects it
when no known key signed.

Other signature types plug in through the :class:`NoteVerifier` protocol (see
:mod:`ledger.cosignature` for the timestamped witness cosignatures, type 0x04).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import KeyFileError, NoteFormatError, SignatureError, UnknownKeyError

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "SIG_TYPE_COSIGNATURE_V1",
    "SIG_TYPE_ED25519",
    "Ed25519NoteSigner",
    "Ed25519NoteVerifier",
    "Note",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "check_key_name",
    "key_id",
    "parse_note",
    "verify_note",
]

#: Signature type byte of plain Ed25519 note signatures.
SIG_TYPE_ED25519 = 0x01
#: Signature type byte of timestamped Ed25519 witness cosignatures (c2sp.org/tlog-cosignature).
SIG_TYPE_COSIGNATURE_V1 = 0x04
#: Notes with more signature lines are refused (the spec requires accepting at least 16).
MAX_SIGNATURES = 64
#: Notes larger than this are refused before parsing.
MAX_NOTE_BYTES = 1 << 16

_DASH = "\u2014 "


def check_key_name(name: str) -> str:
    """A key name must be non-empty, without Unicode spaces or ``+``."""
    if not isinstance(name, str) or not name:
        raise NoteFormatError("a key name must be a non-empty string")
    if "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise NoteFormatError(f"key name {name!r} must not contain spaces, '+' or control chars")
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || sig_type || public_key)[:4]`` (signed-note §Signatures)."""
    check_key_name(name)
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: the key name, its 4-byte key id, and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_DASH}{self.name} {blob}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A note's text (ending in a newline) and its signatures, in order."""

    text: str
    signatures: tuple[NoteSignature, ...] = ()

    def encode(self) -> str:
        """The note as it travels: text, blank line, signature lines."""
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signatures(self, extra: Iterable[NoteSignature]) -> Note:
        """A copy with ``extra`` signatures appended (one per (name, key id) pair)."""
        have = {(s.name, s.key_id) for s in self.signatures}
        new = [s for s in extra if (s.name, s.key_id) not in have]
        return Note(self.text, self.signatures + tuple(new))


def _check_text(text: str) -> None:
    for c in text:
        if c < " " and c != "\n":
            raise NoteFormatError(f"note contains the control character {c!r}")


def parse_note(data: str | bytes) -> Note:
    """Parse a signed note; raises :class:`NoteFormatError` on anything malformed."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise NoteFormatError(f"note is {len(data)} bytes, more than {MAX_NOTE_BYTES}")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteFormatError("note is not valid UTF-8") from e
    if not isinstance(data, str):
        raise NoteFormatError(f"a note must be text, got {type(data).__name__}")
    if len(data.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise NoteFormatError(f"note is larger than {MAX_NOTE_BYTES} bytes")
    _check_text(data)
    if not data.endswith("\n"):
        raise NoteFormatError("note does not end with a newline (truncated?)")
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("note has no blank line before its signatures (truncated?)")
    text, sig_block = data[: split + 1], data[split + 2 :]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise NoteFormatError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    sigs: list[NoteSignature] = []
    for n, line in enumerate(lines, 1):
        if not line.startswith(_DASH):
            raise NoteFormatError(f"signature line {n} does not start with '\u2014 '")
        parts = line[len(_DASH) :].split(" ")
        if len(parts) != 2:
            raise NoteFormatError(f"signature line {n} is not '\u2014 <name> <base64>'")
        name, blob = parts
        check_key_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError) as e:
            raise NoteFormatError(f"signature line {n} is not valid base64") from e
        if len(raw) < 5:
            raise NoteFormatError(f"signature line {n} is too short to hold a key id")
        sigs.append(NoteSignature(name=name, key_id=raw[:4], signature=raw[4:]))
    return Note(text=text, signatures=tuple(sigs))


class NoteVerifier(Protocol):
    """Verifies note signatures of one key: name + key id select it, ``verify`` checks it."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, text: str, signature: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is valid over ``text``."""
        ...


class NoteSigner(Protocol):
    """Produces note signatures of one key."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, text: str) -> NoteSignature: ...


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte Ed25519 public key (of a private key: its public half)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A named Ed25519 public key of one signature type (0x01 log, 0x04 witness)."""

    SIG_TYPE: ClassVar[int]

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise KeyFileError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.SIG_TYPE, self.public_key)

    @property
    def vkey(self) -> str:
        """The verifier key string ``<name>+<hex key id>+<base64(type || key)>``."""
        blob = base64.b64encode(bytes([self.SIG_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"


@dataclass(frozen=True, slots=True)
class Ed25519NoteVerifier(VerifierKey):
    """An Ed25519 (type 0x01) note verifier: the key a log signs its checkpoints with."""

    SIG_TYPE: ClassVar[int] = SIG_TYPE_ED25519

    def verify(self, text: str, signature: bytes) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text.encode())
        except (InvalidSignature, ValueError) as e:
            raise SignatureError(f"the Ed25519 signature of {self.name!r} does not verify") from e


@dataclass(frozen=True, slots=True)
class Ed25519NoteSigner:
    """Signs note text with an Ed25519 key under a key name."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @property
    def verifier(self) -> Ed25519NoteVerifier:
        return Ed25519NoteVerifier(self.name, public_key_bytes(self.private_key))

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    def sign(self, text: str) -> NoteSignature:
        sig = self.private_key.sign(text.encode())
        return NoteSignature(name=self.name, key_id=self.key_id, signature=sig)


def verify_note(note: Note, verifiers: Sequence[NoteVerifier]) -> list[NoteVerifier]:
    """Verify ``note`` under the known ``verifiers``; return those whose signature verified.

    Signatures by unknown keys are ignored. A signature by a known key that does not verify
    raises :class:`SignatureError`; no signature by any known key raises
    :class:`UnknownKeyError`.
    """
    known = {(v.name, v.key_id): v for v in verifiers}
    ok: list[NoteVerifier] = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        v.verify(note.text, sig.signature)
        if v not in ok:
            ok.append(v)
    if not ok:
        names = ", ".join(f"{v.name} ({v.key_id.hex()})" for v in verifiers) or "none"
        seen = ", ".join(f"{s.name} ({s.key_id.hex()})" for s in note.signatures)
        raise UnknownKeyError(f"no signature by a trusted key: trusted {names}; note has {seen}")
    return ok
