"""The coordinator as an HTTP service for labs and internet volunteers (docs/architecture.md §9.2).

``create_app(workdir)`` returns a FastAPI app. Handlers only parse, authenticate and check
requests (signatures, shapes, result digests); every change of coordinator state is a
command run on the coordinator's own thread (:mod:`coordinator.http.loop`), in group
commits, so the same scheduler and validator serve HTTP, Ray and tests alike. The
coordinator runs in the app's process, or (``front``) in another one that several such apps
serve (:mod:`coordinator.http.workers`).

Paths are versioned (``/v1/...``); every error is ``{"error": code, "detail": text}``; the
OpenAPI schema is at ``/v1/openapi.json`` and the docs at ``/docs``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.http.auth import client_block
from coordinator.http.context import API_VERSION, FrontEnd, Service, ServiceConfig
from coordinator.http.core import Core
from coordinator.http.dashboard import dashboard_router, install_web
from coordinator.http.hot import HotRoutes, HotRouteTable
from coordinator.http.labs import labs_router
from coordinator.http.link import command
from coordinator.http.middleware import BodyLimit, InFlightLimit, Metrics, MetricsMiddleware
from coordinator.http.volunteers import volunteers_router
from coordinator.service import Coordinator
from foldnet.errors import Unavailable
from foldnet.http_errors import install_error_handlers
from ledger.http import LedgerReader, ledger_router

__all__ = ["Service", "ServiceConfig", "create_app"]

_TAGS = [
    {"name": "service", "description": "Health and Prometheus metrics."},
    {"name": "labs", "description": "Lab API: 'Authorization: Bearer <key>' (foldnet lab add)."},
    {
        "name": "volunteers",
        "description": "Signed requests: X-Foldnet-Key, X-Foldnet-Timestamp (Unix s, ±5 min), "
        "X-Foldnet-Nonce (used once), X-Foldnet-Signature: Ed25519 over "
        "worker.wire.signing_message (the server's origin scheme://host:port, method, "
        "path?query, SHA-256 of the body, timestamp, nonce, key). Or, in a session opened "
        "with POST /v1/sessions: X-Foldnet-Session (the ticket) and X-Foldnet-Mac "
        "(HMAC-SHA256 of the same message under the session key) instead of the signature.",
    },
]


#: FastAPI's own OpenTelemetry hooks (FastAPI >= 0.16x) ask the global providers on every
#: request; the service has its Prometheus metrics (``/metrics``) and configures no
#: OpenTelemetry, so they are off.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


@command
def _depth(core: Core, _c: Coordinator) -> int:
    assert core.thread is not None
    return core.thread.queue_depth


@command
def _gauges(
    core: Core, c: Coordinator, worker: int, snapshot: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, tuple[str, dict[str, float] | float]]]:
    """The request metrics of every front-end (``snapshot``: the asking one's, now) and the
    coordinator's gauges."""
    th = core.thread
    assert th is not None
    if worker >= 0:
        core.front_metrics[worker] = snapshot
    merged = (
        Metrics.merged(list(core.front_metrics.values())).snapshot() if worker >= 0 else snapshot
    )
    wus = c.scheduler.summary()
    gauges: dict[str, tuple[str, dict[str, float] | float]] = {
        "foldnet_wus": ("Work units by state.", {k: float(v) for k, v in wus.items()}),
        "foldnet_jobs": ("Jobs known to the service.", float(len(core.jobs))),
        "foldnet_volunteers_registered": (
            "Registered volunteer keys.",
            float(len(core.registered)),
        ),
        "foldnet_replicas_out_http": (
            "Replicas out with HTTP volunteers.",
            float(len(core.assignments)),
        ),
        "foldnet_coordinator_queue_depth": ("Commands waiting.", float(th.queue_depth)),
        "foldnet_coordinator_batches_total": ("Group commits run.", float(th.batches)),
        "foldnet_coordinator_commands_total": ("Commands run.", float(th.commands)),
        "foldnet_coordinator_busy_seconds_total": ("Time in batches.", th.busy_s),
        "foldnet_coordinator_ledger_pending": (
            "Ledger records of committed events waiting for the ledger (it is down).",
            float(c.ledger_pending),
        ),
        "foldnet_outcomes_total": (
            "Validation outcomes since start.",
            {k: float(v) for k, v in core.outcomes.items()},
        ),
    }
    if worker >= 0:
        gauges["foldnet_http_front_ends"] = (
            "HTTP front-end processes reporting.",
            float(len(core.front_metrics)),
        )
    return merged, gauges


def create_app(
    workdir: str | Path,
    config: ServiceConfig | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    front: FrontEnd | None = None,
) -> FastAPI:
    """The service for the coordinator folder ``workdir`` (opened when the app starts);
    ``clock`` is the real one but in tests that move time instead of waiting. ``front``: this
    app is one of several front-ends of a coordinator in another process (its link)."""
    cfg = config or ServiceConfig()
    svc = Service(workdir, cfg, clock=clock, front=front)
    ledger_reader = LedgerReader(svc.ledger_location)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            try:
                await svc.stop()
            finally:
                ledger_reader.close()

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
        **_NO_TELEMETRY,
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

    hot = HotRouteTable()  # innermost: inside the body limit, in-flight limit and metrics
    if cfg.hot_routes:
        app.add_middleware(HotRoutes, table=hot, handlers=app.exception_handlers)
    app.add_middleware(
        BodyLimit, limit_for=limit_for, timeout_for=svc.bodies.timeout, streamed=streamed
    )
    app.add_middleware(InFlightLimit, limit=cfg.max_requests_per_address, who=client_block)
    app.add_middleware(
        MetricsMiddleware,
        metrics=svc.metrics,
        front_end=front.worker if front is not None else None,
    )

    # -- public --------------------------------------------------------------------------

    @app.get("/v1/health", tags=["service"])
    async def health() -> JSONResponse:
        alive = svc.alive
        depth = 0
        if svc.core is not None and svc.core.thread is not None:
            depth = svc.core.thread.queue_depth
        elif alive:  # a front-end of its own: the coordinator answers (or it is not alive)
            try:
                depth = await svc.call(_depth)
            except Unavailable:
                alive = False
        body = {
            "status": "ok" if alive else "unavailable",
            "version": app.version,
            "queue_depth": depth,
        }
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        worker = svc.front.worker if svc.front is not None else -1
        merged, gauges = await svc.call(_gauges, worker, svc.metrics.snapshot())
        text = Metrics.from_snapshot(merged).render(gauges)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    app.include_router(labs_router(svc))
    app.include_router(volunteers_router(svc, hot))

    # The auditor's read-only ledger API (foldnet audit http://HOST/v1/ledger audits it).
    app.include_router(ledger_router(ledger_reader), prefix="/v1/ledger")

    # The web dashboard and the API docs, from files in the package (DESIGN section 13).
    app.include_router(dashboard_router(svc))
    install_web(app)

    return app
