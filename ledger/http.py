"""The auditor's side of the HTTP service: a read-only API of the ledger, no key needed.

:func:`ledger_router` returns a FastAPI router; the coordinator mounts it under ``/v1/ledger``.
Paths below that prefix:

==============================================  ==============================================
``GET /checkpoint``                             latest signed checkpoint with its witness
                                                cosignature lines (``text/plain``), exactly the
                                                ``checkpoint`` file of a tile export
``GET /log.vkey``                               the log's verifier key, one line (a hint: pin
                                                it out of band)
``GET /tile/<L>/<N>[.p/<W>]``                   C2SP tlog-tiles hash tile, byte-identical to
``GET /tile/entries/<N>[.p/<W>]``               :func:`~ledger.tiles.export_tiles`'s file
``GET /checkpoints[?after=A&limit=L]``          ``{"latest": S, "sizes": [...], "next": C}``:
                                                the checkpoints the log signed, L (<= 1000)
                                                sizes above A a page; then ``after=C``
``GET /checkpoints/<size>``                     that checkpoint's note, with cosignatures
``GET /entries?start=A&end=B``                  entries ``A <= i < B`` (at most 1000), base64
``GET /proof/inclusion?index=I&tree_size=N``    ``PATH(I, D[N])`` (RFC 9162 §2.1.3.1)
``GET /proof/consistency?first=M&second=N``     ``PROOF(M, D[N])`` (RFC 9162 §2.1.4.1)
==============================================  ==============================================

Everything served lies within the latest signed checkpoint (size ``S``): tiles, entries and
proofs for sizes above ``S`` are refused, so whatever a client reads can be checked against a
signature. ``tree_size`` and ``second`` default to ``S``; ``end`` to ``min(start + 1000, S)``.
Hashes and entries in JSON are standard base64 (hashes as in checkpoints and the witness's
proof files, 32 bytes each). Answers: ``{"tree_size", "start", "end", "entries": [{"index",
"leaf_hash", "data"}]}``, ``{"index", "tree_size", "leaf_hash", "hashes"}`` and ``{"first",
"second", "hashes"}``, to check with :func:`~ledger.merkle.verify_inclusion` and
:func:`~ledger.merkle.verify_consistency` against signed checkpoints' roots. And
``foldnet audit http://host/v1/ledger`` audits the live service exactly as an export.

Tiles and bundles of full width are immutable (``Cache-Control: immutable``, one year);
a partial tile never changes either, but is superseded, so it is cached an hour; the
checkpoint may be cached two seconds (C2SP: "not beyond a few seconds"). Any partial tile
within ``S`` is served, not only the one of ``S``'s width: a client with an older checkpoint
can still read its tiles. Entry bundles are not compressed here; the app may add
``GZipMiddleware`` (clients send ``Accept-Encoding: gzip``).

Errors are JSON ``{"error": code, "detail": text}``: 400 for a malformed or out-of-range
parameter, 404 for what does not exist (yet), 503 if the database cannot be read. Never a 500
for anything a client sends.

Thread safety: the coordinator's :class:`~ledger.log.Log` belongs to its writer thread (a
:class:`~ledger.store.Store` is not thread-safe, and a read through the writer's connection
would see its uncommitted transaction). So each request opens its own read-only SQLite
connection on the same file (WAL: a reader never blocks the writer and sees only committed
rows) and closes it when done; on PostgreSQL a few read-only connections are kept between
requests instead (:class:`LedgerReader`). ``locate`` is called once per request, for the log's
file path (or PostgreSQL URL). Within ``S`` every row is append-only (a checkpoint is committed
with or after the entries and hashes it covers), so a request needs no transaction to be
consistent; at worst it misses a cosignature added meanwhile.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from foldnet.errors import (
    BadRequest,
    ClientError,
    FoldnetError,
    Internal,
    NotFound,
    ServerFault,
    Unavailable,
)
from foldnet.http_errors import error_response
from ledger.backend import is_postgres_url
from ledger.errors import StorageError, TileFormatError
from ledger.merkle import consistency_proof, inclusion_proof
from ledger.store import Store
from ledger.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    parse_tile_path,
    read_entry_bundle,
    read_hash_tile,
    tile_width,
)

__all__ = ["IDLE_CONNECTIONS", "MAX_PAGE", "LedgerReader", "ledger_router"]

MAX_PAGE = 1000
"""Most entries one ``/entries`` request returns."""

IDLE_CONNECTIONS = 4
"""Read-only PostgreSQL connections a process keeps between ledger requests (FastAPI runs
sync handlers on up to 40 threads; more than a few idle ones would only hold server
backends)."""

_IMMUTABLE = "public, max-age=31536000, immutable"
_PARTIAL = "public, max-age=3600"
_CHECKPOINT = "public, max-age=2"
_TEXT = "text/plain; charset=utf-8"
_OCTETS = "application/octet-stream"
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only (str.isdigit accepts other scripts' digits)
_MAX_INT = (1 << 63) - 1  # SQLite's INTEGER

P = ParamSpec("P")


def _api(fn: Callable[P, Response]) -> Callable[P, Response]:
    """Answer errors with the one mapping of :mod:`foldnet.http_errors`, never a bare 500.

    The router does this itself, not through an app's handlers, so any app may mount it.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return fn(*args, **kwargs)
        except (ClientError, ServerFault) as e:
            return error_response(e)
        except FoldnetError as e:  # a damaged log (a format or proof error): the server's fault
            return error_response(Internal(f"the ledger is damaged: {e}", code="ledger_error"))

    return wrapper


def _int(name: str, raw: str | None, default: int | None = None) -> int:
    """A non-negative decimal query parameter, or a 400 that says what was expected."""
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"query parameter {name!r} is required", code="missing_parameter")
        return default
    if not _DIGITS.fullmatch(raw) or int(raw) > _MAX_INT:
        raise BadRequest(
            f"{name} must be a decimal integer from 0 to 2**63-1, got {raw[:40]!r}",
            code="invalid_parameter",
        )
    return int(raw)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class LedgerReader:
    """Read-only connections to the live log for requests, one request at a time each.

    A SQLite file gets a connection of its own per request (opening one costs less than a
    query). A PostgreSQL server's connection costs a round trip, authentication and a backend
    process, so up to :data:`IDLE_CONNECTIONS` of them are kept between requests and reused
    (re-reading the log's size first); one that failed a request, or that its server closed,
    is dropped rather than reused.
    """

    __slots__ = ("_idle", "_locate", "_lock")

    def __init__(self, locate: Callable[[], str | os.PathLike[str]]) -> None:
        self._locate = locate
        self._idle: list[tuple[str, Store]] = []
        self._lock = threading.Lock()

    @contextmanager
    def store(self) -> Iterator[Store]:
        try:
            path = self._locate()
        except Exception as e:  # the service is not ready: its callable failed
            raise Unavailable(f"the ledger is not available: {e}", code="unavailable") from e
        if not is_postgres_url(path):
            with Store.open_readonly(path) as store:
                yield store
            return
        key = str(path)
        store = self._take(key)
        ok = False
        try:
            yield store
            ok = True
        finally:
            if ok:
                self._keep(key, store)
            else:
                store.close()

    def _take(self, key: str) -> Store:
        while True:
            with self._lock:
                found = next((i for i, (k, _) in enumerate(self._idle) if k == key), None)
                if found is None:
                    break
                store = self._idle.pop(found)[1]
            if store.usable():
                try:
                    store.refresh()
                except StorageError:
                    store.close()
                    continue
                return store
            store.close()
        return Store.open_readonly(key)

    def _keep(self, key: str, store: Store) -> None:
        with self._lock:
            if len(self._idle) < IDLE_CONNECTIONS and store.usable():
                self._idle.append((key, store))
                return
        store.close()

    def close(self) -> None:
        """Close every idle connection (the app's shutdown)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, store in idle:
            store.close()

    @contextmanager
    def signed(self) -> Iterator[tuple[Store, int, str]]:
        """``(store, latest checkpoint size S, its note)``; 404 if the log has not signed one."""
        with self.store() as store:
            latest = store.latest_checkpoint()
            if latest is None:
                raise NotFound(
                    "the log has not published a checkpoint yet; try later", code="no_checkpoint"
                )
            yield store, latest[0], latest[1]


def _with_cosignatures(store: Store, size: int, note: str) -> str:
    return note + "".join(store.cosignature_lines(size))


def ledger_router(source: LedgerReader | Callable[[], str | os.PathLike[str]]) -> APIRouter:
    """The read-only ledger API (see the module docstring); mount it under ``/v1/ledger``.

    ``source`` says where the service's live log is (its SQLite file or PostgreSQL URL): a
    :class:`LedgerReader` whose connections the caller closes at shutdown, or a callable
    returning the location (connections then live as long as the process).
    """
    reader = source if isinstance(source, LedgerReader) else LedgerReader(source)
    router = APIRouter(tags=["ledger"])

    @router.get("/checkpoint", response_class=Response)
    @_api
    def checkpoint() -> Response:
        """The latest signed checkpoint and its witness cosignatures (a C2SP signed note)."""
        with reader.signed() as (store, size, note):
            text = _with_cosignatures(store, size, note)
        return Response(text, media_type=_TEXT, headers={"Cache-Control": _CHECKPOINT})

    @router.get("/log.vkey", response_class=Response)
    @_api
    def log_vkey() -> Response:
        """The log's verifier key (C2SP signed-note vkey); pin it out of band."""
        with reader.store() as store:
            vkey = store.meta("log_vkey")
        if vkey is None:
            raise NotFound("the log has no signing key yet", code="no_log_key")
        return Response(vkey + "\n", media_type=_TEXT, headers={"Cache-Control": _PARTIAL})

    @router.get("/checkpoints")
    @_api
    def checkpoints(
        after: str | None = Query(None, description="list sizes above this one (a cursor)"),
        limit: str | None = Query(None, description=f"at most this many, <= {MAX_PAGE}"),
    ) -> Response:
        """The sizes of the checkpoints the log signed, ascending, a page at a time: follow
        ``next`` (pass it as ``after``) until it is null."""
        start = _int("after", after, 0) if after is not None else -1
        n = _int("limit", limit, MAX_PAGE)
        if not 1 <= n <= MAX_PAGE:
            raise BadRequest(
                f"limit must be from 1 to {MAX_PAGE}, got {n}", code="invalid_parameter"
            )
        with reader.store() as store:
            sizes = store.checkpoint_sizes(start, n + 1)
            latest = store.latest_checkpoint()
        page = sizes[:n]
        return JSONResponse(
            {
                "latest": latest[0] if latest else None,
                "sizes": page,
                "next": page[-1] if len(sizes) > n else None,
            },
            headers={"Cache-Control": _CHECKPOINT},
        )

    @router.get("/checkpoints/{size}", response_class=Response)
    @_api
    def checkpoint_at(size: str) -> Response:
        """The checkpoint of that size, with the witness cosignatures it has now."""
        n = _int("size", size)
        with reader.store() as store:
            note = store.checkpoint_note(n)
            if note is None:
                raise NotFound(f"the log signed no checkpoint of size {n}", code="no_checkpoint")
            text = _with_cosignatures(store, n, note)
        return Response(text, media_type=_TEXT, headers={"Cache-Control": _CHECKPOINT})

    @router.get("/tile/{rest:path}", response_class=Response)
    @_api
    def tile(rest: str) -> Response:
        """A C2SP tlog-tiles hash tile or entry bundle within the latest checkpoint."""
        try:
            ref = parse_tile_path("tile/" + rest)
        except TileFormatError as e:
            raise BadRequest(str(e), code="invalid_tile_path") from e
        with reader.signed() as (store, size, _):
            per = 0 if ref.level is None else TILE_HEIGHT * ref.level
            available = tile_width(size >> per, ref.index)
            if ref.width > available:
                raise NotFound(
                    f"{ref.path} is not covered by the latest checkpoint (size {size:,})",
                    code="tile_not_found",
                )
            if ref.level is None:
                data = read_entry_bundle(store, ref.index, ref.width)
            else:
                data = read_hash_tile(store, ref.level, ref.index, ref.width)
        cache = _IMMUTABLE if ref.width == TILE_WIDTH else _PARTIAL
        return Response(data, media_type=_OCTETS, headers={"Cache-Control": cache})

    @router.get("/entries")
    @_api
    def entries(
        start: str | None = Query(None, description="first index (inclusive)"),
        end: str | None = Query(None, description=f"last index (exclusive), <= start+{MAX_PAGE}"),
    ) -> Response:
        """Entries ``start <= i < end`` of the latest checkpoint's tree, base64."""
        a = _int("start", start)
        with reader.signed() as (store, size, _):
            b = _int("end", end, min(a + MAX_PAGE, size))
            if a > size:
                raise BadRequest(
                    f"start {a} is beyond the latest checkpoint (size {size})", code="out_of_range"
                )
            if b < a:
                raise BadRequest(f"end {b} is before start {a}", code="invalid_range")
            if b > size:
                raise BadRequest(
                    f"end {b} is beyond the latest checkpoint (size {size})", code="out_of_range"
                )
            if b - a > MAX_PAGE:
                raise BadRequest(
                    f"at most {MAX_PAGE} entries per request, asked for {b - a}; page through "
                    "with start and end",
                    code="page_too_large",
                )
            rows = list(store.iter_entries(a, b))
        if [r[0] for r in rows] != list(range(a, b)):
            raise StorageError(f"entries {a}..{b - 1} are not all in the database")
        body: dict[str, Any] = {
            "tree_size": size,
            "start": a,
            "end": b,
            "entries": [{"index": i, "leaf_hash": _b64(h), "data": _b64(d)} for i, h, d in rows],
        }
        return JSONResponse(body)

    @router.get("/proof/inclusion")
    @_api
    def proof_inclusion(
        index: str | None = Query(None, description="leaf index"),
        tree_size: str | None = Query(None, description="tree size, default the latest checkpoint"),
    ) -> Response:
        """An inclusion proof of leaf ``index`` in the tree of ``tree_size`` leaves."""
        i = _int("index", index)
        with reader.signed() as (store, size, _):
            n = _int("tree_size", tree_size, size)
            if n > size:
                raise BadRequest(
                    f"tree_size {n} is beyond the latest checkpoint (size {size})",
                    code="out_of_range",
                )
            if i >= n:
                raise BadRequest(
                    f"index {i} is not in a tree of size {n} (0..{n - 1})", code="out_of_range"
                )
            proof = inclusion_proof(i, n, store.read_nodes)
            (leaf,) = store.read_nodes([(0, i)])
        return JSONResponse(
            {
                "index": i,
                "tree_size": n,
                "leaf_hash": _b64(leaf),
                "hashes": [_b64(h) for h in proof],
            }
        )

    @router.get("/proof/consistency")
    @_api
    def proof_consistency(
        first: str | None = Query(None, description="the older tree size, >= 1"),
        second: str | None = Query(None, description="the newer size, default the latest"),
    ) -> Response:
        """A consistency proof that the tree of ``second`` leaves extends that of ``first``."""
        m = _int("first", first)
        with reader.signed() as (store, size, _):
            n = _int("second", second, size)
            if m == 0:
                raise BadRequest(
                    "first must be >= 1: a proof from the empty tree is empty", code="out_of_range"
                )
            if m > n:
                raise BadRequest(
                    f"first ({m}) must not be larger than second ({n})", code="invalid_range"
                )
            if n > size:
                raise BadRequest(
                    f"second {n} is beyond the latest checkpoint (size {size})", code="out_of_range"
                )
            proof = consistency_proof(m, n, store.read_nodes)
        return JSONResponse({"first": m, "second": n, "hashes": [_b64(h) for h in proof]})

    return router
