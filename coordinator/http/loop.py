"""The one thread that owns the :class:`Coordinator` (which is single-threaded by design).

Request handlers put commands (plain functions of the coordinator) on a queue and await
their futures. The thread takes everything queued at once and runs it inside one
``coordinator.batch()`` (group commit: one transaction for the whole batch), and resolves
the futures only after the batch has exited, i.e. after its writes are durable: tasks
handed out by ``request_work`` never leave before the events behind them are committed
(docs/architecture.md §10). A command that raises fails only its own future. The thread also
calls ``coordinator.tick()`` every ``tick_s`` of its clock's monotonic time, for deadlines
and beacons; a batch that runs once a tick is due runs the tick too.

The coordinator is opened on this thread too: the ledger's SQLite connection belongs to the
thread that made it.

With HTTP front-ends in other processes (``foldnet serve --workers N``) the thread also
serves their links (a :class:`~coordinator.http.link.Hub`): it waits on their sockets and its
own queue at once, runs their calls in the same group commits, and answers each front-end in
one message per batch. One thread reads, runs and answers: no other thread of this process
competes with it for the interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.errors import CommitFailedError, CoordinatorUnavailableError
from coordinator.http.link import Call, Hub, Port, Ready
from coordinator.service import Coordinator

log = logging.getLogger("foldnet.http")

T = TypeVar("T")
Command = Callable[[Coordinator], Any]
_STOP = object()


class _Remote:
    """Where the answer to a front-end's call goes: its port, under the call's id."""

    __slots__ = ("id", "port")

    def __init__(self, port: Port, call_id: int) -> None:
        self.port = port
        self.id = call_id


def _deliver(answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for afut, ok, value in answers:
        if afut.done():  # cancelled: its requester went away
            continue
        if ok:
            afut.set_result(value)
        else:
            afut.set_exception(value)


class CoordinatorThread:
    def __init__(
        self,
        open_coordinator: Callable[[], Coordinator],
        *,
        tick_s: float = 0.2,
        max_batch: int = 1024,
        after_batch: Callable[[Coordinator], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        hub: Hub | None = None,
        settled: Callable[[bool], None] | None = None,
    ) -> None:
        self._open = open_coordinator
        self._hub = hub
        self._clock = clock
        self.tick_s = tick_s
        self.max_batch = max_batch
        self._after_batch = after_batch
        #: Told whether each batch committed (True) or was rolled back, before it is answered.
        self._settled = settled
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="foldnet-coordinator", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        #: For metrics: batches run, commands run, commands that raised, last batch size.
        self.batches = 0
        self.commands = 0
        self.failed = 0
        self.last_batch = 0
        self.busy_s = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 600.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise CoordinatorUnavailableError("the coordinator did not open in time")
        if self._error is not None:
            raise self._error

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._wake()
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return self._q.qsize()

    # -- calls -----------------------------------------------------------------------------

    def submit(self, fn: Callable[[Coordinator], T]) -> Future[T]:
        if not self._thread.is_alive():
            raise CoordinatorUnavailableError("the coordinator thread is not running")
        fut: Future[T] = Future()
        self._q.put((fn, fut))
        self._wake()
        return fut

    async def call(self, fn: Callable[[Coordinator], T]) -> T:
        """Run ``fn(coordinator)`` on the coordinator's thread, in the next group commit.

        The answer is an asyncio future that the thread resolves together with the rest of
        its batch, in one hop to the event loop (one wake-up per batch, not per request:
        every wake-up is a system call that hands the GIL over)."""
        if not self._thread.is_alive():
            raise CoordinatorUnavailableError("the coordinator thread is not running")
        loop = asyncio.get_running_loop()
        afut: asyncio.Future[T] = loop.create_future()
        self._q.put((fn, (loop, afut)))
        self._wake()
        return await afut

    def call_sync(self, fn: Callable[[Coordinator], T], timeout_s: float = 60.0) -> T:
        return self.submit(fn).result(timeout_s)

    def _settle(self, committed: bool) -> None:
        if self._settled is not None:
            try:
                self._settled(committed)
            except Exception:
                log.exception("settling a batch failed")

    def _wake(self) -> None:
        if self._hub is not None:
            self._hub.wake()

    # -- the thread ------------------------------------------------------------------------

    def _answer(self, done: list[tuple[Any, bool, Any]]) -> None:
        """Resolve a batch's futures: thread futures directly, asyncio ones in one call per
        event loop, front-ends' calls in one message per front-end."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
        by_loop = {}
        by_port: dict[Port, list[tuple[int, bool, Any]]] = {}
        for fut, ok, value in done:
            if isinstance(fut, Future):
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            elif isinstance(fut, _Remote):
                by_port.setdefault(fut.port, []).append((fut.id, ok, value))
            else:
                by_loop.setdefault(fut[0], []).append((fut[1], ok, value))
        for loop, answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_deliver, answers)
        if self._hub is not None:
            for port, replies in by_port.items():
                self._hub.reply(port, replies)

    def _gather(self, timeout: float) -> list[Any]:
        """What came within ``timeout`` seconds (at once when something is queued), and
        everything else queued by then, up to ``max_batch``."""
        items: list[Any] = []
        if self._hub is None:
            with contextlib.suppress(queue.Empty):  # waits in real time, whatever the clock
                items.append(self._q.get(timeout=timeout))
        else:
            for port, message in self._hub.wait(timeout if self._q.empty() else 0.0):
                item = self._from_port(port, message)
                if item is not None:
                    items.append(item)
        while len(items) < self.max_batch:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                break
        return items

    def _from_port(self, port: Port, message: Any) -> tuple[Command, _Remote] | None:
        assert self._hub is not None
        if isinstance(message, Ready):
            port.pid = message.pid
            port.ready.set()
            return None
        if not isinstance(message, Call) or self._hub.handler is None:
            log.error("front-end %d sent %s, not a call: ignored", port.worker, type(message))
            return None
        try:
            fn = self._hub.handler(message)
        except Exception as e:
            self._hub.reply(port, [(message.id, False, e)])
            return None
        return fn, _Remote(port, message.id)

    def _run(self) -> None:
        try:
            coord = self._open()
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve(coord)
        finally:
            try:
                coord.close()
            except Exception:
                log.exception("closing the coordinator failed")

    def _serve(self, coord: Coordinator) -> None:
        clock = self._clock
        next_tick = clock.monotonic() + self.tick_s
        stopping = False
        while not stopping:
            items = self._gather(max(0.0, next_tick - clock.monotonic()))
            if any(it is _STOP for it in items):
                stopping = True
                items = [it for it in items if it is not _STOP]
            tick = clock.monotonic() >= next_tick
            if tick:
                next_tick = clock.monotonic() + self.tick_s
            if items or tick:
                self._run_batch(coord, items, tick)

    def _run_batch(self, coord: Coordinator, items: list[tuple[Command, Any]], tick: bool) -> None:
        t0 = time.perf_counter()
        done: list[tuple[Any, bool, Any]] = []
        batch = getattr(coord, "batch", contextlib.nullcontext)
        try:
            with batch():
                for fn, fut in items:
                    if isinstance(fut, Future):
                        if not fut.set_running_or_notify_cancel():
                            continue  # its requester is gone and it has not run: skip it
                    elif isinstance(fut, _Remote):
                        pass  # the front-end drops an answer nobody waits for
                    elif fut[1].cancelled():
                        continue
                    try:
                        done.append((fut, True, fn(coord)))
                    except Exception as e:
                        done.append((fut, False, e))
                if tick:
                    try:
                        coord.tick()
                    except Exception:
                        log.exception("coordinator tick failed")
        except Exception as e:
            log.exception("group commit of %d commands failed", len(done))
            self._settle(False)
            failure = CommitFailedError(
                f"the coordinator could not commit this request ({e}); nothing of it was kept: "
                "retry"
            )
            self._answer([(fut, False, failure) for fut, _ok, _v in done])
            self.failed += len(done)
            return
        finally:
            self.busy_s += time.perf_counter() - t0
        self._settle(True)
        self.failed += sum(1 for _f, ok, _v in done if not ok)
        self._answer(done)
        self.batches += 1
        self.commands += len(done)
        self.last_batch = len(done)
        if self._after_batch is not None:
            try:
                self._after_batch(coord)
            except Exception:
                log.exception("after-batch hook failed")
