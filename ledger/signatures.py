"""Ed25519 verification without repeating work this process has already done.

A result's attestation is verified when the result is uploaded and again when the WU's
``result validated`` entry is admitted to the ledger (:class:`ledger.log.CheckRules`): the
same key, signature and message, each time a call into OpenSSL (~170 us on a slow core).
Two bounded, process-local memos remove the repeats: parsed public keys
(:func:`public_key`), and :class:`VerifiedSignatures`, the signatures this process verified
itself.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.errors import ConfigError, SignatureError

KEY_BYTES = 32
SIGNATURE_BYTES = 64


@functools.lru_cache(maxsize=4096)
def public_key(raw: bytes) -> Ed25519PublicKey:
    """The parsed key of ``raw`` (32 bytes), memoised: parsing it is a tenth of a verify, and
    a volunteer's key comes back with every result. Raises ``ValueError`` (cryptography's)
    for bytes that are not a key; failures are not memoised."""
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(key: bytes, signature: bytes, message: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ``key``'s over ``message``."""
    try:
        public_key(bytes(key)).verify(signature, message)
    except (InvalidSignature, ValueError) as e:
        raise SignatureError(
            f"the Ed25519 signature of key {bytes(key).hex()[:16]} does not verify over this "
            "message; expected the key's signature of exactly these bytes"
        ) from e


class VerifiedSignatures:
    """The (key, signature, message) triples this process has seen verify, most recent
    ``capacity`` of them: :meth:`verify` of a remembered one skips OpenSSL.

    Why this is sound: a triple enters only after OpenSSL verified exactly it, in this
    process (never from a file, another process or the network, which could lie); the
    memo is looked up by SHA-256 over ``key || signature || message`` with the key and
    signature of their fixed lengths (32 and 64 bytes; any other length is never looked up,
    so no two triples share a concatenation), so a forged signature, another key or another
    message is another entry and goes to OpenSSL, and finding a false hit would take a
    SHA-256 collision. Ed25519 verification is deterministic (RFC 8032), so a triple that
    verified once verifies again. Forgetting is always safe: it costs a verification.

    Pass one object to whoever verifies and whoever checks again (the coordinator hands its
    own to the ledger's :class:`~ledger.log.CheckRules` and to ``verify_upload``).
    Thread-safe (an HTTP front-end verifies on worker threads)."""

    __slots__ = ("_capacity", "_lock", "_seen")

    def __init__(self, *, capacity: int = 65_536) -> None:
        if not (isinstance(capacity, int) and capacity >= 1):
            raise ConfigError(f"capacity must be a positive integer, got {capacity!r}")
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._seen)

    @staticmethod
    def _memo_key(key: bytes, signature: bytes, message: bytes) -> bytes | None:
        if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            return None
        h = hashlib.sha256(key)
        h.update(signature)
        h.update(message)
        return h.digest()

    def verify(self, key: bytes, signature: bytes, message: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is ``key``'s over ``message``
        (:func:`verify_signature`); a triple this object saw verify is not verified again."""
        memo = self._memo_key(key, signature, message)
        if memo is not None:
            with self._lock:
                if memo in self._seen:
                    self._seen.move_to_end(memo)
                    return
        verify_signature(key, signature, message)
        if memo is not None:
            with self._lock:
                self._seen[memo] = None
                self._seen.move_to_end(memo)
                while len(self._seen) > self._capacity:
                    self._seen.popitem(last=False)

    def __contains__(self, triple: object) -> bool:
        """Whether ``(key, signature, message)`` is remembered (for tests and metrics)."""
        if not (isinstance(triple, tuple) and len(triple) == 3):
            return False
        memo = self._memo_key(*triple)
        with self._lock:
            return memo is not None and memo in self._seen
