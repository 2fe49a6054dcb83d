"""Pure ASGI middleware: requests in flight per client address, request body limits and
timeouts, and request metrics.

Body limits are enforced before any handler runs: a declared ``Content-Length`` over the
limit is answered 413 at once; a body without one is read up to the limit and refused
past it, so no handler ever sees (or stores) part of an oversized upload. A body must
arrive within ``timeout_for(limit)`` seconds (408 otherwise), and a client that goes away
mid-body is simply forgotten. Paths the app streams itself (result uploads: read only
after the request is authenticated, with a limit set by what it answers) get only the
``Content-Length`` check here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from foldnet.errors import BadRequest, FoldnetError, RateLimited, TimedOut, TooLarge
from foldnet.http_errors import error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_error(send: Send, error: FoldnetError) -> None:
    """Answer ``error`` from raw ASGI, with the status, code and body of
    :func:`foldnet.http_errors.error_response` (the one mapping)."""
    answer = error_response(error)
    await send(
        {
            "type": "http.response.start",
            "status": answer.status_code,
            "headers": answer.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": answer.body})


class InFlightLimit:
    """At most ``limit`` requests at once from one client (``who`` maps its address to the
    unit counted: an IPv4 address, an IPv6 /64); more are answered 429 at once."""

    def __init__(self, app: ASGIApp, limit: int, who: Callable[[str], str]) -> None:
        self.app = app
        self.limit = limit
        self.who = who
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        who = self.who(client[0] if client else "?")
        if self.in_flight[who] >= self.limit:
            await send_error(
                send,
                RateLimited(
                    f"more than {self.limit} requests at once from {who}; expected a client to "
                    "wait for its answers (or its uploads to finish) before sending more",
                    code="too_many_requests",
                    headers={"Retry-After": "1"},
                ),
            )
            return
        self.in_flight[who] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[who] -= 1
            if self.in_flight[who] <= 0:
                del self.in_flight[who]


class BodyLimit:
    """Refuse request bodies over ``limit_for(method, path)`` bytes with a 413 JSON error,
    and bodies slower than ``timeout_for(limit)`` seconds with a 408. Requests for which
    ``streamed(method, path)`` is true pass with only their ``Content-Length`` checked."""

    def __init__(
        self,
        app: ASGIApp,
        limit_for: Callable[[str, str], int],
        timeout_for: Callable[[int], float],
        streamed: Callable[[str, str], bool] = lambda _m, _p: False,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.timeout_for = timeout_for
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, BadRequest("invalid Content-Length"))
                    return
        if declared is not None and declared > limit:
            await send_error(
                send, TooLarge(f"the body is {declared:,} bytes; the limit here is {limit:,}")
            )
            return
        if self.streamed(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        timeout = self.timeout_for(limit)
        with anyio.move_on_after(timeout) as timer:
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away mid-body: nobody to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await send_error(
                        send, TooLarge(f"the body is over the limit of {limit:,} bytes")
                    )
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
        if timer.cancelled_caught:
            await send_error(
                send,
                TimedOut(
                    f"the body did not arrive within {timeout:.0f} s ({size:,} bytes came)",
                    code="body_timeout",
                ),
            )
            return
        body = b"".join(chunks)
        await self.app(
            scope,
            _replay([{"type": "http.request", "body": body, "more_body": False}], receive),
            send,
        )


def _replay(messages: list[Message], then: Receive) -> Receive:
    """The body already read, then the real channel: a streaming answer listens on it for
    the client's disconnect, and must not be told of one that did not happen."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


#: Latency histogram buckets, seconds (Prometheus ``le`` labels).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters and a latency histogram per route, rendered in Prometheus' text format."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.latency_count: dict[str, int] = {}
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.latency.setdefault(route, [0] * len(BUCKETS))
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                counts[i] += 1
        self.latency_sum[route] = self.latency_sum.get(route, 0.0) + seconds
        self.latency_count[route] = self.latency_count.get(route, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data (what a front-end process reports to the coordinator)."""
        return {
            "requests": [[*k, n] for k, n in self.requests.items()],
            "latency": {r: list(c) for r, c in self.latency.items()},
            "sum": dict(self.latency_sum),
            "count": dict(self.latency_count),
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> Metrics:
        return cls.merged([snap])

    @classmethod
    def merged(cls, snaps: list[dict[str, Any]]) -> Metrics:
        """The counters of several processes added up."""
        m = cls()
        for snap in snaps:
            for method, route, status, n in snap["requests"]:
                key = (method, route, int(status))
                m.requests[key] = m.requests.get(key, 0) + n
            for route, counts in snap["latency"].items():
                mine = m.latency.setdefault(route, [0] * len(BUCKETS))
                for i, n in enumerate(counts):
                    mine[i] += n
            for route, v in snap["sum"].items():
                m.latency_sum[route] = m.latency_sum.get(route, 0.0) + v
            for route, v in snap["count"].items():
                m.latency_count[route] = m.latency_count.get(route, 0) + v
        return m

    def render(self, gauges: dict[str, tuple[str, dict[str, float] | float]]) -> str:
        out = [
            "# HELP foldnet_http_requests_total HTTP requests by method, route and status.",
            "# TYPE foldnet_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.requests.items()):
            out.append(
                f'foldnet_http_requests_total{{method="{method}",route="{route}",'
                f'status="{status}"}} {n}'
            )
        out += [
            "# HELP foldnet_http_request_duration_seconds Time to answer, by route.",
            "# TYPE foldnet_http_request_duration_seconds histogram",
        ]
        for route, counts in sorted(self.latency.items()):
            for b, n in zip(BUCKETS, counts, strict=True):
                out.append(
                    f'foldnet_http_request_duration_seconds_bucket{{route="{route}",le="{b}"}} {n}'
                )
            total = self.latency_count[route]
            out.append(
                f'foldnet_http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {total}'
            )
            out.append(
                f'foldnet_http_request_duration_seconds_sum{{route="{route}"}} '
                f"{self.latency_sum[route]:.6f}"
            )
            out.append(f'foldnet_http_request_duration_seconds_count{{route="{route}"}} {total}')
        for name, (help_text, value) in gauges.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} gauge")
            if isinstance(value, dict):
                for label, v in sorted(value.items()):
                    out.append(f'{name}{{state="{label}"}} {v:g}')
            else:
                out.append(f"{name} {value:g}")
        return "\n".join(out) + "\n"


#: The header that names the front-end process that answered (``foldnet serve --workers N``).
FRONT_END_HEADER = "x-foldnet-front-end"


class MetricsMiddleware:
    """Counts every request; ``front_end``: this process's number among several front-ends,
    named in every answer's ``X-Foldnet-Front-End`` header (which process answered what)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, front_end: int | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self._header = (
            None if front_end is None else (FRONT_END_HEADER.encode(), str(front_end).encode())
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 499  # no answer: the client went away first (nginx's "client closed request")

        header = self._header

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if header is not None:
                    message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - t0)
