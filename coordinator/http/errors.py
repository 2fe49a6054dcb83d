"""Every error the service answers with has one JSON shape: ``{"error": code, "detail": text}``.

``code`` is stable (clients branch on it), ``detail`` says what was expected, what came, and
what to do. The project's exception tree maps to status codes here, in one place; anything
unexpected is a 500 whose body says nothing about the server's insides (the traceback goes
to the server's log only).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from coordinator.classes import ClassRefusedError
from coordinator.errors import CoordinatorError, ProtocolError, SubmissionError
from coordinator.http.loop import CommitFailedError
from ledger.errors import LedgerError
from sims.errors import SimsError
from worker.errors import ResultError, WireError, WorkerError

log = logging.getLogger("foldnet.http")

_STATUS_CODES = {
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


#: The project's exceptions and their answers (a handler is chosen by the exception's class
#: hierarchy, most specific first, so the order here does not matter).
_MAPPED: dict[type[Exception], tuple[int, str]] = {
    SubmissionError: (422, "invalid_job"),
    ClassRefusedError: (422, "unknown_class"),
    ProtocolError: (409, "conflict"),
    WireError: (422, "invalid_body"),
    ResultError: (422, "invalid_result"),
    SimsError: (422, "invalid_input"),
    WorkerError: (422, "invalid_input"),
    CoordinatorError: (400, "bad_request"),
    LedgerError: (400, "bad_request"),
}


class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, human detail."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, detail), status_code=status, headers=headers)


def _validation_detail(errors: Any) -> str:
    parts = []
    for e in list(errors)[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        got = e.get("input")
        shown = repr(got)[:60] if got is not None and not isinstance(got, dict | list) else ""
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" + (f" (got {shown})" if shown else ""))
    return "; ".join(parts) or "the request does not match the schema"


def _plain_handler(status: int, code: str) -> Any:
    async def handler(_r: Request, e: Exception) -> JSONResponse:
        return error_response(status, code, str(e))

    return handler


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into the JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api(_r: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.detail, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_detail(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, e: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(e.status_code, "error")
        return error_response(e.status_code, code, str(e.detail), dict(e.headers or {}))

    for kind, (status, code) in _MAPPED.items():
        app.add_exception_handler(kind, _plain_handler(status, code))

    @app.exception_handler(ClientDisconnect)
    async def _gone(_r: Request, _e: ClientDisconnect) -> JSONResponse:
        # nobody reads this answer; it only keeps a client's hang-up out of the error log
        return error_response(400, "disconnected", "the client went away before its body ended")

    @app.exception_handler(CommitFailedError)
    async def _commit(_r: Request, e: CommitFailedError) -> JSONResponse:
        return error_response(503, "unavailable", f"{e}; nothing of it was kept: retry")

    @app.exception_handler(Exception)
    async def _unexpected(r: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", r.method, r.url.path)
        return error_response(500, "internal", "internal error; the operator has the details")
