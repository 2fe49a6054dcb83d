"""The coordinator's side of the HTTP service: what runs beside the :class:`Coordinator`,
in its process, whatever serves the HTTP (docs/architecture.md §9.2).

The core owns the coordinator's thread (:mod:`coordinator.http.loop`), the preparer, the
accounts it writes (jobs of labs, registered volunteers) and everything the service
remembers about its jobs, the work it handed out and its volunteers. Handlers reach it only
through commands (:mod:`coordinator.http.link`), each run on that thread in a group commit:
the same code whether the HTTP front-end is the same process (``foldnet serve``) or N
others (``--workers N``).

With front-ends in other processes, a request's nonce and its key's, lab's or address's
rate are checked here (:class:`Gate`), once for all of them: a replay sent to another
front-end is refused, and a volunteer that opens connections to every front-end still gets
the documented rate, not N times it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.accounts import Accounts
from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.errors import CoordinatorError
from coordinator.folder import owned
from coordinator.http.auth import NonceBook, RateLimiter
from coordinator.http.config import ServiceConfig
from coordinator.http.ledger_index import LedgerIndex
from coordinator.http.link import Admission, Call, Hub, run_command
from coordinator.http.loop import CoordinatorThread
from coordinator.http.wire import FORGET_AFTER_S, PRUNE_EVERY_S, Assignment
from coordinator.prepare import PreparedJob
from coordinator.preparer import Preparer
from coordinator.service import Coordinator
from foldnet.errors import Unavailable
from ledger.log import Log
from ledger.signatures import VerifiedSignatures

log = logging.getLogger("foldnet.http")

#: Samples of the network's live numbers kept for the dashboard's chart (one per SAMPLE_S).
SAMPLES = 180
SAMPLE_S = 2.0


@dataclass(frozen=True, slots=True)
class JobInfo:
    lab: str
    name: str
    submitted_at: float
    description: str = ""  # the plan in words, with its time units


class Gate:
    """Admission of front-ends' calls: nonces and rates, for all front-ends at once."""

    def __init__(self, config: ServiceConfig, *, clock: Clock, registered: set[bytes]) -> None:
        pace = clock.monotonic
        self.clock = clock
        self.registered = registered
        self.nonces = NonceBook(window_s=config.signature_window_s)
        self.lab = RateLimiter(config.lab_rate, config.lab_burst, clock=pace)
        self.volunteer = RateLimiter(config.volunteer_rate, config.volunteer_burst, clock=pace)
        self.register = RateLimiter(config.register_rate, config.register_burst, clock=pace)
        self.register_all = RateLimiter(
            config.register_global_rate, config.register_global_burst, clock=pace
        )

    def admit(self, a: Admission) -> None:
        """Raise ``replayed`` or ``rate_limited`` (nothing spent then but what was checked)."""
        if a.register_from:
            self.register.check(("register", a.register_from))
            if a.volunteer not in self.registered:  # only new keys spend the global budget
                self.register_all.check("register")
        if a.volunteer:
            self.nonces.spend(a.volunteer, a.nonce, self.clock.now())
            self.volunteer.check(a.volunteer)
        if a.lab:
            self.lab.check(("lab", a.lab))


@dataclass
class Samples:
    """The network's live numbers every SAMPLE_S (taken when someone asks), for the chart."""

    rows: list[dict[str, float]] = field(default_factory=list)

    def add(self, row: dict[str, float]) -> None:
        if self.rows and row["t"] - self.rows[-1]["t"] < SAMPLE_S:
            return
        self.rows.append(row)
        del self.rows[:-SAMPLES]


class Core:
    """The coordinator, its thread, its preparer, and what the service remembers."""

    def __init__(
        self, workdir: str | Path, config: ServiceConfig, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.workdir = Path(workdir)
        self.config = config
        self.clock = clock
        #: Admission of calls from front-ends in other processes (None: same process).
        self.gate: Gate | None = None
        self.jobs: dict[str, JobInfo] = {}
        self.assignments: dict[int, Assignment] = {}
        self.checks: dict[int, tuple[bytes, bytes, float]] = {}  # (volunteer, wu, deadline)
        self.systems: dict[str, bytes] = {}  # encoded systems handed out, by digest hex
        self.ledger = LedgerIndex()
        self.last_checkpoint = float("-inf")  # monotonic time of one signed for proofs
        self.classes: dict[bytes, tuple[str, str]] = {}  # key -> (det class, engine) declared
        self.outcomes = {"validated": 0, "invalidated": 0, "failed": 0, "completed": 0}
        self.registered: set[bytes] = set()
        self.samples = Samples()
        #: Request metrics of each front-end process (its latest report), by worker number.
        self.front_metrics: dict[int, dict[str, Any]] = {}
        self.accounts: Accounts | None = None
        self.thread: CoordinatorThread | None = None
        self.hub: Hub | None = None
        #: Prepares accepted jobs in a child process (never in this interpreter).
        self.preparer: Preparer | None = None
        self.log: Log | None = None
        #: The signatures the coordinator's process verified (its ledger does not verify
        #: them again): the HTTP handlers of this process verify uploads into it.
        self.signatures: VerifiedSignatures | None = None
        self._pruned = 0.0
        self._on_commit: list[Callable[[], object]] = []
        self._stack = contextlib.ExitStack()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, hub: Hub | None = None) -> None:
        """Open the coordinator (and serve ``hub``'s front-ends, when given)."""
        self._stack.enter_context(owned(self.workdir))
        try:
            self.accounts = Accounts.in_folder(self.workdir)
            self._stack.callback(self.accounts.close)
            self.registered = self.accounts.volunteer_keys()
            cfg = self.config
            if hub is not None:
                self.gate = Gate(cfg, clock=self.clock, registered=self.registered)
                hub.handler = self._handle
                self.hub = hub
            self.thread = CoordinatorThread(
                lambda: Coordinator.local(
                    self.workdir,
                    checkpoint_every=cfg.checkpoint_every,
                    beacon_interval_s=cfg.beacon_interval_s,
                    policy=cfg.policy,
                    clock=self.clock.now,
                ),
                tick_s=cfg.tick_s,
                after_batch=self._after_batch,
                clock=self.clock,
                hub=hub,
                settled=self._settled,
            )
            self.thread.start()
            self._stack.callback(self.thread.stop)
            if cfg.trusted_keys:
                keys = cfg.trusted_keys

                def trust(c: Coordinator) -> None:
                    for k in keys:
                        c.trust(k)

                self.thread.call_sync(trust)
            known = {j.job: j for j in self.accounts.jobs()}
            now = self.clock.now()

            def index(c: Coordinator) -> list[tuple[str, str, str]]:
                out = []
                for job in [*c.scheduler.pending, *c.scheduler.jobs]:
                    info = c.store.job(job) or {}
                    out.append((job, str(info.get("lab", "")), str(info.get("description", ""))))
                return out

            self.log = self.thread.call_sync(lambda c: c.log)
            self.signatures = self.thread.call_sync(lambda c: c.signatures)
            for job, lab, description in self.thread.call_sync(index):
                info = known.get(job)
                self.jobs[job] = JobInfo(
                    lab,
                    info.name if info else "",
                    info.submitted_at if info else now,
                    description,
                )
            self.preparer = Preparer(
                on_prepared=self._prepared,
                on_failed=self._preparation_failed,
                limits=cfg.limits,
            )
            self.preparer.start()
            self._stack.callback(self.preparer.stop)  # before the coordinator's thread stops
            # jobs still preparing when the service stopped are prepared again
            for job, plan in self.thread.call_sync(lambda c: c.pending_preparations()):
                self.preparer.submit(job, plan)
        except BaseException:
            self._stack.close()
            raise

    def stop(self) -> None:
        self._stack.close()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.alive

    def coordinator(self) -> CoordinatorThread:
        if self.thread is None or not self.thread.alive:
            raise Unavailable("the coordinator is not running; retry later", code="unavailable")
        return self.thread

    def _handle(self, call: Call) -> Callable[[Coordinator], Any]:
        """A front-end's call as a command of this core: admitted first, then run."""
        run = run_command(self, call.name, call.args)
        admit = call.admit
        if admit is None:
            return run
        gate = self.gate
        assert gate is not None, "a gate is set up whenever front-ends run in other processes"

        def admitted(c: Coordinator) -> Any:
            gate.admit(admit)
            return run(c)

        return admitted

    # -- preparations ----------------------------------------------------------------------

    def _prepared(self, job: str, prepared: PreparedJob) -> None:
        """A preparation finished (on the preparer's thread): stored on the coordinator's
        thread; a result it refuses fails the job with the reason."""

        def store(c: Coordinator) -> None:
            try:
                c.prepared(job, prepared)
            except CoordinatorError as e:
                c.preparation_failed(job, str(e))

        self._to_coordinator(store)

    def _preparation_failed(self, job: str, reason: str) -> None:
        self._to_coordinator(lambda c: c.preparation_failed(job, reason))

    def _to_coordinator(self, fn: Callable[[Coordinator], Any]) -> None:
        thread = self.thread
        if thread is None or not thread.alive:  # stopping: prepared again at the next start
            return
        with contextlib.suppress(CoordinatorError):
            thread.submit(fn)

    def when_committed(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the batch running now commits (never if it rolls back), before
        its answers leave: what the service remembers follows the committed state."""
        self._on_commit.append(action)

    def _settled(self, committed: bool) -> None:
        actions, self._on_commit = self._on_commit, []
        for action in actions if committed else ():
            try:
                action()
            except Exception:
                log.exception("remembering what a commit did failed")

    def _after_batch(self, c: Coordinator) -> None:
        out = c.drain()  # keeps the coordinator's instruction buffer from growing
        self.outcomes["validated"] += len(out.validated)
        self.outcomes["invalidated"] += len(out.invalidated)
        self.outcomes["failed"] += len(out.failed)
        self.outcomes["completed"] += len(out.completed)
        now = c.clock()
        if now - self._pruned > PRUNE_EVERY_S:  # work long past its deadline was reissued
            self._pruned = now
            horizon = now - FORGET_AFTER_S
            for rid in [r for r, a in list(self.assignments.items()) if a.deadline < horizon]:
                self.assignments.pop(rid, None)
            for cid in [k for k, v in list(self.checks.items()) if v[2] < horizon]:
                self.checks.pop(cid, None)
