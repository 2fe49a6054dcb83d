"""The volunteers' hot routes, answered without the framework's per-request machinery.

Every cycle of a busy volunteer is one ``POST /v1/results/{replica}?next=1`` (or a spot
check's ``POST /v1/checks/{check}?next=1``, or a ``POST /v1/work``). FastAPI answers each by
walking its router, solving the endpoint's dependencies, validating its parameters and
running it inside an exit stack: measured under load, about a fifth of the service's CPU per
cycle went there (``benchmarks.http``). These handlers take a request, read their own body
and check everything themselves, so :class:`HotRoutes` (pure ASGI, inside the body-limit,
in-flight and metrics middleware, so those hold as before) calls the very same endpoint
functions directly for the requests it fully understands: the method and path exactly, the
path's integer in its declared range, and a query string that is empty or one ``next``
within its range. Anything else (``/v1/results/abc``, ``?next=99``, another parameter) goes
on to FastAPI, which answers it as it always did, validation errors included; so the
routes stay FastAPI's routes (their OpenAPI schema, their ``422``), and this is only a
shorter way to the same handler. Errors are answered by the app's own exception handlers
(:mod:`foldnet.http_errors`), looked up as Starlette's ``ExceptionMiddleware`` does;
anything without one goes up to the server-error middleware, as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from coordinator.http.middleware import ASGIApp, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class IntParam:
    """An integer parameter's name in the handler, its name in the URL, and its range: the
    one declaration that FastAPI's annotation and the hot route both read."""

    name: str
    lo: int
    hi: int
    alias: str = ""
    default: int = 0

    @property
    def url_name(self) -> str:
        return self.alias or self.name

    def parse(self, text: str) -> int | None:
        """The value of ``text`` when it is plain ASCII digits within range; else None (the
        framework answers it, with its own error)."""
        if not (0 < len(text) <= len(str(self.hi)) and text.isascii() and text.isdigit()):
            return None
        value = int(text)
        return value if self.lo <= value <= self.hi else None


@dataclass(frozen=True, slots=True)
class RouteName:
    """What the metrics middleware reads off ``scope["route"]``: the path template."""

    path: str


@dataclass(frozen=True, slots=True)
class HotRoute:
    method: str
    prefix: str  # the template up to its one integer segment (or the whole path)
    template: str
    endpoint: Endpoint
    path_param: IntParam | None
    query: IntParam | None


class HotRouteTable:
    """The routes :class:`HotRoutes` answers; filled when the routers are built (after the
    middleware is declared, before the app serves its first request)."""

    def __init__(self) -> None:
        self.exact: dict[tuple[str, str], HotRoute] = {}
        self.prefixed: dict[tuple[str, str], HotRoute] = {}

    def add(
        self,
        method: str,
        template: str,
        endpoint: Endpoint,
        *,
        path_param: IntParam | None = None,
        query: IntParam | None = None,
    ) -> None:
        """Answer ``method template`` with ``endpoint``; ``template`` ends in
        ``{path_param.name}`` if it has a path parameter."""
        if path_param is not None:
            prefix = template[: -len("{" + path_param.name + "}")]
            route = HotRoute(method, prefix, template, endpoint, path_param, query)
            self.prefixed[(method, prefix)] = route
        else:
            self.exact[(method, template)] = HotRoute(
                method, template, template, endpoint, None, query
            )

    def match(self, method: str, path: str, query: bytes) -> tuple[HotRoute, dict[str, int]] | None:
        """The route and the handler's arguments, or None (the framework answers)."""
        route = self.exact.get((method, path))
        args: dict[str, int] = {}
        if route is None:
            head, sep, last = path.rpartition("/")
            if not sep:
                return None
            route = self.prefixed.get((method, head + "/"))
            if route is None or route.path_param is None:
                return None
            value = route.path_param.parse(last)
            if value is None:
                return None
            args[route.path_param.name] = value
        if query:
            if route.query is None:
                return None
            name, eq, text = query.decode("latin-1").partition("=")
            if name != route.query.url_name or not eq:
                return None
            value = route.query.parse(text)
            if value is None:
                return None
            args[route.query.name] = value
        elif route.query is not None:
            args[route.query.name] = route.query.default
        return route, args


class HotRoutes:
    """Pure ASGI: answer the routes of ``table`` by calling their endpoints directly;
    ``handlers``: the app's exception handlers (``app.exception_handlers``)."""

    def __init__(self, app: ASGIApp, table: HotRouteTable, handlers: Mapping[Any, Handler]) -> None:
        self.app = app
        self.table = table
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self.table.match(scope["method"], scope["path"], scope.get("query_string", b""))
        if found is None:
            await self.app(scope, receive, send)
            return
        route, args = found
        scope["route"] = RouteName(route.template)
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request=request, **args)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise  # the server-error middleware answers 500 and logs it, as before
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        """The app's handler for ``exc``'s class or its nearest base, but the catch-all
        ``Exception`` one (that one belongs to the server-error middleware)."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None
