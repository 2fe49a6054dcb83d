"""What the HTTP handlers share: the service's configuration, the coordinator's thread,
accounts, authentication and rate limits, and what the service remembers of its jobs,
assignments and volunteers."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request
from starlette.requests import ClientDisconnect

from coordinator.accounts import Accounts, key_hash
from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.errors import CoordinatorError
from coordinator.folder import owned
from coordinator.http.auth import (
    RateLimiter,
    SignedRequest,
    VolunteerAuth,
    bearer_token,
    client_block,
)
from coordinator.http.ledger_index import LedgerIndex
from coordinator.http.loop import CoordinatorThread
from coordinator.http.middleware import Metrics
from coordinator.http.wire import Assignment
from coordinator.plan import PlanLimits
from coordinator.policy import NetworkPolicy
from coordinator.prepare import PreparedJob
from coordinator.preparer import Preparer
from coordinator.service import Coordinator
from foldnet.errors import BadRequest, Forbidden, NotFound, TimedOut, TooLarge, Unavailable
from ledger.log import Log
from worker.tasks import ComputeTask, SpotCheckTask
from worker.wire import body_digest, encode_task, origin_of

#: How long a running service trusts a lab key it checked (``foldnet lab revoke`` takes
#: hold within this time).
LAB_KEY_CACHE_S = 30.0

API_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Limits of one service; the defaults suit a public deployment on a small machine."""

    max_json_bytes: int = 1 << 20
    max_job_bytes: int = 16 << 20  # a PDB upload
    max_result_bytes: int = 64 << 20  # the ceiling; each upload is held to its WU's size
    body_timeout_s: float = 30.0  # a body must arrive within this
    min_upload_rate: float = 64 << 10  # ... plus its limit at this many bytes per second
    max_requests_per_address: int = 64  # in flight at once from one IPv4 address or IPv6 /64
    max_job_steps: int = 5 * 10**8  # steps of one job in all (runs x clones x gens x steps)
    max_job_wus: int = 100_000  # WUs of one job (runs x clones x gens)
    min_steps_per_wu: int = 100  # a WU costs the service the same whatever its steps
    max_residues: int = 2_000  # amino acids of one system
    max_atoms: int = 50_000  # atoms of one system as uploaded, and particles once prepared
    max_queued_wus_per_lab: int = 200_000  # WUs of a lab's jobs not yet done, in all
    max_slots: int = 8  # WUs in one pull
    page_max: int = 100
    lab_rate: float = 20.0
    lab_burst: float = 60.0
    volunteer_rate: float = 50.0
    volunteer_burst: float = 200.0
    register_rate: float = 5.0  # per client address (an IPv6 /64 counts as one)
    register_burst: float = 50.0
    register_global_rate: float = 10.0  # all addresses together
    register_global_burst: float = 500.0
    signature_window_s: float = 300.0
    idle_retry_s: float = 5.0  # what a volunteer is told to wait when there is no work
    tick_s: float = 0.2
    beacon_interval_s: float = 0.5
    checkpoint_every: int = 1000
    #: Volunteer keys of the operator's own machines, established from the start (trust
    #: has to start somewhere: fresh keys never validate a WU among themselves).
    trusted_keys: tuple[bytes, ...] = ()
    #: The network's verification floor, probation and draw settings.
    policy: NetworkPolicy = field(default_factory=NetworkPolicy)
    #: This service's public origin (``scheme://host:port``, as volunteers reach it); every
    #: signed request must name it. ``None`` takes it from each request's Host header, which
    #: does not stop a replay from one coordinator to another: set it in a deployment
    #: (``foldnet serve`` sets it to ``http://HOST:PORT`` unless ``--origin`` says otherwise).
    origin: str | None = None

    @property
    def limits(self) -> PlanLimits:
        """The limits on one job that a plan and its preparation are held to."""
        return PlanLimits(
            max_job_steps=self.max_job_steps,
            max_job_wus=self.max_job_wus,
            min_steps_per_wu=self.min_steps_per_wu,
            max_residues=self.max_residues,
            max_atoms=self.max_atoms,
        )


@dataclass(frozen=True, slots=True)
class JobInfo:
    lab: str
    name: str
    submitted_at: float
    description: str = ""  # the plan in words, with its time units


class Service:
    """Everything the handlers share: the coordinator thread, accounts, auth, limits."""

    def __init__(
        self, workdir: str | Path, config: ServiceConfig, *, clock: Clock = SYSTEM_CLOCK
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
        self.jobs: dict[str, JobInfo] = {}
        self.assignments: dict[int, Assignment] = {}
        self.checks: dict[int, tuple[bytes, bytes, float]] = {}  # (volunteer, wu, deadline)
        self._pruned = 0.0
        self.systems: dict[str, bytes] = {}  # encoded systems handed out, by digest hex
        self.ledger = LedgerIndex()
        self.last_checkpoint = float("-inf")  # monotonic time of one signed for proofs
        self.classes: dict[bytes, tuple[str, str]] = {}  # key -> (det class, engine) declared
        self.outcomes = {"validated": 0, "invalidated": 0, "failed": 0, "completed": 0}
        self.accounts: Accounts | None = None
        self.thread: CoordinatorThread | None = None
        #: Prepares accepted jobs in a child process (never in this interpreter).
        self.preparer: Preparer | None = None
        self._stack = contextlib.ExitStack()
        self.log: Log | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._stack.enter_context(owned(self.workdir))
        try:
            self.accounts = Accounts.in_folder(self.workdir)
            self._stack.callback(self.accounts.close)
            self.vauth.registered = self.accounts.volunteer_keys()
            cfg = self.config
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
            )
            self.thread.start()
            if cfg.trusted_keys:
                keys = cfg.trusted_keys

                def trust(c: Coordinator) -> None:
                    for k in keys:
                        c.trust(k)

                self.thread.call_sync(trust)
            self._stack.callback(self.thread.stop)
            known = {j.job: j for j in self.accounts.jobs()}
            now = self.clock.now()

            def index(c: Coordinator) -> list[tuple[str, str, str]]:
                out = []
                for job in [*c.scheduler.pending, *c.scheduler.jobs]:
                    info = c.store.job(job) or {}
                    out.append((job, str(info.get("lab", "")), str(info.get("description", ""))))
                return out

            self.log = self.thread.call_sync(lambda c: c.log)
            for job, lab, description in self.thread.call_sync(index):
                info = known.get(job)
                self.jobs[job] = JobInfo(
                    lab,
                    info.name if info else "",
                    info.submitted_at if info else now,
                    description,
                )
            self.preparer = Preparer(
                on_prepared=self._prepared, on_failed=self._preparation_failed, limits=cfg.limits
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

    def _to_coordinator(self, fn: Any) -> None:
        thread = self.thread
        if thread is None or not thread.alive:  # stopping: prepared again at the next start
            return
        with contextlib.suppress(CoordinatorError):
            thread.submit(fn)

    def _after_batch(self, c: Coordinator) -> None:
        out = c.drain()  # keeps the coordinator's instruction buffer from growing
        self.outcomes["validated"] += len(out.validated)
        self.outcomes["invalidated"] += len(out.invalidated)
        self.outcomes["failed"] += len(out.failed)
        self.outcomes["completed"] += len(out.completed)
        now = c.clock()
        if now - self._pruned > 5.0:  # work long past its deadline was reissued by now
            self._pruned = now
            for rid in [r for r, a in list(self.assignments.items()) if a.deadline < now - 60]:
                self.assignments.pop(rid, None)
            for cid in [k for k, v in list(self.checks.items()) if v[2] < now - 60]:
                self.checks.pop(cid, None)

    def coordinator(self) -> CoordinatorThread:
        if self.thread is None or not self.thread.alive:
            raise Unavailable("the coordinator is not running; retry later", code="unavailable")
        return self.thread

    def ledger_log(self) -> Log:
        """The coordinator's ledger, for the auditor's endpoints (ledger.http), which read
        only its file path and open read-only connections of their own."""
        if self.log is None:
            raise Unavailable("the coordinator is not running", code="unavailable")
        return self.log

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
        self.lab_limit.check(("lab", lab))
        return lab

    def volunteer(self, request: Request, body: bytes, *, registering: bool = False) -> bytes:
        """The key of a signed request whose body was read (small JSON bodies)."""
        pending = self.volunteer_headers(request, registering=registering)
        return self.volunteer_signed(pending, body_digest(body))

    def volunteer_headers(self, request: Request, *, registering: bool = False) -> SignedRequest:
        """The signature headers checked (form, time, key registered, nonce fresh): what is
        known before a body is read."""
        query = request.url.query
        target = request.url.path + (f"?{query}" if query else "")
        return self.vauth.check_headers(
            request.method,
            target,
            request.headers,
            origin=self.origin or origin_of(str(request.base_url)),
            registering=registering,
        )

    def volunteer_signed(self, pending: SignedRequest, body_sha256: str) -> bytes:
        key = self.vauth.check_signature(pending, body_sha256)
        self.vol_limit.check(key)
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

    def hand_out(self, key: bytes, got: list[Any]) -> list[dict[str, Any]]:
        """Remember what was handed out (after its commit) and encode it for the wire."""
        tasks = []
        for task, system, eng, assignment, deadline in got:
            if isinstance(task, ComputeTask):
                self.assignments[task.replica] = assignment
            elif isinstance(task, SpotCheckTask):
                self.checks[task.check] = (key, task.wu_id, deadline)
            tasks.append({**encode_task(task, system, eng), "deadline": deadline})
        return tasks

    def next_pull(self, key: bytes, n: int) -> tuple[str, int, str] | None:
        """(class, slots, engine) for work pulled with an upload (``?next=N``), using the
        class the volunteer declared in its last ``/v1/work``."""
        if n <= 0 or key not in self.classes:
            return None
        dkey, engine = self.classes[key]
        return dkey, min(n, self.config.max_slots), engine

    def own_job(self, lab: str, job: str) -> JobInfo:
        info = self.jobs.get(job)
        if info is None or info.lab != lab:
            raise NotFound(f"no job {job[:64]!r} among this lab's jobs", code="not_found")
        return info
