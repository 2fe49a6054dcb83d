"""The one HTTP client base of foldnet: a lab's client, a volunteer's, an auditor's fetcher.

What they share, here once:

- **timeouts** on every request (connect, read, write, pool);
- **retries only for what is retryable**, with exponential backoff and full jitter: a
  connection that could not be made (any method; nothing was sent), a timeout or a dropped
  connection (idempotent methods only: a POST may have been applied), and answers 429, 502,
  503, 504 (429 and 503 for any method: the service answers them before applying anything;
  502 and 504 only for idempotent methods). ``Retry-After`` (ASCII seconds) is honoured;
- **headers kept**: the client's, the caller's and a fresh signature (``sign``) on every try;
- **error answers parsed once**: ``{"error": code, "detail": text}`` (or the start of a text
  body) becomes the :mod:`foldnet.errors` class of the status, its code kept, so a caller
  catches :class:`~foldnet.errors.NotFound` or :class:`~foldnet.errors.ClientError` and a
  command exits 2 for a 4xx and 3 for a 5xx;
- **bounded answers**: :meth:`HttpClient.get_bytes` streams a body and stops at a limit.

Every httpx exception is translated here (``raise ... from e``), never passed on.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from foldnet.errors import (
    BadRequest,
    Internal,
    TooLarge,
    Unavailable,
    error_for_status,
)

__all__ = [
    "HttpClient",
    "InvalidAnswerError",
    "RetryPolicy",
    "UnreachableError",
    "answer_json",
    "check_base_url",
    "parse_error",
]

Signer = Callable[[str, str, bytes], Mapping[str, str]]
"""``(method, path, body) -> headers``: called on every try, so each has a fresh nonce."""

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRY_ANY = frozenset({429, 503})
_RETRY_IDEMPOTENT = frozenset({502, 504})


class UnreachableError(Unavailable):
    """The server could not be reached or did not answer in time, after every retry."""

    code = "unreachable"


class InvalidAnswerError(Internal):
    """The server answered outside the protocol (not JSON where JSON was due, too large...)."""

    code = "invalid_answer"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many tries, and how long between them (exponential, full jitter, capped)."""

    attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds before try ``attempt + 1`` (``attempt`` counts from 0)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        wait = ceiling * (0.5 + 0.5 * rng.random())
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_backoff_s))
        return wait


def check_base_url(url: str) -> str:
    """``url`` without trailing slashes if it is an ``http(s)://`` URL with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as e:
        raise BadRequest(f"{url!r} is not a valid URL: {e}") from e
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadRequest(f"expected an http:// or https:// URL with a host, got {url!r}")
    return url.rstrip("/")


def answer_json(r: httpx.Response, what: str) -> Any:
    """The JSON of answer ``r`` to ``what`` (``"POST /v1/work"``); anything that is not JSON,
    or JSON nested deeper than the parser goes, is an :class:`InvalidAnswerError`."""
    try:
        return r.json()
    except RecursionError as e:
        raise InvalidAnswerError(
            f"{what}: the answer is nested too deeply; expected JSON of a few levels"
        ) from e
    except ValueError as e:  # JSONDecodeError, and bytes that are not UTF-8
        raise InvalidAnswerError(f"{what}: the answer is not JSON") from e


def parse_error(r: httpx.Response) -> tuple[str | None, str]:
    """``(code, detail)`` of an error answer: its JSON ``error`` and ``detail``, else text."""
    try:
        body = r.read()
    except httpx.HTTPError:
        body = b""
    try:
        doc = json.loads(body[:65536])
        if isinstance(doc, dict) and "detail" in doc:
            code = doc.get("error")
            return (code if isinstance(code, str) else None), str(doc["detail"])[:500]
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
        pass
    text = body[:300].decode("utf-8", "replace").strip()
    return None, text or r.reason_phrase


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after", "")
    return float(value) if value.isascii() and value.isdigit() else None


@dataclass(slots=True)
class HttpClient:
    """One pooled connection to one server. Not thread-safe: one caller at a time."""

    base_url: str
    timeout_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)
    transport: httpx.BaseTransport | None = None
    follow_redirects: bool = False
    sleep: Callable[[float], None] = time.sleep
    report: Callable[[str], None] | None = None
    rng: random.Random = field(default_factory=random.Random)
    _http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = check_base_url(self.base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout_s),
            headers=dict(self.headers),
            transport=self.transport,
            follow_redirects=self.follow_redirects,
            max_redirects=5,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        sign: Signer | None = None,
        allow: Collection[int] = (),
    ) -> httpx.Response:
        """Send, retrying what is retryable; an answer >= 400 not in ``allow`` raises.

        The whole body is read (use :meth:`get_bytes` for one that may be large).
        """
        with self._send(method, path, content, headers, params, sign, allow, stream=False) as r:
            return r

    def json(
        self,
        method: str,
        path: str,
        doc: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        sign: Signer | None = None,
    ) -> Any:
        """Send ``doc`` as JSON (if given); the answer's JSON."""
        body = b"" if doc is None else json.dumps(doc).encode()
        headers = {"content-type": "application/json"} if doc is not None else None
        r = self.request(method, path, content=body, headers=headers, params=params, sign=sign)
        return answer_json(r, f"{method} {path}")

    def get_bytes(
        self, path: str, *, limit: int, allow: Collection[int] = (), sign: Signer | None = None
    ) -> tuple[int, bytes]:
        """``(status, body)`` of a GET whose body is at most ``limit`` bytes (after gzip).

        A larger body raises :class:`~foldnet.errors.TooLarge` without reading the rest.
        """
        with self._send("GET", path, b"", None, None, sign, allow, stream=True) as r:
            if r.status_code >= 400:
                return r.status_code, b""
            declared = r.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise TooLarge(f"{self.base_url}/{path.lstrip('/')} is {int(declared):,} bytes, "
                               f"more than the {limit:,} allowed")  # fmt: skip
            buf = bytearray()
            try:
                for chunk in r.iter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        raise TooLarge(
                            f"{self.base_url}/{path.lstrip('/')} is larger than the {limit:,} "
                            "bytes allowed"
                        )
            except httpx.HTTPError as e:
                raise UnreachableError(f"GET {path}: the answer broke off: {e}") from e
            return r.status_code, bytes(buf)

    # -- the one retry loop ----------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        content: bytes,
        headers: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        sign: Signer | None,
        allow: Collection[int],
        *,
        stream: bool,
    ) -> Any:
        idempotent = method.upper() in _IDEMPOTENT
        attempts = max(1, self.retry.attempts)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            sent = dict(sign(method, path, content)) if sign is not None else {}
            sent |= dict(headers or {})  # the caller's, on every try
            try:
                req = self._http.build_request(
                    method, path, content=content or None, headers=sent, params=params
                )
                r = self._http.send(req, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                why, retry_after = f"cannot reach {self.base_url}: {e or type(e).__name__}", None
            except httpx.TimeoutException as e:
                if not idempotent:
                    raise UnreachableError(
                        f"{method} {path}: no answer in time ({type(e).__name__}); it may or "
                        "may not have been applied"
                    ) from e
                why, retry_after = f"{method} {path}: no answer in time", None
            except httpx.TransportError as e:
                if not idempotent:
                    raise UnreachableError(
                        f"{method} {path}: the connection broke ({e or type(e).__name__})"
                    ) from e
                why, retry_after = f"{method} {path}: the connection broke: {e}", None
            except (httpx.HTTPError, httpx.InvalidURL) as e:  # redirects, bad URL ...
                raise InvalidAnswerError(f"{method} {path}: {type(e).__name__}: {e}") from e
            else:
                status = r.status_code
                retryable = status in _RETRY_ANY or (idempotent and status in _RETRY_IDEMPOTENT)
                if status < 400 or status in allow or not retryable or last:
                    if status >= 400 and status not in allow:
                        code, detail = parse_error(r)
                        r.close()
                        tries = f" (tried {attempt + 1} times)" if retryable and attempt else ""
                        raise error_for_status(
                            status,
                            f"{method} {path} answered {status} ({code or 'error'}: {detail})"
                            + tries,
                            code=code,
                        )
                    return _Answer(r, stream)
                why, retry_after = f"{method} {path} answered {status}", _retry_after(r)
                r.close()
            if last:
                raise UnreachableError(
                    f"{why}; is the server running and the URL right? (tried {attempts} times)"
                )
            wait = self.retry.delay(attempt, retry_after, self.rng)
            if self.report is not None:
                self.report(f"{why}; retrying in {wait:.0f} s")
            self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


class _Answer:
    """A response as a context manager: read whole (or left to stream), always closed."""

    __slots__ = ("_r", "_stream")

    def __init__(self, r: httpx.Response, stream: bool) -> None:
        self._r = r
        self._stream = stream

    def __enter__(self) -> httpx.Response:
        if not self._stream:
            try:
                self._r.read()
            except httpx.HTTPError as e:
                self._r.close()
                raise UnreachableError(f"the answer broke off: {e}") from e
        return self._r

    def __exit__(self, *exc: object) -> None:
        self._r.close()
