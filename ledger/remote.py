"""Reading a log's C2SP tlog-tiles over HTTP: what ``foldnet audit https://...`` uses.

:class:`HttpFetcher` is a :class:`~ledger.tiles.TileFetcher`: a
:class:`~ledger.tiles.TileReader` over it reads a live server (:mod:`ledger.http`, or any
tlog-tiles log) exactly as it reads an export folder, so the auditor runs the same checks on
both. Only ``http`` and ``https`` URLs are accepted; every answer is size-limited (the reader
passes the largest size a resource may have) and every request has a timeout.

Errors, as the auditor needs them: a resource the server does not have (HTTP 404 or 410) is
``None`` (the reader reports it as a damaged layout, a discrepancy); one larger than its limit
is a :class:`~ledger.errors.TileFormatError`; an unreachable server, a timeout or any other
HTTP status is a :class:`~ledger.errors.RemoteError`, which stops the audit (it says nothing
about the log). Connection failures, timeouts and 429/502/503/504 answers are retried a few
times first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from foldnet.errors import FoldnetError, TooLarge
from foldnet.httpclient import HttpClient, RetryPolicy
from ledger.errors import ConfigError, RemoteError, TileFormatError

__all__ = ["HttpFetcher", "check_url"]

_NOT_FOUND = frozenset({404, 410})


def check_url(url: str) -> str:
    """``url`` without trailing slashes, if it is an absolute ``http(s)://`` URL of a server.

    Refuses other schemes (``file://``, ``ftp://`` ...): the auditor reads local exports by
    path, and nothing else should make it open a connection. A query or fragment is refused
    too, since resource paths are appended to the URL.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as e:
        raise ConfigError(f"{url!r} is not a valid URL: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{url!r}: only http:// and https:// URLs can be audited, not {parts.scheme}://; "
            "give a local export as a path"
        )
    if not parts.hostname:
        raise ConfigError(f"{url!r} has no host; expected e.g. http://127.0.0.1:8000/v1/ledger")
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{url!r} has a query or fragment; give the log's prefix URL, "
            "e.g. http://127.0.0.1:8000/v1/ledger"
        )
    return url.rstrip("/")


class HttpFetcher:
    """Fetches tlog-tiles resources below a URL prefix with one pooled HTTP client.

    A :class:`~foldnet.httpclient.HttpClient`: ``timeout`` is per request (connect, read,
    write: each at most that long); ``retries`` extra attempts follow a connection failure,
    a timeout or a 429/502/503/504, after ``backoff_s``, doubled each time (with jitter).
    ``transport`` is for tests (an ``httpx`` mock transport). Not thread-safe.
    """

    __slots__ = ("_base", "_client")

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.25,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._base = check_url(url)
        self._client = HttpClient(
            self._base,
            timeout_s=timeout,
            retry=RetryPolicy(attempts=1 + max(0, retries), backoff_s=backoff_s),
            headers={"Accept-Encoding": "gzip, identity", "User-Agent": "foldnet-auditor"},
            transport=transport,
            sleep=sleep,
            follow_redirects=True,
        )

    @property
    def name(self) -> str:
        return self._base

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, rel: str, *, limit: int) -> bytes | None:
        """The resource at ``<prefix>/<rel>``; ``None`` on 404/410. See the module docstring."""
        try:
            status, body = self._client.get_bytes(f"/{rel}", limit=limit, allow=_NOT_FOUND)
        except TooLarge as e:
            raise TileFormatError(str(e)) from e
        except FoldnetError as e:  # unreachable, another status, off-protocol: stop the audit
            raise RemoteError(f"{self._base}/{rel}: {e}") from e
        return None if status in _NOT_FOUND else body
