"""Who is asking: lab keys, volunteer signatures and the rate limits that go with them.

One :class:`Access` per HTTP process. It answers a handler's first question (which lab, which
volunteer key) or refuses the request (401, 403, 429) before any work is done. In a
front-end of its own (``foldnet serve --workers N``) it also marks the request with what the
coordinator must admit it by (the nonce spent, the coordinator's rate buckets), since nonces
and rates are kept there for all front-ends together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from fastapi import Request

from coordinator.accounts import Accounts, key_hash
from coordinator.clock import Clock
from coordinator.http.auth import (
    RateLimiter,
    SignedRequest,
    VolunteerAuth,
    bearer_token,
    client_block,
)
from coordinator.http.config import ServiceConfig
from coordinator.http.link import Admission
from coordinator.http.sessions import Tickets
from foldnet.errors import Forbidden, Unavailable
from worker.wire import KEY_HEADER, body_digest, origin_of

#: How long a running service trusts a lab key it checked (``foldnet lab revoke`` takes
#: hold within this time).
LAB_KEY_CACHE_S = 30.0

#: Where a request keeps what the coordinator must admit it by (front-ends in other
#: processes: nonce and rates are checked there, for all of them).
ADMIT = "foldnet.admit"


def signed_target(request: Request) -> str:
    """The path and query a volunteer signed: ``request.url``'s, read off the ASGI scope
    without building and re-parsing a whole URL (13.5 -> 3.3 us a request, in isolation).
    Starlette escapes ``?``, ``#`` and ``\\`` in the path; a tab, CR or LF (which ``urllib``
    drops) or a ``#`` in the query (a fragment to ``urllib``) takes the slow way, so the two
    never differ (tests/test_http_hot.py compares them on generated requests)."""
    scope = request.scope
    path: str = scope["path"]
    raw_query: bytes = scope.get("query_string", b"")
    if "\t" in path or "\r" in path or "\n" in path or any(c in raw_query for c in b"#\t\r\n"):
        query = request.url.query
        return request.url.path + (f"?{query}" if query else "")
    path = path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    query = raw_query.decode()
    return path + (f"?{query}" if query else "")


class Access:
    """Authentication and rate limits of one HTTP process.

    ``is_registered`` asks the coordinator whether a volunteer key registered (through
    another front-end); ``remote``: the coordinator runs in another process; ``ticket_key``:
    what seals the service's session tickets (the same in every front-end).
    """

    def __init__(
        self,
        config: ServiceConfig,
        clock: Clock,
        *,
        remote: bool,
        is_registered: Callable[[bytes], Awaitable[bool]],
        ticket_key: bytes,
    ) -> None:
        self.clock = clock
        self.remote = remote
        self._is_registered = is_registered
        self.tickets = Tickets(ticket_key=ticket_key, ttl_s=config.session_ttl_s, clock=clock.now)
        self.vauth = VolunteerAuth(
            window_s=config.signature_window_s, clock=clock.now, tickets=self.tickets
        )
        self.origin = origin_of(config.origin) if config.origin else None
        pace = clock.monotonic
        self.lab_limit = RateLimiter(config.lab_rate, config.lab_burst, clock=pace)
        self.vol_limit = RateLimiter(config.volunteer_rate, config.volunteer_burst, clock=pace)
        self.reg_limit = RateLimiter(config.register_rate, config.register_burst, clock=pace)
        self.reg_global = RateLimiter(
            config.register_global_rate, config.register_global_burst, clock=pace
        )
        self.labs_by_hash: dict[str, tuple[str, float]] = {}  # key hash -> (lab, valid until)
        #: The lab keys (set when the service starts: the core's, or a connection of its own).
        self.accounts: Accounts | None = None

    # -- labs ------------------------------------------------------------------------------

    async def lab(self, request: Request) -> str:
        """The lab whose bearer key signs ``request`` (403 for a key no lab holds)."""
        token = bearer_token(request.headers)
        h = key_hash(token)
        cached = self.labs_by_hash.get(h)
        now = self.clock.monotonic()
        lab = cached[0] if cached is not None and cached[1] > now else None
        if lab is None:
            accounts = self.accounts
            if accounts is None:
                raise Unavailable("the service is starting; retry shortly", code="unavailable")
            host = request.client.host if request.client else "?"
            # unknown keys cost a database read
            self.reg_limit.check(("lab-key", client_block(host)))
            lab = await anyio.to_thread.run_sync(lambda: accounts.lab_for_key(token))
            if lab is None:
                raise Forbidden(
                    "this API key is not valid; the operator creates lab keys with "
                    "'foldnet lab add NAME'",
                    code="bad_api_key",
                )
            self.labs_by_hash[h] = (lab, now + LAB_KEY_CACHE_S)  # so a revocation takes hold
        self.lab_limit.check(("lab", lab))  # with front-ends of their own: this one's share
        if self.remote:  # ... and the coordinator's bucket, which counts them all
            request.scope[ADMIT] = Admission(lab=lab)
        return lab

    # -- volunteers ------------------------------------------------------------------------

    async def volunteer(
        self,
        request: Request,
        body: bytes,
        *,
        registering: bool = False,
        register_from: str = "",
        signed_only: bool = False,
    ) -> bytes:
        """The key of a signed request (or one in a session, unless ``signed_only``) whose
        body was read (small JSON bodies)."""
        pending = await self.volunteer_headers(
            request, registering=registering, signed_only=signed_only
        )
        return self.volunteer_signed(request, pending, body_digest(body), register_from)

    async def volunteer_headers(
        self, request: Request, *, registering: bool = False, signed_only: bool = False
    ) -> SignedRequest:
        """The signature (or session) headers checked (form, time, key registered, nonce
        fresh, the session's ticket): what is known before a body is read."""
        target = signed_target(request)
        if self.remote and not registering:
            await self._known(request)
        return self.vauth.check_headers(
            request.method,
            target,
            request.headers,
            origin=self.origin_for(request),
            registering=registering,
            signed_only=signed_only,
        )

    def origin_for(self, request: Request) -> str:
        """The origin requests to this service name (signatures, session keys)."""
        return self.origin or origin_of(str(request.base_url))

    async def _known(self, request: Request) -> None:
        """A front-end learns of keys registered through another one from the core (a key
        it does not know costs one question, within the address's registration rate)."""
        key_hex = request.headers.get(KEY_HEADER, "")
        if len(key_hex) != 64:
            return  # check_headers says what is wrong with it
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            return
        if key in self.vauth.registered:
            return
        host = request.client.host if request.client else "?"
        self.reg_limit.check(("volunteer-key", client_block(host)))
        if await self._is_registered(key):
            self.vauth.registered.add(key)

    def volunteer_signed(
        self, request: Request, pending: SignedRequest, body_sha256: str, register_from: str = ""
    ) -> bytes:
        """The key whose signature over the headers and ``body_sha256`` verifies."""
        key = self.vauth.check_signature(pending, body_sha256)
        self.vol_limit.check(key)  # with front-ends of their own: this one's share
        if self.remote:  # ... and the coordinator's nonce book and bucket, for them all
            request.scope[ADMIT] = Admission(
                volunteer=key, nonce=pending.nonce, register_from=register_from
            )
        return key
