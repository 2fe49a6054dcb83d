"""Checkpoints: signed tree heads as C2SP tlog-checkpoint signed notes.

The note text (c2sp.org/tlog-checkpoint) is::

    <origin>
    <tree size, ASCII decimal, no leading zeroes>
    <root hash, standard base64>
    [extension lines, non-empty]

followed by a blank line and signature lines (c2sp.org/signed-note): the log's Ed25519
signature (type 0x01, key name = origin) and any witness cosignatures (type 0x04).

A log must never sign two inconsistent checkpoints. :class:`CheckpointSigner` enforces it:
it remembers the last checkpoint it signed and signs a new one only with a consistency proof
from that one that verifies (RFC 9162 §2.1.4.2).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.errors import (
    ConsistencyProofError,
    InconsistentCheckpointError,
    NoteFormatError,
)
from ledger.merkle import HASH_SIZE, verify_consistency
from ledger.note import Note, NoteSigner, NoteVerifier, parse_note, verify_note

__all__ = [
    "Checkpoint",
    "CheckpointSigner",
    "SignedCheckpoint",
    "open_checkpoint",
]

_MAX_SIZE = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: origin, size and root hash (plus optional extension lines)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or "\n" in self.origin:
            raise NoteFormatError("a checkpoint origin must be one non-empty line")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise NoteFormatError("a checkpoint size must be an integer")
        if not 0 <= self.size <= _MAX_SIZE:
            raise NoteFormatError(f"checkpoint size {self.size} is out of range")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise NoteFormatError(f"a checkpoint root hash must be {HASH_SIZE} bytes")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise NoteFormatError("checkpoint extension lines must be non-empty single lines")

    def body(self) -> str:
        """The note text that is signed, final newline included."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text; raises :class:`NoteFormatError` if malformed."""
        if not text.endswith("\n"):
            raise NoteFormatError("checkpoint text does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteFormatError(
                f"checkpoint text has {len(lines)} lines; it needs origin, size and root hash"
            )
        origin, size_s, root_s, *ext = lines
        if not origin:
            raise NoteFormatError("checkpoint origin line is empty")
        if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
            raise NoteFormatError(f"checkpoint size {size_s!r} is not a canonical decimal")
        size = int(size_s)
        try:
            root = base64.b64decode(root_s, validate=True)
        except (binascii.Error, ValueError) as e:
            raise NoteFormatError(f"checkpoint root hash {root_s!r} is not base64") from e
        if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_s:
            raise NoteFormatError(f"checkpoint root hash {root_s!r} is not 32 bytes of base64")
        if any(not e for e in ext):
            raise NoteFormatError("checkpoint has an empty extension line")
        return cls(origin=origin, size=size, root_hash=root, extensions=tuple(ext))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint and the signed note that carries it (log signature, cosignatures)."""

    checkpoint: Checkpoint
    note: Note

    def encode(self) -> str:
        return self.note.encode()


def open_checkpoint(
    text: str | bytes,
    *,
    log_verifier: NoteVerifier,
    origin: str | None = None,
) -> SignedCheckpoint:
    """Parse a checkpoint note and verify the log's signature on it.

    ``origin`` (default: the verifier's key name) must equal the checkpoint's origin line.
    Raises :class:`NoteFormatError`, :class:`~ledger.errors.UnknownKeyError` (wrong key name
    or key id) or :class:`~ledger.errors.SignatureError`.
    """
    note = parse_note(text)
    cp = Checkpoint.from_body(note.text)
    want = log_verifier.name if origin is None else origin
    if cp.origin != want:
        raise NoteFormatError(f"checkpoint is for log {cp.origin!r}, expected {want!r}")
    verify_note(note, [log_verifier])
    return SignedCheckpoint(checkpoint=cp, note=note)


class CheckpointSigner:
    """Signs checkpoints for one log, never two that are inconsistent.

    ``latest`` is the last checkpoint this log signed (``None`` for a new log). Each call to
    :meth:`sign` must bring a consistency proof from it; the signer refuses a smaller tree, a
    different root at the same size, or a proof that does not verify.
    """

    __slots__ = ("_latest", "_signer")

    def __init__(self, signer: NoteSigner, *, latest: Checkpoint | None = None) -> None:
        self._signer = signer
        self._latest = latest

    @property
    def latest(self) -> Checkpoint | None:
        return self._latest

    def sign(self, checkpoint: Checkpoint, *, proof: Sequence[bytes] = ()) -> SignedCheckpoint:
        if checkpoint.origin != self._signer.name:
            raise InconsistentCheckpointError(
                f"checkpoint origin {checkpoint.origin!r} is not this log's {self._signer.name!r}"
            )
        last = self._latest
        if last is not None and last.size > 0:
            if checkpoint.size < last.size:
                raise InconsistentCheckpointError(
                    f"refusing to sign size {checkpoint.size}: this log already signed size "
                    f"{last.size} (a rollback)"
                )
            try:
                verify_consistency(
                    last.size, checkpoint.size, proof, last.root_hash, checkpoint.root_hash
                )
            except ConsistencyProofError as e:
                raise InconsistentCheckpointError(
                    f"refusing to sign size {checkpoint.size} root "
                    f"{checkpoint.root_hash.hex()}: not consistent with the checkpoint signed "
                    f"before at size {last.size} ({e})"
                ) from e
        body = checkpoint.body()
        note = Note(text=body, signatures=(self._signer.sign(body),))
        self._latest = checkpoint
        return SignedCheckpoint(checkpoint=checkpoint, note=note)
