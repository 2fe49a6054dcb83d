"""A volunteer's identity: an Ed25519 key created on first start, kept in a 0600 file."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import KeyFileError
from ledger.keys import load_or_create_private_key, public_key_bytes
from worker.errors import IdentityError, PicklingRefusedError


def default_key_path() -> Path:
    """``$FOLDNET_KEY``, else ``$FOLDNET_HOME/volunteer.key``, else ``~/.foldnet/volunteer.key``.

    ``foldnet worker join`` sets ``FOLDNET_KEY`` for the Ray node it starts, so the volunteer
    actor that runs there signs with the key the volunteer chose.
    """
    if os.environ.get("FOLDNET_KEY"):
        return Path(os.environ["FOLDNET_KEY"])
    base = os.environ.get("FOLDNET_HOME") or Path.home() / ".foldnet"
    return Path(base) / "volunteer.key"


@dataclass(frozen=True, slots=True)
class Identity:
    """The signing key and its public half; the id everywhere else is the public key."""

    private_key: Ed25519PrivateKey
    public_key: bytes

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str] | None = None) -> Identity:
        target = Path(path) if path is not None else default_key_path()
        try:
            key = load_or_create_private_key(target)
        except KeyFileError as e:
            raise IdentityError(str(e)) from e
        return cls(key, public_key_bytes(key))

    @classmethod
    def ephemeral(cls) -> Identity:
        """A key that lives in memory only (tests, throw-away local volunteers)."""
        key = Ed25519PrivateKey.generate()
        return cls(key, public_key_bytes(key))

    @property
    def volunteer_id(self) -> str:
        return self.public_key.hex()

    @property
    def fingerprint(self) -> str:
        """A short human-checkable name: the first 8 bytes of SHA-256(public key), hex."""
        return hashlib.sha256(self.public_key).hexdigest()[:16]

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def __reduce__(self) -> tuple[object, ...]:
        raise PicklingRefusedError(
            "an Identity holds a private key and is never pickled: pass its key file's path "
            "to the other process and load it there (Identity.load_or_create)"
        )
