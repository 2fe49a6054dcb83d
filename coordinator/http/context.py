"""What the HTTP handlers share: the service's configuration, the way to the coordinator
(:mod:`coordinator.http.core`, in this process or another), authentication and rate limits,
and what a front-end caches of the work handed out.

One :class:`Service` serves the HTTP of one process. ``foldnet serve`` runs one that holds the
coordinator's core itself; ``foldnet serve --workers N`` runs N of them in processes of their
own (:mod:`coordinator.http.workers`), each linked to the core in the coordinator's process
(:mod:`coordinator.http.link`). Handlers see no difference: they ask the core with
:meth:`Service.call`, and read what a front-end may read itself (lab keys from the accounts,
the ledger and stored results through read-only connections of their own) directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import Request
from starlette.requests import ClientDisconnect

from coordinator.accounts import Accounts, key_hash
from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.databases import Databases
from coordinator.http.auth import (
    RateLimiter,
    SignedRequest,
    VolunteerAuth,
    bearer_token,
    client_block,
)
from coordinator.http.config import ServiceConfig
from coordinator.http.core import Core, JobInfo
from coordinator.http.link import Admission, FrontLink, Ready, command, command_name
from coordinator.http.loop import CoordinatorThread
from coordinator.http.middleware import Metrics
from coordinator.http.wire import Assignment, HandOut, encode_handout
from coordinator.service import Coordinator
from coordinator.store import Store
from foldnet.errors import (
    BadRequest,
    FoldnetError,
    Forbidden,
    NotFound,
    TimedOut,
    TooLarge,
    Unavailable,
)
from worker.systems import EngineCache, SystemDefinition, decode_system
from worker.wire import KEY_HEADER, body_digest, origin_of

__all__ = ["API_VERSION", "JobInfo", "Service", "ServiceConfig"]

#: How long a running service trusts a lab key it checked (``foldnet lab revoke`` takes
#: hold within this time).
LAB_KEY_CACHE_S = 30.0

API_VERSION = "v1"

#: Where a request keeps what the coordinator must admit it by (front-ends in other
#: processes: nonce and rates are checked there, for all of them).
_ADMIT = "foldnet.admit"

T = TypeVar("T")


@command
def _is_registered(core: Core, _c: Coordinator, key: bytes) -> bool:
    return key in core.registered


@command
def _assignment_of(core: Core, _c: Coordinator, replica: int) -> Assignment | None:
    return core.assignments.get(replica)


@command
def _check_of(core: Core, _c: Coordinator, check: int) -> tuple[bytes, bytes, float] | None:
    return core.checks.get(check)


@command
def _system_of(core: Core, _c: Coordinator, digest: str) -> bytes | None:
    """A system of work handed out (None for any other digest)."""
    return core.systems.get(digest)


@command
def _report_metrics(core: Core, _c: Coordinator, worker: int, snapshot: dict[str, Any]) -> None:
    core.front_metrics[worker] = snapshot


@dataclass(frozen=True, slots=True)
class FrontEnd:
    """How a front-end in a process of its own reaches the coordinator: its end of the
    link (a socket from the coordinator's process) and its number."""

    sock: socket.socket
    worker: int


class Service:
    """Everything the handlers of one process share."""

    def __init__(
        self,
        workdir: str | Path,
        config: ServiceConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        front: FrontEnd | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.config = config
        #: Every time the service reads but the metrics' own durations (see coordinator.clock).
        self.clock = clock
        self.metrics = Metrics()
        self.vauth = VolunteerAuth(window_s=config.signature_window_s, clock=clock.now)
        self.origin = origin_of(config.origin) if config.origin else None
        pace = clock.monotonic
        self.lab_limit = RateLimiter(config.lab_rate, config.lab_burst, clock=pace)
        self.vol_limit = RateLimiter(config.volunteer_rate, config.volunteer_burst, clock=pace)
        self.reg_limit = RateLimiter(config.register_rate, config.register_burst, clock=pace)
        self.reg_global = RateLimiter(
            config.register_global_rate, config.register_global_burst, clock=pace
        )
        self.labs_by_hash: dict[str, tuple[str, float]] = {}  # key hash -> (lab, valid until)
        #: The coordinator's side, when it runs in this process (``foldnet serve``).
        self.core: Core | None = None if front is not None else Core(workdir, config, clock=clock)
        self.front = front
        self.link: FrontLink | None = None
        self.accounts: Accounts | None = None
        # a front-end's own memory of the work it handed out (hints: the core decides)
        self._assignments: dict[int, Assignment] = {}
        self._checks: dict[int, tuple[bytes, bytes, float]] = {}
        self._systems: dict[str, bytes] = {}
        self._decoded: dict[str, SystemDefinition] = {}
        self.engines = EngineCache()  # the physical sanity checks of results
        self._store: Store | None = None
        self._ledger: str | Path | None = None
        self._stack = contextlib.AsyncExitStack()
        #: Called when the coordinator goes away under a front-end (it stops then).
        self.on_lost: Callable[[], None] = lambda: None

    @property
    def remote(self) -> bool:
        """True in a front-end whose coordinator runs in another process."""
        return self.front is not None

    @property
    def thread(self) -> CoordinatorThread | None:
        """The coordinator's thread, when it runs in this process (tests drive it)."""
        return self.core.thread if self.core is not None else None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            if self.core is not None:
                core = self.core
                await anyio.to_thread.run_sync(core.start)
                self._stack.push_async_callback(anyio.to_thread.run_sync, core.stop)
                self.accounts = core.accounts
                self.vauth.registered = core.registered  # one set: the core's
            else:
                assert self.front is not None
                front = self.front
                self.link = await FrontLink.connect(front.sock, front.worker, self._lost)
                self._stack.callback(self.link.close)
                dbs = await anyio.to_thread.run_sync(Databases.of_folder, self.workdir)
                self._ledger = dbs.ledger
                self.accounts = await anyio.to_thread.run_sync(Accounts, dbs.accounts)
                self._stack.push_async_callback(anyio.to_thread.run_sync, self.accounts.close)
                self._stack.push_async_callback(self._close_store)
                reporter = asyncio.get_running_loop().create_task(self._report())
                self._stack.callback(reporter.cancel)
        except BaseException:
            await self._stack.aclose()
            raise

    def ready(self, pid: int) -> None:
        """Tell the coordinator's process this front-end is serving."""
        if self.link is not None and self.front is not None:
            self.link.send(Ready(worker=self.front.worker, pid=pid))

    async def stop(self) -> None:
        await self._stack.aclose()

    def _lost(self) -> None:
        self.on_lost()

    async def _report(self) -> None:
        """Send this front-end's request metrics to the core every few seconds (so that
        ``/metrics`` on any front-end counts the requests of all)."""
        while True:
            await asyncio.sleep(2.0)
            with contextlib.suppress(FoldnetError):  # the coordinator is away: next time
                await self.report_metrics()

    async def report_metrics(self) -> None:
        if self.front is not None:
            await self.call(_report_metrics, self.front.worker, self.metrics.snapshot())

    async def _close_store(self) -> None:
        if self._store is not None:
            await anyio.to_thread.run_sync(self._store.close)

    @property
    def alive(self) -> bool:
        if self.core is not None:
            return self.core.alive
        return self.link is not None and not self.link.lost

    # -- the coordinator -------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, request: Request | None = None) -> T:
        """Run command ``fn(core, coordinator, *args)`` on the coordinator's thread, in its
        next group commit; answers after the commit. ``request``: the request it serves,
        admitted (nonce, rates) by the coordinator when that runs in another process."""
        if self.core is not None:
            core = self.core
            return await core.coordinator().call(lambda c: fn(core, c, *args))
        if self.link is None:
            raise Unavailable("the coordinator is not running; retry later", code="unavailable")
        admit = request.scope.pop(_ADMIT, None) if request is not None else None  # once
        result: T = await self.link.call(command_name(fn), args, admit)
        return result

    async def store(self) -> Store:
        """The coordinator's store, to read results from (a read-only use: in a front-end
        of its own, a connection of its own)."""
        if self.core is not None:
            return await self.core.coordinator().call(lambda c: c.store)
        if self._store is None:
            dbs = await anyio.to_thread.run_sync(Databases.of_folder, self.workdir)
            self._store = await anyio.to_thread.run_sync(Store.open, dbs.coordinator)
        return self._store

    def ledger_location(self) -> str | Path:
        """What opens the ledger read-only (its SQLite file, or its PostgreSQL URL)."""
        if self.core is not None:
            if self.core.log is None:
                raise Unavailable("the coordinator is not running", code="unavailable")
            return self.core.log.store.path
        if self._ledger is None:
            raise Unavailable("the coordinator is not running", code="unavailable")
        return self._ledger

    # -- who is asking ---------------------------------------------------------------------

    async def lab(self, request: Request) -> str:
        token = bearer_token(request.headers)
        h = key_hash(token)
        cached = self.labs_by_hash.get(h)
        now = self.clock.monotonic()
        lab = cached[0] if cached is not None and cached[1] > now else None
        if lab is None:
            assert self.accounts is not None
            accounts = self.accounts
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
            request.scope[_ADMIT] = Admission(lab=lab)
        return lab

    async def volunteer(
        self, request: Request, body: bytes, *, registering: bool = False, register_from: str = ""
    ) -> bytes:
        """The key of a signed request whose body was read (small JSON bodies)."""
        pending = await self.volunteer_headers(request, registering=registering)
        return self.volunteer_signed(request, pending, body_digest(body), register_from)

    async def volunteer_headers(
        self, request: Request, *, registering: bool = False
    ) -> SignedRequest:
        """The signature headers checked (form, time, key registered, nonce fresh): what is
        known before a body is read."""
        query = request.url.query
        target = request.url.path + (f"?{query}" if query else "")
        if self.remote and not registering:
            await self._known(request)
        return self.vauth.check_headers(
            request.method,
            target,
            request.headers,
            origin=self.origin or origin_of(str(request.base_url)),
            registering=registering,
        )

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
        if await self.call(_is_registered, key):
            self.vauth.registered.add(key)

    def volunteer_signed(
        self, request: Request, pending: SignedRequest, body_sha256: str, register_from: str = ""
    ) -> bytes:
        key = self.vauth.check_signature(pending, body_sha256)
        self.vol_limit.check(key)  # with front-ends of their own: this one's share
        if self.remote:  # ... and the coordinator's nonce book and bucket, for them all
            request.scope[_ADMIT] = Admission(
                volunteer=key, nonce=pending.nonce, register_from=register_from
            )
        return key

    def body_timeout(self, limit: int) -> float:
        """Seconds a body of up to ``limit`` bytes may take to arrive."""
        return self.config.body_timeout_s + limit / self.config.min_upload_rate

    async def read_body(self, request: Request, limit: int) -> tuple[bytearray, str]:
        """(body, its SHA-256 hex) read from the stream, refused past ``limit`` bytes (413),
        after :meth:`body_timeout` (408), or when the client goes away."""
        timeout = self.body_timeout(limit)
        data = bytearray()
        h = hashlib.sha256()
        with anyio.move_on_after(timeout) as timer:
            try:
                async for chunk in request.stream():
                    if len(data) + len(chunk) > limit:
                        raise TooLarge(
                            f"the body is over {limit:,} bytes, the most this request can need",
                            code="too_large",
                        )
                    data += chunk
                    h.update(chunk)
            except ClientDisconnect as e:
                raise BadRequest(
                    "the client went away before its body ended", code="disconnected"
                ) from e
        if timer.cancelled_caught:
            raise TimedOut(
                f"the body did not arrive within {timeout:.0f} s ({len(data):,} bytes came); "
                "expected at least the service's minimum upload rate",
                code="body_timeout",
            )
        return data, h.hexdigest()

    # -- work handed out -------------------------------------------------------------------

    def hand_out(self, got: list[HandOut]) -> list[dict[str, Any]]:
        """Encode work the core handed out for the wire (a front-end of its own remembers
        what each result must look like, so that its upload is checked here)."""
        if self.remote:
            for h in got:
                if h.assignment is not None:
                    self._assignments[h.number] = h.assignment
                elif h.check is not None:
                    self._checks[h.number] = h.check
        return [encode_handout(h) for h in got]

    async def assignment(self, replica: int, key: bytes) -> Assignment | None:
        """What replica ``replica`` handed to ``key`` must return (None: not ``key``'s)."""
        if self.core is not None:
            a = self.core.assignments.get(replica)
        else:
            a = self._assignments.get(replica)
            if a is None or a.volunteer != key or a.deadline <= self.clock.now():
                a = await self.call(_assignment_of, replica)  # the core's word
                if a is not None:
                    self._assignments[replica] = a
        return a if a is not None and a.volunteer == key else None

    async def check(self, check: int, key: bytes) -> bytes | None:
        """The WU of spot check ``check`` handed to ``key`` (None: not ``key``'s)."""
        if self.core is not None:
            owner = self.core.checks.get(check)
        else:
            owner = self._checks.get(check)
            if owner is None or owner[0] != key or owner[2] <= self.clock.now():
                owner = await self.call(_check_of, check)
                if owner is not None:
                    self._checks[check] = owner
        return owner[1] if owner is not None and owner[0] == key else None

    def forget(self, replica: int | None = None, check: int | None = None) -> None:
        if replica is not None:
            self._assignments.pop(replica, None)
        if check is not None:
            self._checks.pop(check, None)

    async def system_blob(self, digest: str, *, request: Request | None = None) -> bytes | None:
        """An encoded system of work handed out (None for any other digest). ``request``: a
        volunteer's, admitted by the coordinator (its nonce spent there) in a front-end of
        its own, even when the system is known here."""
        if self.core is not None:
            return self.core.systems.get(digest)
        data = self._systems.get(digest)
        if data is None or request is not None:
            data = await self.call(_system_of, digest, request=request)
            if data is not None:
                self._systems[digest] = data
        return data

    async def system(self, digest: bytes) -> SystemDefinition:
        """The decoded system of work handed out (what results are checked against)."""
        got = self._decoded.get(digest.hex())
        if got is None:
            data = await self.system_blob(digest.hex())
            if data is None:
                raise NotFound(f"no system {digest.hex()[:16]} in work handed out")
            got = self._decoded[digest.hex()] = decode_system(data)
        return got
