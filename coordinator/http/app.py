"""The coordinator as an HTTP service for labs and internet volunteers (docs/architecture.md §9.2).

``create_app(workdir)`` returns a FastAPI app. Handlers only parse, authenticate and check
requests (stateless, cheap work: signatures, shapes); every change of coordinator state is a
command run on the coordinator's own thread (:mod:`coordinator.http.loop`), in group
commits, so the same scheduler and validator serve HTTP, Ray and tests alike.

Paths are versioned (``/v1/...``); every error is ``{"error": code, "detail": text}``; the
OpenAPI schema is at ``/v1/openapi.json`` and the docs at ``/docs``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.http.auth import client_block
from coordinator.http.context import API_VERSION, Service, ServiceConfig
from coordinator.http.dashboard import dashboard_router, install_web
from coordinator.http.labs import labs_router
from coordinator.http.middleware import BodyLimit, InFlightLimit, MetricsMiddleware
from coordinator.http.volunteers import volunteers_router
from foldnet.http_errors import install_error_handlers
from ledger.http import ledger_router

__all__ = ["Service", "ServiceConfig", "create_app"]

_TAGS = [
    {"name": "service", "description": "Health and Prometheus metrics."},
    {"name": "labs", "description": "Lab API: 'Authorization: Bearer <key>' (foldnet lab add)."},
    {
        "name": "volunteers",
        "description": "Signed requests: X-Foldnet-Key, X-Foldnet-Timestamp (Unix s, ±5 min), "
        "X-Foldnet-Nonce (used once), X-Foldnet-Signature: Ed25519 over "
        "worker.wire.signing_message (the server's origin scheme://host:port, method, "
        "path?query, SHA-256 of the body, timestamp, nonce, key).",
    },
]


def create_app(
    workdir: str | Path, config: ServiceConfig | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> FastAPI:
    """The service for the coordinator folder ``workdir`` (opened when the app starts);
    ``clock`` is the real one but in tests that move time instead of waiting."""
    cfg = config or ServiceConfig()
    svc = Service(workdir, cfg, clock=clock)

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
        docs_url=None,  # served from the package by install_web (no CDN)
        redoc_url=None,
        lifespan=lifespan,
        openapi_tags=_TAGS,
    )
    app.state.service = svc
    install_error_handlers(app)

    def streamed(_method: str, path: str) -> bool:
        """Result uploads: read by their handler, after authentication (volunteers.py)."""
        return path.startswith("/v1/results/") and not path.endswith("/failure")

    def limit_for(method: str, path: str) -> int:
        if streamed(method, path):
            return cfg.max_result_bytes
        if method == "POST" and path == "/v1/jobs":
            return cfg.max_job_bytes
        return cfg.max_json_bytes

    app.add_middleware(
        BodyLimit, limit_for=limit_for, timeout_for=svc.body_timeout, streamed=streamed
    )
    app.add_middleware(InFlightLimit, limit=cfg.max_requests_per_address, who=client_block)
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

    app.include_router(labs_router(svc))
    app.include_router(volunteers_router(svc))

    # The auditor's read-only ledger API (foldnet audit http://HOST/v1/ledger audits it).
    app.include_router(ledger_router(svc.ledger_log), prefix="/v1/ledger")

    # The web dashboard and the API docs, from files in the package (DESIGN section 13).
    app.include_router(dashboard_router(svc))
    install_web(app)

    return app
