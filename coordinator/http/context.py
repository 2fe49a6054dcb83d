"""What the HTTP handlers of one process share: a :class:`Service` of a few parts.

- the way to the coordinator (:mod:`coordinator.http.core`, in this process or another) and
  the data a handler reads itself (the store, the ledger): :class:`Service` proper;
- who is asking, and how often: :class:`~coordinator.http.access.Access` (``svc.access``);
- the work handed out, as results are checked against it:
  :class:`~coordinator.http.handout.HandedOut` (``svc.work``);
- request bodies within their size and time: :class:`~coordinator.http.bodies.BodyReader`
  (``svc.bodies``);
- the configuration (``svc.config``), the clock and the request metrics.

``foldnet serve`` runs one service that holds the coordinator's core itself; ``foldnet serve
--workers N`` runs N of them in processes of their own (:mod:`coordinator.http.workers`),
each linked to the core in the coordinator's process (:mod:`coordinator.http.link`).
Handlers see no difference: they ask the core with :meth:`Service.call`, and read what a
front-end may read itself (lab keys from the accounts, the ledger and stored results through
read-only connections of their own) directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import Request

from coordinator.accounts import Accounts
from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.databases import Databases
from coordinator.http.access import ADMIT, Access
from coordinator.http.bodies import BodyReader
from coordinator.http.config import ServiceConfig
from coordinator.http.core import Core, JobInfo
from coordinator.http.handout import HandedOut
from coordinator.http.heap import settle
from coordinator.http.link import FrontLink, Ready, command, command_name
from coordinator.http.loop import CoordinatorThread
from coordinator.http.middleware import Metrics
from coordinator.service import Coordinator
from coordinator.store import Store
from foldnet.errors import FoldnetError, Unavailable
from sims.go import GoEngine

__all__ = ["API_VERSION", "JobInfo", "Service", "ServiceConfig"]

API_VERSION = "v1"

T = TypeVar("T")


@command
def _is_registered(core: Core, _c: Coordinator, key: bytes) -> bool:
    return key in core.registered


@command
def _report_metrics(core: Core, _c: Coordinator, worker: int, snapshot: dict[str, Any]) -> None:
    core.front_metrics[worker] = snapshot


@dataclass(frozen=True, slots=True)
class FrontEnd:
    """How a front-end in a process of its own reaches the coordinator: its end of the
    link (a socket from the coordinator's process) and its number; ``ticket_key``: the
    service's session-ticket key (every front-end's, so each reads the others' tickets)."""

    sock: socket.socket
    worker: int
    ticket_key: bytes = field(repr=False, kw_only=True)


class Service:
    """What the handlers of one process share: the way to the coordinator and its data, and
    the parts ``access`` (who is asking), ``work`` (work handed out) and ``bodies``."""

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
        #: The coordinator's side, when it runs in this process (``foldnet serve``).
        self.core: Core | None = None if front is not None else Core(workdir, config, clock=clock)
        self.front = front
        self.link: FrontLink | None = None
        self.access = Access(
            config,
            clock,
            remote=front is not None,
            is_registered=self._asked,
            # session tickets: sealed with a key made now, never written (a restart ends them)
            ticket_key=front.ticket_key if front is not None else secrets.token_bytes(32),
        )
        self.work = HandedOut(self.core, self.call, clock)
        self.bodies = BodyReader(config.body_timeout_s, config.min_upload_rate)
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
                self.access.accounts = core.accounts
                self.access.vauth.registered = core.registered  # one set: the core's
            else:
                assert self.front is not None
                front = self.front
                self.link = await FrontLink.connect(front.sock, front.worker, self._lost)
                self._stack.callback(self.link.close)
                dbs = await anyio.to_thread.run_sync(Databases.of_folder, self.workdir)
                self._ledger = dbs.ledger
                accounts = await anyio.to_thread.run_sync(Accounts, dbs.accounts)
                self.access.accounts = accounts
                self._stack.push_async_callback(anyio.to_thread.run_sync, accounts.close)
                self._stack.push_async_callback(self._close_store)
                reporter = asyncio.get_running_loop().create_task(self._report())
                self._stack.callback(reporter.cancel)
            if self.config.settle_heap:
                # what the first upload would load, loaded before serving (not in a request
                # that every other request on this loop would wait for)
                GoEngine.warm_verification()
                settle()  # started: what is alive now lives as long as the process
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
        admit = request.scope.pop(ADMIT, None) if request is not None else None  # once
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

    async def _asked(self, key: bytes) -> bool:
        """Whether the coordinator knows volunteer key ``key`` (registered elsewhere)."""
        return await self.call(_is_registered, key)
