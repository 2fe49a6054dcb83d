"""Volunteer sessions, the server's half: opening one, and reading its ticket (no I/O).

Why: a signature verify (Ed25519, ~160 us) on every pull and upload is most of what
authentication costs the service; an HMAC costs a microsecond or two. A volunteer opens a
session once (``POST /v1/sessions``: an Ed25519-signed request of a registered key, whose
body names a fresh X25519 public key of the volunteer's); the server answers with an
ephemeral X25519 key of its own and a ticket, both sides derive the session key
(:func:`worker.session.derive_session_key`: HKDF over the shared secret, bound to the
origin, the volunteer's key and both exchange keys), and later requests carry the ticket
and an HMAC-SHA256 under the session key of exactly what a signature would cover
(:func:`worker.wire.signing_message`). The timestamp window, the nonce book (and the
coordinator's gate in front of several front-ends), the origin and body binding stay those
of signed requests.

Threat argument. The volunteer's X25519 key travels inside its signed request, so nobody
can open a session in its name with a key of their own. A man in the middle who swaps the
server's X25519 key in the answer gets a volunteer whose key differs from the server's:
its MACs fail (``bad_mac``), a denial of service it could cause anyway by dropping the
traffic; it never learns a key the server accepts (it knows neither ephemeral private
key). Each session key is fresh (both ephemerals are), so learning one tells nothing of
another, nor of the volunteer's signing key.

Tickets are stateless, like TLS session tickets, so any front-end process accepts a
session opened at another: ``nonce(12) || AES-256-GCM(ticket key, nonce, volunteer key(32)
|| session key(32) || expiry(8, big-endian), aad)``. The ticket key is 32 random bytes made
when the service starts, never written down, handed to the front-ends when they are
spawned; a restart invalidates every ticket and the client opens a new session. The tag
makes a forged, tampered or foreign ticket ``bad_session``; one of another key too.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from foldnet.errors import Unauthenticated
from worker.session import MAC_ALGORITHM, derive_session_key, exchange, x25519_public

TICKET_AAD = b"foldnet-session-ticket/v1"
_PLAIN = 32 + 32 + 8
TICKET_BYTES = 12 + _PLAIN + 16
#: A ticket as it travels: base64url of TICKET_BYTES bytes, without padding.
TICKET_CHARS = (TICKET_BYTES * 4 + 2) // 3
TICKET_FORM = re.compile(f"[A-Za-z0-9_-]{{{TICKET_CHARS}}}")
#: Tickets read once and remembered per process (a decrypt saved per request).
MEMO_SIZE = 20_000

REOPEN = "open a new session: POST /v1/sessions (foldnet worker run does it itself)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """What ``POST /v1/sessions`` answers."""

    ticket: str
    server_x25519: bytes
    expires: int

    def answer(self) -> dict[str, object]:
        return {
            "ticket": self.ticket,
            "x25519": self.server_x25519.hex(),
            "expires": self.expires,
            "mac": MAC_ALGORITHM,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    """A ticket this service issued, read: whose session, its key, until when."""

    volunteer: bytes
    session_key: bytes
    expires: int


class Tickets:
    """Issues and reads the session tickets of one service (every front-end has the same
    ``ticket_key``); ``clock``: Unix seconds."""

    def __init__(
        self,
        *,
        ticket_key: bytes,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        memo_size: int = MEMO_SIZE,
    ) -> None:
        assert len(ticket_key) == 32, "a ticket key is 32 bytes"
        self._aead = AESGCM(ticket_key)
        self.ttl_s = ttl_s
        self.clock = clock
        self._memo: dict[str, Ticket] = {}
        self._memo_size = memo_size

    def open(self, *, volunteer: bytes, client_x25519: bytes, origin: str) -> Opened:
        """A new session of ``volunteer`` (whose signed request named ``client_x25519``) at
        ``origin``: the server's ephemeral key and the ticket (a
        :class:`~worker.errors.WireError` for an unusable X25519 key)."""
        private = X25519PrivateKey.generate()
        server = x25519_public(private)
        secret = exchange(private, client_x25519)
        key = derive_session_key(
            secret,
            origin=origin,
            volunteer=volunteer,
            client_x25519=client_x25519,
            server_x25519=server,
        )
        expires = int(self.clock() + self.ttl_s)
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, volunteer + key + expires.to_bytes(8, "big"), TICKET_AAD)
        ticket = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()
        return Opened(ticket=ticket, server_x25519=server, expires=expires)

    def read(self, ticket: str, *, volunteer: bytes) -> Ticket:
        """The session of ``ticket``, which must be ``volunteer``'s and not expired; else
        :class:`~foldnet.errors.Unauthenticated` (``bad_session``, ``session_expired``)."""
        got = self._memo.get(ticket)
        if got is None:
            got = self._unseal(ticket)
            if len(self._memo) >= self._memo_size:
                del self._memo[next(iter(self._memo))]  # the oldest
            self._memo[ticket] = got
        if got.volunteer != volunteer:
            raise Unauthenticated(
                "this session ticket belongs to another volunteer key than the request's; "
                + REOPEN,
                code="bad_session",
            )
        if self.clock() >= got.expires:
            raise Unauthenticated(
                f"this session expired at {got.expires} (Unix s); " + REOPEN,
                code="session_expired",
            )
        return got

    def _unseal(self, ticket: str) -> Ticket:
        bad = Unauthenticated(
            "the session ticket is not one this service issued (tampered, from another "
            "service, or from before it restarted); " + REOPEN,
            code="bad_session",
        )
        if not TICKET_FORM.fullmatch(ticket):
            raise bad
        try:
            raw = base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], TICKET_AAD)
        except (binascii.Error, InvalidTag, ValueError) as e:
            raise bad from e
        if len(plain) != _PLAIN:  # sealed by this key, so never; but never trust a length
            raise bad
        return Ticket(
            volunteer=plain[:32],
            session_key=plain[32:64],
            expires=int.from_bytes(plain[64:], "big"),
        )
