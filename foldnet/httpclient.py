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
- **bounded answers**: every answer is read up to a limit (:meth:`HttpClient.get_bytes`:
  the caller's; otherwise ``max_answer_bytes``, if set; an error answer's first 64 KiB), after
  decompression, and a server that sends more is stopped there;
- **a deadline** (``deadline_s``, if set) on each try as a whole: a server that answers a
  byte at a time, each well within the read timeout, is given up on all the same. The try
  then runs on a thread of its own that is left to end at its next read, its connection
  closed under it.

Every httpx exception is translated here (``raise ... from e``), never passed on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import threading
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
#: What is read of an error answer (its detail is cut to 500 characters anyway).
_ERROR_BYTES = 65536
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
        doc = json.loads(body[:_ERROR_BYTES])
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


class _TooLongError(InvalidAnswerError):
    """An answer longer than the limit it was read with (translated by the caller, who
    knows which limit it was); ``declared``: the length its header declared, if it did."""

    def __init__(self, *args: object, limit: int = 0, declared: int | None = None) -> None:
        super().__init__(*args or (f"the answer is longer than the {limit:,} bytes allowed",))
        self.limit = limit
        self.declared = declared


class _OverdueError(UnreachableError):
    """A try that did not end within its deadline (translated by the retry loop)."""


@dataclass(slots=True)
class HttpClient:
    """One pooled connection to one server. Not thread-safe: one caller at a time.

    ``timeout_s`` bounds each connect, read and write; ``deadline_s`` (None: no bound) a
    whole try, plus a second for every ``min_upload_rate`` bytes of the request's body;
    ``max_answer_bytes`` (None: no bound) the body of an answer of :meth:`request` and
    :meth:`json`."""

    base_url: str
    timeout_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)
    transport: httpx.BaseTransport | None = None
    follow_redirects: bool = False
    sleep: Callable[[float], None] = time.sleep
    report: Callable[[str], None] | None = None
    rng: random.Random = field(default_factory=random.Random)
    max_answer_bytes: int | None = None
    deadline_s: float | None = None
    min_upload_rate: float = 65536.0
    _http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = check_base_url(self.base_url)
        self._http = self._new_client()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
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

        The whole body is read, up to ``max_answer_bytes`` (more is an
        :class:`InvalidAnswerError`: the server answered outside the protocol).
        """
        try:
            return self._send(method, path, content, headers, params, sign, allow)
        except _TooLongError as e:
            raise InvalidAnswerError(
                f"{method} {path}: the answer is longer than the {e.limit:,} bytes allowed; "
                "expected what the protocol answers (is the URL right?)"
            ) from None

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
        try:
            r = self._send("GET", path, b"", None, None, sign, allow, limit=limit)
        except _TooLongError as e:
            where = f"{self.base_url}/{path.lstrip('/')}"
            raise TooLarge(
                f"{where} is larger than the {limit:,} bytes allowed"
                if e.declared is None
                else f"{where} is {e.declared:,} bytes, more than the {limit:,} allowed"
            ) from None
        return r.status_code, (r.content if r.status_code < 400 else b"")

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
        limit: int | None = None,
    ) -> httpx.Response:
        """The answer, read (its body up to ``limit``, else ``max_answer_bytes``)."""
        idempotent = method.upper() in _IDEMPOTENT
        attempts = max(1, self.retry.attempts)
        seconds = (
            None
            if self.deadline_s is None
            else self.deadline_s + len(content) / max(1.0, self.min_upload_rate)
        )
        most = self.max_answer_bytes if limit is None else limit
        for attempt in range(attempts):
            last = attempt == attempts - 1
            sent = dict(sign(method, path, content)) if sign is not None else {}
            sent |= dict(headers or {})  # the caller's, on every try
            try:
                r = self._within(
                    seconds,
                    functools.partial(self._exchange, method, path, content, sent, params, most),
                )
            except _OverdueError:
                why = f"{method} {path}: no complete answer within {seconds:.0f} s"
                if not idempotent:
                    raise UnreachableError(f"{why}; it may or may not have been applied") from None
                retry_after = None
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
                        tries = f" (tried {attempt + 1} times)" if retryable and attempt else ""
                        raise error_for_status(
                            status,
                            f"{method} {path} answered {status} ({code or 'error'}: {detail})"
                            + tries,
                            code=code,
                        )
                    return r
                why, retry_after = f"{method} {path} answered {status}", _retry_after(r)
            if last:
                raise UnreachableError(
                    f"{why}; is the server running and the URL right? (tried {attempts} times)"
                )
            wait = self.retry.delay(attempt, retry_after, self.rng)
            if self.report is not None:
                self.report(f"{why}; retrying in {wait:.0f} s")
            self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(
        self,
        method: str,
        path: str,
        content: bytes,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
        limit: int | None,
    ) -> httpx.Response:
        """One try: send, and read the answer (an error's first :data:`_ERROR_BYTES`, any
        other up to ``limit``: more raises :class:`_TooLongError`)."""
        req = self._http.build_request(
            method, path, content=content or None, headers=headers, params=params
        )
        r = self._http.send(req, stream=True)
        try:
            failed = r.status_code >= 400
            body = _read(r, _ERROR_BYTES if failed else limit, cut=failed)
        finally:
            r.close()
        # the body is handed on decoded, with its own length (headers as bytes: as they came)
        kept = [(k, v) for k, v in r.headers.raw if k.lower() not in _BODY_HEADERS]
        return httpx.Response(
            r.status_code, headers=kept, content=body, request=req, extensions=r.extensions
        )

    def _within(
        self, seconds: float | None, exchange: Callable[[], httpx.Response]
    ) -> httpx.Response:
        """``exchange()``, or :class:`_OverdueError` if it has not ended in ``seconds``: then it is
        left to end on its thread (at its next read, at the latest: its connection is
        closed under it) and later tries use a new connection pool."""
        if seconds is None:
            return exchange()
        done: list[httpx.Response | BaseException] = []

        def run() -> None:
            try:
                done.append(exchange())
            except BaseException as e:  # handed to the caller's thread, raised there
                done.append(e)

        helper = threading.Thread(target=run, name="foldnet-http-try", daemon=True)
        helper.start()
        helper.join(seconds)
        if not done:
            stale, self._http = self._http, self._new_client()
            if self.transport is None:  # (a caller's transport is the caller's to close)
                with contextlib.suppress(httpx.HTTPError, OSError, RuntimeError):
                    stale.close()
            raise _OverdueError(f"no complete answer within {seconds:.0f} s")
        (outcome,) = done
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


#: Headers that describe the body as it travelled, not as it is handed on.
_BODY_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


def _read(r: httpx.Response, limit: int | None, *, cut: bool) -> bytes:
    """The body of ``r`` (decoded) up to ``limit`` bytes: beyond it, cut there (``cut``) or
    raise :class:`_TooLongError` without reading on."""
    if limit is not None and not cut:
        declared = r.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _TooLongError(limit=limit, declared=int(declared))
    buf = bytearray()
    for chunk in r.iter_bytes():
        buf += chunk
        if limit is not None and len(buf) > limit:
            if not cut:
                raise _TooLongError(limit=limit)
            del buf[limit:]
            break
    return bytes(buf)
