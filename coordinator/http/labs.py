"""The labs' API: submit a job, follow it, download its results, cancel it. A lab sees
only its own jobs (another lab's job is a 404)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from coordinator.http.context import JobInfo, Service
from coordinator.http.jobs import job_progress, queued_wus, result_plan, results_zip
from coordinator.jobs import MAX_TRAJECTORIES
from coordinator.prepare import prepare_job
from coordinator.service import Coordinator
from foldnet.errors import Conflict, Invalid


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


def labs_router(svc: Service) -> APIRouter:
    router = APIRouter()
    cfg = svc.config

    # -- labs ----------------------------------------------------------------------------

    @router.post("/v1/jobs", status_code=201, tags=["labs"])
    async def submit_job(body: JobRequest, request: Request) -> dict[str, Any]:
        """Submit a job (PDB text or sequence). Answers once it is stored and queued."""
        lab = await svc.lab(request)
        total = body.runs * body.clones * body.gens * body.steps_per_wu
        wus = body.runs * body.clones * body.gens
        if total > cfg.max_job_steps:
            raise Invalid(
                f"the plan asks for {total:,} steps in all (runs x clones x gens x steps_per_wu); "
                f"this service's limit is {cfg.max_job_steps:,}",
                code="invalid_job",
            )
        if wus > cfg.max_job_wus:
            raise Invalid(
                f"the plan has {wus:,} work units (runs x clones x gens); this service's limit "
                f"is {cfg.max_job_wus:,}: fewer, longer WUs (a larger steps_per_wu)",
                code="invalid_job",
            )
        if body.steps_per_wu < cfg.min_steps_per_wu:
            raise Invalid(
                f"steps_per_wu is {body.steps_per_wu:,}; this service takes at least "
                f"{cfg.min_steps_per_wu:,} steps per work unit",
                code="invalid_job",
            )
        if body.sequence is not None and len(body.sequence) > cfg.max_residues:
            raise Invalid(
                f"the sequence has {len(body.sequence):,} residues; this service's limit is "
                f"{cfg.max_residues:,}",
                code="invalid_job",
            )

        def quota(c: Coordinator) -> None:
            mine = [j for j, info in list(svc.jobs.items()) if info.lab == lab]
            queued = queued_wus(c, mine)
            if queued + wus > cfg.max_queued_wus_per_lab:
                raise Conflict(
                    f"this lab has {queued:,} work units queued or running and the job adds "
                    f"{wus:,}; the limit is {cfg.max_queued_wus_per_lab:,} per lab: wait for "
                    "work to finish, or cancel a job",
                    code="quota_exceeded",
                )

        await svc.coordinator().call(quota)  # before the (slow) preparation

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
                max_residues=cfg.max_residues,
                max_atoms=cfg.max_atoms,
            )

        system, starts, spec = await anyio.to_thread.run_sync(prepare)

        def submit(c: Coordinator) -> str:
            quota(c)  # again, with the submission: two at once cannot both slip under it
            return c.submit(lab=lab, system=system, starts=starts, spec=spec)

        job = await svc.coordinator().call(submit)
        now = svc.clock.now()
        assert svc.accounts is not None
        accounts = svc.accounts
        await anyio.to_thread.run_sync(lambda: accounts.add_job(job, lab, body.name, now))
        svc.jobs[job] = JobInfo(lab, body.name, now)
        return {
            "job": job,
            "url": f"/v1/jobs/{job}",
            "wus_total": body.runs * body.clones * body.gens,
        }

    @router.get("/v1/jobs", tags=["labs"])
    async def list_jobs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """This lab's jobs with their progress, oldest first; follow ``next`` for more."""
        lab = await svc.lab(request)
        mine = [(j, i) for j, i in svc.jobs.items() if i.lab == lab]
        page = mine[cursor : cursor + min(limit, cfg.page_max)]
        now = svc.clock.now()
        items = await svc.coordinator().call(
            lambda c: [
                job_progress(c, j, name=i.name, submitted_at=i.submitted_at, now=now)
                for j, i in page
            ]
        )
        nxt = cursor + len(page)
        return {"jobs": items, "next": nxt if nxt < len(mine) else None}

    @router.get("/v1/jobs/{job}", tags=["labs"])
    async def get_job(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> dict[str, Any]:
        """Progress: WUs validated, in flight, queued, failed; steps and ns simulated; ETA."""
        info = svc.own_job(await svc.lab(request), job)
        now = svc.clock.now()
        return await svc.coordinator().call(
            lambda c: job_progress(c, job, name=info.name, submitted_at=info.submitted_at, now=now)
        )

    @router.post("/v1/jobs/{job}/cancel", tags=["labs"])
    async def cancel_job(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> dict[str, Any]:
        """Withdraw a job: nothing more is handed out; validated work is kept."""
        svc.own_job(await svc.lab(request), job)
        await svc.coordinator().call(lambda c: c.cancel(job))
        return {"job": job, "state": "cancelled"}

    @router.get(
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

    return router
