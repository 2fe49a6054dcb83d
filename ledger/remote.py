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

import json
import time
from urllib.parse import urlsplit

import httpx

from ledger.errors import RemoteError, TileFormatError

__all__ = ["HttpFetcher", "check_url"]

_RETRY_STATUS = frozenset({429, 502, 503, 504})
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
        raise RemoteError(f"{url!r} is not a valid URL: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise RemoteError(
            f"{url!r}: only http:// and https:// URLs can be audited, not {parts.scheme}://; "
            "give a local export as a path"
        )
    if not parts.hostname:
        raise RemoteError(f"{url!r} has no host; expected e.g. http://127.0.0.1:8000/v1/ledger")
    if parts.query or parts.fragment:
        raise RemoteError(
            f"{url!r} has a query or fragment; give the log's prefix URL, "
            "e.g. http://127.0.0.1:8000/v1/ledger"
        )
    return url.rstrip("/")


class HttpFetcher:
    """Fetches tlog-tiles resources below a URL prefix with one pooled HTTP client.

    ``timeout`` is per request (connect, read, write: each at most that long); ``retries``
    extra attempts follow a connection failure, a timeout or a 429/502/503/504, after
    ``backoff_s``, doubled each time. ``transport`` is for tests (an ``httpx`` mock transport).
    Not thread-safe: one auditor at a time.
    """

    __slots__ = ("_backoff", "_base", "_client", "_retries")

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base = check_url(url)
        self._retries = max(0, retries)
        self._backoff = backoff_s
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=5,
            headers={"Accept-Encoding": "gzip, identity", "User-Agent": "foldnet-auditor"},
            transport=transport,
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
        url = f"{self._base}/{rel}"
        attempt = 0
        while True:
            try:
                return self._get_once(url, limit)
            except _RetryableError as e:
                if attempt >= self._retries:
                    tries = f" (tried {attempt + 1} times)" if attempt else ""
                    raise RemoteError(f"{e}{tries}") from e.__cause__
                time.sleep(self._backoff * (2**attempt))
                attempt += 1

    def _get_once(self, url: str, limit: int) -> bytes | None:
        try:
            with self._client.stream("GET", url) as r:
                if r.status_code in _NOT_FOUND:
                    return None
                if r.status_code != 200:
                    message = f"{url}: the server answered HTTP {r.status_code}{_detail(r)}"
                    if r.status_code in _RETRY_STATUS:
                        raise _RetryableError(message)
                    raise RemoteError(message)
                declared = r.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise TileFormatError(
                        f"{url} is {int(declared):,} bytes, more than the {limit:,} allowed"
                    )
                buf = bytearray()
                for chunk in r.iter_bytes():  # decompressed: the limit holds after gzip too
                    buf += chunk
                    if len(buf) > limit:
                        raise TileFormatError(f"{url} is larger than the {limit:,} bytes allowed")
                return bytes(buf)
        except httpx.TimeoutException as e:
            raise _RetryableError(f"{url}: no answer in time ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise _RetryableError(
                f"cannot reach {url}: {e or type(e).__name__}; is the server running and the "
                "URL right?"
            ) from e
        except httpx.HTTPError as e:  # too many redirects, a body that does not decode ...
            raise RemoteError(f"{url}: {type(e).__name__}: {e}") from e
        except httpx.InvalidURL as e:
            raise RemoteError(f"{url} is not a valid URL: {e}") from e


class _RetryableError(Exception):
    """A failure worth another attempt; becomes a :class:`RemoteError` when attempts run out."""


def _detail(r: httpx.Response) -> str:
    """The server's explanation: its JSON ``detail``, or the start of its text."""
    body = b""
    try:
        for chunk in r.iter_bytes():
            body += chunk
            if len(body) >= 2000:
                break
    except httpx.HTTPError:
        return ""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "detail" in data:
            return f" ({data.get('error', 'error')}: {str(data['detail'])[:300]})"
    except ValueError:
        pass
    text = body.decode("utf-8", "replace").strip()
    return f" ({text[:300]})" if text else ""
