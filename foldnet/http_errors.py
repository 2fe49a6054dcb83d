"""The one mapping from errors to HTTP answers, for every router of every foldnet service.

Every error answer has one JSON shape, ``{"error": code, "detail": text}``: ``code`` is stable
(clients branch on it), ``detail`` says what was expected, what came, and what to do. The
status and code come from the error's class (:mod:`foldnet.errors`); anything that is not a
:class:`~foldnet.errors.FoldnetError` is a bug, answered 500 with a body that says nothing of
the server's insides (the traceback goes to the server's log only).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from foldnet.errors import FoldnetError

__all__ = ["error_body", "error_response", "install_error_handlers"]

log = logging.getLogger("foldnet.http")

#: Codes of the statuses the framework itself answers (unknown route, wrong method ...).
_FRAMEWORK_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def error_response(error: FoldnetError) -> JSONResponse:
    """The answer to ``error``: its class's status, its code, its message."""
    return JSONResponse(
        error_body(error.code, error.detail),
        status_code=error.status,
        headers=dict(error.headers) if error.headers else None,
    )


def _validation_detail(errors: Any) -> str:
    parts = []
    for e in list(errors)[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        got = e.get("input")
        shown = repr(got)[:60] if got is not None and not isinstance(got, dict | list) else ""
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" + (f" (got {shown})" if shown else ""))
    return "; ".join(parts) or "the request does not match the schema"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""

    @app.exception_handler(FoldnetError)
    async def _ours(_r: Request, e: FoldnetError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        body = error_body("invalid_request", _validation_detail(e.errors()))
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, e: StarletteHTTPException) -> JSONResponse:
        code = _FRAMEWORK_CODES.get(e.status_code, "error")
        return JSONResponse(
            error_body(code, str(e.detail)),
            status_code=e.status_code,
            headers=dict(e.headers or {}),
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(_r: Request, _e: ClientDisconnect) -> JSONResponse:
        # nobody reads this answer; it only keeps a client's hang-up out of the error log
        body = error_body("disconnected", "the client went away before its body ended")
        return JSONResponse(body, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(r: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", r.method, r.url.path)
        body = error_body("internal", "internal error; the operator has the details")
        return JSONResponse(body, status_code=500)
