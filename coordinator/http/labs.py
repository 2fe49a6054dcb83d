"""The labs' API: submit a job, follow it, download its results, cancel it. A lab sees
only its own jobs (another lab's job is a 404)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from coordinator.http.context import JobInfo, Service
from coordinator.http.jobs import (
    ResultsRequest,
    analysis_inputs,
    analysis_zip,
    job_progress,
    queued_wus,
    results_request,
    results_zip,
)
from coordinator.plan import HELP, MAX_NAME, JobPlan
from coordinator.results import NotReadyError, select
from coordinator.service import Coordinator
from coordinator.store import Store
from foldnet.errors import Conflict


def _doc(name: str) -> str:
    return HELP[name]


class JobRequest(BaseModel):
    """A folding job: one structure (PDB text) or sequence, an engine and an ensemble plan.

    Only the types are checked here; every default and range (engine-aware: the temperature
    is kelvin for openmm and eps/kB for go) is the job plan's (:mod:`coordinator.plan`), the
    same for the CLI and the Python API. What is left out takes the engine's default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    engine: Literal["go", "openmm"] = Field(description=_doc("engine"))
    pdb: str | None = Field(None, description=_doc("pdb"))
    sequence: str | None = Field(None, max_length=10_000, description=_doc("sequence"))
    chain: str | None = Field(None, max_length=16, description=_doc("chain"))
    reference: str | None = Field(None, description=_doc("reference"))
    runs: int | None = Field(None, description=_doc("runs"))
    clones: int | None = Field(None, description=_doc("clones"))
    gens: int | None = Field(None, description=_doc("gens"))
    steps_per_wu: int | None = Field(None, description=_doc("steps_per_wu"))
    segment_steps: int | None = Field(None, description=_doc("segment_steps"))
    report_steps: int | None = Field(None, description=_doc("report_steps"))
    temperature: float | None = Field(None, allow_inf_nan=False, description=_doc("temperature"))
    allow_unusual_temperature: bool = Field(False, description=_doc("allow_unusual_temperature"))
    min_quorum: int | None = Field(None, description=_doc("min_quorum"))
    deadline_s: float | None = Field(None, allow_inf_nan=False, description=_doc("deadline_s"))
    audit_rate: float | None = Field(None, allow_inf_nan=False, description=_doc("audit_rate"))
    seed: int | None = Field(None, description=_doc("seed"))
    name: str | None = Field(None, max_length=MAX_NAME, description=_doc("name"))
    adaptive: Literal["none", "least-counts", "fast"] | None = Field(
        None, description=_doc("adaptive")
    )

    def plan(self) -> JobPlan:
        """The job plan (:class:`SubmissionError`, a 422, if it is not one)."""
        given = self.model_dump(exclude={"engine"})
        return JobPlan.create(engine=self.engine, source="the uploaded PDB", **given)


def labs_router(svc: Service) -> APIRouter:
    router = APIRouter()
    cfg = svc.config

    def _annotate(progress: dict[str, Any], info: JobInfo) -> dict[str, Any]:
        """The plan in words, and where the preparation stands (its process, its stage)."""
        progress["description"] = info.description
        prep = svc.preparer.progress(progress["job"]) if svc.preparer is not None else None
        progress["preparation"] = prep.as_json() if prep is not None else None
        return progress

    # -- labs ----------------------------------------------------------------------------

    @router.post("/v1/jobs", status_code=202, tags=["labs"])
    async def submit_job(body: JobRequest, request: Request) -> dict[str, Any]:
        """Submit a job (PDB text or sequence). Answers at once (202) with the job's id: the
        job is ``preparing`` (in a separate process) until it is ``running``, or ``failed``
        with the reason; follow it at ``url``."""
        lab = await svc.lab(request)
        plan = body.plan()
        plan.check(cfg.limits)
        wus = plan.wus

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

        def accept(c: Coordinator) -> str:
            quota(c)  # with the acceptance: two at once cannot both slip under it
            return c.accept(lab=lab, plan=plan)

        job = await svc.coordinator().call(accept)
        now = svc.clock.now()
        assert svc.accounts is not None and svc.preparer is not None
        accounts = svc.accounts
        await anyio.to_thread.run_sync(lambda: accounts.add_job(job, lab, plan.name, now))
        description = plan.describe()
        svc.jobs[job] = JobInfo(lab, plan.name, now, description)
        svc.preparer.submit(job, plan)
        return {
            "job": job,
            "url": f"/v1/jobs/{job}",
            "state": "preparing",
            "wus_total": wus,
            "description": description,
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
        for item, (_j, info) in zip(items, page, strict=True):
            _annotate(item, info)
        nxt = cursor + len(page)
        return {"jobs": items, "next": nxt if nxt < len(mine) else None}

    @router.get("/v1/jobs/{job}", tags=["labs"])
    async def get_job(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> dict[str, Any]:
        """Progress: WUs validated, in flight, queued, failed; steps and ns simulated; ETA."""
        info = svc.own_job(await svc.lab(request), job)
        now = svc.clock.now()
        progress = await svc.coordinator().call(
            lambda c: job_progress(c, job, name=info.name, submitted_at=info.submitted_at, now=now)
        )
        return _annotate(progress, info)

    @router.post("/v1/jobs/{job}/cancel", tags=["labs"])
    async def cancel_job(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> dict[str, Any]:
        """Withdraw a job: nothing more is handed out; validated work is kept. A job still
        preparing is cancelled too (its preparation's result is dropped)."""
        svc.own_job(await svc.lab(request), job)
        await svc.coordinator().call(lambda c: c.cancel(job))
        if svc.preparer is not None:
            svc.preparer.forget(job)
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
        """A zip of the job's results (validated work only, so also while a job runs): per
        trajectory an XTC (with topology.pdb), observables CSV, final structure and plot;
        the best structure, summary.json, README.txt, and in provenance/ every WU at full
        precision with its signed header, ledger entry and inclusion proof against a signed
        checkpoint (``foldnet verify-results`` checks it)."""
        svc.own_job(await svc.lab(request), job)

        def decide(c: Coordinator) -> tuple[ResultsRequest, Store]:
            now = svc.clock.monotonic()
            # a checkpoint covering the job's results, at most one a second (as for proofs)
            may_sign = now - svc.last_checkpoint >= 1.0
            req = results_request(c, svc.ledger, job, may_sign=may_sign)
            if req.signed:
                svc.last_checkpoint = now
            return req, c.store

        req, store = await svc.coordinator().call(decide)
        data = await anyio.to_thread.run_sync(lambda: results_zip(store, req))
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{job[:16]}-results.zip"'},
        )

    analyses: OrderedDict[tuple[str, tuple[bytes, ...]], bytes] = OrderedDict()

    @router.get(
        "/v1/jobs/{job}/analysis",
        tags=["labs"],
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}}},
    )
    async def job_analysis(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> Response:
        """A zip of the Markov state model of the job's validated results, as ``foldnet
        analyze`` makes it: analysis.json (lag, implied timescales, folded/unfolded
        macrostates by Q, folding and unfolding mean first-passage times with bootstrap
        intervals), implied_timescales.png, free_energy.png and a README. Computed in a
        worker process, and kept until more work is validated. 422 ``invalid_analysis``
        when there is too little data (say what is missing), 409 before any result."""
        svc.own_job(await svc.lab(request), job)
        plan, store = await svc.coordinator().call(lambda c: (select(c.scheduler, job), c.store))
        key = (job, tuple(plan.wu_ids))
        data = analyses.get(key)
        if data is None:
            if not plan.picks:
                raise NotReadyError(f"job {job[:16]} has no validated work unit yet to analyse")
            files = await anyio.to_thread.run_sync(lambda: analysis_inputs(store, plan))
            data = await anyio.to_process.run_sync(analysis_zip, files, cancellable=True)
            analyses[key] = data
            while len(analyses) > 8:
                analyses.popitem(last=False)
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{job[:16]}-analysis.zip"'},
        )

    return router
