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

from coordinator.http.context import Service
from coordinator.http.core import Core, JobInfo
from coordinator.http.jobs import (
    ResultsRequest,
    analysis_inputs,
    analysis_zip,
    job_progress,
    queued_wus,
    results_request,
    results_zip,
)
from coordinator.http.link import command
from coordinator.plan import HELP, MAX_NAME, JobPlan
from coordinator.results import NotReadyError, ResultPlan, select
from coordinator.service import Coordinator
from foldnet.errors import Conflict, NotFound


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


# -- commands: on the coordinator's thread ----------------------------------------------------


def own_job(core: Core, lab: str, job: str) -> JobInfo:
    info = core.jobs.get(job)
    if info is None or info.lab != lab:
        raise NotFound(f"no job {job[:64]!r} among this lab's jobs", code="not_found")
    return info


def _progress(core: Core, c: Coordinator, job: str, info: JobInfo, now: float) -> dict[str, Any]:
    """Progress, the plan in words, and where the preparation stands (its process, its
    stage)."""
    progress = job_progress(c, job, name=info.name, submitted_at=info.submitted_at, now=now)
    progress["description"] = info.description
    prep = core.preparer.progress(job) if core.preparer is not None else None
    progress["preparation"] = prep.as_json() if prep is not None else None
    return progress


@command
def _accept(core: Core, c: Coordinator, lab: str, plan: JobPlan) -> str:
    cfg = core.config
    wus = plan.wus
    mine = [j for j, info in core.jobs.items() if info.lab == lab]
    queued = queued_wus(c, mine)
    if queued + wus > cfg.max_queued_wus_per_lab:  # with the acceptance: two at once cannot
        raise Conflict(  # both slip under it
            f"this lab has {queued:,} work units queued or running and the job adds "
            f"{wus:,}; the limit is {cfg.max_queued_wus_per_lab:,} per lab: wait for "
            "work to finish, or cancel a job",
            code="quota_exceeded",
        )
    job = c.accept(lab=lab, plan=plan)
    now = core.clock.now()
    accounts, preparer = core.accounts, core.preparer
    assert accounts is not None and preparer is not None

    def known() -> None:  # once the job is committed
        core.jobs[job] = JobInfo(lab, plan.name, now, plan.describe())
        accounts.add_job(job, lab, plan.name, now)
        preparer.submit(job, plan)

    core.when_committed(known)
    return job


@command
def _list(
    core: Core, c: Coordinator, lab: str, cursor: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    mine = [(j, i) for j, i in core.jobs.items() if i.lab == lab]
    now = core.clock.now()
    items = [_progress(core, c, j, i, now) for j, i in mine[cursor : cursor + limit]]
    return items, len(mine)


@command
def _get(core: Core, c: Coordinator, lab: str, job: str) -> dict[str, Any]:
    return _progress(core, c, job, own_job(core, lab, job), core.clock.now())


@command
def _cancel(core: Core, c: Coordinator, lab: str, job: str) -> None:
    own_job(core, lab, job)
    c.cancel(job)
    if core.preparer is not None:
        core.preparer.forget(job)


@command
def _results(core: Core, c: Coordinator, lab: str, job: str) -> ResultsRequest:
    own_job(core, lab, job)
    now = core.clock.monotonic()
    # a checkpoint covering the job's results, at most one a second (as for proofs)
    may_sign = now - core.last_checkpoint >= 1.0
    req = results_request(c, core.ledger, job, may_sign=may_sign)
    if req.signed:
        core.last_checkpoint = now
    return req


@command
def _selected(core: Core, c: Coordinator, lab: str, job: str) -> ResultPlan:
    own_job(core, lab, job)
    return select(c.scheduler, job)


# -- the routes -------------------------------------------------------------------------------


def labs_router(svc: Service) -> APIRouter:
    router = APIRouter()
    cfg = svc.config

    @router.post("/v1/jobs", status_code=202, tags=["labs"])
    async def submit_job(body: JobRequest, request: Request) -> dict[str, Any]:
        """Submit a job (PDB text or sequence). Answers at once (202) with the job's id: the
        job is ``preparing`` (in a separate process) until it is ``running``, or ``failed``
        with the reason; follow it at ``url``."""
        lab = await svc.access.lab(request)
        plan = body.plan()
        plan.check(cfg.limits)
        job = await svc.call(_accept, lab, plan, request=request)
        return {
            "job": job,
            "url": f"/v1/jobs/{job}",
            "state": "preparing",
            "wus_total": plan.wus,
            "description": plan.describe(),
        }

    @router.get("/v1/jobs", tags=["labs"])
    async def list_jobs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """This lab's jobs with their progress, oldest first; follow ``next`` for more."""
        lab = await svc.access.lab(request)
        n = min(limit, cfg.page_max)
        items, total = await svc.call(_list, lab, cursor, n, request=request)
        nxt = cursor + len(items)
        return {"jobs": items, "next": nxt if nxt < total else None}

    @router.get("/v1/jobs/{job}", tags=["labs"])
    async def get_job(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> dict[str, Any]:
        """Progress: WUs validated, in flight, queued, failed; steps and ns simulated; ETA."""
        lab = await svc.access.lab(request)
        return await svc.call(_get, lab, job, request=request)

    @router.post("/v1/jobs/{job}/cancel", tags=["labs"])
    async def cancel_job(
        job: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> dict[str, Any]:
        """Withdraw a job: nothing more is handed out; validated work is kept. A job still
        preparing is cancelled too (its preparation's result is dropped)."""
        lab = await svc.access.lab(request)
        await svc.call(_cancel, lab, job, request=request)
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
        lab = await svc.access.lab(request)
        req = await svc.call(_results, lab, job, request=request)
        store = await svc.store()
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
        lab = await svc.access.lab(request)
        plan = await svc.call(_selected, lab, job, request=request)
        store = await svc.store()
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
