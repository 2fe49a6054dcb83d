"""The link between HTTP front-end processes and the coordinator's process
(``foldnet serve --workers N``, docs/architecture.md §9.2).

A front-end parses, authenticates and verifies a request, then asks the coordinator to run
one *command*: a plain function of the coordinator's side of the service, named in
:data:`COMMANDS` (the :func:`command` decorator registers it). A :class:`Call` names the
command and carries its arguments; the coordinator runs every call that came in together in
one group commit (:mod:`coordinator.http.loop`) and answers each with a :class:`Reply` only
after the commit. Nothing else crosses: a front-end cannot make the coordinator run anything
that is not a registered command.

Each front-end has one stream socket to the coordinator (one end of a ``socketpair`` made
by the coordinator's process before it starts the front-end: no path in the file system,
no port, only the two processes hold it). Messages are length-prefixed frames of the
frozen dataclasses below, their arguments and answers, in :mod:`coordinator.http.linkcodec`:
plain data (bytes, numbers, strings, tuples, dicts, numpy arrays and foldnet's own frozen
dataclasses of them) as tagged JSON and raw buffers, never pickle, so bytes on the link can
build values and nothing else. What a volunteer or a lab sent was parsed and checked into
these values by the front-end before it reaches the link. Errors travel as
:class:`Failure` (class name, code, message, headers) and are raised again on the front-end
as the same class of the foldnet error tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from coordinator import errors as coordinator_errors
from coordinator.http.linkcodec import LinkCodecError, decode, encode
from foldnet import errors as foldnet_errors
from foldnet.errors import FoldnetError, Internal, Unavailable, error_for_status

if TYPE_CHECKING:
    from coordinator.http.core import Core
    from coordinator.service import Coordinator

log = logging.getLogger("foldnet.http")

F = TypeVar("F", bound=Callable[..., Any])

#: Every command a front-end may name: ``module.function`` -> ``function(core, coordinator,
#: *args)``, run on the coordinator's thread inside a group commit.
COMMANDS: dict[str, Callable[..., Any]] = {}


def command(fn: F) -> F:
    """Register ``fn(core, coordinator, *args)`` as a command front-ends may call."""
    COMMANDS[command_name(fn)] = fn
    return fn


def command_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """What the coordinator checks before it runs a call, for all front-ends at once: the
    volunteer's nonce is spent once and its key's request rate held (``volunteer``,
    ``nonce``); a lab's request rate (``lab``); registrations per client address and in all
    (``register_from``)."""

    volunteer: bytes = b""
    nonce: str = ""
    lab: str = ""
    register_from: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """Run command ``name`` with ``args``; ``id`` pairs the answer with the call."""

    id: int
    name: str
    args: tuple[Any, ...] = ()
    admit: Admission | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """An error a command raised, as plain data: raised again on the front-end."""

    kind: str  # the class's name in the foldnet error tree
    status: int
    code: str
    detail: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        if not isinstance(error, FoldnetError):
            # a bug: its traceback is in the coordinator's log; the caller learns nothing more
            error = Internal("internal error; the operator has the details")
        return cls(
            kind=type(error).__name__,
            status=error.status,
            code=error.code,
            detail=error.detail,
            headers=tuple((error.headers or {}).items()),
        )

    def error(self) -> FoldnetError:
        cls = _ERRORS.get(self.kind)
        headers: Mapping[str, str] | None = dict(self.headers) or None
        if cls is None:
            err = error_for_status(self.status, self.detail, code=self.code)
            if headers:
                err.headers = headers
            return err
        return cls(self.detail, code=self.code, headers=headers)


#: The error classes a :class:`Failure` may name (foldnet's and the coordinator's trees).
_ERRORS: dict[str, type[FoldnetError]] = {
    name: obj
    for module in (foldnet_errors, coordinator_errors)
    for name, obj in vars(module).items()
    if isinstance(obj, type) and issubclass(obj, FoldnetError)
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """The answers to calls, in one message: ``(id, ok, value or Failure)`` each."""

    answers: tuple[tuple[int, bool, Any], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """A front-end is listening (sent once, after its server started)."""

    worker: int
    pid: int


# -- framing -----------------------------------------------------------------------------------

_LENGTH = struct.Struct("<Q")
#: A message longer than this is a bug (the largest is a result of the largest WU).
MAX_MESSAGE = 1 << 31


def frame(message: object) -> bytes:
    data = encode(message)
    return _LENGTH.pack(len(data)) + data


class Deframer:
    """Messages out of a byte stream, as its chunks arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        buf = self._buf
        buf += data
        start = 0
        while len(buf) - start >= _LENGTH.size:
            (n,) = _LENGTH.unpack_from(buf, start)
            if n > MAX_MESSAGE:
                raise LinkCodecError(f"a message of {n:,} bytes on the coordinator link: a bug")
            end = start + _LENGTH.size + n
            if len(buf) < end:
                break
            yield decode(bytes(memoryview(buf)[start + _LENGTH.size : end]))
            start = end
        if start:
            del buf[:start]


# -- the coordinator's side --------------------------------------------------------------------


class Port:
    """The coordinator's end of one front-end's socket (non-blocking, with its own buffers,
    so a slow front-end never stalls the coordinator)."""

    def __init__(self, sock: socket.socket, worker: int) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.worker = worker
        self._in = Deframer()
        self._out = bytearray()
        self.closed = False
        self.ready = threading.Event()
        self.pid = 0

    def receive(self) -> list[Any]:
        """Whatever complete messages arrived; raises :class:`EOFError` once it closed."""
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as e:
            raise EOFError(str(e)) from e
        if not data:
            raise EOFError("the front-end closed its link")
        try:
            return list(self._in.feed(data))
        except LinkCodecError as e:  # a bug, or a front-end of another version
            log.exception("front-end %d sent an unreadable message; closing its link", self.worker)
            raise EOFError(f"an unreadable message: {e}") from e

    def send(self, message: object) -> None:
        self._out += frame(message)
        self.flush()

    @property
    def pending(self) -> bool:
        return bool(self._out)

    def flush(self) -> None:
        while self._out and not self.closed:
            try:
                n = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            del self._out[:n]

    def close(self) -> None:
        self.closed = True
        self._out.clear()
        with contextlib.suppress(OSError):
            self.sock.close()


Handler = Callable[[Call], Callable[["Coordinator"], Any]]


class Hub:
    """The coordinator's end of every front-end's link: waits for calls on all of them (and
    for commands from its own process, which :meth:`wake` it), answers in one message per
    front-end and batch."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._adding: list[Port] = []
        self.ports: dict[int, Port] = {}
        #: Turns a call into a command of the coordinator (set by the service's core).
        self.handler: Handler | None = None

    def add(self, port: Port) -> None:
        """Serve ``port`` from the next wait on (thread-safe)."""
        with self._lock:
            self._adding.append(port)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def wait(self, timeout: float) -> list[tuple[Port, Any]]:
        """Messages from the front-ends within ``timeout`` seconds (fewer when woken)."""
        with self._lock:
            adding, self._adding = self._adding, []
        for port in adding:
            self.ports[port.worker] = port
            self._sel.register(port.sock, selectors.EVENT_READ, port)
        out: list[tuple[Port, Any]] = []
        for key, events in self._sel.select(timeout):
            port = key.data
            if port is None:
                with contextlib.suppress(BlockingIOError, OSError):
                    while self._wake_r.recv(4096):
                        pass
                continue
            if events & selectors.EVENT_WRITE:
                port.flush()
                if not port.pending and not port.closed:
                    self._sel.modify(port.sock, selectors.EVENT_READ, port)
            if events & selectors.EVENT_READ:
                try:
                    out.extend((port, m) for m in port.receive())
                except EOFError:
                    self._drop(port)
        return out

    def reply(self, port: Port, answers: list[tuple[int, bool, Any]]) -> None:
        if port.closed:
            return
        wire = tuple((i, ok, value if ok else Failure.of(value)) for i, ok, value in answers)
        try:
            port.send(Reply(answers=wire))
        except LinkCodecError:  # a command's bug: it answered with what the link cannot carry
            log.exception("an answer could not be sent to front-end %d", port.worker)
            # only that answer fails: the others (of work committed) still go
            port.send(Reply(answers=tuple(_carried(answer) for answer in wire)))
        if port.pending and not port.closed:
            self._sel.modify(port.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, port)
        if port.closed:
            self._drop(port)

    def _drop(self, port: Port) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(port.sock)
        port.close()
        if self.ports.get(port.worker) is port:
            del self.ports[port.worker]

    def close(self) -> None:
        for port in list(self.ports.values()):
            self._drop(port)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


def _carried(answer: tuple[int, bool, Any]) -> tuple[int, bool, Any]:
    """``answer`` if the link can carry it, else its call's failure saying why."""
    try:
        encode(Reply(answers=(answer,)))
    except LinkCodecError as e:
        return answer[0], False, Failure.of(e)
    return answer


# -- a front-end's side ------------------------------------------------------------------------


class FrontLink(asyncio.Protocol):
    """A front-end's end of its link, on its event loop: :meth:`call` sends a call and
    awaits its answer. When the coordinator goes away every call waiting fails
    ``unavailable`` and ``on_lost`` runs (the front-end stops: it cannot serve alone)."""

    def __init__(self, worker: int, on_lost: Callable[[], None]) -> None:
        self.worker = worker
        self.on_lost = on_lost
        self.lost = False
        self._transport: asyncio.Transport | None = None
        self._deframer = Deframer()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next = 1

    @classmethod
    async def connect(
        cls, sock: socket.socket, worker: int, on_lost: Callable[[], None]
    ) -> FrontLink:
        loop = asyncio.get_running_loop()
        link = cls(worker, on_lost)
        await loop.connect_accepted_socket(lambda: link, sock=sock)
        return link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's do not subclass asyncio.Transport, only act like one)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for message in self._deframer.feed(data):
            if not isinstance(message, Reply):
                continue
            for i, ok, value in message.answers:
                fut = self._waiting.pop(i, None)
                if fut is None or fut.done():  # its request went away meanwhile
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value.error())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._transport = None
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(self._gone())
        self.on_lost()

    @staticmethod
    def _gone() -> Unavailable:
        return Unavailable("the coordinator is not running; retry later", code="unavailable")

    def send(self, message: object) -> None:
        if self._transport is None:
            raise self._gone()
        self._transport.write(frame(message))

    async def call(self, name: str, args: tuple[Any, ...], admit: Admission | None) -> Any:
        if self._transport is None:
            raise self._gone()
        i = self._next
        self._next += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[i] = fut
        self._transport.write(frame(Call(id=i, name=name, args=args, admit=admit)))
        try:
            return await fut
        finally:
            self._waiting.pop(i, None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def run_command(core: Core, name: str, args: tuple[Any, ...]) -> Callable[[Coordinator], Any]:
    """The command a call names, bound to its arguments (unknown names are a bug: 500)."""
    fn = COMMANDS.get(name)
    if fn is None:
        raise Internal(f"no command {name[:200]!r}: a front-end of another version?")
    return lambda c: fn(core, c, *args)
