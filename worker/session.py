"""A volunteer's session: one Ed25519-signed request, then an HMAC per request.

Verifying an Ed25519 signature costs the service about 160 us; an HMAC-SHA256 a microsecond
or two. So after registering, a volunteer opens a session (``POST /v1/sessions``, signed
like any request, naming a fresh X25519 public key of its own), both sides derive the same
session key from an X25519 exchange (:func:`derive_session_key`), and every later request
carries the server's ticket and an HMAC under that key of exactly the message a signature
would cover (:func:`worker.wire.signing_message`: origin, method, target, body hash,
timestamp, nonce, key). The result's own signature is unchanged: the public ledger needs it.

The server's half lives in :mod:`coordinator.http.sessions`; the key derivation is here,
because the client needs it and ``worker`` may not import ``coordinator``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.errors import PicklingRefusedError, WireError
from worker.wire import (
    KEY_HEADER,
    MAC_HEADER,
    NONCE_HEADER,
    SESSION_HEADER,
    TIMESTAMP_HEADER,
    body_digest,
    get_float,
    get_hex,
    get_str,
    origin_of,
    signing_message,
)

#: What ``POST /v1/sessions`` answers in ``mac``: the only MAC there is.
MAC_ALGORITHM = "hmac-sha256"
_INFO = b"foldnet-session/v1\n"
#: A ticket as it travels (base64url, unpadded): it goes back in a header, so nothing else.
_TICKET = re.compile(r"[A-Za-z0-9_-]{1,512}")


def derive_session_key(
    shared_secret: bytes,
    *,
    origin: str,
    volunteer: bytes,
    client_x25519: bytes,
    server_x25519: bytes,
) -> bytes:
    """HKDF-SHA256 of the X25519 shared secret, bound to the server's origin, the volunteer's
    key and both exchange keys (so a key derived for one of them is no key for another)."""
    info = (
        _INFO
        + "\n".join((origin, volunteer.hex(), client_x25519.hex(), server_x25519.hex())).encode()
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared_secret)


def x25519_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def exchange(private: X25519PrivateKey, peer: bytes) -> bytes:
    """The X25519 shared secret with ``peer``'s public key (a :class:`WireError` for a key
    that yields none: a low-order point)."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError as e:
        raise WireError(f"x25519: not a usable X25519 public key ({e})") from e


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """An open session of one volunteer key with one server (its origin)."""

    ticket: str
    key: bytes = field(repr=False)  # the session key: a secret
    volunteer: bytes
    origin: str
    expires: float  # Unix seconds

    def __reduce__(self) -> tuple[object, ...]:
        raise PicklingRefusedError(
            "a Session holds a secret key and is never pickled: open a session in the "
            "process that uses it"
        )

    def left_s(self, now: float | None = None) -> float:
        return self.expires - (time.time() if now is None else now)


@dataclass(frozen=True, slots=True, kw_only=True)
class Opening:
    """The volunteer's half of opening a session: its ephemeral X25519 key, the body to send
    (signed) to ``POST /v1/sessions``, and how to read the answer."""

    private: X25519PrivateKey = field(repr=False)
    volunteer: bytes
    origin: str

    @classmethod
    def new(cls, volunteer: bytes, *, origin: str) -> Opening:
        return cls(private=X25519PrivateKey.generate(), volunteer=volunteer, origin=origin)

    def __reduce__(self) -> tuple[object, ...]:
        raise PicklingRefusedError("an Opening holds a secret key and is never pickled")

    @property
    def request(self) -> dict[str, str]:
        return {"x25519": x25519_public(self.private).hex()}

    def session(self, answer: Mapping[str, Any]) -> Session:
        """The session the server's answer opens (a :class:`WireError` if it is not one)."""
        if not isinstance(answer, Mapping):
            raise WireError("POST /v1/sessions: expected a JSON object")
        mac = get_str(answer, "mac", 32)
        if mac != MAC_ALGORITHM:
            raise WireError(f"mac: expected {MAC_ALGORITHM!r}, got {mac!r}")
        server = get_hex(answer, "x25519", 32)
        ticket = get_str(answer, "ticket", 512)
        if not _TICKET.fullmatch(ticket):
            raise WireError(
                "ticket: expected base64url text (A-Z, a-z, 0-9, '-' and '_'), the only kind "
                f"a header carries back as it came, got {ticket[:40]!r}"
            )
        expires = get_float(answer, "expires")
        origin = origin_of(self.origin)
        secret = exchange(self.private, server)
        key = derive_session_key(
            secret,
            origin=origin,
            volunteer=self.volunteer,
            client_x25519=x25519_public(self.private),
            server_x25519=server,
        )
        return Session(
            ticket=ticket, key=key, volunteer=self.volunteer, origin=origin, expires=expires
        )


def request_mac(session_key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of ``message`` (a :func:`signing_message`) under ``session_key``: hex."""
    return hmac.digest(session_key, message, "sha256").hex()


def mac_headers(
    session: Session,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request in ``session`` (beside
    :func:`worker.wire.sign_headers`, which signs it with the key itself)."""
    ts = int(time.time() if now is None else now)
    n = nonce if nonce is not None else secrets.token_hex(16)
    key = session.volunteer.hex()
    message = signing_message(method, target, body_digest(body), ts, n, key, session.origin)
    return {
        KEY_HEADER: key,
        TIMESTAMP_HEADER: str(ts),
        NONCE_HEADER: n,
        SESSION_HEADER: session.ticket,
        MAC_HEADER: request_mac(session.key, message),
    }
