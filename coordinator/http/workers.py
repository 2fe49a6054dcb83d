"""``foldnet serve --workers N``: the coordinator in this process, N HTTP front-ends in
processes of their own (docs/architecture.md §9.2).

One Python process serves HTTP and runs the coordinator on one interpreter lock: its event
loop (HTTP, signatures, parsing) and the coordinator's thread take turns, and the service
never uses more than one core. Here the front-ends parse, authenticate and verify requests
(signatures, result digests, the physics of boundary states) in parallel, each in its own
process with its own lock, and hand the coordinator's process only checked commands over a
private link (:mod:`coordinator.http.link`); the coordinator's thread waits on all their
links at once and runs what they send in its group commits, as before.

Each front-end listens on the same address and port with ``SO_REUSEPORT``: the kernel spreads
new connections over them (by a hash of the connection, so 200 keep-alive volunteers land
about evenly), and a front-end that dies takes only its own connections with it.

Lifecycle. This process opens the coordinator first (a front-end has nothing to serve
without it), then starts the front-ends and says the service is up once every one of them
listens. Ctrl-C or SIGTERM stops the front-ends (SIGTERM: each finishes the requests it is
answering), then the coordinator. The front-ends sit in process groups of their own so that
a Ctrl-C in a terminal reaches only this process, which stops them in order; a front-end
whose coordinator process disappears (killed with SIGKILL) stops too: its link closes, and
on Linux the kernel also sends it SIGTERM (``PR_SET_PDEATHSIG``).

A front-end that dies while the service runs is reported and started again: front-ends hold
no state of their own (what they remember of work handed out is a hint the coordinator can
answer again; nonces and rates are kept by the coordinator), so a new one serves as well as
the old, and the other front-ends keep serving meanwhile. Only a front-end that keeps dying
(``MAX_RESTARTS`` within ``RESTART_WINDOW_S``) stops the service: that is a fault to look at,
not a hiccup to hide. A front-end that cannot start at all (the port is taken) stops the
service at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.clock import SYSTEM_CLOCK
from coordinator.errors import CoordinatorUnavailableError, UsageError
from coordinator.http.config import ServiceConfig
from coordinator.http.core import Core
from coordinator.http.heap import settle
from coordinator.http.link import Hub, Port

log = logging.getLogger("foldnet.http")

#: A front-end that dies this often within RESTART_WINDOW_S seconds stops the service.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: How long front-ends get to finish what they answer when the service stops.
STOP_GRACE_S = 10.0
#: How long a front-end may take to start listening.
START_TIMEOUT_S = 120.0
#: Most front-end processes.
MAX_WORKERS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontEndSettings:
    """What a front-end process is started with (plain data, pickled to the child)."""

    workdir: str
    config: ServiceConfig
    host: str
    port: int
    log_level: str
    #: The service's session-ticket key (coordinator/http/sessions.py): made when it starts,
    #: the same in every front-end (a restarted one too), never written to disk.
    ticket_key: bytes = field(repr=False)


def listening_socket(host: str, port: int, *, shared: bool = True) -> socket.socket:
    """A socket listening on ``host:port`` that the other front-ends share (SO_REUSEPORT);
    ``shared=False``: one that nothing may share, which fails if anything listens there
    already (another service's front-ends included)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise UsageError(
            "--workers above 1 needs SO_REUSEPORT (Linux, BSD, macOS); run one process "
            "(--workers 1) on this system"
        )
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {host!r}: {e}") from e
    family, kind, proto, _name, addr = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {e.strerror or e} (is another service there?)"
        ) from e
    sock.set_inheritable(False)
    return sock


def _die_with_parent() -> None:
    """On Linux: SIGTERM this process when the process that started it dies."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def front_end_main(link: socket.socket, worker: int, settings: FrontEndSettings) -> None:
    """A front-end process: serve the HTTP API on the shared port until told to stop (SIGTERM)
    or until the coordinator's process goes away."""
    import asyncio

    import uvicorn

    from coordinator.http.app import create_app
    from coordinator.http.context import FrontEnd

    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the coordinator's process only
    _die_with_parent()
    if os.getppid() == 1:  # the parent died before the line above took effect
        return
    try:
        sock = listening_socket(settings.host, settings.port)
    except UsageError as e:
        print(f"foldnet: front-end {worker}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    app = create_app(
        settings.workdir,
        settings.config,
        front=FrontEnd(link, worker, ticket_key=settings.ticket_key),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=settings.log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(STOP_GRACE_S) - 2,
        )
    )
    svc = app.state.service

    def lost() -> None:
        if not server.should_exit:
            print(
                f"foldnet: front-end {worker}: the coordinator's process went away; stopping",
                file=sys.stderr,
                flush=True,
            )
        server.should_exit = True

    svc.on_lost = lost

    async def serve() -> None:
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            svc.ready(os.getpid())
        await task

    # uvicorn's own choice of loop (uvloop when installed), as ``uvicorn.run`` makes it
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve())
    if not server.started:
        sys.exit(3)  # the app could not start (its message is above)


class FrontEnds:
    """The front-end processes of one service: started, watched, restarted, stopped."""

    def __init__(self, hub: Hub, settings: FrontEndSettings, workers: int) -> None:
        self.hub = hub
        self.settings = settings
        self.workers = workers
        self._ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, Any] = {}
        self.ports: dict[int, Port] = {}
        self._deaths: deque[float] = deque()

    def start(self, stopping: Callable[[], bool]) -> None:
        """Start every front-end and wait until each listens (UsageError if one cannot)."""
        for worker in range(self.workers):
            self._spawn(worker)
        deadline = time.monotonic() + START_TIMEOUT_S
        for worker in range(self.workers):
            port = self.ports[worker]
            proc = self.procs[worker]
            while not port.ready.wait(0.1):
                if stopping():
                    return
                if not proc.is_alive() or time.monotonic() > deadline:
                    raise CoordinatorUnavailableError(
                        f"HTTP front-end {worker} did not start"
                        + (f" (exit code {proc.exitcode})" if proc.exitcode is not None else "")
                        + "; its message is above"
                    )

    def _spawn(self, worker: int) -> None:
        mine, theirs = socket.socketpair()
        proc = self._ctx.Process(
            target=front_end_main,
            args=(theirs, worker, self.settings),
            name=f"foldnet-http-{worker}",
        )
        proc.start()
        theirs.close()  # the child's end lives in the child only: its death closes the link
        port = Port(mine, worker)
        self.procs[worker] = proc
        self.ports[worker] = port
        self.hub.add(port)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.pid is not None]

    def sentinels(self) -> list[int]:
        return [p.sentinel for p in self.procs.values()]

    def reap(self, say: Callable[[str], None]) -> None:
        """Report every front-end that died and start it again (UsageError-free), or raise
        :class:`CoordinatorUnavailableError` when they keep dying."""
        for worker, proc in list(self.procs.items()):
            if proc.is_alive():
                continue
            proc.join()
            code = proc.exitcode
            how = (
                f"signal {signal.Signals(-code).name}"
                if code is not None and code < 0
                else (f"exit code {code}")
            )
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - RESTART_WINDOW_S:
                self._deaths.popleft()
            if len(self._deaths) > MAX_RESTARTS:
                raise CoordinatorUnavailableError(
                    f"HTTP front-ends died {len(self._deaths)} times within "
                    f"{RESTART_WINDOW_S:.0f} s (front-end {worker}, pid {proc.pid}: {how}); "
                    "stopping the service: see the messages above"
                )
            say(
                f"HTTP front-end {worker} (pid {proc.pid}) died ({how}); starting a new one "
                "(the others kept serving)"
            )
            self._spawn(worker)

    def stop(self) -> None:
        """SIGTERM every front-end (each finishes what it answers), then SIGKILL whatever
        is left after STOP_GRACE_S."""
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def serve_workers(
    workdir: Path,
    config: ServiceConfig,
    *,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """Run the service with ``workers`` front-end processes until Ctrl-C or SIGTERM;
    ``say`` what it serves, ``warn`` of front-ends that died.

    Raises :class:`CoordinatorUnavailableError` when the coordinator or the front-ends
    fail (after stopping everything it started)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be from 1 to {MAX_WORKERS}, got {workers}")
    # the port is free, not even shared by another service's front-ends (else fail now)
    listening_socket(host, port, shared=False).close()
    wake_r, wake_w = os.pipe()  # signals write to it (set_wakeup_fd), so that waits end
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    stop_signal: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_signal.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    old_wakeup = signal.set_wakeup_fd(wake_w)
    hub = Hub()
    core = Core(workdir, config, clock=SYSTEM_CLOCK)
    settings = FrontEndSettings(
        workdir=str(workdir),
        config=config,
        host=host,
        port=port,
        log_level=log_level,
        ticket_key=secrets.token_bytes(32),
    )
    fronts = FrontEnds(hub, settings, workers)
    try:
        core.start(hub)
        fronts.start(lambda: bool(stop_signal))
        if config.settle_heap:
            settle()  # the coordinator's process has started (heap.py: why)
        if not stop_signal:
            say(
                f"foldnet coordinator for {workdir} on http://{host}:{port} "
                f"(docs: http://{host}:{port}/docs); {workers} HTTP front-end processes "
                f"(pids {', '.join(map(str, fronts.pids))})"
            )
        while not stop_signal:
            multiprocessing.connection.wait([wake_r, *fronts.sentinels()], timeout=1.0)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            if stop_signal:
                break
            if not core.alive:
                raise CoordinatorUnavailableError(
                    "the coordinator's thread stopped; stopping the service (its error is above)"
                )
            fronts.reap(warn)
    finally:
        fronts.stop()
        core.stop()
        hub.close()
        signal.set_wakeup_fd(old_wakeup)
        for s, handler in old.items():
            signal.signal(s, handler)
        os.close(wake_r)
        os.close(wake_w)
