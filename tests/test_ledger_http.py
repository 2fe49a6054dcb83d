"""The auditor's side of the HTTP service: ledger API endpoints, remote tiles, live audits.

Endpoints are checked with FastAPI's TestClient (tiles byte-identical to ``export_tiles`` at
several sizes; proofs that verify; a 4xx JSON error for every bad parameter), the HTTP tile
fetcher against a mock transport (404, 5xx, oversize, retries, unreachable), and the whole
``foldnet audit http://127.0.0.1:PORT/v1/ledger`` against a real uvicorn server on loopback,
clean and with a byte flipped on the wire.
"""

from __future__ import annotations

import base64
import dataclasses
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
import uvicorn
from cli_helpers import run_foldnet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import (
    GHOST_CREDIT,
    ORIGIN,
    Built,
    Clock,
    build_ledger,
    digest,
    ghost_entries,
    make_result,
)
from typer.testing import CliRunner

from ledger import (
    ConfigError,
    JobSubmitted,
    Log,
    RemoteError,
    Store,
    TileFormatError,
    TileReader,
    UnsafeAdmitAll,
    Witness,
    export_tiles,
    leaf_hash,
    run_audit,
    verify_consistency,
    verify_inclusion,
)
from ledger.backend import READER_APP
from ledger.cli import app as ledger_cli
from ledger.http import IDLE_CONNECTIONS, MAX_PAGE, LedgerReader, ledger_router
from ledger.remote import HttpFetcher
from ledger.tiles import (
    TILE_WIDTH,
    TileRef,
    encode_bundle,
    entries_path,
    parse_tile_path,
    tile_path,
)

with warnings.catch_warnings():
    # Starlette 1.x would rather its TestClient ran on httpx2; httpx (our test extra) works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

PREFIX = "/v1/ledger"
QUIET = {"checkpoint_every": 10**9, "checkpoint_interval_s": 1e13}


def _app(get_log: Callable[[], Log]) -> FastAPI:
    app = FastAPI()
    app.include_router(ledger_router(lambda: get_log().store.path), prefix=PREFIX)
    return app


@pytest.fixture
def grower(new_db: Callable[[str], Path | str]) -> Iterator[Log]:
    """A writable log of cheap entries whose checkpoints the test publishes itself, on each
    backend (SQLite, and a PostgreSQL server the tests start)."""
    with Log.open(
        new_db("grow"),
        origin=ORIGIN,
        signing_key=Ed25519PrivateKey.generate(),
        admission=UnsafeAdmitAll(),
        clock=Clock(),
        **QUIET,
    ) as log:
        yield log


def _grow_to(log: Log, size: int) -> None:
    """Append job entries until the log holds ``size`` entries, then sign a checkpoint."""
    while log.size < size:
        n = min(size - log.size, 5000)
        first = log.size
        log.append_batch([JobSubmitted(job_id=digest("job", first + i)) for i in range(n)])
    cp = log.publish_checkpoint()
    assert cp.checkpoint.size == size


def _export(log: Log, out: Path) -> dict[str, bytes]:
    """Every file ``export_tiles`` writes for the log, by relative path."""
    with Store.open_readonly(log.store.path) as store:
        export_tiles(store, out)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    return str(body["detail"])


# --------------------------------------------------------------------------- tile paths


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        (TileRef(0, 0, 256), "tile/0/000"),
        (TileRef(0, 1234067, 112), "tile/0/x001/x234/067.p/112"),
        (TileRef(63, 1000, 1), "tile/63/x001/000.p/1"),
        (TileRef(None, 5, 255), "tile/entries/005.p/255"),
        (TileRef(None, 10**9, 256), "tile/entries/x001/x000/x000/000"),
    ],
)
def test_parse_tile_path_inverts_tile_path(ref: TileRef, path: str) -> None:
    assert ref.path == path
    assert parse_tile_path(path) == ref
    expect = entries_path(ref.index, ref.width) if ref.level is None else None
    assert (expect or tile_path(ref.level or 0, ref.index, ref.width)) == path


@pytest.mark.parametrize(
    "path",
    [
        "tile/00/000",  # leading zero in the level
        "tile/64/000",  # level out of range
        "tile/0/0000",  # 4-digit group
        "tile/0/00",  # 2-digit group
        "tile/0/x000/001",  # not canonical: leading x000
        "tile/0/001/002",  # middle group without x
        "tile/0/x001",  # last group with x
        "tile/0/000.p/0",  # empty partial tile
        "tile/0/000.p/256",  # partial as wide as a full tile
        "tile/0/000.p/05",  # leading zero in the width
        "tile/0/000.p/",  # no width
        "tile/0/",  # no index
        "tile/entries",  # nothing
        "tile/-1/000",  # negative level
        "tile/0/\u0661\u0662\u0663",  # Arabic-Indic digits are not ASCII digits
        "tile/0/" + "x001/" * 20 + "000",  # absurdly large index
        "checkpoint",
    ],
)
def test_parse_tile_path_refuses_non_canonical(path: str) -> None:
    with pytest.raises(TileFormatError):
        parse_tile_path(path)


# --------------------------------------------------------------------------- endpoints


def test_tiles_byte_identical_to_export_at_several_sizes(grower: Log, tmp_path: Path) -> None:
    """At each checkpoint, every file of an export is served with the same bytes, and no more.

    Sizes cover a first partial tile, exactly one full tile (and a level-1 tile of width 1),
    one past it, and several full tiles with partial ones on two levels.
    """
    client = TestClient(_app(lambda: grower))
    seen: dict[str, bytes] = {}
    for k, size in enumerate((1, 255, 256, 257, 1000)):
        _grow_to(grower, size)
        files = _export(grower, tmp_path / f"export{k}")
        for rel, data in files.items():
            r = client.get(f"{PREFIX}/{rel}")
            assert r.status_code == 200, (size, rel, r.text)
            assert r.content == data, (size, rel)
            if rel.startswith("tile/"):
                assert r.headers["content-type"] == "application/octet-stream"
                full = ".p/" not in rel
                assert ("immutable" in r.headers["cache-control"]) == full, rel
            else:
                assert r.headers["content-type"].startswith("text/plain")
        # tiles of earlier checkpoints are still served, unchanged (a partial one is a prefix)
        for rel, data in seen.items():
            if rel.startswith("tile/"):
                assert client.get(f"{PREFIX}/{rel}").content == data, (size, rel)
        seen.update(files)
        # nothing beyond the checkpoint: the next entry's bundle and a full tile not yet full
        nxt = tile_path(0, size // TILE_WIDTH, size % TILE_WIDTH + 1)
        if size % TILE_WIDTH + 1 < TILE_WIDTH:
            _error(client.get(f"{PREFIX}/{nxt}"), 404, "tile_not_found")
        if size % TILE_WIDTH:
            full0 = tile_path(0, size // TILE_WIDTH)
            _error(client.get(f"{PREFIX}/{full0}"), 404, "tile_not_found")
        _error(client.get(f"{PREFIX}/{entries_path(size // 256 + 1)}"), 404, "tile_not_found")
        # the log grew past the checkpoint (its own 'checkpoint published' entry): not served
        assert grower.size == size + 1
        entries = client.get(f"{PREFIX}/entries", params={"start": size}).json()
        assert entries["tree_size"] == size and entries["entries"] == []


@pytest.mark.slow
# 65,536+ entries: on SQLite only (the same code reads both; the other tile tests run on both).
@pytest.mark.parametrize("backend", ["sqlite"])
def test_level_two_tiles_byte_identical(grower: Log, tmp_path: Path) -> None:
    """65,537 entries: 256 full level-0 tiles, a full level-1 tile, a level-2 tile of width 1."""
    _grow_to(grower, 65_537)
    files = _export(grower, tmp_path / "export")
    assert {"tile/2/000.p/1", "tile/1/000", "tile/0/255", "tile/0/256.p/1"} <= set(files)
    client = TestClient(_app(lambda: grower))
    for rel, data in files.items():
        r = client.get(f"{PREFIX}/{rel}")
        assert r.status_code == 200 and r.content == data, rel
    report = run_audit(tmp_path / "export", workers=1)
    assert report.ok and report.tree_size == 65_537


def test_checkpoint_with_cosignatures_vkey_and_history(tmp_path: Path) -> None:
    built = build_ledger(tmp_path / "l.db", n_wus=6, checkpoint_every=5)
    w = Witness.open(
        tmp_path / "w.db", name="witness.test/w", signing_key=Ed25519PrivateKey.generate()
    )
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key, **QUIET) as log, w:
        assert log.verifier is not None
        w.add_log(log.verifier.vkey)
        cp = log.checkpoint()
        assert cp is not None
        size = cp.checkpoint.size
        note = w.cosign(cp.encode(), proof=[])
        mine = next(s for s in note.signatures if s.key_id == w.verifier.key_id)
        assert log.add_cosignature(mine, witness=w.verifier, tree_size=size)
        client = TestClient(_app(lambda: log))
        files = _export(log, tmp_path / "export")
        r = client.get(f"{PREFIX}/checkpoint")
        assert r.text == files["checkpoint"].decode()
        assert "witness.test/w" in r.text  # the cosignature line travels with it
        assert r.headers["cache-control"] == "public, max-age=2"
        assert client.get(f"{PREFIX}/log.vkey").content == files["log.vkey"]
        history = client.get(f"{PREFIX}/checkpoints").json()
        assert history["sizes"] == log.store.checkpoint_sizes() and history["latest"] == size
        assert len(history["sizes"]) >= 3
        first = history["sizes"][0]
        old = client.get(f"{PREFIX}/checkpoints/{first}")
        assert old.status_code == 200 and old.text == log.store.checkpoint_note(first)
        assert client.get(f"{PREFIX}/checkpoints/{size}").text == r.text
        _error(client.get(f"{PREFIX}/checkpoints/{size + 1000}"), 404, "no_checkpoint")
        _error(client.get(f"{PREFIX}/checkpoints/abc"), 400, "invalid_parameter")


def test_entries_pages(grower: Log) -> None:
    _grow_to(grower, 2500)
    client = TestClient(_app(lambda: grower))
    got: list[bytes] = []
    start = 0
    while True:
        page = client.get(f"{PREFIX}/entries", params={"start": start}).json()
        assert page["tree_size"] == 2500 and page["start"] == start
        assert page["end"] - start <= MAX_PAGE
        for k, e in enumerate(page["entries"]):
            assert e["index"] == start + k
            data = base64.b64decode(e["data"])
            assert base64.b64decode(e["leaf_hash"]) == leaf_hash(data)
            got.append(data)
        if page["end"] == start:
            break
        start = page["end"]
    assert got == [grower.entry(i) for i in range(2500)]
    one = client.get(f"{PREFIX}/entries", params={"start": 7, "end": 8}).json()
    assert [e["index"] for e in one["entries"]] == [7]


def test_proofs_verify(grower: Log) -> None:
    sizes = (1, 2, 7, 256, 300, 1000)
    for s in sizes:
        _grow_to(grower, s)
    client = TestClient(_app(lambda: grower))
    latest = sizes[-1]

    def b64s(values: list[str]) -> list[bytes]:
        return [base64.b64decode(v) for v in values]

    for n in sizes:
        for i in {0, n // 2, n - 1}:
            r = client.get(f"{PREFIX}/proof/inclusion", params={"index": i, "tree_size": n})
            body = r.json()
            assert (body["index"], body["tree_size"]) == (i, n)
            lh = base64.b64decode(body["leaf_hash"])
            assert lh == leaf_hash(grower.entry(i))
            verify_inclusion(lh, i, n, b64s(body["hashes"]), grower.root(n))
    default = client.get(f"{PREFIX}/proof/inclusion", params={"index": 5}).json()
    assert default["tree_size"] == latest
    for m in sizes:
        for n in sizes:
            if m <= n:
                r = client.get(f"{PREFIX}/proof/consistency", params={"first": m, "second": n})
                body = r.json()
                assert (body["first"], body["second"]) == (m, n)
                proof = b64s(body["hashes"])
                verify_consistency(m, n, proof, grower.root(m), grower.root(n))
    default = client.get(f"{PREFIX}/proof/consistency", params={"first": 7}).json()
    assert default["second"] == latest


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("/entries", 400, "missing_parameter"),
        ("/entries?start=-1", 400, "invalid_parameter"),
        ("/entries?start=abc", 400, "invalid_parameter"),
        ("/entries?start=1.5", 400, "invalid_parameter"),
        ("/entries?start=99999999999999999999999", 400, "invalid_parameter"),
        ("/entries?start=0&end=-3", 400, "invalid_parameter"),
        ("/entries?start=31", 400, "out_of_range"),
        ("/entries?start=0&end=31", 400, "out_of_range"),
        ("/entries?start=5&end=4", 400, "invalid_range"),
        ("/proof/inclusion", 400, "missing_parameter"),
        ("/proof/inclusion?index=30", 400, "out_of_range"),
        ("/proof/inclusion?index=3&tree_size=3", 400, "out_of_range"),
        ("/proof/inclusion?index=0&tree_size=0", 400, "out_of_range"),
        ("/proof/inclusion?index=0&tree_size=31", 400, "out_of_range"),
        ("/proof/inclusion?index=x", 400, "invalid_parameter"),
        ("/proof/consistency", 400, "missing_parameter"),
        ("/proof/consistency?first=0&second=5", 400, "out_of_range"),
        ("/proof/consistency?first=6&second=5", 400, "invalid_range"),
        ("/proof/consistency?first=5&second=31", 400, "out_of_range"),
        ("/proof/consistency?first=5&second=%F0%9F%92%A5", 400, "invalid_parameter"),
        ("/entries?start=9223372036854775808", 400, "invalid_parameter"),
        ("/entries?start=9223372036854775807", 400, "out_of_range"),
        ("/checkpoints/9999999999999999999", 400, "invalid_parameter"),
        ("/checkpoints/9223372036854775807", 404, "no_checkpoint"),
        ("/checkpoints/-5", 400, "invalid_parameter"),
        ("/tile/0/x999/x999/x999/x999/x999/x999/x999/999", 404, "tile_not_found"),
        ("/tile/0/0000", 400, "invalid_tile_path"),
        ("/tile/0/000.p/0", 400, "invalid_tile_path"),
        ("/tile/0/x000/001", 400, "invalid_tile_path"),
        ("/tile/entries/000.p/abc", 400, "invalid_tile_path"),
        ("/tile/0/000", 404, "tile_not_found"),
        ("/tile/0/000.p/31", 404, "tile_not_found"),
        ("/tile/1/000.p/1", 404, "tile_not_found"),
        ("/tile/entries/001.p/1", 404, "tile_not_found"),
    ],
)
def test_bad_parameters_are_4xx_json(grower: Log, query: str, status: int, code: str) -> None:
    _grow_to(grower, 30)
    client = TestClient(_app(lambda: grower), raise_server_exceptions=True)
    detail = _error(client.get(PREFIX + query), status, code)
    assert detail and "Traceback" not in detail


@pytest.fixture(scope="module")
def small_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    built = build_ledger(tmp_path_factory.mktemp("fuzz") / "l.db", n_wus=4)
    with Log.open_readonly(built.path) as log:
        yield TestClient(_app(lambda: log), raise_server_exceptions=True)


_JUNK = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "1", "1e3", "0x10", " 1", "+1", "\x00", "٣"]),
)


@settings(max_examples=60, deadline=None)
@given(
    endpoint=st.sampled_from(["entries", "proof/inclusion", "proof/consistency"]),
    names=st.lists(
        st.sampled_from(["start", "end", "index", "tree_size", "first", "second", "x"]),
        max_size=3,
    ),
    values=st.lists(_JUNK, min_size=3, max_size=3),
    tile=st.text(max_size=40),
)
def test_no_input_makes_a_500(
    small_client: TestClient, endpoint: str, names: list[str], values: list[str], tile: str
) -> None:
    """Whatever a client sends, the answer is 200 or a 4xx with the JSON error shape."""
    params = dict(zip(names, values, strict=False))
    for r in (
        small_client.get(f"{PREFIX}/{endpoint}", params=params),
        small_client.get(f"{PREFIX}/tile/{quote(tile, safe='/')}"),
        small_client.get(f"{PREFIX}/checkpoints/{quote(values[0], safe='')}"),
    ):
        assert r.status_code < 500, r.text
        if r.status_code != 200:
            assert r.status_code in (400, 404), r.text
            body = r.json()
            assert isinstance(body, dict) and set(body) >= {"detail"}, body


def test_page_too_large(grower: Log) -> None:
    _grow_to(grower, MAX_PAGE + 10)
    client = TestClient(_app(lambda: grower))
    detail = _error(
        client.get(f"{PREFIX}/entries", params={"start": 0, "end": MAX_PAGE + 1}),
        400,
        "page_too_large",
    )
    assert str(MAX_PAGE) in detail
    ok = client.get(f"{PREFIX}/entries", params={"start": 10, "end": MAX_PAGE + 10})
    assert len(ok.json()["entries"]) == MAX_PAGE


def test_before_the_first_checkpoint(grower: Log) -> None:
    grower.append(JobSubmitted(job_id=digest("job", 0)))
    client = TestClient(_app(lambda: grower))
    for path in ("/checkpoint", "/tile/0/000.p/1", "/entries?start=0", "/proof/inclusion?index=0"):
        _error(client.get(PREFIX + path), 404, "no_checkpoint")
    assert client.get(f"{PREFIX}/checkpoints").json() == {"latest": None, "sizes": [], "next": None}
    assert client.get(f"{PREFIX}/log.vkey").status_code == 200


def test_unavailable_log_is_503_json(tmp_path: Path) -> None:
    def broken() -> Log:
        raise RuntimeError("coordinator is starting")

    client = TestClient(_app(broken))
    assert "starting" in _error(client.get(f"{PREFIX}/checkpoint"), 503, "unavailable")


# --------------------------------------------------------------------------- the HTTP fetcher


def _mock(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> HttpFetcher:
    return HttpFetcher(
        "http://log.test/v1/ledger/", transport=httpx.MockTransport(handler), backoff_s=0, **kw
    )


def test_fetcher_statuses_and_limits() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1/ledger/")
        calls.append(path)
        if path == "tile/0/000":
            return httpx.Response(200, content=b"x" * 64)
        if path == "big":
            return httpx.Response(200, content=b"x" * 100)
        if path == "broken":
            return httpx.Response(500, json={"error": "storage-error", "detail": "disk on fire"})
        if path == "flaky" and calls.count("flaky") < 3:
            return httpx.Response(503, text="busy")
        if path == "flaky":
            return httpx.Response(200, content=b"finally")
        return httpx.Response(404, json={"error": "not-found", "detail": "no"})

    with _mock(handler, retries=2) as f:
        assert f.name == "http://log.test/v1/ledger"
        assert f.get("tile/0/000", limit=8192) == b"x" * 64
        assert f.get("tile/0/001", limit=8192) is None
        with pytest.raises(TileFormatError, match="100 bytes, more than the 99 allowed"):
            f.get("big", limit=99)
        with pytest.raises(RemoteError, match=r"answered 500 \(storage-error: disk on fire\)"):
            f.get("broken", limit=99)
        assert f.get("flaky", limit=99) == b"finally"
        assert calls.count("flaky") == 3
    with (
        _mock(lambda r: httpx.Response(503, text="down"), retries=1) as f,
        pytest.raises(RemoteError, match=r"answered 503 \(error: down\) \(tried 2 times\)"),
    ):
        f.get("checkpoint", limit=99)


def test_fetcher_partial_tile_falls_back_to_the_full_one(tmp_path: Path) -> None:
    """C2SP: a log may delete a partial tile once the full tile exists; its prefix serves."""
    built = build_ledger(tmp_path / "l.db", n_wus=100, checkpoint_every=200)
    out = tmp_path / "export"
    with Store.open_readonly(built.path) as store:
        size = export_tiles(store, out).tree_size
    reference = TileReader(out)
    entries = [d for _, _, d in reference.iter_entries()]
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # pretend the log later grew: the full tile 0/001 exists (its start is ours), partials gone
    files["tile/0/001"] = files.pop(f"tile/0/001.p/{size - 256}") + bytes(32 * (512 - size))
    partial_bundle = files.pop(f"tile/entries/001.p/{size - 256}")
    files["tile/entries/001"] = partial_bundle + b"\x00\x03abc" * (512 - size)

    def handler(request: httpx.Request) -> httpx.Response:
        rel = request.url.path.removeprefix("/v1/ledger/")
        return httpx.Response(200, content=files[rel]) if rel in files else httpx.Response(404)

    with _mock(handler) as f:
        reader = TileReader(f)
        assert reader.tree_size == size
        assert [d for _, _, d in reader.iter_entries()] == entries
        assert reader.tile(0, 1) == reference.tile(0, 1)


def test_fetcher_refuses_other_schemes_and_reports_unreachable(tmp_path: Path) -> None:
    for url in ("ftp://example.org/log", "file:///etc", "gopher://x", "http:///nohost"):
        with pytest.raises(ConfigError):
            run_audit(url)
    with pytest.raises(ConfigError, match="query or fragment"):
        HttpFetcher("http://127.0.0.1:1/v1/ledger?x=1")
    port = _free_port()
    with (
        pytest.raises(RemoteError, match=r"cannot reach .* is the server running"),
        HttpFetcher(f"http://127.0.0.1:{port}", retries=1, backoff_s=0) as f,
    ):
        f.get("checkpoint", limit=100)


# --------------------------------------------------------------------------- a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _FlipByte:
    """An ASGI wrapper that, when armed, flips one bit of one served resource: a lying server."""

    def __init__(self, app: Any, path: str, offset: int) -> None:
        self.app, self.path, self.offset = app, path, offset
        self.armed = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.armed or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return

        async def lying_send(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                body = bytearray(message["body"])
                if len(body) > self.offset:
                    body[self.offset] ^= 0x04
                message = {**message, "body": bytes(body)}
            await send(message)

        await self.app(scope, receive, lying_send)


class _AppendBytes:
    """An ASGI wrapper that, when ``extra`` is set, appends it to the resource at ``path`` (and
    says so in Content-Length): a server that serves more than its checkpoint commits to."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.path = ""
        self.extra = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.extra or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        extra = self.extra

        async def longer_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, str(int(v) + len(extra)).encode() if k.lower() == b"content-length" else v)
                    for k, v in message["headers"]
                ]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                message = {**message, "body": message.get("body", b"") + extra}
            await send(message)

        await self.app(scope, receive, longer_send)


@dataclasses.dataclass
class _Served:
    url: str
    flip: _FlipByte
    append: _AppendBytes


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[], Log]], _Served]]:
    """Start uvicorn on 127.0.0.1 (an ephemeral port) in a thread; stop it after the test."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(get_log: Callable[[], Log]) -> _Served:
        flip = _FlipByte(_app(get_log), f"{PREFIX}/tile/entries/000", 20)
        append = _AppendBytes(flip)
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every small answer waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            append, lifespan="off", ws="none", http="h11", log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        for _ in range(500):
            if server.started:
                break
            thread.join(0.01)
        assert server.started, "uvicorn did not start"
        return _Served(url=f"http://127.0.0.1:{port}{PREFIX}", flip=flip, append=append)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive()


def _same_audit(a: Any, b: Any) -> None:
    skip = {"source", "seconds", "state_updated", "notes", "previous_size"}
    for f in dataclasses.fields(a):
        if f.name not in skip:
            assert getattr(a, f.name) == getattr(b, f.name), f.name


def test_audit_live_service_like_an_export(
    serve: Callable[[Callable[[], Log]], _Served], tmp_path: Path
) -> None:
    """The must-show test: ``foldnet audit http://127.0.0.1:PORT/v1/ledger`` passes, finds the
    same as an audit of an export of the same log, follows the log as it grows while served,
    and catches one flipped bit on the wire with the same message as in a local export."""
    built: Built = build_ledger(tmp_path / "l.db", n_wus=100, checkpoint_every=200)
    with Log.open(built.path, origin=ORIGIN, signing_key=built.log_key, **QUIET) as log:
        srv = serve(lambda: log)
        out = tmp_path / "export"
        with Store.open_readonly(built.path) as store:
            assert export_tiles(store, out).tree_size > 256
        local = run_audit(out, volunteer=built.volunteer_pub(0), workers=1)
        remote = run_audit(srv.url, volunteer=built.volunteer_pub(0), workers=1)
        assert remote.ok, remote.discrepancies
        assert remote.source == f"tile server {srv.url}"
        _same_audit(local, remote)
        assert remote.volunteer is not None and remote.volunteer.proven > 0

        runner = CliRunner()
        state = tmp_path / "state.json"
        args = ["audit", srv.url, "--workers", "1", "--state", str(state)]
        res = runner.invoke(ledger_cli, args)
        assert res.exit_code == 0, res.output
        assert "no discrepancy" in res.output and srv.url in res.output

        # the service keeps writing (this thread) while it serves (the server's thread)
        first_size = remote.tree_size
        for wu in range(100, 130):
            now = time.time_ns() // 1_000_000
            log.record_validated_result(make_result(built, wu, [0, 1], issued_at_ms=now))
        log.publish_checkpoint()
        res = runner.invoke(ledger_cli, args)
        assert res.exit_code == 0, res.output
        assert f"grew from size {first_size:,}" in res.output

        # a lying server: one bit of entry 0 flipped in the bundle it serves
        srv.flip.armed = True
        bad = run_audit(srv.url, workers=1)
        modified = [d for d in bad.discrepancies if d.kind == "entry-modified"]
        assert [d.index for d in modified] == [0]
        assert "entry bytes were changed after it was logged" in str(modified[0])
        assert "unregistered-worker" in bad.kinds()  # entry 0 registered volunteer 0
        res = runner.invoke(ledger_cli, args)
        assert res.exit_code == 1
        assert "entry-modified" in res.output
        srv.flip.armed = False


def test_live_service_serving_ghost_entries_fails_the_audit(
    serve: Callable[[Callable[[], Log]], _Served], tmp_path: Path
) -> None:
    """The service itself, behind a proxy that appends four unsigned, rule-abiding entries (a
    volunteer, a job, a result, 2 x 10^12 credit) to the last partial bundle: the audit fails
    with ``beyond-checkpoint``, counts none of them, and a ``--state`` re-audit keeps the state
    of the clean audit; served honestly again, the log audits clean."""
    built = build_ledger(tmp_path / "l.db", n_wus=100, checkpoint_every=200)
    state = tmp_path / "state.json"
    with Log.open_readonly(built.path) as log:
        srv = serve(lambda: log)
        clean = run_audit(srv.url, state_file=state, workers=1)
        assert clean.ok and clean.state_updated, clean.discrepancies
        size = clean.tree_size
        saved = state.read_bytes()
        ghost = ghost_entries()
        srv.append.path = f"{PREFIX}/{entries_path(size // TILE_WIDTH, size % TILE_WIDTH)}"
        srv.append.extra = encode_bundle(ghost.entries)
        for state_file in (None, state):
            bad = run_audit(srv.url, state_file=state_file, workers=1)
            assert bad.kinds() == {"beyond-checkpoint"}, bad.discrepancies
            assert ghost.volunteer_key not in bad.balances
            assert bad.total_credit == clean.total_credit < GHOST_CREDIT
            assert bad.entries == clean.entries
        assert state.read_bytes() == saved
        res = CliRunner().invoke(ledger_cli, ["audit", srv.url, "--workers", "1"])
        assert res.exit_code == 1 and "beyond-checkpoint" in res.output, res.output
        srv.append.extra = b""
        assert run_audit(srv.url, state_file=state, workers=1).ok


def test_audits_pass_while_the_log_is_written(
    serve: Callable[[Callable[[], Log]], _Served], grower: Log
) -> None:
    """A writer thread appends and signs checkpoints while audits read the server: every
    audit sees one signed checkpoint and exactly its tiles, so every audit passes."""
    _grow_to(grower, 300)
    srv = serve(lambda: grower)
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for k in range(1, 41):
                first = grower.size
                batch = [JobSubmitted(job_id=digest("w", first + i)) for i in range(37)]
                grower.append_batch(batch)
                if k % 3 == 0:
                    grower.publish_checkpoint()
                time.sleep(0.01)
            grower.publish_checkpoint()
        except BaseException as e:
            failures.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    sizes = []
    try:
        while writer.is_alive() or len(sizes) < 2:
            report = run_audit(srv.url, workers=1)
            assert report.ok, report.discrepancies
            sizes.append(report.tree_size)
    finally:
        writer.join(60)
    assert not failures, failures
    final = run_audit(srv.url, workers=1)
    assert final.ok and final.tree_size == grower.size - 1  # the final checkpoint
    sizes.append(final.tree_size)
    assert sizes == sorted(sizes) and len(set(sizes)) >= 2, sizes


def test_audit_server_errors_are_messages(
    serve: Callable[[Callable[[], Log]], _Served], tmp_path: Path
) -> None:
    runner = CliRunner()
    # nothing listens there
    gone = runner.invoke(ledger_cli, ["audit", f"http://127.0.0.1:{_free_port()}/v1/ledger"])
    assert gone.exit_code == 3 and "cannot reach" in gone.output  # a fault, not a mistake
    assert "Traceback" not in gone.output
    # a server, but not a log at that prefix
    built = build_ledger(tmp_path / "l.db", n_wus=2)
    with Log.open_readonly(built.path) as log:
        srv = serve(lambda: log)
        wrong = runner.invoke(ledger_cli, ["audit", srv.url.removesuffix(PREFIX) + "/nope"])
        assert wrong.exit_code == 2 and "no 'checkpoint'" in wrong.output
        ftp = runner.invoke(ledger_cli, ["audit", "ftp://127.0.0.1/v1/ledger"])
        assert ftp.exit_code == 2 and "only http:// and https://" in ftp.output


def test_foldnet_audit_command_against_a_server(
    serve: Callable[[Callable[[], Log]], _Served], tmp_path: Path
) -> None:
    """The installed command itself, in a subprocess, as a user types it."""
    built = build_ledger(tmp_path / "l.db", n_wus=20)
    with Log.open_readonly(built.path) as log:
        srv = serve(lambda: log)
        res = run_foldnet("audit", srv.url, home=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no discrepancy" in res.stdout


# --------------------------------------------------------------------------- PostgreSQL


def _readers(url: str) -> set[int]:
    """Server processes of the ledger's read-only connections to ``url``'s database."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s",
            [READER_APP],
        ).fetchall()
    return {int(r[0]) for r in rows}


@pytest.mark.postgres
def test_postgres_requests_reuse_a_few_connections(
    pg_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_cluster.new_database("reuse")
    with Log.open(
        url,
        origin=ORIGIN,
        signing_key=Ed25519PrivateKey.generate(),
        admission=UnsafeAdmitAll(),
        clock=Clock(),
        **QUIET,
    ) as log:
        _grow_to(log, 300)
        reader = LedgerReader(lambda: url)
        app = FastAPI()
        app.include_router(ledger_router(reader), prefix=PREFIX)
        with TestClient(app) as client:
            assert client.get(f"{PREFIX}/checkpoint").status_code == 200
            first = _readers(url)
            assert len(first) == 1  # kept for the next request, not closed
            paths = ["checkpoint", "log.vkey", "tile/0/000", "entries?start=0&limit=10"]
            for i in range(40):
                r = client.get(f"{PREFIX}/{paths[i % len(paths)]}")
                assert r.status_code == 200, r.text
            assert _readers(url) == first  # the same server process answered them all

            # The log grows meanwhile: a kept connection sees the new checkpoint.
            _grow_to(log, 301)
            r = client.get(f"{PREFIX}/checkpoint")
            assert r.status_code == 200 and "\n301\n" in r.text

            # The server drops the idle connection: the next request opens a new one.
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as c:
                c.execute("SELECT pg_terminate_backend(%s)", [next(iter(first))])
            r = client.get(f"{PREFIX}/checkpoint")
            assert r.status_code == 200, r.text
            after = _readers(url)
            assert len(after) == 1 and after.isdisjoint(first)
        reader.close()
        assert _readers(url) == set()
    assert IDLE_CONNECTIONS >= 1
