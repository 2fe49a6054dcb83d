"""The web face of the service (DESIGN section 13): the dashboard's pages, the JSON they
read, and the API docs, all served from files in this package (no CDN, nothing fetched from
the internet at run time).

Pages (plain HTML, CSS and a little JS in ``web/``; no build step):

==========================  ====================================================================
``/``                       the network: volunteers online, WUs in flight, validated per
                            minute, jobs running, the latest signed checkpoint, a live chart
``/ledger``                 the ledger explorer: checkpoints with witness cosignatures,
                            entries decoded page by page, and the checkpoint's signature and
                            entries' inclusion proofs verified in the browser (WebCrypto)
``/leaderboard``            volunteers by credit (the ledger's numbers only)
``/volunteers/{key}``       one volunteer: credit over time, results, its entries and proofs
``/jobs``, ``/jobs/{job}``  a lab's jobs (API key in the tab's session storage): progress,
                            Q/RMSD/energy plots, a 3-D viewer, cancel, results download
``/docs``                   Swagger UI of the ``/v1`` API, from the vendored swagger-ui-dist
==========================  ====================================================================

JSON (public unless marked lab): ``/v1/network``, ``/v1/ledger/records``,
``/v1/ledger/leaderboard``, ``/v1/ledger/volunteers/{key}``,
``/v1/ledger/volunteers/{key}/entries``; lab: ``/v1/jobs/{job}/series``,
``/v1/jobs/{job}/structure``. Errors are ``{"error", "detail"}`` like the rest of the API.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from coordinator.bundle import RMSD_COLUMN
from coordinator.http.context import Service
from coordinator.http.core import Core
from coordinator.http.labs import own_job
from coordinator.http.ledger_view import LedgerView, checkpoint_json, record_json, thin
from coordinator.http.link import command
from coordinator.results import select
from coordinator.scheduler import ONLINE_S
from coordinator.service import Coordinator
from coordinator.trajfiles import pdb_text
from foldnet.errors import BadRequest, NotFound, Unavailable
from ledger.errors import LedgerError
from worker.systems import decode_system

__all__ = ["WEB_DIR", "dashboard_router", "install_web"]

#: The dashboard's files (HTML, CSS, JS, vendored libraries with their licences).
WEB_DIR = Path(str(resources.files("coordinator.http") / "web"))

#: Most decoded entries one ``/v1/ledger/records`` request returns.
RECORDS_PAGE = 100
#: Most trajectories one ``/v1/jobs/{job}/series`` request returns.
SERIES_PAGE = 20
#: Most points of one observable of one trajectory sent to a plot.
SERIES_POINTS = 1000
#: Most frames of a trajectory sent to the 3-D viewer (evenly spaced, the last included).
TRAJECTORY_FRAMES = 100
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _key(raw: str) -> bytes:
    if not _HEX64.fullmatch(raw):
        raise BadRequest(
            f"a volunteer key is 64 lowercase hex digits, got {raw[:80]!r}", code="invalid_key"
        )
    return bytes.fromhex(raw)


#: Each page: its title, the menu entry it belongs to, and its script. The page's file holds
#: only its ``<main>``; ``layout.html`` is the document around it (one head, menu, footer).
PAGES: dict[str, tuple[str, str, str]] = {
    "network.html": ("Network", "/", "network.js"),
    "ledger.html": ("Ledger explorer", "/ledger", "ledger.js"),
    "leaderboard.html": ("Leaderboard", "/leaderboard", "leaderboard.js"),
    "volunteer.html": ("Volunteer", "/leaderboard", "volunteer.js"),
    "jobs.html": ("Lab", "/jobs", "jobs.js"),
    "job.html": ("Job", "/jobs", "job.js"),
}
_MENU = (("/", "Network"), ("/ledger", "Ledger"), ("/leaderboard", "Leaderboard"),
         ("/jobs", "Lab"), ("/docs", "API"))  # fmt: skip


@functools.cache
def _render(name: str) -> str:
    title, current, script = PAGES[name]
    mark = ' aria-current="page"'
    menu = "\n".join(
        f'<a href="{href}"{mark if href == current else ""}>{label}</a>' for href, label in _MENU
    )
    layout = (WEB_DIR / "layout.html").read_text(encoding="utf-8")
    return (
        layout.replace("<!--title-->", title)
        .replace("<!--nav-->", menu)
        .replace("<!--main-->", (WEB_DIR / name).read_text(encoding="utf-8").strip())
        .replace("<!--script-->", script)
    )


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(_render(name), headers=_PAGE_HEADERS)


_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
_FILES: dict[str, tuple[bytes, str]] = {}


def _static(path: str) -> tuple[bytes, str]:
    """A file of the dashboard by its path under ``web/`` (read once, then from memory)."""
    got = _FILES.get(path)
    if got is not None:
        return got
    names = path.split("/")
    ok = all(n and not n.startswith(".") for n in names) and len(path) <= 200
    target = (WEB_DIR / path).resolve() if ok else WEB_DIR
    plain = target.name in ("LICENSE", "NOTICE")
    kind = _TYPES[".txt"] if plain else _TYPES.get(target.suffix)
    inside = target.is_relative_to(WEB_DIR.resolve())
    if not ok or kind is None or not inside or not target.is_file():
        raise NotFound(f"no file {path[:200]!r} in the dashboard", code="not_found")
    got = _FILES[path] = (target.read_bytes(), kind)
    return got


def install_web(app: FastAPI) -> None:
    """Serve the dashboard's static files at ``/static`` and Swagger UI at ``/docs`` from
    the package (create the app with ``docs_url=None``)."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/static/{path:path}", include_in_schema=False)
    async def static(path: str) -> Response:
        data, kind = await anyio.to_thread.run_sync(_static, path)
        return Response(
            data,
            media_type=kind,
            headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/vendor/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )
        return HTMLResponse(bytes(page.body), headers={"X-Content-Type-Options": "nosniff"})


@command
def _network(core: Core, c: Coordinator, validated: int) -> dict[str, Any]:
    """On the coordinator's thread: the scheduler's live numbers, and recent samples of them
    (``validated``: results validated in all, from the ledger) for the chart."""
    s = c.scheduler
    now = c.clock()
    online = sum(1 for v in s.volunteers.values() if now - v.seen <= ONLINE_S)
    wus = s.summary()
    in_flight = sum(wus.get(k, 0) for k in ("in_progress", "awaiting_beacon", "spot_checking"))
    running = sum(1 for j in s.jobs.values() if not j.cancelled and j.remaining > 0)
    core.samples.add({"t": now, "online": online, "in_flight": in_flight, "validated": validated})
    return {
        "time": now,
        "volunteers": {"known": len(s.volunteers), "online": online},
        "wus": {"in_flight": in_flight, "by_state": wus, "total": sum(wus.values())},
        "jobs": {"running": running, "total": len(s.jobs)},
        "samples": list(core.samples.rows),
    }


@command
def _volunteer_work(_core: Core, c: Coordinator, key: bytes) -> dict[str, Any]:
    """On the coordinator's thread: what the scheduler knows of one key's work."""
    vid = key.hex()
    vol = c.scheduler.volunteers.get(vid)
    states: dict[str, int] = {}
    for r in c.scheduler.replicas.values():
        if r.volunteer == vid:
            states[r.state] = states.get(r.state, 0) + 1
    returned = sum(states.get(k, 0) for k in ("returned", "valid", "invalid", "disputed"))
    return {
        "known": vol is not None,
        "trust": vol.trust if vol else None,
        "streak": vol.streak if vol else 0,
        "in_flight": len(vol.in_flight) if vol else 0,
        "online": bool(vol and c.clock() - vol.seen <= ONLINE_S),
        "results_returned": returned,
        "results_valid": states.get("valid", 0),
        "results_rejected": states.get("invalid", 0),
        "results_errored": states.get("errored", 0) + states.get("timed_out", 0),
    }


def _trajectories(
    c: Coordinator, job: str, cursor: int = 0, limit: int | None = None
) -> tuple[dict[tuple[int, int], list[tuple[int, int]]], int]:
    """On the coordinator's thread: ``(run, clone) -> [(gen, replica)]`` for the
    trajectories ``cursor .. cursor + limit`` of a job (in (run, clone) order), chosen by the
    results' own rule (:func:`coordinator.results.select`: no retracted generation, none
    after one that waits for a re-check), and how many trajectories the job has."""
    plan = select(c.scheduler, job)
    spec = c.scheduler.jobs[job].spec
    total = spec.runs * spec.clones
    stop = total if limit is None else min(total, cursor + limit)
    out: dict[tuple[int, int], list[tuple[int, int]]] = {
        divmod(i, spec.clones): [] for i in range(cursor, stop)
    }
    for p in plan.picks:
        if (p.run, p.clone) in out:
            out[(p.run, p.clone)].append((p.gen, p.replica))
    return out, total


@command
def _job_trajectories(
    core: Core, c: Coordinator, lab: str, job: str, cursor: int, limit: int | None
) -> tuple[dict[tuple[int, int], list[tuple[int, int]]], int, bytes, str]:
    """A lab's job's trajectories (:func:`_trajectories`), its system's digest and engine."""
    own_job(core, lab, job)
    trajs, total = _trajectories(c, job, cursor, limit)
    spec = c.scheduler.jobs[job].spec
    return trajs, total, spec.system_digest, spec.engine


def _contiguous(gens: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [g for i, g in enumerate(gens) if g[0] == i]


def _downsample(a: np.ndarray, n: int = SERIES_POINTS) -> list[float]:
    if len(a) > n:
        a = a[np.linspace(0, len(a) - 1, n).round().astype(int)]
    return [round(float(x), 6) for x in a]


def dashboard_router(svc: Service) -> APIRouter:
    router = APIRouter()
    view = LedgerView(svc.ledger_location)

    async def updated() -> int:
        try:
            return await anyio.to_thread.run_sync(view.update)
        except LedgerError as e:  # a damaged or unreadable log: the server's fault
            raise Unavailable(f"the ledger cannot be read: {e}", code="unavailable") from e

    # -- pages ---------------------------------------------------------------------------

    @router.get("/", include_in_schema=False)
    async def network_page() -> HTMLResponse:
        return _page("network.html")

    @router.get("/ledger", include_in_schema=False)
    async def ledger_page() -> HTMLResponse:
        return _page("ledger.html")

    @router.get("/leaderboard", include_in_schema=False)
    async def leaderboard_page() -> HTMLResponse:
        return _page("leaderboard.html")

    @router.get("/volunteers/{key}", include_in_schema=False)
    async def volunteer_page(key: str) -> HTMLResponse:
        _key(key)
        return _page("volunteer.html")

    @router.get("/jobs", include_in_schema=False)
    async def jobs_page() -> HTMLResponse:
        return _page("jobs.html")

    @router.get("/jobs/{job}", include_in_schema=False)
    async def job_page(job: Annotated[str, PathParam(max_length=128)]) -> HTMLResponse:
        return _page("job.html")

    # -- public JSON ---------------------------------------------------------------------

    @router.get("/v1/network", tags=["service"])
    async def network() -> dict[str, Any]:
        """The network now: volunteers online, WUs in flight, jobs running, validated
        results per minute (ledger time), the latest signed checkpoint, and recent samples
        of these numbers for a chart."""
        size = await updated()
        live = await svc.call(_network, len(view.validated_ms))
        now_ms = int(live["time"] * 1000)
        minutes = view.per_minute(now_ms)
        cp = view.checkpoint
        samples = live.pop("samples")
        return live | {
            "validated": {
                "total": len(view.validated_ms),
                "last_minute": view.count_since(now_ms - 60_000),
                "per_minute": minutes,
            },
            "ledger": {
                "size": size,
                "credit_total": view.credit_total,
                "volunteers": len(view.by_key),
                "entries_by_kind": dict(view.kinds),
            },
            "checkpoint": None if cp is None else checkpoint_json(cp[1]),
            "samples": samples,
        }

    @router.get("/v1/ledger/records", tags=["ledger"])
    async def records(
        start: Annotated[int, Query(ge=0, le=2**62, description="first index")] = 0,
        limit: Annotated[int, Query(ge=1, le=RECORDS_PAGE)] = 25,
    ) -> dict[str, Any]:
        """Entries ``start ..`` of the latest signed checkpoint's tree, decoded into readable
        records (with their bytes in base64 to verify); ``next`` pages on."""

        def read() -> dict[str, Any]:
            with view.open() as store:
                latest = store.latest_checkpoint()
                if latest is None:
                    raise NotFound("the log has not signed a checkpoint yet", code="no_checkpoint")
                size = latest[0]
                if start > size:
                    raise BadRequest(
                        f"start {start} is beyond the latest checkpoint (size {size})",
                        code="out_of_range",
                    )
                end = min(size, start + limit)
                rows = [record_json(i, h, d) for i, h, d in store.iter_entries(start, end)]
                pending = store.size - size
            return {
                "tree_size": size,
                "start": start,
                "end": end,
                "records": rows,
                "next": end if end < size else None,
                "pending": pending,
            }

        return await anyio.to_thread.run_sync(read)

    @router.get("/v1/ledger/leaderboard", tags=["ledger"])
    async def leaderboard(
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """Volunteers by credit, highest first, from the ledger's entries alone."""
        size = await updated()
        ranked = view.ranked()
        rows = []
        for rank, (balance, key) in enumerate(ranked[cursor : cursor + limit], cursor + 1):
            v = view.by_key[key]
            rows.append(
                {
                    "rank": rank,
                    "volunteer": key.hex(),
                    "name": v.name,
                    "credit": balance,
                    "results_validated": v.validated,
                    "credits_revoked": v.revoked,
                }
            )
        nxt = cursor + len(rows)
        return {
            "as_of_entry": size,
            "volunteers": len(ranked),
            "leaderboard": rows,
            "next": nxt if nxt < len(ranked) else None,
        }

    @router.get("/v1/ledger/volunteers/{key}", tags=["ledger"])
    async def volunteer(key: str) -> dict[str, Any]:
        """One volunteer's ledger numbers (credit over time, results validated, grants and
        revocations) and what the scheduler knows of its work."""
        k = _key(key)
        size = await updated()
        v = view.volunteer(k)
        work = await svc.call(_volunteer_work, k)
        if v is None and not work["known"]:
            raise NotFound(f"no volunteer {key} in the ledger or the scheduler", code="not_found")
        cp = view.checkpoint
        return {
            "volunteer": key,
            "as_of_entry": size,
            "checkpoint_size": cp[0] if cp else None,
            "name": v.name if v else "",
            "registered_at_ms": v.registered_at_ms if v else None,
            "credit": v.balance if v else 0,
            "credits_granted": v.granted if v else 0,
            "credits_revoked": v.revoked if v else 0,
            "results_validated": v.validated if v else 0,
            "ledger_entries": len(v.entries) if v else 0,
            "credit_series": [
                {"index": i, "time_ms": t, "credit": b} for i, t, b in thin(v.series if v else [])
            ],
            "work": work,
        }

    @router.get("/v1/ledger/volunteers/{key}/entries", tags=["ledger"])
    async def volunteer_entries(
        key: str,
        limit: Annotated[int, Query(ge=1, le=RECORDS_PAGE)] = 20,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> dict[str, Any]:
        """The ledger entries that name this key and lie within the latest signed
        checkpoint, newest first, decoded; verify each with ``/v1/ledger/proof/inclusion``."""
        k = _key(key)
        await updated()
        v = view.volunteer(k)
        cp = view.checkpoint
        size = cp[0] if cp else 0
        mine = [i for i in reversed(v.entries) if i < size] if v else []
        page = mine[cursor : cursor + limit]

        def read() -> list[dict[str, Any]]:
            with view.open() as store:
                return [record_json(i, *_leaf_and_data(store, i)) for i in page]

        rows = await anyio.to_thread.run_sync(read)
        nxt = cursor + len(page)
        return {
            "volunteer": key,
            "tree_size": size,
            "records": rows,
            "pending": (len(v.entries) - len(mine)) if v else 0,
            "next": nxt if nxt < len(mine) else None,
        }

    # -- lab JSON ------------------------------------------------------------------------

    @router.get("/v1/jobs/{job}/series", tags=["labs"])
    async def job_series(
        job: Annotated[str, PathParam(max_length=128)],
        request: Request,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
        limit: Annotated[int, Query(ge=1, le=SERIES_PAGE)] = 8,
    ) -> dict[str, Any]:
        """Per trajectory, the observables (Q, RMSD, energy, Rg) of its validated
        generations against the step, at most 1,000 points each; ``next`` pages on."""
        lab = await svc.access.lab(request)
        trajs, total, _digest, _engine = await svc.call(
            _job_trajectories, lab, job, cursor, limit, request=request
        )
        store = await svc.store()
        page = sorted(trajs)

        def read() -> list[dict[str, Any]]:
            out = []
            for run, clone in page:
                gens = _contiguous(trajs[(run, clone)])
                parts = [store._arrays(rep) for _g, rep in gens]
                row: dict[str, Any] = {
                    "run": run,
                    "clone": clone,
                    "generations": len(gens),
                    "steps": [],
                    "observables": {},
                }
                if parts:
                    steps = np.concatenate([p["frame_steps"] for p in parts])
                    row["steps"] = [int(x) for x in _downsample(steps)]
                    names = sorted(k[4:] for k in parts[0] if k.startswith("obs_"))
                    row["observables"] = {
                        n: _downsample(np.concatenate([p[f"obs_{n}"] for p in parts]))
                        for n in names
                    }
                out.append(row)
            return out

        rows = await anyio.to_thread.run_sync(read)
        nxt = cursor + len(page)
        return {"job": job, "trajectories": rows, "next": nxt if nxt < total else None}

    @router.get("/v1/jobs/{job}/structure", tags=["labs"], response_class=Response)
    async def job_structure(
        job: Annotated[str, PathParam(max_length=128)],
        request: Request,
        which: Annotated[Literal["best", "current", "trajectory"], Query()] = "best",
        run: Annotated[int, Query(ge=0, le=10**6)] = 0,
        clone: Annotated[int, Query(ge=0, le=10**6)] = 0,
    ) -> Response:
        """A PDB of the job's best structure (lowest RMSD to the reference, else the last frame
        of the longest trajectory, as in the results) among its
        validated frames, of one trajectory's current (latest validated) state, or of one
        trajectory's validated frames (``which=trajectory``: at most 100 MODELs)."""
        lab = await svc.access.lab(request)
        trajs, _total, digest, engine = await svc.call(
            _job_trajectories, lab, job, 0, None, request=request
        )
        coord_store = await svc.store()
        if which != "best" and (run, clone) not in trajs:
            raise NotFound(f"the job has no trajectory run {run} clone {clone}", code="not_found")

        def build() -> str:
            system = decode_system(coord_store.system(digest))
            if which != "best":
                gens = _contiguous(trajs[(run, clone)])
                if not gens:
                    raise NotFound("that trajectory has no validated work yet", code="not_found")
            if which == "trajectory":
                parts = [coord_store._arrays(rep, ["frames", "frame_steps"]) for _g, rep in gens]
                frames = np.concatenate([p["frames"] for p in parts])
                steps = np.concatenate([p["frame_steps"] for p in parts])
                pick = np.unique(np.linspace(0, len(frames) - 1, TRAJECTORY_FRAMES).round())
                models = []
                for n, i in enumerate(pick.astype(int), 1):
                    atoms = [
                        ln
                        for ln in pdb_text(system, frames[i], "").splitlines()
                        if ln.startswith(("ATOM", "HETATM", "TER"))
                    ]
                    models.append("\n".join([f"MODEL     {n:4d}", *atoms, "ENDMDL"]))
                first, last = int(steps[int(pick[0])]), int(steps[int(pick[-1])])
                head = (
                    f"REMARK   1 foldnet job {job[:16]} run{run}_clone{clone}: {len(pick)} "
                    f"frames, steps {first} to {last}"
                )
                return "\n".join([head, *models, "END", ""])
            if which == "current":
                gen, rep = gens[-1]
                a = coord_store._arrays(rep, ["positions"])
                title = f"foldnet job {job[:16]} run{run}_clone{clone} gen {gen} current state"
                return pdb_text(system, a["positions"][-1], title)
            # the results' criterion (coordinator.bundle: lowest RMSD to the reference, else
            # the last frame of the longest trajectory), scored on the observables alone;
            # only the winner's frames are read
            col = f"obs_{RMSD_COLUMN.get(engine, '')}"
            best: tuple[float, str, int, int] | None = None
            for (r, cl), gens in sorted(trajs.items()):
                for gen, rep in _contiguous(gens):
                    a = coord_store.result_arrays(rep)
                    values = a.get(col)
                    if values is None or not np.isfinite(values).any():
                        continue
                    i, value = int(np.nanargmin(values)), float(np.nanmin(values))
                    if best is None or value < best[0]:
                        step = int(a["frame_steps"][i])
                        label = f"run{r}_clone{cl} gen {gen} step {step}: lowest {col[4:]}"
                        best = (value, f"{label} {value:.3f} A", rep, i)
            if best is None:  # no reference: the last frame of the longest trajectory
                longest = max((_contiguous(g) for _k, g in sorted(trajs.items())), key=len)
                if longest:
                    gen, rep = longest[-1]
                    n = len(coord_store.result_arrays(rep)["frame_steps"])
                    why = f"gen {gen}: the last frame of the longest trajectory"
                    best = (0.0, why, rep, n - 1)
            if best is None or best[3] < 0:
                raise NotFound("the job has no validated work yet", code="not_found")
            frame = coord_store.result_arrays(best[2])["frames"][best[3]]
            return pdb_text(system, frame, f"foldnet best structure: {best[1]}")

        text = await anyio.to_thread.run_sync(build)
        return Response(text, media_type="chemical/x-pdb")

    return router


def _leaf_and_data(store: Any, index: int) -> tuple[bytes, bytes]:
    rows = list(store.iter_entries(index, index + 1))
    if not rows:
        raise Unavailable(f"ledger entry {index} cannot be read", code="unavailable")
    _i, leaf, data = rows[0]
    return leaf, data
