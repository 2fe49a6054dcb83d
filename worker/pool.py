"""A volunteer's slots side by side: one OS process per slot, or one slot in this process.

``foldnet worker run --cpus N`` computes N WUs at once, each in a process of its own. A WU
must stay single-threaded to be bit-reproducible (numba's Go kernels, OpenMM's CPU platform
with ``Threads=1``), so the parallelism is across WUs; and across processes, not threads,
since Python code shares one interpreter lock and an OpenMM Context belongs to its thread.
``--gpu`` adds one slot whose openmm WUs run on OpenMM's CUDA platform.

The volunteer's process keeps the HTTP session, pulls work and uploads; a slot's process
gets :class:`~worker.slot.Job` messages over a pipe and answers with events (see
:mod:`worker.slot`). Slots are started with the ``spawn`` method (no copy of the parent's
threads, locks or HTTP connections), ignore SIGINT and SIGTERM (the volunteer's process
decides when they stop: the first Ctrl-C lets them finish their WU), and on Linux die with
their parent (``PR_SET_PDEATHSIG``): a worker killed with ``kill -9`` leaves no orphan
computing, only each WU's saved progress, resumed on the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from foldnet.errors import FoldnetError
from worker.errors import SetupError, SlotError
from worker.identity import Identity
from worker.slot import (
    Describe,
    Described,
    Died,
    Emit,
    Event,
    Failed,
    Finished,
    Job,
    Ready,
    SystemCache,
    describe,
    run_job,
)
from worker.systems import EngineCache

Handle = Callable[[Event], None]

CPU = "CPU"
#: GPU platforms a slot may use, best first. Only CUDA: it is the platform OpenMM can be
#: told to sum forces on in a fixed order (``DeterministicForces``), and replicas of a WU
#: are compared bit for bit. OpenCL has no such switch.
GPU_PLATFORMS = ("CUDA",)
#: What stops a worker; its slots ignore them (the worker tells them when to stop).
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
#: Deaths in a row of one slot's process (crashes, out of memory) before the worker gives up.
MAX_RESPAWNS = 3


def gpu_platform(available: Sequence[str]) -> str:
    """The OpenMM platform ``--gpu`` uses, from the platforms OpenMM has on this machine
    (``sims.allatom.engine.available_platforms()``); :class:`SetupError` if there is none."""
    for name in GPU_PLATFORMS:
        if name in available:
            return name
    why = (
        "; OpenCL is there, but foldnet uses CUDA only: it is the GPU platform OpenMM can sum "
        "forces on in a fixed order (DeterministicForces), and replicas are compared bit "
        "for bit"
        if "OpenCL" in available
        else ""
    )
    raise SetupError(
        f"--gpu needs OpenMM's CUDA platform, but OpenMM here has only "
        f"{', '.join(available) or 'no platforms'}{why}. Install an OpenMM built for CUDA "
        "(with a driver that matches it), or run without --gpu"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotSpec:
    """One slot: its index, the OpenMM platform of its openmm WUs, the engines it runs."""

    index: int
    platform: str
    engines: tuple[str, ...]

    @property
    def kind(self) -> str:
        return "cpu" if self.platform == CPU else "gpu"

    @property
    def name(self) -> str:
        return f"cpu{self.index}" if self.kind == "cpu" else "gpu"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotPlan:
    """How a volunteer computes: ``cpus`` CPU slots and, if ``accelerator`` names an OpenMM
    platform (what ``--gpu`` chose: CUDA), one more slot that takes the openmm WUs on it.
    With an accelerator the CPU slots take only the other engines' WUs: one key computes
    each engine in one determinism class, so the server never hands a WU of the GPU's class
    to a CPU slot or the other way round."""

    cpus: int = 1
    accelerator: str | None = None

    def specs(self, engines: tuple[str, ...]) -> tuple[SlotSpec, ...]:
        limit = os.cpu_count() or 1
        if not 0 <= self.cpus <= limit:
            raise SetupError(
                f"--cpus must be between 0 and {limit} (this machine's CPUs), got {self.cpus}"
            )
        if self.accelerator is None:
            if self.cpus == 0:
                raise SetupError("--cpus 0 leaves nothing to compute with: give --cpus N or --gpu")
            return tuple(SlotSpec(index=i, platform=CPU, engines=engines) for i in range(self.cpus))
        if "openmm" not in engines:
            raise SetupError(
                "--gpu computes openmm WUs, but --engine leaves openmm out: add --engine openmm"
            )
        cpu_engines = tuple(e for e in engines if e != "openmm")
        cpus = self.cpus if cpu_engines else 0
        out = [SlotSpec(index=i, platform=CPU, engines=cpu_engines) for i in range(cpus)]
        out.append(SlotSpec(index=cpus, platform=self.accelerator, engines=("openmm",)))
        return tuple(out)


class InlinePool:
    """One CPU slot in the caller's process: :meth:`pump` computes the job it was given
    before returning (for tests and for embedding a volunteer in a program)."""

    def __init__(
        self, spec: SlotSpec, *, identity: Identity, idle: Callable[[float], object]
    ) -> None:
        self.specs = (spec,)
        self._identity = identity
        self._engines = EngineCache()
        self._systems = SystemCache()
        self._idle = idle
        self._job: Job | None = None

    def start(self) -> None:
        pass

    def pid(self, slot: int) -> int:
        return os.getpid()

    def describe(self, slot: int, engines: tuple[str, ...]) -> dict[str, str]:
        return _classes(
            self.specs[slot].name, describe(slot, Describe(engines=engines), self._engines)
        )

    def submit(self, slot: int, job: Job) -> None:
        self._job = job

    def pump(self, timeout: float, handle: Handle) -> None:
        """Compute the job given (if any), handing on its events as they come, but its end
        (:class:`Finished` or :class:`Failed`) after the job: what handling that raises (an
        upload the server refused, an answer outside the protocol) then reaches the caller,
        as it does from a slot's process, not :func:`run_job`'s net for the job's own
        failures."""
        job, self._job = self._job, None
        if job is None:
            self._idle(timeout)
            return
        ends: list[Event] = []

        def emit(event: Event) -> None:
            if isinstance(event, Finished | Failed):
                ends.append(event)
            else:
                handle(event)

        run_job(
            0,
            job,
            engines=self._engines,
            identity=self._identity,
            systems=self._systems,
            emit=emit,
        )
        for event in ends:
            handle(event)

    def close(self, *, now: bool) -> None:
        self._job = None


class _Child:
    def __init__(self, spec: SlotSpec, process: BaseProcess, conn: Connection) -> None:
        self.spec = spec
        self.process = process
        self.conn = conn
        self.ready = False


class ProcessPool:
    """One process per slot (``spawn``), each with its own engines and systems."""

    def __init__(
        self, specs: tuple[SlotSpec, ...], *, key_path: str, start_timeout_s: float = 600.0
    ) -> None:
        self.specs = specs
        self._key_path = key_path
        self._timeout = start_timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._children: dict[int, _Child] = {}
        self._deaths = dict.fromkeys(range(len(specs)), 0)

    # -- life ----------------------------------------------------------------------------

    def _spawn(self, spec: SlotSpec) -> None:
        ours, theirs = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=child_main,
            args=(spec, self._key_path, theirs, os.getpid()),
            name=f"foldnet-slot-{spec.name}",
        )
        with _ignoring_stop_signals():
            process.start()
        theirs.close()  # ours then reads EOF when the child is gone
        self._children[spec.index] = _Child(spec, process, ours)

    def start(self) -> None:
        """Start every slot's process and wait until each has loaded its engines and key."""
        for spec in self.specs:
            self._spawn(spec)
        deadline = time.monotonic() + self._timeout
        for child in self._children.values():
            while not child.ready:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SlotError(
                        f"slot {child.spec.name}'s process did not start within "
                        f"{self._timeout:.0f} s"
                    )
                child.ready = isinstance(self._receive(child, left), Ready)

    def _receive(self, child: _Child, timeout: float) -> Event | None:
        """The child's next message, None if none came in ``timeout``; a child that ended
        raises :class:`SlotError` (used while starting and describing, when nothing else
        may happen)."""
        got = wait([child.conn, child.process.sentinel], timeout)
        if child.conn in got:
            with contextlib.suppress(EOFError, OSError):
                event: Event = child.conn.recv()
                return event
        if got:
            child.process.join(5)
            raise SlotError(
                f"slot {child.spec.name}'s process ended while starting (exit code "
                f"{child.process.exitcode}); its error is printed above"
            )
        return None

    def pid(self, slot: int) -> int:
        return self._children[slot].process.pid or 0

    def describe(self, slot: int, engines: tuple[str, ...]) -> dict[str, str]:
        child = self._children[slot]
        child.conn.send(Describe(engines=engines))
        deadline = time.monotonic() + self._timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self._receive(child, left)
            if isinstance(event, Described | Failed):
                return _classes(child.spec.name, event)
        raise SlotError(
            f"slot {child.spec.name} did not say its class within {self._timeout:.0f} s"
        )

    def submit(self, slot: int, job: Job) -> None:
        self._children[slot].conn.send(job)

    def pump(self, timeout: float, handle: Handle) -> None:
        """Wait up to ``timeout`` for events and hand each to ``handle``; a slot whose process
        died is reported (:class:`~worker.slot.Died`) and started again (its
        :class:`~worker.slot.Ready` follows)."""
        children = list(self._children.values())
        objects = [c.conn for c in children] + [c.process.sentinel for c in children]
        got = set(wait(objects, timeout))
        for child in children:
            dead = child.process.sentinel in got
            if child.conn in got or dead:
                dead = self._drain(child, handle) or dead
            if dead:
                self._restart(child, handle)

    def _drain(self, child: _Child, handle: Handle) -> bool:
        """Hand on everything the child has sent; True if its pipe is closed."""
        try:
            while child.conn.poll():
                event: Event = child.conn.recv()
                if isinstance(event, Ready):
                    child.ready = True
                elif isinstance(event, Finished):
                    self._deaths[child.spec.index] = 0  # it works: only deaths in a row count
                handle(event)
        except (EOFError, OSError):
            return True
        return False

    def _restart(self, child: _Child, handle: Handle) -> None:
        child.process.join(5)
        code = child.process.exitcode
        child.conn.close()
        index = child.spec.index
        self._deaths[index] += 1
        if self._deaths[index] > MAX_RESPAWNS:
            raise SlotError(
                f"slot {child.spec.name}'s process died {self._deaths[index]} times (last exit "
                f"code {code}); its saved progress stays for the next start"
            )
        handle(Died(slot=index, exitcode=code))
        self._spawn(child.spec)

    def close(self, *, now: bool) -> None:
        """Stop every slot: ``now`` kills them (their WUs' progress is saved per segment);
        otherwise each idle slot is asked to exit and given a few seconds."""
        children = list(self._children.values())
        self._children.clear()
        if not now:
            for c in children:
                with contextlib.suppress(OSError, ValueError):
                    c.conn.send(None)
            deadline = time.monotonic() + 10
            for c in children:
                c.process.join(max(0.0, deadline - time.monotonic()))
        for c in children:
            if c.process.is_alive():
                c.process.kill()
            c.process.join(10)
            c.conn.close()
            with contextlib.suppress(ValueError):
                c.process.close()


def _classes(name: str, event: Described | Failed) -> dict[str, str]:
    if isinstance(event, Failed):
        raise SetupError(f"slot {name} cannot compute here: {event.reason}")
    return dict(event.classes)


@contextlib.contextmanager
def _ignoring_stop_signals() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while a slot's process is started: it inherits them ignored
    (an ignored signal stays ignored across exec, and Python then installs no handler), so a
    Ctrl-C while it imports its modules cannot end it with a traceback. Only the main thread
    may change handlers; elsewhere the caller's handlers are left as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


# -- inside a slot's process ------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Linux: be killed when the parent dies (even by SIGKILL); elsewhere checked per job."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(0)


def child_main(spec: SlotSpec, key_path: str, conn: Connection, parent: int) -> None:
    """A slot's process: load the key and engines, say Ready, then serve jobs until told to
    stop (None) or the parent is gone. Errors are one line on stderr, never a traceback."""
    for signum in _STOP_SIGNALS:  # inherited ignored already (see _ignoring_stop_signals)
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent(parent)
    try:
        identity = Identity.load_or_create(key_path)
        engines = EngineCache(platform=spec.platform, threads=1)
        systems = SystemCache()
        emit: Emit = conn.send
        emit(Ready(slot=spec.index, pid=os.getpid()))
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message is None or os.getppid() != parent:
                return
            if isinstance(message, Describe):
                emit(describe(spec.index, message, engines))
            elif isinstance(message, Job):
                run_job(
                    spec.index,
                    message,
                    engines=engines,
                    identity=identity,
                    systems=systems,
                    emit=emit,
                )
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        return  # the parent is gone or stopping us: nothing to say
    except FoldnetError as e:
        print(f"slot {spec.name}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:
        print(f"slot {spec.name}: error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        conn.close()
