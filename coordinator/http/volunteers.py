"""The volunteers' API: register a key, open a session, pull work, fetch systems, upload
results and spot-checks, give work back, read credit and inclusion proofs. Every request is
signed by the volunteer's key, or (all but registering and opening a session) MAC'd in a
session (coordinator/http/sessions.py)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from coordinator.errors import CommitFailedError
from coordinator.http.auth import client_block
from coordinator.http.context import Service
from coordinator.http.core import Core
from coordinator.http.hot import HotRouteTable, IntParam
from coordinator.http.link import command
from coordinator.http.wire import Assignment, HandOut, precheck, upload_limit
from coordinator.service import Coordinator, verify_upload
from foldnet.errors import Invalid, NotFound, TooLarge
from worker.errors import ResultError, WireError
from worker.result import WorkerResult
from worker.systems import particle_count
from worker.tasks import ComputeTask, SpotCheckResult
from worker.wire import (
    decode_result,
    decode_spot_check,
    get_hex,
    get_int,
    get_str,
    loads_json,
    parse_json_object,
)


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    public_key: str = Field(pattern="^[0-9a-f]{64}$", description="Ed25519, hex")
    name: str = Field("", max_length=100)


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    x25519: str = Field(pattern="^[0-9a-f]{64}$", description="a fresh X25519 public key, hex")


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


def _fields(doc: dict[str, Any], allowed: set[str]) -> None:
    extra = set(doc) - allowed
    if extra:
        raise WireError(f"unexpected fields {sorted(extra)[:5]}; expected only {sorted(allowed)}")


# -- commands: on the coordinator's thread ----------------------------------------------------


def _pull(
    core: Core, c: Coordinator, key: bytes, det: str, slots: int, engine: str
) -> list[HandOut]:
    """Hand out work and note what each result must look like (once it is committed)."""
    out = []
    for task in c.request_work(key, det, slots, engine):
        wu = c.scheduler.wus[task.wu_id].unit
        digest = wu.spec.system_digest
        if digest.hex() not in core.systems:
            core.systems[digest.hex()] = c.store.system(digest)
        if isinstance(task, ComputeTask):
            rep = c.scheduler.replicas[task.replica]
            a = Assignment(
                key,
                task.wu_id,
                wu.spec.n_segments,
                particle_count(task.system),
                wu.spec.steps_per_wu // wu.spec.report_steps,
                rep.deadline,
                wu.spec.steps_per_wu,
                input_digest=wu.input_digest,
                segment_steps=wu.spec.segment_steps,
                report_steps=wu.spec.report_steps,
                temperature=wu.spec.temperature,
                system=digest,
                price=task.price,
            )
            _remember(core, replica=task.replica, assignment=a)
            out.append(
                HandOut(
                    wu_id=task.wu_id,
                    number=task.replica,
                    system=digest.hex(),
                    engine=wu.spec.engine,
                    spec=task.spec,
                    deadline=rep.deadline,
                    states=(task.input_state,),
                    price=task.price,
                    assignment=a,
                )
            )
        else:
            deadline = c.scheduler.checks[task.check].deadline
            owner = (key, task.wu_id, deadline)
            _remember(core, check=task.check, owner=owner)
            out.append(
                HandOut(
                    wu_id=task.wu_id,
                    number=task.check,
                    system=digest.hex(),
                    engine=wu.spec.engine,
                    spec=task.spec,
                    deadline=deadline,
                    states=task.start_states,
                    segments=task.segments,
                    check=owner,
                )
            )
    return out


def _remember(
    core: Core,
    *,
    replica: int = 0,
    assignment: Assignment | None = None,
    check: int = 0,
    owner: tuple[bytes, bytes, float] | None = None,
) -> None:
    def remember() -> None:
        if assignment is not None:
            core.assignments[replica] = assignment
        if owner is not None:
            core.checks[check] = owner

    core.when_committed(remember)


def _more(core: Core, c: Coordinator, key: bytes, n: int) -> list[HandOut]:
    """Work pulled with an upload (``?next=N``), in the class the volunteer declared in its
    last ``/v1/work``."""
    if n <= 0 or key not in core.classes:
        return []
    det, engine = core.classes[key]
    return _pull(core, c, key, det, min(n, core.config.max_slots), engine)


@command
def _register(core: Core, c: Coordinator, key: bytes, name: str) -> bool:
    if key in core.registered:  # a volunteer registers each time it starts: no write then
        return False
    c.register(key, name)
    assert core.accounts is not None
    new = core.accounts.add_volunteer(key, name)
    core.registered.add(key)
    return new


@command
def _admitted(_core: Core, _c: Coordinator) -> None:
    """Nothing to run: a front-end's request is admitted by the coordinator's gate (its
    nonce spent for all front-ends, its key's rate counted) and nothing else."""


@command
def _work(core: Core, c: Coordinator, key: bytes, det: str, slots: int) -> list[HandOut]:
    # The server owns the classes: only a known one is accepted (a 422 otherwise).
    accepted = c.accept_class(det)
    out = _pull(core, c, key, accepted.key, slots, accepted.engine)

    def declared() -> None:
        # the class ?next=N pulls in: one the scheduler took for this key (never one it
        # refused, past the key's most: that would refuse an upload after keeping it)
        core.classes[key] = (accepted.key, accepted.engine)

    core.when_committed(declared)
    return out


@command
def _result(
    core: Core,
    c: Coordinator,
    key: bytes,
    replica: int,
    result: WorkerResult | None,
    problem: str,
    more: int,
) -> tuple[str, str, list[HandOut]]:
    """A result verified by the front-end (``result``), or the problem it found (``result``
    None): stored and fed to the scheduler, and the next work pulled."""
    # once committed, the replica is no longer the volunteer's to upload (a failed commit
    # keeps it: the retry its 503 asks for is accepted)
    core.when_committed(lambda: core.assignments.pop(replica, None))
    if result is None:
        c.submit_invalid(key, replica, problem)
    else:
        c.submit_result(key, replica, result, verified=True)
    rep = c.scheduler.replicas[replica]
    return rep.state, (rep.claim.problem if rep.claim else ""), _more(core, c, key, more)


@command
def _give_back(core: Core, c: Coordinator, key: bytes, replica: int, reason: str) -> None:
    c.give_back(key, replica, reason)
    core.when_committed(lambda: core.assignments.pop(replica, None))


@command
def _spot_check(
    core: Core, c: Coordinator, key: bytes, result: SpotCheckResult, more: int
) -> list[HandOut]:
    c.submit_spot_check(key, result)
    core.when_committed(lambda: core.checks.pop(result.check, None))
    return _more(core, c, key, more)


@command
def _credit(core: Core, c: Coordinator, key: bytes) -> dict[str, Any]:
    core.ledger.update(c.log)
    v = core.ledger.get(key)
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


@command
def _proofs(core: Core, c: Coordinator, key: bytes, limit: int, cursor: int) -> dict[str, Any]:
    core.ledger.update(c.log)
    cp = c.log.checkpoint()
    size = cp.checkpoint.size if cp else 0
    mine_all = core.ledger.get(key).entries
    now = core.clock.monotonic()
    if mine_all and mine_all[-1] >= size and now - core.last_checkpoint >= 1.0:
        # Entries after the latest checkpoint: sign a new one (at most one a second,
        # so asking for proofs cannot flood the log with checkpoints).
        core.last_checkpoint = now
        cp = c.log.publish_checkpoint()
        size = cp.checkpoint.size
        core.ledger.update(c.log)
    mine = [i for i in core.ledger.get(key).entries if i < size]
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
        "pending": len(core.ledger.get(key).entries) - len(mine),
        "next": nxt if nxt < len(mine) else None,
    }


# -- the routes -------------------------------------------------------------------------------


def _answer(body: dict[str, Any]) -> JSONResponse:
    """The answers of the hot path (work, results, spot checks) as JSON at once: they hold
    only JSON's own types, so FastAPI's generic encoder (a walk over every value, about
    three times the rendering itself) has nothing to do."""
    return JSONResponse(body)


#: The path and query integers of the hot routes: FastAPI's annotations and the hot
#: routes (:mod:`coordinator.http.hot`) read the same ranges.
REPLICA = IntParam("replica", 1, 2**62)
CHECK = IntParam("check", 1, 2**62)
NEXT = IntParam("pull_next", 0, 64, alias="next")


def volunteers_router(svc: Service, hot: HotRouteTable | None = None) -> APIRouter:
    """The volunteers' routes; ``hot``: where the hot ones (work, results, spot checks) are
    also entered, to be answered without the framework's per-request machinery."""
    router = APIRouter()
    cfg = svc.config

    @router.post("/v1/volunteers", tags=["volunteers"], openapi_extra=_doc_body(RegisterRequest))
    async def register(request: Request) -> JSONResponse:
        """Register a public key; the request is signed by that key (proof of possession)."""
        host = request.client.host if request.client else "?"
        block = client_block(host)
        svc.access.reg_limit.check(("register", block))
        body = await request.body()
        key = await svc.access.volunteer(request, body, registering=True, register_from=block)
        if not svc.remote and key not in svc.access.vauth.registered:  # many addresses together:
            svc.access.reg_global.check("register")  # one budget (spent only by new keys that
            # proved possession; with front-ends of their own, the coordinator's gate does it)
        doc = parse_json_object(body)
        _fields(doc, {"public_key", "name"})
        if get_hex(doc, "public_key", 32) != key:
            raise Invalid("public_key must be the key that signs the request", code="invalid_body")
        name = get_str(doc, "name", 100) if "name" in doc else ""
        new = await svc.call(_register, key, name, request=request)
        svc.access.vauth.registered.add(key)
        return JSONResponse(
            {"volunteer": key.hex(), "registered": True, "new": new},
            status_code=201 if new else 200,
        )

    @router.post("/v1/sessions", tags=["volunteers"], openapi_extra=_doc_body(SessionRequest))
    async def open_session(request: Request) -> JSONResponse:
        """Open a session (coordinator/http/sessions.py): signed by a registered key, naming
        a fresh X25519 key of the volunteer's; later requests carry the ticket and an
        HMAC-SHA256 of the signed message under the derived key instead of a signature."""
        body = await request.body()
        key = await svc.access.volunteer(request, body, signed_only=True)
        doc = parse_json_object(body)
        _fields(doc, {"x25519"})
        client = get_hex(doc, "x25519", 32)
        if svc.remote:  # the coordinator spends the nonce, for every front-end
            await svc.call(_admitted, request=request)
        opened = svc.access.tickets.open(
            volunteer=key, client_x25519=client, origin=svc.access.origin_for(request)
        )
        return JSONResponse(opened.answer(), status_code=201)

    @router.post("/v1/work", tags=["volunteers"], openapi_extra=_doc_body(WorkRequest))
    async def pull(request: Request) -> JSONResponse:
        """Up to ``slots`` work units this volunteer may compute (never one it computed)."""
        body = await request.body()
        key = await svc.access.volunteer(request, body)
        doc = parse_json_object(body)
        _fields(doc, {"det_class", "slots"})
        det = get_str(doc, "det_class", 4096)
        slots = get_int(doc, "slots", 1, cfg.max_slots)

        loads_json(det, "det_class")  # JSON nested past the parser's limit: invalid_body

        tasks = svc.work.encode(await svc.call(_work, key, det, slots, request=request))
        return _answer({"tasks": tasks, "retry_after_s": None if tasks else cfg.idle_retry_s})

    @router.get("/v1/systems/{digest}", tags=["volunteers"], response_class=Response)
    async def get_system(
        digest: Annotated[str, PathParam(max_length=64)], request: Request
    ) -> Response:
        """A prepared system (.npz, no pickles) of work that was handed out."""
        await svc.access.volunteer(request, b"")
        data = await svc.work.system_blob(digest, request=request)
        if data is None:
            raise NotFound(f"no system {digest[:64]!r} in work handed out", code="not_found")
        return Response(data, media_type="application/octet-stream")

    @router.post("/v1/results/{replica}", tags=["volunteers"], openapi_extra=_RESULT_BODY)
    async def upload(
        replica: Annotated[int, PathParam(ge=REPLICA.lo, le=REPLICA.hi)],
        request: Request,
        pull_next: Annotated[int, Query(alias=NEXT.alias, ge=NEXT.lo, le=NEXT.hi)] = NEXT.default,
    ) -> JSONResponse:
        """A computed WU (worker.wire.encode_result: a JSON manifest with the signed header,
        then raw little-endian arrays). Shapes, finiteness, WU id and key are checked before
        anything is stored. ``?next=N`` also pulls up to N more WUs in the same round trip
        (with the class of the volunteer's last ``/v1/work``), returned as ``tasks``."""
        # Authenticate before reading: the headers, the key and the replica are checked
        # first, then at most what this replica's result can need is read, within a time
        # limit, and only then is the signature over the body's hash verified.
        pending = await svc.access.volunteer_headers(request)
        key = pending.key
        a = await svc.work.assignment(replica, key)
        if a is None:
            raise NotFound(
                f"replica {replica} is not assigned to this key (or its deadline passed and it "
                "was reissued)",
                code="not_assigned",
            )
        limit = min(upload_limit(a), cfg.max_result_bytes)
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise TooLarge(
                f"the body is {int(declared):,} bytes; a result of replica {replica} takes "
                f"at most {limit:,}",
                code="too_large",
            )
        body, digest = await svc.bodies.read(request, limit)
        svc.access.volunteer_signed(request, pending, digest)
        system = await svc.work.system(a.system)
        verified = svc.core.signatures if svc.core is not None else None

        def check() -> tuple[WorkerResult | None, str]:
            """Parse (422 if it is not shaped like its WU), then verify: the signature, every
            digest and the physics (an invalid result is recorded, not refused)."""
            result = decode_result(body, max_bytes=cfg.max_result_bytes)
            precheck(result, a, key)
            try:
                engine = svc.work.engines.get(system)
                verify_upload(
                    result,
                    a.expected(),
                    engine=engine,
                    temperature=a.temperature,
                    verified=verified,  # the ledger's memo when the coordinator is here
                )
            except ResultError as e:
                return None, str(e)
            return result, ""

        if len(body) < 256 << 10:
            result, problem = check()
        else:
            result, problem = await anyio.to_thread.run_sync(check)
        try:
            state, problem, got = await svc.call(
                _result, key, replica, result, problem, pull_next, request=request
            )
        except CommitFailedError:
            # nothing of it was kept (the coordinator is back at its committed state, where
            # the replica is still this volunteer's): keep the assignment, so the retry the
            # 503 asks for is accepted
            raise
        except Exception:
            svc.work.forget(replica=replica)
            raise
        svc.work.forget(replica=replica)
        return _answer(
            {
                "replica": replica,
                "accepted": state != "invalid",
                "state": state,
                "problem": problem,
                "tasks": svc.work.encode(got),
            }
        )

    @router.post(
        "/v1/results/{replica}/failure",
        tags=["volunteers"],
        openapi_extra=_doc_body(FailureRequest),
    )
    async def failure(
        replica: Annotated[int, PathParam(ge=1, le=2**62)], request: Request
    ) -> dict[str, Any]:
        """Give a WU back (it could not be computed); it is reissued to someone else."""
        body = await request.body()
        key = await svc.access.volunteer(request, body)
        if await svc.work.assignment(replica, key) is None:
            raise NotFound(f"replica {replica} is not assigned to this key", code="not_assigned")
        doc = parse_json_object(body)
        _fields(doc, {"reason"})
        reason = get_str(doc, "reason", 500)
        try:
            await svc.call(_give_back, key, replica, reason, request=request)
        except CommitFailedError:
            raise  # nothing was kept: the replica is still this key's, for the retry
        except Exception:
            svc.work.forget(replica=replica)  # a hint the coordinator contradicted
            raise
        svc.work.forget(replica=replica)
        return {"replica": replica, "state": "errored"}

    @router.post("/v1/checks/{check}", tags=["volunteers"])
    async def spot_check(
        check: Annotated[int, PathParam(ge=CHECK.lo, le=CHECK.hi)],
        request: Request,
        pull_next: Annotated[int, Query(alias=NEXT.alias, ge=NEXT.lo, le=NEXT.hi)] = NEXT.default,
    ) -> JSONResponse:
        """A spot check's signed end-of-segment digests (``?next=N``: as for results)."""
        body = await request.body()
        key = await svc.access.volunteer(request, body)
        wu = await svc.work.check(check, key)
        if wu is None:
            raise NotFound(f"spot check {check} is not assigned to this key", code="not_assigned")
        result = decode_spot_check(parse_json_object(body))
        if result.check != check or result.wu_id != wu:
            raise Invalid("the spot check is for another check or WU", code="invalid_result")
        got = await svc.call(_spot_check, key, result, pull_next, request=request)
        svc.work.forget(check=check)
        return _answer({"check": check, "accepted": True, "tasks": svc.work.encode(got)})

    @router.get("/v1/volunteers/me", tags=["volunteers"])
    async def me(request: Request) -> dict[str, Any]:
        """This volunteer's credit (from the ledger) and work in flight."""
        key = await svc.access.volunteer(request, b"")
        return await svc.call(_credit, key, request=request)

    @router.get("/v1/volunteers/me/proofs", tags=["volunteers"])
    async def proofs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """Inclusion proofs (RFC 9162) of this volunteer's ledger entries against the latest
        signed checkpoint; entries after it are counted as pending."""
        key = await svc.access.volunteer(request, b"")
        return await svc.call(_proofs, key, limit, cursor, request=request)

    if hot is not None:
        hot.add("POST", "/v1/work", pull)
        hot.add("POST", "/v1/results/{replica}", upload, path_param=REPLICA, query=NEXT)
        hot.add("POST", "/v1/checks/{check}", spot_check, path_param=CHECK, query=NEXT)
    return router
