"""``foldnet worker run URL``: a volunteer on the open internet, over HTTP.

The loop: register the key, open a session (:mod:`worker.session`: every later request is
MAC'd instead of signed; reopened before it ends, or when the server says it ended, e.g.
after a restart; a coordinator without sessions gets signed requests), learn the
determinism class of each engine on each kind of slot, pull as many tasks as there are free
slots, hand each to a slot (:mod:`worker.pool`: one process per slot, or one slot in this
process), upload each signed result as its slot finishes (pulling the next task in the same
round trip, ``?next=N``), repeat; back off (with jitter) when there is no work or the server
is busy. One key, one HTTP session, one registration: the slots are this volunteer's hands,
not volunteers of their own.

Resume: every task given to a slot is written under ``$FOLDNET_HOME/work`` with the class
it was pulled in and the coordinator it came from (whose origin's digest also names its
files: two coordinators' replica numbers never share a file, and a task is resumed only at
the coordinator that gave it), and the slot saves the run so far after each finished segment
(:mod:`worker.progress`; resumed only for the very task it was saved for). A worker killed
mid-WU continues each WU from its last segment on restart, whatever number of slots it then
has, and the result is bit-identical to an uninterrupted run (each segment depends only on
its starting boundary state and its seed).

Stopping: the first Ctrl-C (SIGINT or SIGTERM) lets every slot finish its WU, uploads them
and stops, pulling nothing new; a second one stops at once (the saved progress is resumed
next time).

Status: ``$FOLDNET_HOME/worker-status.json`` (:mod:`worker.status`) says what each slot is
doing, for ``foldnet worker status``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from foldnet.errors import ClientError, FoldnetError, NotFound, Unauthenticated
from foldnet.files import atomic_write, remove_written
from foldnet.httpclient import HttpClient, InvalidAnswerError, RetryPolicy, answer_json
from ledger.credit import credit_v1
from worker.errors import WireError
from worker.identity import default_key_path
from worker.pool import CPU, InlinePool, ProcessPool, SlotPlan, SlotSpec
from worker.ray_actor import VolunteerWorker
from worker.session import Opening, Session, mac_headers
from worker.slot import (
    Died,
    Event,
    Failed,
    Finished,
    Job,
    Note,
    Ready,
    SegmentDone,
    Started,
)
from worker.status import SlotStatus, WorkerStatus, home_lock, process_start, write_status
from worker.systems import decode_system, system_digest
from worker.wire import (
    get_float,
    get_hex,
    get_int,
    get_list,
    get_object,
    get_str,
    origin_of,
    sign_headers,
    task_header,
)

Report = Callable[[str], None]
OnStatus = Callable[[WorkerStatus], None]

#: Seconds between credit look-ups (``/v1/volunteers/me``) while running.
CREDIT_EVERY_S = 30.0
#: Seconds between status-file writes for segment progress (state changes write at once).
STATUS_EVERY_S = 1.0
#: Times a WU may take its slot's process down before it is given back.
MAX_CRASHES = 2
#: Tasks asked for in one pull: the service's default limit (``ServiceConfig.max_slots``).
MAX_PULL = 8
#: A session is reopened once less than this is left of it (a request in flight then still
#: arrives in time), or less than a tenth of its whole length if that is shorter.
SESSION_MARGIN_S = 120.0
#: The answers that say the session is over: open a new one and send the request again.
SESSION_OVER = frozenset({"bad_session", "session_expired"})
#: The longest answer read from a coordinator (a system, a pull of tasks with their states):
#: far more than any needs (a service uploads results of at most 64 MiB by default), far
#: less than a volunteer's memory. A server that sends more is outside the protocol.
MAX_ANSWER_BYTES = 256 << 20
#: Systems kept in ``$FOLDNET_HOME/systems`` (the least recently used go first, never one a
#: task held needs): a coordinator may name a system of its own in every task.
MAX_CACHED_SYSTEMS = 8
MAX_CACHED_SYSTEM_BYTES = 1 << 30
#: The longest one request may take as a whole, plus a second per 64 KiB uploaded: a server
#: that trickles its answer is given up on (an idempotent request is tried again).
REQUEST_DEADLINE_S = 600.0


def default_home() -> Path:
    return Path(os.environ.get("FOLDNET_HOME") or Path.home() / ".foldnet")


class StopFlag:
    """Set by the first Ctrl-C: finish the WUs in flight, then stop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


def install_signal_handlers(stop: StopFlag, report: Report, *, slots: int = 1) -> None:
    """First SIGINT/SIGTERM: stop after the WUs in flight. Second: stop now
    (KeyboardInterrupt)."""
    what = "the current work unit" + ("s" if slots > 1 else "")

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.set()
        report(f"stopping after {what} (Ctrl-C again to stop now)")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@dataclass(frozen=True, slots=True)
class ClientStats:
    computed: int
    uploaded: int
    accepted: int
    spot_checks: int
    credit: int | None


@dataclass(frozen=True, slots=True)
class Lane:
    """Work of one engine for one kind of slot, pulled in one determinism class."""

    kind: str  # "cpu" or "gpu"
    engine: str
    det_class: str


@dataclass(slots=True, kw_only=True)
class _Task:
    """A pulled task as the volunteer's process sees it (the slot decodes it fully)."""

    doc: dict[str, Any]
    kind: str  # "compute" or "spot_check"
    ident: int  # the replica, or the check
    wu: str
    engine: str
    system: str
    steps: int
    segments: int
    det_class: str
    crashes: int = 0

    @classmethod
    def of(cls, doc: object, det_class: str) -> _Task:
        kind, system = task_header(doc)
        assert isinstance(doc, dict)
        spec = get_object(doc, "spec")
        steps = get_int(spec, "steps", 1, 10**9)
        compute = kind == "compute"
        return cls(
            doc=doc,
            kind=kind,
            ident=get_int(doc, "replica" if compute else "check", 1, 2**62),
            wu=get_hex(doc, "wu_id", 32).hex(),
            engine=get_str(doc, "engine", 64),
            system=system,
            steps=steps,
            segments=(
                steps // get_int(spec, "segment_steps", 1, 10**9)
                if compute
                else len(get_list(doc, "segments", 10**4))
            ),
            det_class=det_class,
        )

    @property
    def label(self) -> str:
        return f"replica {self.ident}" if self.kind == "compute" else f"spot check {self.ident}"

    def estimate(self) -> int | None:
        """The WU's credit before any bonus, from the price the server sent with it."""
        try:
            price = get_object(self.doc, "price")
            return credit_v1(
                engine=self.engine,
                n_particles=get_int(price, "n_particles", 0, 2**32 - 1),
                steps=self.steps,
                deadline_s=0,
                issued_at_ms=0,
                validated_at_ms=0,
            )
        except FoldnetError:
            return None


@dataclass(slots=True)
class _Slot:
    spec: SlotSpec
    state: str = "starting"
    pid: int = 0
    task: _Task | None = None
    done: int = 0
    note: str = ""
    lanes: dict[str, Lane] = field(default_factory=dict)  # engine -> lane

    @property
    def free(self) -> bool:
        return self.state == "idle"


def _server_time(r: httpx.Response) -> float:
    """The server's clock when it answered ``r`` (its ``Date``, to the second), else ours."""
    try:
        return parsedate_to_datetime(r.headers["date"]).timestamp()
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):  # none, or no date
        return time.time()


def _answer_object(r: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object the server answered ``what`` with (an :class:`InvalidAnswerError` for
    anything else: the server is outside the protocol)."""
    doc = answer_json(r, what)
    if not isinstance(doc, dict):
        raise InvalidAnswerError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _tasks_in(doc: dict[str, Any], what: str) -> list[Any]:
    """The ``tasks`` of an answer (none if it names none)."""
    tasks = doc.get("tasks")
    if tasks is None:
        return []
    if not isinstance(tasks, list):
        raise InvalidAnswerError(f"{what}: expected a list of tasks, got {type(tasks).__name__}")
    return tasks


class HttpVolunteer:
    """One volunteer talking to one coordinator over HTTP, computing in one or more slots.

    ``slots=None`` computes in this process, one WU at a time (tests, embedding);
    ``SlotPlan(cpus=N, accelerator=...)`` runs one process per slot (the command line).
    """

    def __init__(
        self,
        server: str,
        *,
        home: Path | None = None,
        key_path: Path | None = None,
        engines: tuple[str, ...] = ("go",),
        slots: SlotPlan | None = None,
        name: str = "",
        report: Report | None = None,
        on_status: OnStatus | None = None,
        max_backoff_s: float = 60.0,
        timeout_s: float = 120.0,
        deadline_s: float = REQUEST_DEADLINE_S,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server.rstrip("/")
        self.home = home or default_home()
        self.work_dir = self.home / "work"
        self.systems_dir = self.home / "systems"
        self.key_path = key_path or default_key_path()
        self.worker = VolunteerWorker(key_path=str(self.key_path))
        self.identity = self.worker.identity
        self.engines = engines
        self.plan = slots
        self.specs: tuple[SlotSpec, ...] = (
            slots.specs(engines)
            if slots is not None
            else (SlotSpec(index=0, platform=CPU, engines=engines),)
        )
        self.name = name
        self.report: Report = report or (lambda _m: None)
        self.on_status = on_status
        self.max_backoff_s = max_backoff_s
        self.http = HttpClient(
            self.server,
            timeout_s=timeout_s,
            retry=RetryPolicy(attempts=8, backoff_s=0.5, max_backoff_s=max_backoff_s),
            transport=transport,
            sleep=sleep,
            report=self.report,
            max_answer_bytes=max_answer_bytes,
            deadline_s=deadline_s,
        )
        self.origin = origin_of(self.server)  # (once the URL is known to be one)
        #: What names this coordinator's saved tasks (see :meth:`_task_path`).
        self._origin_tag = hashlib.sha256(self.origin.encode()).hexdigest()[:16]
        self._verified: set[str] = set()  # system digests checked this run
        self._slots = [_Slot(s) for s in self.specs]
        self._pending: list[_Task] = []
        self._lanes: list[Lane] = []  # in the volunteer's order of engines
        self._max_tasks: int | None = None
        self._last_lane: Lane | None = None  # the class ?next=N pulls in (the server's view)
        self._refused: dict[tuple[str, str], str] = {}  # (kind, engine) -> why
        self._started = 0
        self._idle_s = 1.0
        self._next_pull = 0.0
        self._stop: StopFlag | None = None
        self._status_at = 0.0
        self._credit_at = 0.0
        self._credit_wall: float | None = None
        self._began = time.time()
        self._process_start = process_start(os.getpid())
        self._said_stopping = False
        self.computed = self.uploaded = self.accepted = self.spot_checks = 0
        self.credit: int | None = None
        self.validated: int | None = None
        #: The open session (requests are MAC'd in it); None: sign each request.
        self.session: Session | None = None
        #: False once the server said it has no sessions (an older coordinator: a 404).
        self.sessions = True
        #: When to open the next session (``time.monotonic``): before the server's end of
        #: this one, counted on the server's clock (its ``Date``), not this machine's.
        self.reopen_at = 0.0

    def close(self) -> None:
        self.http.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        return sign_headers(self.identity, method, path, body, origin=self.server)

    def _auth(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """A MAC in the open session, or a signature (called on every try: a fresh nonce)."""
        if self.session is not None:
            return mac_headers(self.session, method, path, body)
        return self._sign(method, path, body)

    def _authenticated(self, send: Callable[[], Any]) -> Any:
        """``send()`` in a session that has time left (opened first if need be); when the
        server says the session is over (it restarted, or the ticket expired), open a new
        one and send the same request once more."""
        if self.sessions and (self.session is None or time.monotonic() >= self.reopen_at):
            self.open_session()
        try:
            return send()
        except Unauthenticated as e:
            if self.session is None or e.code not in SESSION_OVER:
                raise
            self.report(f"the session ended ({e.code}); opening a new one")
            self.open_session()
            return send()

    def open_session(self) -> None:
        """Open a session (``POST /v1/sessions``, signed); a server without sessions (404:
        an older coordinator) is sent signed requests from then on."""
        self.session = None
        opening = Opening.new(self.identity.public_key, origin=self.server)
        body = json.dumps(opening.request).encode()
        try:
            r = self.http.request(
                "POST",
                "/v1/sessions",
                content=body,
                headers={"content-type": "application/json"},
                sign=self._sign,
            )
        except NotFound:
            self.sessions = False
            self.report("this coordinator has no sessions; every request is signed")
            return
        self.session = opening.session(_answer_object(r, "POST /v1/sessions"))
        ttl = self.session.expires - _server_time(r)
        self.reopen_at = time.monotonic() + ttl - min(SESSION_MARGIN_S, ttl / 10)

    def _request(
        self, method: str, path: str, body: bytes = b"", *, content_type: str = ""
    ) -> httpx.Response:
        """An authenticated request (a fresh nonce and MAC or signature on every retry, the
        same body); an error answer raises."""
        headers = {"content-type": content_type} if content_type else None
        return self._authenticated(
            lambda: self.http.request(method, path, content=body, headers=headers, sign=self._auth)
        )

    def _json(self, method: str, path: str, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        """An authenticated JSON request; the JSON object answered."""
        body = b"" if doc is None else json.dumps(doc).encode()
        r = self._request(
            method, path, body, content_type="application/json" if doc is not None else ""
        )
        return _answer_object(r, f"{method} {path}")

    def register(self) -> None:
        """Register the key (always signed: it proves possession of the key)."""
        self.http.json(
            "POST",
            "/v1/volunteers",
            {"public_key": self.identity.public_key.hex(), "name": self.name},
            sign=self._sign,
        )

    def me(self) -> dict[str, Any]:
        return self._json("GET", "/v1/volunteers/me")

    def _refresh_credit(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._credit_at < CREDIT_EVERY_S:
            return
        self._credit_at = now
        with contextlib.suppress(FoldnetError, KeyError, ValueError, TypeError, OverflowError):
            me = self.me()
            self.credit = int(me["credit"])
            self.validated = int(me["results_validated"])
            self._credit_wall = time.time()

    # -- systems ---------------------------------------------------------------------------

    def _system_path(self, digest: str) -> Path:
        """The system's file in the cache, checked against its digest once per run (a slot
        reads it from there)."""
        cached = self.systems_dir / f"{digest}.npz"
        if digest in self._verified:
            with contextlib.suppress(OSError):
                os.utime(cached)  # (used: the last to go)
            return cached
        fresh = not cached.is_file()
        data = (
            self._request("GET", f"/v1/systems/{digest}").content if fresh else cached.read_bytes()
        )
        if system_digest(decode_system(data)).hex() != digest:
            raise WireError(f"system {digest[:16]} does not match its digest")
        if fresh:
            atomic_write(cached, data)
            self._prune_systems(keep=digest)
        else:
            with contextlib.suppress(OSError):
                os.utime(cached)
        self._verified.add(digest)
        return cached

    def _prune_systems(self, *, keep: str) -> None:
        """Remove the least recently used systems beyond :data:`MAX_CACHED_SYSTEMS` files or
        :data:`MAX_CACHED_SYSTEM_BYTES` (a task held still finds its own)."""
        held = {keep} | {t.system for t in self._pending}
        held |= {s.task.system for s in self._slots if s.task is not None}
        files = []
        for p in self.systems_dir.glob("*.npz"):
            with contextlib.suppress(OSError):
                st = p.stat()
                files.append((st.st_mtime, st.st_size, p))
        files.sort(key=lambda f: (f[0], f[2].name), reverse=True)  # newest first
        count = size = 0
        for _mtime, nbytes, p in files:
            count, size = count + 1, size + nbytes
            name = p.name.removesuffix(".npz")
            if name not in held and (count > MAX_CACHED_SYSTEMS or size > MAX_CACHED_SYSTEM_BYTES):
                p.unlink(missing_ok=True)
                self._verified.discard(name)
                count, size = count - 1, size - nbytes

    # -- saved work ------------------------------------------------------------------------

    def _task_path(self, replica: int) -> Path:
        """Where a replica of this coordinator is saved: named by the coordinator too, since
        another's replica of the same number is another WU."""
        return self.work_dir / f"{self._origin_tag}-{replica}.task.json"

    def _progress_path(self, replica: int) -> Path:
        return self.work_dir / f"{self._origin_tag}-{replica}.progress.npz"

    def _forget(self, task: _Task) -> None:
        if task.kind == "compute":
            # (with what a slot's process killed mid-write left: the WU is over, nobody
            # writes these any more)
            remove_written(self._task_path(task.ident))
            remove_written(self._progress_path(task.ident))

    def saved_tasks(self) -> list[dict[str, Any]]:
        """Tasks of this key from this coordinator that a previous run began and did not
        upload (those of other coordinators wait for a run at theirs)."""
        if not self.work_dir.is_dir():
            return []
        self._adopt_unnamed()
        out = []
        for p in sorted(self.work_dir.glob(f"{self._origin_tag}-*.task.json")):
            try:
                doc = json.loads(p.read_text())
                if (
                    isinstance(doc, dict)
                    and doc.get("volunteer") == self.identity.public_key.hex()
                    and doc.get("server", self.origin) == self.origin
                ):
                    out.append(doc)
            except (OSError, ValueError, RecursionError):
                p.unlink(missing_ok=True)
        return out

    def _adopt_unnamed(self) -> None:
        """Files saved before they were named by their coordinator (``7.task.json``): this
        one's, as they were taken to be then (the worker ran at one coordinator at a time)."""
        for p in self.work_dir.glob("*.task.json"):
            number = p.name.removesuffix(".task.json")
            if number.isascii() and number.isdigit():
                old = self.work_dir / f"{number}.progress.npz"
                if old.is_file():
                    old.replace(self._progress_path(int(number)))
                p.replace(self._task_path(int(number)))

    # -- slots and lanes -------------------------------------------------------------------

    def _say(self, slot: _Slot | None, message: str) -> None:
        prefix = f"{slot.spec.name}: " if slot is not None and len(self._slots) > 1 else ""
        self.report(prefix + message)

    def _describe(self, pool: InlinePool | ProcessPool) -> None:
        """The class of each engine on each kind of slot, asked of one slot of that kind."""
        by_kind: dict[str, dict[str, Lane]] = {}
        for slot in self._slots:
            kind = slot.spec.kind
            if kind not in by_kind:
                classes = pool.describe(slot.spec.index, slot.spec.engines)
                by_kind[kind] = {e: Lane(kind, e, c) for e, c in classes.items()}
            slot.lanes = by_kind[kind]
            slot.state = "idle"
            slot.pid = pool.pid(slot.spec.index)
        self._lanes = [lanes[e] for e in self.engines for lanes in by_kind.values() if e in lanes]

    def _lane_kind(self, det_class: str) -> str | None:
        return next((la.kind for la in self._lanes if la.det_class == det_class), None)

    def _takes(self, slot: _Slot, task: _Task) -> bool:
        lane = slot.lanes.get(task.engine)
        return slot.free and lane is not None and lane.det_class == task.det_class

    def _room(self, kind: str) -> int:
        """Free slots of ``kind`` that no pending task is waiting for."""
        free = sum(1 for s in self._slots if s.spec.kind == kind and s.free)
        waiting = sum(1 for t in self._pending if self._lane_kind(t.det_class) == kind)
        return max(0, free - waiting)

    def _wanted(self, kind: str, max_tasks: int | None) -> int:
        if self._stop is not None and self._stop.requested:
            return 0
        room = self._room(kind)
        if max_tasks is not None:
            room = min(room, max_tasks - self._started - len(self._pending))
        return max(0, room)

    # -- status ----------------------------------------------------------------------------

    def status(self, *, running: bool = True) -> WorkerStatus:
        slots = []
        for s in self._slots:
            t = s.task
            state = s.state if running else "stopped"
            slots.append(
                SlotStatus(
                    name=s.spec.name,
                    platform=s.spec.platform,
                    state=state,
                    pid=s.pid,
                    engine=t.engine if t else "",
                    wu=t.wu if t else "",
                    task=t.label if t else "",
                    segments_done=s.done if t else 0,
                    segments=t.segments if t else 0,
                    note=s.note,
                )
            )
        return WorkerStatus(
            pid=os.getpid(),
            process_start=self._process_start,
            server=self.server,
            volunteer=self.identity.fingerprint,
            home=str(self.home),
            started_at=self._began,
            updated_at=time.time(),
            running=running,
            stopping=bool(self._stop and self._stop.requested),
            slots=tuple(slots),
            computed=self.computed,
            returned=self.uploaded,
            accepted=self.accepted,
            spot_checks=self.spot_checks,
            validated=self.validated,
            credit=self.credit,
            credit_at=self._credit_wall,
        )

    def _changed(self, *, now: bool = True, running: bool = True) -> None:
        """Tell the display, and rewrite the status file (``now``, or at most once a
        second for progress within a WU)."""
        if not now and time.monotonic() - self._status_at < STATUS_EVERY_S:
            if self.on_status is not None:
                self.on_status(self.status())
            return
        self._status_at = time.monotonic()
        status = self.status(running=running)
        write_status(self.home, status)
        if self.on_status is not None:
            self.on_status(status)

    # -- handing out work ------------------------------------------------------------------

    def _dispatch(self, pool: InlinePool | ProcessPool) -> None:
        """Give pending tasks to free slots that compute in their class."""
        if self._stop is not None and self._stop.requested:
            return
        for task in list(self._pending):
            slot = next((s for s in self._slots if self._takes(s, task)), None)
            if slot is None:
                if self._lane_kind(task.det_class) is None:
                    self._pending.remove(task)
                    self._give_back(
                        None,
                        task,
                        "this worker no longer computes in the class it was pulled in (it was "
                        "restarted with other slots)",
                    )
                continue
            self._pending.remove(task)
            self._start(pool, slot, task)

    def _start(self, pool: InlinePool | ProcessPool, slot: _Slot, task: _Task) -> None:
        path = self._system_path(task.system)
        progress = ""
        if task.kind == "compute":
            saved = {
                **task.doc,
                "volunteer": self.identity.public_key.hex(),
                "det_class": task.det_class,
                "server": self.origin,
            }
            atomic_write(self._task_path(task.ident), json.dumps(saved).encode())
            progress = str(self._progress_path(task.ident))
        slot.task, slot.done, slot.note = task, 0, ""
        slot.state = "computing" if task.kind == "compute" else "checking"
        self._started += 1
        pool.submit(
            slot.spec.index,
            Job(
                doc=task.doc,
                system_path=str(path),
                det_class=task.det_class,
                progress_path=progress,
            ),
        )
        self._changed()

    def _take(self, docs: list[Any], det_class: str, engine: str | None = None) -> int:
        """Tasks the server sent (pulled in ``det_class`` for ``engine``'s work), queued for
        the slots: how many. An unreadable one is dropped, a second copy of one this worker
        holds too, and one of another engine is given back (held, it would wait for ever for
        a slot of its engine); none of them counts: a server that sends nothing else is a
        server with no work, asked again only after a pause."""
        queued = 0
        for doc in docs:
            try:
                task = _Task.of(doc, det_class)
            except WireError as e:
                self.report(f"a task from the server was unreadable and was dropped: {e}")
                continue
            if self._holds(task):
                self.report(f"the server sent {task.label} again while this worker holds it")
            elif engine is not None and task.engine != engine:
                self._give_back(
                    None, task, f"asked for {engine} work, got a task for {task.engine[:64]!r}"
                )
            else:
                self._pending.append(task)
                queued += 1
        return queued

    def _holds(self, task: _Task) -> bool:
        """Whether a task of ``task``'s kind and number is pending or in a slot (its saved
        files are that task's)."""
        held = self._pending + [s.task for s in self._slots if s.task is not None]
        return any(t.kind == task.kind and t.ident == task.ident for t in held)

    def _pull(self, max_tasks: int | None) -> int:
        """Ask for work for every kind of free slot, engine by engine; the tasks got."""
        got = 0
        for lane in self._lanes:
            if (lane.kind, lane.engine) in self._refused:
                continue
            want = self._wanted(lane.kind, max_tasks)
            if want <= 0:
                continue
            try:
                body = self._json(
                    "POST", "/v1/work", {"det_class": lane.det_class, "slots": min(want, MAX_PULL)}
                )
            except ClientError as e:
                if e.code != "unknown_class":
                    raise
                self._refuse(lane, e)
                continue
            self._last_lane = lane
            got += self._take(_tasks_in(body, "POST /v1/work"), lane.det_class, lane.engine)
            if "retry_after_s" in body:
                with contextlib.suppress(WireError):  # (a hint: one that is no number is none)
                    self._idle_s = max(self._idle_s, get_float(body, "retry_after_s"))
        return got

    def _refuse(self, lane: Lane, e: ClientError) -> None:
        """The server does not accept ``lane``'s class: its slots stay idle (and say why)
        while the others work; with no lane left, the refusal ends the run."""
        self._refused[(lane.kind, lane.engine)] = str(e)
        kind = "GPU" if lane.kind == "gpu" else "CPU"
        self.report(
            f"the coordinator refuses this machine's {kind} class for {lane.engine} WUs: "
            f"{e.detail}\n  the class, for its operator's classes.json: {lane.det_class}"
        )
        for slot in self._slots:
            if slot.spec.kind == lane.kind and all(
                (lane.kind, eng) in self._refused for eng in slot.lanes
            ):
                slot.state, slot.note = "refused", f"class not accepted for {', '.join(slot.lanes)}"
        live = [la for la in self._lanes if (la.kind, la.engine) not in self._refused]
        if not live:
            raise e
        self._changed()

    def _after_pull(self, got: int, asked: bool) -> None:
        """Back off (doubling, with jitter) after a round that brought nothing."""
        if not asked:
            return
        if got > 0:
            self._idle_s = 1.0
            self._next_pull = 0.0
            return
        wait = min(self.max_backoff_s, self._idle_s)
        wait *= 0.75 + 0.5 * random.random()
        self._next_pull = time.monotonic() + wait
        self._idle_s = min(self.max_backoff_s, self._idle_s * 2)
        free = sum(1 for s in self._slots if s.free)
        self.report(
            ("no work" if len(self._slots) == 1 else f"no work for {free} free slot(s)")
            + f"; next try in {wait:.0f} s"
        )

    # -- what the slots say ----------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        slot = self._slots[event.slot]
        if isinstance(event, Ready):
            slot.pid = event.pid
            if slot.state == "starting":
                slot.state = "idle"
                self._changed()
        elif isinstance(event, Started):
            self._on_started(slot, event)
        elif isinstance(event, SegmentDone):
            slot.done = event.done
            self._say(
                slot,
                f"  segment {event.done}/{event.total} done; about {event.seconds_left:.0f} s left",
            )
            self._changed(now=False)
        elif isinstance(event, Note):
            self._say(slot, event.message)
        elif isinstance(event, Finished):
            self._on_finished(slot, event)
        elif isinstance(event, Failed):
            task = self._free(slot)
            if task is not None:
                self._give_back(slot, task, event.reason)
        elif isinstance(event, Died):
            self._on_died(slot, event)

    def _free(self, slot: _Slot) -> _Task | None:
        task, slot.task, slot.done = slot.task, None, 0
        if slot.state != "refused":
            slot.state = "idle"
        return task

    def _on_started(self, slot: _Slot, event: Started) -> None:
        task = slot.task
        if task is None:
            return
        slot.done = event.resumed_after
        estimate = task.estimate()
        self._say(
            slot,
            f"WU {task.wu[:12]} ({task.label}): {task.steps:,} steps in {task.segments} segments"
            + (f", resuming after segment {event.resumed_after}" if event.resumed_after else "")
            + (f"; estimated credit {estimate:,}+" if estimate is not None else ""),
        )
        self._changed()

    def _on_finished(self, slot: _Slot, event: Finished) -> None:
        task = slot.task
        if task is None:
            return
        slot.state = "uploading"
        self._changed()
        self._free(slot)
        lane = self._last_lane
        more = 0
        if lane is not None and (lane.kind, lane.engine) not in self._refused:
            more = min(self._wanted(lane.kind, self._max_tasks), MAX_PULL)
        query = f"?next={more}" if more > 0 else ""
        if task.kind == "compute":
            self.computed += 1
        try:
            r = self._request(
                "POST", event.path + query, event.body, content_type=event.content_type
            )
        except ClientError as e:
            self._forget(task)
            what = f"result of {task.label}" if task.kind == "compute" else task.label
            self._say(slot, f"{what} refused: {e}")
            self._changed()
            return
        self._forget(task)
        body = _answer_object(r, f"POST {event.path}")
        if task.kind == "compute":
            self.uploaded += 1
            if body.get("accepted"):
                self.accepted += 1
            self._say(slot, f"uploaded replica {task.ident}: {body.get('state')}")
        else:
            self.spot_checks += 1
            self._say(slot, f"spot check {task.ident}: {r.status_code}")
        if more > 0 and lane is not None:
            tasks = _tasks_in(body, f"POST {event.path}")
            self._after_pull(self._take(tasks, lane.det_class, lane.engine), asked=True)
        else:
            # a slot is free and nothing was asked for it: ask at once (the result just
            # returned may have made the next generation's WU)
            self._next_pull = 0.0
        self._changed()

    def _give_back(self, slot: _Slot | None, task: _Task, reason: str) -> None:
        if task.kind == "compute":
            try:
                self._json("POST", f"/v1/results/{task.ident}/failure", {"reason": reason[:500]})
            except ClientError as e:
                self._say(slot, f"giving back {task.label} was refused: {e}")
            self._say(slot, f"WU {task.wu[:12]} failed here and was given back: {reason}")
        else:
            self._say(slot, f"spot check {task.ident} could not be computed here: {reason}")
        self._forget(task)
        self._changed()

    def _on_died(self, slot: _Slot, event: Died) -> None:
        task = self._free(slot)
        slot.state = "starting"
        self._say(slot, f"the slot's process died (exit code {event.exitcode}); starting another")
        if task is None:
            return
        task.crashes += 1
        if task.crashes >= MAX_CRASHES:
            self._give_back(
                slot, task, f"the slot's process died {task.crashes} times computing it"
            )
        else:
            self._pending.insert(0, task)  # resumed from its last saved segment
        self._changed()

    # -- the loop --------------------------------------------------------------------------

    def _cpu_class(self, doc: dict[str, Any]) -> str:
        """The class of a task saved before classes were saved with it: a CPU slot's, the
        only kind there was."""
        lane = next(
            (la for la in self._lanes if la.kind == "cpu" and la.engine == doc.get("engine")), None
        )
        return lane.det_class if lane else ""

    def _pool(self, stop: StopFlag) -> InlinePool | ProcessPool:
        if self.plan is None:
            return InlinePool(self.specs[0], identity=self.identity, idle=stop.wait)
        return ProcessPool(self.specs, key_path=str(self.key_path))

    def run(
        self,
        stop: StopFlag | None = None,
        *,
        max_tasks: int | None = None,
        exit_when_idle: bool = False,
    ) -> ClientStats:
        """Pull, compute, upload until stopped (or ``max_tasks`` done, or idle if asked)."""
        self._stop = stop = stop or StopFlag()
        self._max_tasks = max_tasks
        with home_lock(self.home):
            self.register()
            self._refresh_credit(force=True)
            self._changed()
            pool = self._pool(stop)
            clean = False
            try:
                pool.start()
                self._describe(pool)
                for doc in self.saved_tasks():  # interrupted WUs first, in their class
                    self._take([doc], str(doc.get("det_class") or self._cpu_class(doc)))
                self._changed()
                self._loop(pool, stop, max_tasks, exit_when_idle)
                clean = True
            finally:
                pool.close(now=not clean)
                if clean:  # not after a second Ctrl-C or a fault: that stops at once
                    self._refresh_credit(force=True)
                with contextlib.suppress(FoldnetError):
                    self._changed(running=False)
        return ClientStats(
            self.computed, self.uploaded, self.accepted, self.spot_checks, self.credit
        )

    def _loop(
        self,
        pool: InlinePool | ProcessPool,
        stop: StopFlag,
        max_tasks: int | None,
        exit_when_idle: bool,
    ) -> None:
        while True:
            self._dispatch(pool)
            busy = any(s.task is not None for s in self._slots)
            done = max_tasks is not None and self._started >= max_tasks and not self._pending
            if stop.requested and not self._said_stopping:
                self._said_stopping = True
                self._changed()
            if stop.requested or done:
                if not busy:
                    return
            elif time.monotonic() >= self._next_pull or (exit_when_idle and not busy):
                asked = any(self._wanted(la.kind, max_tasks) > 0 for la in self._lanes)
                got = self._pull(max_tasks) if asked else 0
                if asked and not got and exit_when_idle and not busy and not self._pending:
                    return
                self._after_pull(got, asked)
                self._dispatch(pool)
            self._refresh_credit()
            busy = any(s.task is not None for s in self._slots)
            # a free slot waits for the next pull, a busy one for its slot's next event; never
            # less than a moment (a slot being restarted asks for nothing until it is ready)
            wait = 0.5 if busy else min(0.5, max(0.05, self._next_pull - time.monotonic()))
            pool.pump(wait, self._handle)
