"""Timestamped Ed25519 witness cosignatures, ``cosignature/v1`` (c2sp.org/tlog-cosignature).

A cosignature is a signed-note signature line on a checkpoint, by a witness key of signature
type 0x04::

    key id    = SHA-256(<name> || 0x0A || 0x04 || 32-byte Ed25519 public key)[:4]
    signature = base64(key id || u64 big-endian timestamp || Ed25519 signature)

and the Ed25519 signature is over::

    cosignature/v1
    time <timestamp, ASCII decimal, no leading zeroes>
    <the whole checkpoint note text, final newline included>

It states that, at that POSIX time, the consistent tree head with the largest size the witness
has observed for the log has that root hash.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import SignatureError
from ledger.note import (
    SIG_TYPE_COSIGNATURE_V1,
    NoteSignature,
    VerifierKey,
    check_key_name,
    public_key_bytes,
)

__all__ = [
    "CosignatureV1Signer",
    "CosignatureV1Verifier",
    "cosignature_timestamp",
    "cosigned_message",
]

_MAX_TIMESTAMP = (1 << 63) - 1


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` signs: header, time line, checkpoint note text."""
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise SignatureError(f"cosignature timestamp {timestamp} is out of range")
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosignature_timestamp(signature: bytes) -> int:
    """The timestamp carried in a cosignature's signature bytes (after the key id)."""
    if len(signature) != 72:
        raise SignatureError(f"a cosignature/v1 signature is 72 bytes, got {len(signature)}")
    (ts,) = struct.unpack(">Q", signature[:8])
    return int(ts)


@dataclass(frozen=True, slots=True)
class CosignatureV1Verifier(VerifierKey):
    """Verifies a witness's ``cosignature/v1`` lines; a :class:`~ledger.note.NoteVerifier`."""

    SIG_TYPE: ClassVar[int] = SIG_TYPE_COSIGNATURE_V1

    def verify(self, text: str, signature: bytes) -> None:
        ts = cosignature_timestamp(signature)
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature[8:], cosigned_message(text, ts)
            )
        except (InvalidSignature, ValueError) as e:
            raise SignatureError(f"the cosignature of witness {self.name!r} does not verify") from e


@dataclass(frozen=True, slots=True)
class CosignatureV1Signer:
    """Produces ``cosignature/v1`` lines with a witness key."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @property
    def verifier(self) -> CosignatureV1Verifier:
        return CosignatureV1Verifier(self.name, public_key_bytes(self.private_key))

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    def cosign(self, text: str, timestamp: int) -> NoteSignature:
        """Cosign checkpoint note ``text`` at POSIX ``timestamp``."""
        sig = self.private_key.sign(cosigned_message(text, timestamp))
        return NoteSignature(
            name=self.name, key_id=self.key_id, signature=struct.pack(">Q", timestamp) + sig
        )
