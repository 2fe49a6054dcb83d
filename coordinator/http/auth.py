"""Authentication of HTTP requests: signed volunteer requests, lab API keys, rate limits.

A volunteer signs every request (see :func:`worker.wire.signing_message`), naming the
server's origin, so a signature for one coordinator is worthless at another. The server checks
the timestamp window first (cheap), then the signature, and only then remembers the nonce,
so forged requests cannot fill the nonce memory. Nonces are kept per key for as long as a
timestamp stays acceptable (twice the window); a replay inside that time is refused and one
after it is refused for its timestamp. The nonces are kept in memory, so a process that
(re)starts refuses signed requests stamped before the second it started (their nonces may
have been spent before): a request captured before a restart cannot be replayed after it
(but for one stamped in that very second, which a restart of a second or more leaves none
of; refusing that second too would refuse every fresh request of its first moments).
Registering and opening a session are spared (replaying them gains nothing, and a volunteer
whose clock is a little behind must be able to reopen at once); a session's own requests
need no floor (a restart ends every ticket). All of this runs on the event loop's thread, so
the structures here need no locks. A request in a session (:mod:`coordinator.http.sessions`)
carries a ticket and an HMAC of the same message instead of a signature, and goes through
the same checks in the same order.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coordinator.http.sessions import REOPEN, TICKET_FORM, Tickets
from foldnet.errors import RateLimited, Unauthenticated
from worker.wire import (
    KEY_HEADER,
    MAC_HEADER,
    NONCE_HEADER,
    SESSION_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    body_digest,
    signing_message,
)

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit() accepts "²"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")


@functools.lru_cache(maxsize=1 << 16)  # asked on every request; parsing an address is not free
def client_block(host: str) -> str:
    """The unit a client address is counted as for limits: an IPv4 address, or the /64 of
    an IPv6 address (one subscriber gets a whole /64, so counting single IPv6 addresses
    would give an attacker 2**64 of them)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimiter:
    """Token buckets per identity: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()
        self._max_buckets = 100_000

    def check(self, who: object) -> None:
        now = self._clock()
        tokens, last = self._buckets.pop(who, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[who] = (tokens, now)
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
            raise RateLimited(
                f"more than {self.rate:g} requests per second; retry after {wait:.2f} s",
                code="rate_limited",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        self._buckets[who] = (tokens - 1.0, now)
        while len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)


class VolunteerAuth:
    """Checks signed requests and requests in a session (``tickets``: this service's; None:
    sessions are refused); knows which keys are registered."""

    def __init__(
        self,
        *,
        window_s: float = 300.0,
        max_nonces_per_key: int = 20_000,
        clock: Callable[[], float] = time.time,
        tickets: Tickets | None = None,
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        #: Signed requests stamped before this second are refused (see the module docstring).
        self.not_before = int(clock())
        self.tickets = tickets
        self.registered: set[bytes] = set()
        self.nonces = NonceBook(window_s=window_s, max_per_key=max_nonces_per_key)
        self._keys: OrderedDict[bytes, Ed25519PublicKey] = OrderedDict()

    def _public_key(self, key: bytes) -> Ed25519PublicKey:
        pk = self._keys.get(key)
        if pk is None:
            try:
                pk = Ed25519PublicKey.from_public_bytes(key)
            except ValueError as e:
                raise Unauthenticated("the key is not an Ed25519 public key", code="bad_key") from e
            self._keys[key] = pk
            if len(self._keys) > 100_000:
                self._keys.popitem(last=False)
        return pk

    def verify(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        origin: str,
        registering: bool = False,
        signed_only: bool = False,
    ) -> bytes:
        """The verified key of a signed request (or one in a session, unless ``signed_only``),
        or :class:`~foldnet.errors.Unauthenticated` saying why."""
        pending = self.check_headers(
            method, target, headers, origin=origin, registering=registering, signed_only=signed_only
        )
        return self.check_signature(pending, body_digest(body))

    def check_headers(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        *,
        origin: str,
        registering: bool = False,
        signed_only: bool = False,
    ) -> SignedRequest:
        """Everything that can be checked before the body is read: the headers' form, the
        timestamp window, that the key is registered and the nonce is fresh, and a session's
        ticket (this service's, the key's, not expired). An upload is read only after this
        passed (and after its replica proved to be the key's). ``signed_only`` (and
        ``registering``): a signature is required, a session is refused."""
        session = SESSION_HEADER in headers or MAC_HEADER in headers
        if session and SIGNATURE_HEADER in headers:
            raise Unauthenticated(
                f"a request carries either a signature ({SIGNATURE_HEADER}) or a session "
                f"({SESSION_HEADER} and {MAC_HEADER}), not both: send one of them",
                code="ambiguous_auth",
            )
        if session and (signed_only or registering):
            raise Unauthenticated(
                "registering a key and opening a session take a signature by the key itself "
                f"({SIGNATURE_HEADER}, worker.wire.sign_headers), not a session",
                code="signature_required",
            )
        proof = (SESSION_HEADER, MAC_HEADER) if session else (SIGNATURE_HEADER,)
        missing = [
            h for h in (KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, *proof) if h not in headers
        ]
        if missing:
            raise Unauthenticated(
                f"volunteer requests must be signed or in a session; missing headers: "
                f"{', '.join(missing)} (foldnet worker run sends them; see "
                "worker.wire.sign_headers and worker.session.mac_headers)",
                code="unsigned",
            )
        key_hex = headers[KEY_HEADER]
        ts_text = headers[TIMESTAMP_HEADER]
        nonce = headers[NONCE_HEADER]
        if not _HEX64.match(key_hex):
            raise Unauthenticated(f"{KEY_HEADER}: expected 64 lowercase hex digits", code="bad_key")
        if not _TIMESTAMP.fullmatch(ts_text):
            raise Unauthenticated(
                f"{TIMESTAMP_HEADER}: expected Unix seconds, 1 to 12 ASCII digits",
                code="bad_timestamp",
            )
        if not _NONCE.match(nonce):
            raise Unauthenticated(
                f"{NONCE_HEADER}: expected 16-64 characters of [A-Za-z0-9_-]", code="bad_nonce"
            )
        if session:
            ticket, mac_hex = headers[SESSION_HEADER], headers[MAC_HEADER]
            if not TICKET_FORM.fullmatch(ticket):
                raise Unauthenticated(
                    f"{SESSION_HEADER}: expected the ticket POST /v1/sessions answered "
                    f"(base64url); {REOPEN}",
                    code="bad_session",
                )
            if not _HEX64.match(mac_hex):
                raise Unauthenticated(
                    f"{MAC_HEADER}: expected 64 lowercase hex digits (HMAC-SHA256)",
                    code="bad_mac",
                )
            signature = bytes.fromhex(mac_hex)
        else:
            sig_hex = headers[SIGNATURE_HEADER]
            if not _HEX128.match(sig_hex):
                raise Unauthenticated(
                    f"{SIGNATURE_HEADER}: expected 128 hex digits", code="bad_signature"
                )
            signature = bytes.fromhex(sig_hex)
        now = self.clock()
        ts = int(ts_text)
        if abs(now - ts) > self.window_s:
            raise Unauthenticated(
                f"timestamp {ts} is {now - ts:+.0f} s from the server's clock; the window is "
                f"±{self.window_s:.0f} s: check the volunteer machine's clock",
                code="expired",
            )
        if ts < self.not_before and not (session or registering or signed_only):
            raise Unauthenticated(
                f"timestamp {ts} is before this service started ({self.not_before}); a request "
                "signed before a restart may have been spent already, so it is refused: sign it "
                "again with the current time (a clock behind the server's is refused that "
                "long after a restart: check the volunteer machine's clock)",
                code="expired",
            )
        key = bytes.fromhex(key_hex)
        if not registering and key not in self.registered:
            raise Unauthenticated(
                "this key is not registered: POST /v1/volunteers first (foldnet worker run "
                "does it on start)",
                code="unknown_volunteer",
            )
        session_key = b""
        if session:
            if self.tickets is None:
                raise Unauthenticated(
                    "this service has no sessions: sign each request "
                    f"({SIGNATURE_HEADER}, worker.wire.sign_headers)",
                    code="bad_session",
                )
            session_key = self.tickets.read(ticket, volunteer=key).session_key
        if self.nonces.seen(key, nonce):
            raise Unauthenticated(
                "this nonce was used already: a replay is refused", code="replayed"
            )
        return SignedRequest(
            origin, method, target, key, ts, nonce, signature, session_key=session_key
        )

    def check_signature(self, req: SignedRequest, body_sha256: str) -> bytes:
        """Verify the signature (or a session's MAC) over the body's SHA-256, then spend the
        nonce: the key."""
        message = signing_message(
            req.method, req.target, body_sha256, req.timestamp, req.nonce, req.key.hex(), req.origin
        )
        if req.session_key:
            if not hmac.compare_digest(
                hmac.digest(req.session_key, message, "sha256"), req.signature
            ):
                raise Unauthenticated(
                    f"the session MAC does not verify for this server ({req.origin}), method, "
                    "path, body, timestamp and nonce under the session's key (a session key "
                    f"derived from a tampered answer never does: {REOPEN})",
                    code="bad_mac",
                )
        else:
            try:
                self._public_key(req.key).verify(req.signature, message)
            except InvalidSignature as e:
                raise Unauthenticated(
                    f"the signature does not verify for this server ({req.origin}), method, "
                    "path, body, timestamp and nonce",
                    code="bad_signature",
                ) from e
        self.nonces.spend(req.key, req.nonce, self.clock())
        return req.key

    @property
    def keys_with_nonces(self) -> int:
        return self.nonces.keys


class NonceBook:
    """The nonces each key spent, kept for as long as a timestamp stays acceptable (twice the
    signature window): a nonce spent twice is a replay. With several HTTP front-ends each
    keeps one (a replay to the same process is refused before its body is read) and the
    coordinator keeps the one that counts for all of them (``coordinator.http.core.Gate``)."""

    def __init__(self, *, window_s: float = 300.0, max_per_key: int = 20_000) -> None:
        self.window_s = window_s
        self.max_per_key = max_per_key
        self._nonces: dict[bytes, OrderedDict[str, float]] = {}
        self._pruned_at: float | None = None

    def seen(self, key: bytes, nonce: str) -> bool:
        got = self._nonces.get(key)
        return got is not None and nonce in got

    def spend(self, key: bytes, nonce: str, now: float) -> None:
        """Remember ``nonce`` for ``key``, or raise ``replayed`` (spent already) or
        ``rate_limited`` (the key spent its most nonces in two windows)."""
        self._prune(now)
        seen = self._nonces.setdefault(key, OrderedDict())
        horizon = now - 2 * self.window_s
        while seen and next(iter(seen.values())) < horizon:
            seen.popitem(last=False)
        if nonce in seen:  # spent while this request's body was read, or elsewhere
            raise Unauthenticated(
                "this nonce was used already: a replay is refused", code="replayed"
            )
        if len(seen) >= self.max_per_key:
            raise RateLimited(
                f"more than {self.max_per_key} requests from this key in {2 * self.window_s:.0f} s",
                code="rate_limited",
                headers={"Retry-After": "10"},
            )
        seen[nonce] = now

    def _prune(self, now: float) -> None:
        """Forget the nonces of keys that stopped calling: every window, drop each key's
        nonces older than two windows (their timestamps are refused anyway) and keys left
        with none, so the memory is bounded by the keys active in the last two windows."""
        if self._pruned_at is None:
            self._pruned_at = now
        if now - self._pruned_at < self.window_s:
            return
        self._pruned_at = now
        horizon = now - 2 * self.window_s
        for key in list(self._nonces):
            seen = self._nonces[key]
            while seen and next(iter(seen.values())) < horizon:
                seen.popitem(last=False)
            if not seen:
                del self._nonces[key]

    @property
    def keys(self) -> int:
        return len(self._nonces)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request whose signature headers passed every check but the signature itself; in a
    session, ``signature`` is the MAC and ``session_key`` the key it must verify under."""

    origin: str
    method: str
    target: str
    key: bytes
    timestamp: int
    nonce: str
    signature: bytes
    session_key: bytes = field(default=b"", repr=False, kw_only=True)


def bearer_token(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization")
    if value is None:
        raise Unauthenticated(
            "send the lab's API key as 'Authorization: Bearer <key>' (the operator creates it "
            "with foldnet lab add NAME)",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 200:
        raise Unauthenticated(
            "expected 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()
