"""Job preparation in a separate process: never in a service's event loop or the
coordinator's interpreter.

Preparing an all-atom system (PDBFixer, hydrogens, a minimisation in GBn2) can take minutes
of CPU, and holds the GIL while it runs; a coordinator that did it itself would stop answering
its volunteers. A :class:`Preparer` keeps one child process, started with the ``spawn``
method (a fresh interpreter: no lock, thread or connection of the parent is inherited), and
hands it one job at a time. The child reports each stage as it starts; the parent's thread
collects those reports and the results, and calls back:

- ``on_prepared(job, PreparedJob)`` with the system decoded from its plain encoding
  (:func:`worker.systems.encode_system`, never a pickle of engine objects) and the spec built
  here from the plan, so the child only ever supplies data that is checked again;
- ``on_failed(job, message)`` with the error a lab reads: the preparation's own message
  (a bad structure, a size limit), or a plain word that the process died (its exit code).

The callbacks run on the preparer's thread; the HTTP service forwards them to the
coordinator's thread as commands (``Coordinator.prepared`` / ``preparation_failed``), which
turns them into the events ``JobPrepared`` / ``JobPreparationFailed``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator.errors import CoordinatorUnavailableError
from coordinator.plan import JobPlan, PlanLimits
from coordinator.prepare import PreparedJob
from sims.state import State

log = logging.getLogger("foldnet.preparer")

#: Finished preparations remembered (their process id and time) for progress reports.
KEEP_FINISHED = 1000


@dataclass(frozen=True, slots=True)
class Preparation:
    """Where a job's preparation stands, as its progress shows it."""

    state: str  # "queued", "running", "prepared", "failed"
    stage: str = ""  # the step running now (or the last one)
    stages: tuple[str, ...] = ()  # steps started so far, in order
    pid: int | None = None  # the preparing process (never the service's own)
    started_at: float | None = None
    seconds: float | None = None  # how long it took, once finished

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "stage": self.stage,
            "stages": list(self.stages),
            "pid": self.pid,
            "started_at": self.started_at,
            "seconds": self.seconds,
        }


@dataclass(slots=True)
class _Running:
    job: str
    plan: JobPlan
    started_at: float
    stages: list[str] = field(default_factory=list)
    pid: int | None = None


def _child_main(tasks: Any, results: Any) -> None:
    """The preparation process: take (job, plan JSON, limits) until told to stop."""
    # imported here: the child is a fresh interpreter, and these are heavy
    from coordinator.prepare import prepare_job
    from foldnet.errors import FoldnetError
    from worker.systems import encode_system

    while True:
        item = tasks.get()
        if item is None:
            return
        job, plan_json, limits_json = item
        results.put(("started", job, os.getpid()))

        def progress(stage: str, job: str = job) -> None:
            results.put(("stage", job, stage))

        try:
            plan = JobPlan.from_json(plan_json)
            prepared = prepare_job(
                plan,
                limits=PlanLimits(**limits_json),
                progress=progress,
            )
            starts = [(s.positions, s.velocities, s.step) for s in prepared.starts]
            results.put(("done", job, (encode_system(prepared.system), starts)))
        except FoldnetError as e:
            results.put(("failed", job, str(e)))
        except MemoryError:
            results.put(
                (
                    "failed",
                    job,
                    "the preparation ran out of memory: the system is too large for this machine",
                )
            )
        except Exception as e:  # a bug: the lab gets a plain word, the log the details
            import traceback

            traceback.print_exc()
            results.put(
                (
                    "failed",
                    job,
                    f"the preparation failed unexpectedly ({type(e).__name__}); "
                    "the operator has the details",
                )
            )


class Preparer:
    """Prepares jobs one at a time in a spawned child process (see the module docstring)."""

    def __init__(
        self,
        *,
        on_prepared: Callable[[str, PreparedJob], None],
        on_failed: Callable[[str, str], None],
        limits: PlanLimits | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.limits = limits or PlanLimits()
        self._on_prepared = on_prepared
        self._on_failed = on_failed
        self._poll_s = poll_s
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[str, JobPlan]] = collections.deque()
        self._running: _Running | None = None
        self._finished: collections.OrderedDict[str, Preparation] = collections.OrderedDict()
        self._proc: Any = None
        self._tasks: Any = None
        self._results: Any = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="foldnet-preparer", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop at once: a preparation still running is abandoned (its job stays
        ``preparing`` in the event log, and is prepared again at the next start)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._kill_child()

    def __enter__(self) -> Preparer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests --------------------------------------------------------------------------

    def submit(self, job: str, plan: JobPlan) -> None:
        """Queue ``job`` for preparation (returns at once; thread-safe)."""
        if self._stopping:
            raise CoordinatorUnavailableError("the preparer is stopped")
        with self._lock:
            self._queue.append((job, plan))
        self._wake.set()

    def forget(self, job: str) -> None:
        """Drop a queued job (cancelled by its lab); a running preparation finishes and its
        result is refused by the coordinator."""
        with self._lock:
            self._queue = collections.deque((j, p) for j, p in self._queue if j != job)

    def progress(self, job: str) -> Preparation | None:
        with self._lock:
            r = self._running
            if r is not None and r.job == job:
                return Preparation(
                    "running",
                    r.stages[-1] if r.stages else "starting the preparation process",
                    tuple(r.stages),
                    r.pid,
                    r.started_at,
                )
            if any(j == job for j, _p in self._queue):
                return Preparation("queued", "waiting for the preparation process")
            return self._finished.get(job)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None or bool(self._queue)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._step()
            except Exception:  # keep preparing other jobs whatever one of them did
                log.exception("the preparer's thread hit an unexpected error")
                time.sleep(self._poll_s)

    def _step(self) -> None:
        with self._lock:
            running = self._running
            nxt = self._queue.popleft() if running is None and self._queue else None
        if nxt is not None:
            self._send(*nxt)
            if self._results is None:  # the process could not start: the job failed
                return
        elif running is None:
            self._wake.wait(self._poll_s)
            self._wake.clear()
            return
        try:
            msg = self._results.get(timeout=self._poll_s)
        except queue.Empty:
            self._check_child()
            return
        self._handle(msg)

    def _send(self, job: str, plan: JobPlan) -> None:
        limits = {f.name: getattr(self.limits, f.name) for f in dataclasses.fields(self.limits)}
        running = _Running(job, plan, time.time())
        with self._lock:
            self._running = running
        try:
            self._ensure_child()
            self._tasks.put((job, plan.to_json(), limits))
        except Exception as e:
            log.exception("starting the preparation process failed")
            self._kill_child()
            self._finish(running, "failed", f"the preparation process could not start: {e}")

    def _ensure_child(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        self._kill_child()
        self._tasks = self._ctx.Queue()
        self._results = self._ctx.Queue()
        self._proc = self._ctx.Process(
            target=_child_main,
            args=(self._tasks, self._results),
            name="foldnet-prepare",
            daemon=True,
        )
        self._proc.start()

    def _kill_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            if proc.is_alive():
                self._tasks.put(None)
                proc.join(0.5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for q in (self._tasks, self._results):
            with contextlib.suppress(Exception):
                q.close()
                q.cancel_join_thread()

    def _check_child(self) -> None:
        """A child that died mid-preparation (killed, out of memory) fails its job."""
        with self._lock:
            running = self._running
        if running is None or self._proc is None or self._proc.is_alive():
            return
        code = self._proc.exitcode
        self._kill_child()
        self._finish(
            running,
            "failed",
            f"the preparation process stopped unexpectedly (exit code {code}) while "
            f"{running.stages[-1] if running.stages else 'starting'}: the system may be too "
            "large for this machine's memory",
        )

    def _handle(self, msg: tuple[str, str, Any]) -> None:
        kind, job, value = msg
        with self._lock:
            running = self._running
        if running is None or running.job != job:
            return
        if kind == "started":
            running.pid = int(value)
        elif kind == "stage":
            with self._lock:
                running.stages.append(str(value))
        elif kind == "done":
            encoded, starts = value
            try:
                prepared = self._decode(running.plan, encoded, starts)
            except Exception as e:
                log.exception("decoding the preparation of job %s failed", job)
                self._finish(running, "failed", f"the prepared system could not be read: {e}")
                return
            self._finish(running, "prepared", prepared)
        elif kind == "failed":
            self._finish(running, "failed", str(value))

    @staticmethod
    def _decode(plan: JobPlan, encoded: bytes, starts: list[Any]) -> PreparedJob:
        from worker.systems import decode_system, system_digest

        system = decode_system(encoded)
        states = [State(positions=p, velocities=v, step=int(st)) for p, v, st in starts]
        return PreparedJob(system, states, plan.spec(system_digest(system)))

    def _finish(self, running: _Running, state: str, outcome: PreparedJob | str) -> None:
        record = Preparation(
            state,
            running.stages[-1] if running.stages else "",
            tuple(running.stages),
            running.pid,
            running.started_at,
            round(time.time() - running.started_at, 3),
        )
        with self._lock:
            self._running = None
            self._finished[running.job] = record
            while len(self._finished) > KEEP_FINISHED:
                self._finished.popitem(last=False)
        try:
            if isinstance(outcome, str):
                self._on_failed(running.job, outcome)
            else:
                self._on_prepared(running.job, outcome)
        except Exception:
            log.exception("handing over the preparation of job %s failed", running.job)
