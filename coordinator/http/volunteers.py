"""The volunteers' API: register a key, pull work, fetch systems, upload results and
spot-checks, give work back, read credit and inclusion proofs. Every request but the
registration is signed by the volunteer's key."""

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
from coordinator.http.wire import Assignment, precheck, upload_limit
from coordinator.service import Coordinator
from foldnet.errors import Invalid, NotFound, TooLarge
from worker.errors import WireError
from worker.systems import particle_count
from worker.tasks import ComputeTask
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


def volunteers_router(svc: Service) -> APIRouter:
    router = APIRouter()
    cfg = svc.config

    # -- volunteers ----------------------------------------------------------------------

    @router.post("/v1/volunteers", tags=["volunteers"], openapi_extra=_doc_body(RegisterRequest))
    async def register(request: Request) -> JSONResponse:
        """Register a public key; the request is signed by that key (proof of possession)."""
        host = request.client.host if request.client else "?"
        svc.reg_limit.check(("register", client_block(host)))
        body = await request.body()
        key = svc.volunteer(request, body, registering=True)
        if key not in svc.vauth.registered:  # many addresses together: one budget (spent
            svc.reg_global.check("register")  # only by new keys that proved possession)
        doc = parse_json_object(body)
        _fields(doc, {"public_key", "name"})
        if get_hex(doc, "public_key", 32) != key:
            raise Invalid("public_key must be the key that signs the request", code="invalid_body")
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

    @router.post("/v1/work", tags=["volunteers"], openapi_extra=_doc_body(WorkRequest))
    async def pull(request: Request) -> dict[str, Any]:
        """Up to ``slots`` work units this volunteer may compute (never one it computed)."""
        body = await request.body()
        key = svc.volunteer(request, body)
        doc = parse_json_object(body)
        _fields(doc, {"det_class", "slots"})
        det = get_str(doc, "det_class", 4096)
        slots = get_int(doc, "slots", 1, cfg.max_slots)

        loads_json(det, "det_class")  # JSON nested past the parser's limit: invalid_body

        def pull(c: Coordinator) -> list[Any]:
            # The server owns the classes: only a known one is accepted (a 422 otherwise).
            accepted = c.accept_class(det)
            svc.classes[key] = (accepted.key, accepted.engine)
            return _pull(svc, c, key, accepted.key, slots, accepted.engine)

        got = await svc.coordinator().call(pull)
        tasks = svc.hand_out(key, got)
        return {"tasks": tasks, "retry_after_s": None if tasks else cfg.idle_retry_s}

    @router.get("/v1/systems/{digest}", tags=["volunteers"], response_class=Response)
    async def get_system(
        digest: Annotated[str, PathParam(max_length=64)], request: Request
    ) -> Response:
        """A prepared system (.npz, no pickles) of work that was handed out."""
        svc.volunteer(request, b"")
        data = svc.systems.get(digest)
        if data is None:
            raise NotFound(f"no system {digest[:64]!r} in work handed out", code="not_found")
        return Response(data, media_type="application/octet-stream")

    @router.post("/v1/results/{replica}", tags=["volunteers"], openapi_extra=_RESULT_BODY)
    async def upload(
        replica: Annotated[int, PathParam(ge=1, le=2**62)],
        request: Request,
        pull_next: Annotated[int, Query(alias="next", ge=0, le=64)] = 0,
    ) -> dict[str, Any]:
        """A computed WU (worker.wire.encode_result: a JSON manifest with the signed header,
        then raw little-endian arrays). Shapes, finiteness, WU id and key are checked before
        anything is stored. ``?next=N`` also pulls up to N more WUs in the same round trip
        (with the class of the volunteer's last ``/v1/work``), returned as ``tasks``."""
        # Authenticate before reading: the headers, the key and the replica are checked
        # first, then at most what this replica's result can need is read, within a time
        # limit, and only then is the signature over the body's hash verified.
        pending = svc.volunteer_headers(request)
        key = pending.key
        a = svc.assignments.get(replica)
        if a is None or a.volunteer != key:
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
        body, digest = await svc.read_body(request, limit)
        svc.volunteer_signed(pending, digest)

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
        except CommitFailedError:
            # nothing of it was kept (the coordinator is back at its committed state, where
            # the replica is still this volunteer's): keep the assignment, so the retry the
            # 503 asks for is accepted
            raise
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
        key = svc.volunteer(request, body)
        a = svc.assignments.get(replica)
        if a is None or a.volunteer != key:
            raise NotFound(f"replica {replica} is not assigned to this key", code="not_assigned")
        doc = parse_json_object(body)
        _fields(doc, {"reason"})
        reason = get_str(doc, "reason", 500)
        await svc.coordinator().call(lambda c: c.fail(key, replica, reason))
        svc.assignments.pop(replica, None)
        return {"replica": replica, "state": "errored"}

    @router.post("/v1/checks/{check}", tags=["volunteers"])
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
            raise NotFound(f"spot check {check} is not assigned to this key", code="not_assigned")
        result = decode_spot_check(parse_json_object(body))
        if result.check != check or result.wu_id != owner[1]:
            raise Invalid("the spot check is for another check or WU", code="invalid_result")
        more = svc.next_pull(key, pull_next)

        def submit(c: Coordinator) -> list[Any]:
            c.submit_spot_check(key, result)
            return _pull(svc, c, key, *more) if more else []

        got = await svc.coordinator().call(submit)
        svc.checks.pop(check, None)
        return {"check": check, "accepted": True, "tasks": svc.hand_out(key, got)}

    @router.get("/v1/volunteers/me", tags=["volunteers"])
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

    @router.get("/v1/volunteers/me/proofs", tags=["volunteers"])
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
            now = svc.clock.monotonic()
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

    return router
