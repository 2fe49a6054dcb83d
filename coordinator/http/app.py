"""The coordinator as an HTTP service for labs and internet volunteers (DESIGN section 9).

``create_app(workdir)`` returns a FastAPI app. Handlers only parse, authenticate and check
requests (stateless, cheap work: signatures, shapes); every change of coordinator state is a
command run on the coordinator's own thread (:mod:`coordinator.http.loop`), in group
commits, so the same scheduler and validator serve HTTP, Ray and tests alike.

Paths are versioned (``/v1/...``); every error is ``{"error": code, "detail": text}``; the
OpenAPI schema is at ``/v1/openapi.json`` and the docs at ``/docs``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from coordinator.accounts import Accounts, key_hash
from coordinator.folder import owned
from coordinator.http import errors
from coordinator.http.auth import RateLimiter, VolunteerAuth, bearer_token
from coordinator.http.errors import ApiError
from coordinator.http.jobs import job_progress, result_plan, results_zip
from coordinator.http.ledger_index import LedgerIndex
from coordinator.http.loop import CoordinatorThread
from coordinator.http.middleware import BodyLimit, Metrics, MetricsMiddleware
from coordinator.http.wire import Assignment, precheck
from coordinator.jobs import ENGINES, MAX_TRAJECTORIES
from coordinator.prepare import prepare_job
from coordinator.service import Coordinator, det_class_key
from ledger.http import ledger_router
from ledger.log import Log
from worker.errors import WireError
from worker.systems import particle_count
from worker.tasks import ComputeTask, SpotCheckTask
from worker.wire import (
    decode_result,
    decode_spot_check,
    encode_task,
    get_hex,
    get_int,
    get_str,
    parse_json_object,
)

#: How long a running service trusts a lab key it checked (``foldnet lab revoke`` takes
#: hold within this time).
LAB_KEY_CACHE_S = 30.0

API_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Limits of one service; the defaults suit a public deployment on a small machine."""

    max_json_bytes: int = 1 << 20
    max_job_bytes: int = 16 << 20  # a PDB upload
    max_result_bytes: int = 64 << 20
    max_job_steps: int = 5 * 10**8  # steps of one job in all (runs x clones x gens x steps)
    max_slots: int = 8  # WUs in one pull
    page_max: int = 100
    lab_rate: float = 20.0
    lab_burst: float = 60.0
    volunteer_rate: float = 50.0
    volunteer_burst: float = 200.0
    register_rate: float = 5.0  # per client address
    register_burst: float = 50.0
    signature_window_s: float = 300.0
    idle_retry_s: float = 5.0  # what a volunteer is told to wait when there is no work
    tick_s: float = 0.2
    beacon_interval_s: float = 0.5
    checkpoint_every: int = 1000


@dataclass(frozen=True, slots=True)
class JobInfo:
    lab: str
    name: str
    submitted_at: float


# -- request bodies (documented in the OpenAPI schema) -------------------------------------


class JobRequest(BaseModel):
    """A folding job: one structure (PDB text) or sequence, an engine and an ensemble plan."""

    model_config = ConfigDict(extra="forbid", strict=True)

    engine: Literal["go", "openmm"]
    pdb: str | None = Field(None, description="PDB file contents (go needs one)")
    sequence: str | None = Field(None, max_length=2000, description="one-letter (openmm)")
    chain: str | None = Field(None, min_length=1, max_length=4)
    runs: int = Field(ge=1, le=MAX_TRAJECTORIES)
    clones: int = Field(ge=1, le=MAX_TRAJECTORIES)
    gens: int = Field(ge=1, le=100_000)
    steps_per_wu: int = Field(ge=1, le=100_000_000)
    segment_steps: int = Field(ge=1, le=100_000_000)
    report_steps: int = Field(ge=1, le=100_000_000)
    temperature: float = Field(gt=0, allow_inf_nan=False)
    min_quorum: int = Field(2, ge=1, le=10)
    deadline_s: float = Field(600.0, ge=1, le=30 * 86400, allow_inf_nan=False)
    audit_rate: float | None = Field(
        None, ge=0, le=1, description="share of validated WUs audited (default: the network's)"
    )
    seed: int = Field(1, ge=0, le=2**31 - 1)
    name: str = Field("", max_length=200)


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    public_key: str = Field(pattern="^[0-9a-f]{64}$", description="Ed25519, hex")
    name: str = Field("", max_length=100)


class WorkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    det_class: str = Field(max_length=4096, description="canonical determinism class JSON")
    slots: int = Field(ge=1, le=64)


class FailureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(max_length=500)


def _doc_body(model: type[BaseModel], media: str = "application/json") -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": {media: {"schema": model.model_json_schema()}}}
    }


_RESULT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-foldnet-arrays": {"schema": {"type": "string", "format": "binary"}}
        },
    }
}
_TAGS = [
    {"name": "service", "description": "Health and Prometheus metrics."},
    {"name": "labs", "description": "Lab API: 'Authorization: Bearer <key>' (foldnet lab add)."},
    {
        "name": "volunteers",
        "description": "Signed requests: X-Foldnet-Key, X-Foldnet-Timestamp (Unix s, ±5 min), "
        "X-Foldnet-Nonce (used once), X-Foldnet-Signature: Ed25519 over "
        "worker.wire.signing_message (method, path?query, SHA-256 of the body, timestamp, "
        "nonce, key).",
    },
]


def _fields(doc: dict[str, Any], allowed: set[str]) -> None:
    extra = set(doc) - allowed
    if extra:
        raise WireError(f"unexpected fields {sorted(extra)[:5]}; expected only {sorted(allowed)}")


class Service:
    """Everything the handlers share: the coordinator thread, accounts, auth, limits."""

    def __init__(self, workdir: str | Path, config: ServiceConfig) -> None:
        self.workdir = Path(workdir)
        self.config = config
        self.metrics = Metrics()
        self.vauth = VolunteerAuth(window_s=config.signature_window_s)
        self.lab_limit = RateLimiter(config.lab_rate, config.lab_burst)
        self.vol_limit = RateLimiter(config.volunteer_rate, config.volunteer_burst)
        self.reg_limit = RateLimiter(config.register_rate, config.register_burst)
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
                ),
                tick_s=cfg.tick_s,
                after_batch=self._after_batch,
            )
            self.thread.start()
            self._stack.callback(self.thread.stop)
            known = {j.job: j for j in self.accounts.jobs()}
            now = time.time()

            def index(c: Coordinator) -> list[tuple[str, str]]:
                return [
                    (job, str((c.store.job(job) or {}).get("lab", ""))) for job in c.scheduler.jobs
                ]

            self.log = self.thread.call_sync(lambda c: c.log)
            for job, lab in self.thread.call_sync(index):
                info = known.get(job)
                self.jobs[job] = JobInfo(
                    lab, info.name if info else "", info.submitted_at if info else now
                )
        except BaseException:
            self._stack.close()
            raise

    def stop(self) -> None:
        self._stack.close()

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
            raise ApiError(503, "unavailable", "the coordinator is not running; retry later")
        return self.thread

    def ledger_log(self) -> Log:
        """The coordinator's ledger, for the auditor's endpoints (ledger.http), which read
        only its file path and open read-only connections of their own."""
        if self.log is None:
            raise ApiError(503, "unavailable", "the coordinator is not running")
        return self.log

    # -- who is asking ---------------------------------------------------------------------

    async def lab(self, request: Request) -> str:
        token = bearer_token(request.headers)
        h = key_hash(token)
        cached = self.labs_by_hash.get(h)
        now = time.monotonic()
        lab = cached[0] if cached is not None and cached[1] > now else None
        if lab is None:
            assert self.accounts is not None
            accounts = self.accounts
            host = request.client.host if request.client else "?"
            self.reg_limit.check(("lab-key", host))  # unknown keys cost a database read
            lab = await anyio.to_thread.run_sync(lambda: accounts.lab_for_key(token))
            if lab is None:
                raise ApiError(
                    403,
                    "bad_api_key",
                    "this API key is not valid; the operator creates lab keys with "
                    "'foldnet lab add NAME'",
                )
            self.labs_by_hash[h] = (lab, now + LAB_KEY_CACHE_S)  # so a revocation takes hold
        self.lab_limit.check(("lab", lab))
        return lab

    def volunteer(self, request: Request, body: bytes, *, registering: bool = False) -> bytes:
        query = request.url.query
        target = request.url.path + (f"?{query}" if query else "")
        key = self.vauth.verify(
            request.method, target, request.headers, body, registering=registering
        )
        self.vol_limit.check(key)
        return key

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
            raise ApiError(404, "not_found", f"no job {job[:64]!r} among this lab's jobs")
        return info


def _pull(svc: Service, c: Coordinator, key: bytes, det: str, slots: int, engine: str) -> list[Any]:
    """On the coordinator's thread: hand out work and note what each result must look like."""
    out = []
    for task in c.request_work(key, det, slots, engine):
        wu = c.scheduler.wus[task.wu_id].unit
        digest = wu.spec.system_digest
        if digest.hex() not in svc.systems:
            svc.systems[digest.hex()] = c.store.system(digest)
        if isinstance(task, ComputeTask):
            rep = c.scheduler.replicas[task.replica]
            a: Assignment | None = Assignment(
                key,
                task.wu_id,
                wu.spec.n_segments,
                particle_count(task.system),
                wu.spec.steps_per_wu // wu.spec.report_steps,
                rep.deadline,
                wu.spec.steps_per_wu,
            )
            deadline = rep.deadline
        else:
            a = None
            deadline = c.scheduler.checks[task.check].deadline
        out.append((task, digest.hex(), wu.spec.engine, a, deadline))
    return out


def create_app(workdir: str | Path, config: ServiceConfig | None = None) -> FastAPI:
    """The service for the coordinator folder ``workdir`` (opened when the app starts)."""
    cfg = config or ServiceConfig()
    svc = Service(workdir, cfg)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(svc.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(svc.stop)

    app = FastAPI(
        title="foldnet coordinator",
        version="0.1.0",
        description="Labs submit folding jobs; volunteers pull work units and upload signed "
        "results; everything is verified by redundant computation and credited on an "
        "auditable ledger.",
        openapi_url=f"/{API_VERSION}/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
        openapi_tags=_TAGS,
    )
    app.state.service = svc
    errors.install(app)

    def limit_for(method: str, path: str) -> int:
        if path.startswith("/v1/results/") and not path.endswith("/failure"):
            return cfg.max_result_bytes
        if method == "POST" and path == "/v1/jobs":
            return cfg.max_job_bytes
        return cfg.max_json_bytes

    app.add_middleware(BodyLimit, limit_for=limit_for)
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)

    # -- public --------------------------------------------------------------------------

    @app.get("/v1/health", tags=["service"])
    async def health() -> JSONResponse:
        alive = svc.thread is not None and svc.thread.alive
        body = {
            "status": "ok" if alive else "unavailable",
            "version": app.version,
            "queue_depth": svc.thread.queue_depth if svc.thread else 0,
        }
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        th = svc.coordinator()
        wus = await th.call(lambda c: c.scheduler.summary())
        gauges: dict[str, tuple[str, dict[str, float] | float]] = {
            "foldnet_wus": ("Work units by state.", {k: float(v) for k, v in wus.items()}),
            "foldnet_jobs": ("Jobs known to the service.", float(len(svc.jobs))),
            "foldnet_volunteers_registered": (
                "Registered volunteer keys.",
                float(len(svc.vauth.registered)),
            ),
            "foldnet_replicas_out_http": (
                "Replicas out with HTTP volunteers.",
                float(len(svc.assignments)),
            ),
            "foldnet_coordinator_queue_depth": ("Commands waiting.", float(th.queue_depth)),
            "foldnet_coordinator_batches_total": ("Group commits run.", float(th.batches)),
            "foldnet_coordinator_commands_total": ("Commands run.", float(th.commands)),
            "foldnet_coordinator_busy_seconds_total": ("Time in batches.", th.busy_s),
            "foldnet_outcomes_total": (
                "Validation outcomes since start.",
                {k: float(v) for k, v in svc.outcomes.items()},
            ),
        }
        return PlainTextResponse(svc.metrics.render(gauges), media_type="text/plain; version=0.0.4")

    # -- labs ----------------------------------------------------------------------------

    @app.post("/v1/jobs", status_code=201, tags=["labs"])
    async def submit_job(body: JobRequest, request: Request) -> dict[str, Any]:
        """Submit a job (PDB text or sequence). Answers once it is stored and queued."""
        lab = await svc.lab(request)
        total = body.runs * body.clones * body.gens * body.steps_per_wu
        if total > cfg.max_job_steps:
            raise ApiError(
                422,
                "invalid_job",
                f"the plan asks for {total:,} steps in all (runs x clones x gens x steps_per_wu); "
                f"this service's limit is {cfg.max_job_steps:,}",
            )

        def prepare() -> Any:
            return prepare_job(
                engine=body.engine,
                pdb_text=body.pdb,
                sequence=body.sequence,
                chain=body.chain,
                runs=body.runs,
                clones=body.clones,
                gens=body.gens,
                steps_per_wu=body.steps_per_wu,
                segment_steps=body.segment_steps,
                report_steps=body.report_steps,
                temperature=body.temperature,
                min_quorum=body.min_quorum,
                deadline_s=body.deadline_s,
                audit_rate=body.audit_rate,
                seed=body.seed,
            )

        system, starts, spec = await anyio.to_thread.run_sync(prepare)
        job = await svc.coordinator().call(
            lambda c: c.submit(lab=lab, system=system, starts=starts, spec=spec)
        )
        now = time.time()
        assert svc.accounts is not None
        accounts = svc.accounts
        await anyio.to_thread.run_sync(lambda: accounts.add_job(job, lab, body.name, now))
        svc.jobs[job] = JobInfo(lab, body.name, now)
        return {
            "job": job,
            "url": f"/v1/jobs/{job}",
            "wus_total": body.runs * body.clones * body.gens,
        }

    @app.get("/v1/jobs", tags=["labs"])
    async def list_jobs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """This lab's jobs with their progress, oldest first; follow ``next`` for more."""
        lab = await svc.lab(request)
        mine = [(j, i) for j, i in svc.jobs.items() if i.lab == lab]
        page = mine[cursor : cursor + min(limit, cfg.page_max)]
        now = time.time()
        items = await svc.coordinator().call(
            lambda c: [
                job_progress(c, j, name=i.name, submitted_at=i.submitted_at, now=now)
                for j, i in page
            ]
        )
        nxt = cursor + len(page)
        return {"jobs": items, "next": nxt if nxt < len(mine) else None}

    @app.get("/v1/jobs/{job}", tags=["labs"])
    async def get_job(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> dict[str, Any]:
        """Progress: WUs validated, in flight, queued, failed; steps and ns simulated; ETA."""
        info = svc.own_job(await svc.lab(request), job)
        now = time.time()
        return await svc.coordinator().call(
            lambda c: job_progress(c, job, name=info.name, submitted_at=info.submitted_at, now=now)
        )

    @app.post("/v1/jobs/{job}/cancel", tags=["labs"])
    async def cancel_job(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> dict[str, Any]:
        """Withdraw a job: nothing more is handed out; validated work is kept."""
        svc.own_job(await svc.lab(request), job)
        await svc.coordinator().call(lambda c: c.cancel(job))
        return {"job": job, "state": "cancelled"}

    @app.get(
        "/v1/jobs/{job}/results",
        tags=["labs"],
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}}},
    )
    async def job_results(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> Response:
        """A zip: observables CSV, frames .npz and final PDB per trajectory, the best
        structure, and summary.json (validated work only, so also while a job runs)."""
        svc.own_job(await svc.lab(request), job)
        plan = await svc.coordinator().call(lambda c: result_plan(c, job))
        store = await svc.coordinator().call(lambda c: c.store)
        data = await anyio.to_thread.run_sync(lambda: results_zip(store, plan))
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{job[:16]}-results.zip"'},
        )

    # -- volunteers ----------------------------------------------------------------------

    @app.post("/v1/volunteers", tags=["volunteers"], openapi_extra=_doc_body(RegisterRequest))
    async def register(request: Request) -> JSONResponse:
        """Register a public key; the request is signed by that key (proof of possession)."""
        host = request.client.host if request.client else "?"
        svc.reg_limit.check(("register", host))
        body = await request.body()
        key = svc.volunteer(request, body, registering=True)
        doc = parse_json_object(body)
        _fields(doc, {"public_key", "name"})
        if get_hex(doc, "public_key", 32) != key:
            raise ApiError(422, "invalid_body", "public_key must be the key that signs the request")
        name = get_str(doc, "name", 100) if "name" in doc else ""
        assert svc.accounts is not None
        accounts = svc.accounts

        def reg(c: Coordinator) -> bool:
            c.register(key, name)
            return accounts.add_volunteer(key, name)

        new = await svc.coordinator().call(reg)
        svc.vauth.registered.add(key)
        return JSONResponse(
            {"volunteer": key.hex(), "registered": True, "new": new},
            status_code=201 if new else 200,
        )

    @app.post("/v1/work", tags=["volunteers"], openapi_extra=_doc_body(WorkRequest))
    async def pull(request: Request) -> dict[str, Any]:
        """Up to ``slots`` work units this volunteer may compute (never one it computed)."""
        body = await request.body()
        key = svc.volunteer(request, body)
        doc = parse_json_object(body)
        _fields(doc, {"det_class", "slots"})
        det = get_str(doc, "det_class", 4096)
        slots = get_int(doc, "slots", 1, cfg.max_slots)
        try:
            engine = json.loads(det)["engine"]
        except (ValueError, TypeError, KeyError) as e:
            raise WireError(
                "det_class: expected the canonical JSON of the engine's determinism class"
            ) from e
        if engine not in ENGINES:
            raise WireError(f"det_class.engine: expected one of {ENGINES}, got {engine!r}")
        dkey = det_class_key(det)
        svc.classes[key] = (dkey, engine)
        got = await svc.coordinator().call(lambda c: _pull(svc, c, key, dkey, slots, engine))
        tasks = svc.hand_out(key, got)
        return {"tasks": tasks, "retry_after_s": None if tasks else cfg.idle_retry_s}

    @app.get("/v1/systems/{digest}", tags=["volunteers"], response_class=Response)
    async def get_system(
        digest: Annotated[str, PathParam(max_length=64)], request: Request
    ) -> Response:
        """A prepared system (.npz, no pickles) of work that was handed out."""
        svc.volunteer(request, b"")
        data = svc.systems.get(digest)
        if data is None:
            raise ApiError(404, "not_found", f"no system {digest[:64]!r} in work handed out")
        return Response(data, media_type="application/octet-stream")

    @app.post("/v1/results/{replica}", tags=["volunteers"], openapi_extra=_RESULT_BODY)
    async def upload(
        replica: Annotated[int, PathParam(ge=1, le=2**62)],
        request: Request,
        pull_next: Annotated[int, Query(alias="next", ge=0, le=64)] = 0,
    ) -> dict[str, Any]:
        """A computed WU (worker.wire.encode_result: a JSON manifest with the signed header,
        then raw little-endian arrays). Shapes, finiteness, WU id and key are checked before
        anything is stored. ``?next=N`` also pulls up to N more WUs in the same round trip
        (with the class of the volunteer's last ``/v1/work``), returned as ``tasks``."""
        body = await request.body()
        key = svc.volunteer(request, body)
        a = svc.assignments.get(replica)
        if a is None or a.volunteer != key:
            raise ApiError(
                404,
                "not_assigned",
                f"replica {replica} is not assigned to this key (or its deadline passed and it "
                "was reissued)",
            )

        def parse() -> Any:
            result = decode_result(body, max_bytes=cfg.max_result_bytes)
            precheck(result, a, key)
            return result

        result = parse() if len(body) < 256 << 10 else await anyio.to_thread.run_sync(parse)

        more = svc.next_pull(key, pull_next)

        def submit(c: Coordinator) -> tuple[str, str, list[Any]]:
            c.submit_result(key, replica, result)
            rep = c.scheduler.replicas[replica]
            got = _pull(svc, c, key, *more) if more else []
            return rep.state, (rep.claim.problem if rep.claim else ""), got

        try:
            state, problem, got = await svc.coordinator().call(submit)
        except Exception:
            svc.assignments.pop(replica, None)
            raise
        svc.assignments.pop(replica, None)
        return {
            "replica": replica,
            "accepted": state != "invalid",
            "state": state,
            "problem": problem,
            "tasks": svc.hand_out(key, got),
        }

    @app.post(
        "/v1/results/{replica}/failure",
        tags=["volunteers"],
        openapi_extra=_doc_body(FailureRequest),
    )
    async def failure(
        replica: Annotated[int, PathParam(ge=1, le=2**62)], request: Request
    ) -> dict[str, Any]:
        """Give a WU back (it could not be computed); it is reissued to someone else."""
        body = await request.body()
        key = svc.volunteer(request, body)
        a = svc.assignments.get(replica)
        if a is None or a.volunteer != key:
            raise ApiError(404, "not_assigned", f"replica {replica} is not assigned to this key")
        doc = parse_json_object(body)
        _fields(doc, {"reason"})
        reason = get_str(doc, "reason", 500)
        await svc.coordinator().call(lambda c: c.fail(key, replica, reason))
        svc.assignments.pop(replica, None)
        return {"replica": replica, "state": "errored"}

    @app.post("/v1/checks/{check}", tags=["volunteers"])
    async def spot_check(
        check: Annotated[int, PathParam(ge=1, le=2**62)],
        request: Request,
        pull_next: Annotated[int, Query(alias="next", ge=0, le=64)] = 0,
    ) -> dict[str, Any]:
        """A spot check's signed end-of-segment digests (``?next=N``: as for results)."""
        body = await request.body()
        key = svc.volunteer(request, body)
        owner = svc.checks.get(check)
        if owner is None or owner[0] != key:
            raise ApiError(404, "not_assigned", f"spot check {check} is not assigned to this key")
        result = decode_spot_check(parse_json_object(body))
        if result.check != check or result.wu_id != owner[1]:
            raise ApiError(422, "invalid_result", "the spot check is for another check or WU")
        more = svc.next_pull(key, pull_next)

        def submit(c: Coordinator) -> list[Any]:
            c.submit_spot_check(key, result)
            return _pull(svc, c, key, *more) if more else []

        got = await svc.coordinator().call(submit)
        svc.checks.pop(check, None)
        return {"check": check, "accepted": True, "tasks": svc.hand_out(key, got)}

    @app.get("/v1/volunteers/me", tags=["volunteers"])
    async def me(request: Request) -> dict[str, Any]:
        """This volunteer's credit (from the ledger) and work in flight."""
        key = svc.volunteer(request, b"")

        def read(c: Coordinator) -> dict[str, Any]:
            svc.ledger.update(c.log)
            v = svc.ledger.get(key)
            vol = c.scheduler.volunteers.get(key.hex())
            return {
                "volunteer": key.hex(),
                "credit": v.balance,
                "results_validated": v.validated,
                "credits_granted": v.granted,
                "credits_revoked": v.revoked,
                "ledger_entries": len(v.entries),
                "streak": vol.streak if vol else 0,
                "in_flight": len(vol.in_flight) if vol else 0,
            }

        return await svc.coordinator().call(read)

    @app.get("/v1/volunteers/me/proofs", tags=["volunteers"])
    async def proofs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """Inclusion proofs (RFC 9162) of this volunteer's ledger entries against the latest
        signed checkpoint; entries after it are counted as pending."""
        key = svc.volunteer(request, b"")

        def read(c: Coordinator) -> dict[str, Any]:
            svc.ledger.update(c.log)
            cp = c.log.checkpoint()
            size = cp.checkpoint.size if cp else 0
            mine_all = svc.ledger.get(key).entries
            now = time.monotonic()
            if mine_all and mine_all[-1] >= size and now - svc.last_checkpoint >= 1.0:
                # Entries after the latest checkpoint: sign a new one (at most one a second,
                # so asking for proofs cannot flood the log with checkpoints).
                svc.last_checkpoint = now
                cp = c.log.publish_checkpoint()
                size = cp.checkpoint.size
                svc.ledger.update(c.log)
            mine = [i for i in svc.ledger.get(key).entries if i < size]
            page = mine[cursor : cursor + limit]
            items = [
                {
                    "index": i,
                    "entry": c.log.entry(i).hex(),
                    "proof": [p.hex() for p in c.log.inclusion_proof(i, size)],
                }
                for i in page
            ]
            nxt = cursor + len(page)
            return {
                "checkpoint": cp.encode() if cp else None,
                "tree_size": size,
                "entries": items,
                "pending": len(svc.ledger.get(key).entries) - len(mine),
                "next": nxt if nxt < len(mine) else None,
            }

        return await svc.coordinator().call(read)

    # The auditor's read-only ledger API (foldnet audit http://HOST/v1/ledger audits it).
    app.include_router(ledger_router(svc.ledger_log), prefix="/v1/ledger")

    return app
