"""The shared base: one atomic writer and one HTTP client base (retries, headers, errors)."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import httpx
import pytest

from foldnet.errors import BadRequest, FoldnetError, NotFound, TooLarge
from foldnet.files import FileWriteError, atomic_write, remove_written
from foldnet.httpclient import HttpClient, InvalidAnswerError, RetryPolicy, UnreachableError

# -- the writer --------------------------------------------------------------------------------


def test_atomic_write_modes_text_and_folders(tmp_path):
    old = os.umask(0o022)
    try:
        plain = atomic_write(tmp_path / "a" / "b" / "results.csv", "step,q\n")
        secret = atomic_write(tmp_path / "key.pem", b"PRIVATE", mode=0o600)
    finally:
        os.umask(old)
    assert plain.read_text() == "step,q\n" and secret.read_bytes() == b"PRIVATE"
    assert plain.stat().st_mode & 0o777 == 0o644
    assert secret.stat().st_mode & 0o777 == 0o600
    atomic_write(plain, b"replaced")
    assert plain.read_bytes() == b"replaced"
    assert [p.name for p in plain.parent.iterdir()] == ["results.csv"]  # no temp file left


def test_atomic_write_failure_is_one_error_and_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileWriteError, match="cannot write") as info:
        atomic_write(tmp_path / "file" / "inside.txt", "y")  # a file where a folder should be
    assert isinstance(info.value.__cause__, OSError)
    folder = tmp_path / "target-is-a-folder"
    folder.mkdir()
    with pytest.raises(FileWriteError):
        atomic_write(folder, "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "target-is-a-folder"]
    assert list(folder.iterdir()) == []


def test_a_writer_killed_mid_write_leaves_a_temporary_file_that_remove_written_clears(tmp_path):
    target = tmp_path / "7.progress.npz"
    atomic_write(target, b"segment 1")
    # a child killed between writing its temporary file and the rename, as a SIGKILL does
    script = (
        "import os, sys, time\n"
        "from foldnet import files\n"
        "os.replace = lambda *a: (print('written', flush=True), time.sleep(60))\n"
        "files.atomic_write(sys.argv[1], b'segment 2')\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
    )
    with child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "written\n"
        finally:
            child.kill()
    left = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".7.progress.npz."), left
    others = [tmp_path / "17.progress.npz", tmp_path / "a[1].npz"]  # a glob pattern's name
    for other in others:
        atomic_write(other, b"kept")
    (tmp_path / ".17.progress.npz.0123456789ab.tmp").write_bytes(b"someone else's")
    remove_written(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".17.progress.npz.0123456789ab.tmp",
        "17.progress.npz",
        "a[1].npz",
    ]
    remove_written(others[1])
    remove_written(tmp_path / "never-written")  # nothing to remove is not an error
    assert sorted(p.name for p in tmp_path.iterdir())[1:] == ["17.progress.npz"]


# -- the HTTP client ---------------------------------------------------------------------------


def _client(handler, **kw) -> tuple[HttpClient, list[float]]:
    slept: list[float] = []
    client = HttpClient(
        "http://svc.test",
        transport=httpx.MockTransport(handler),
        sleep=slept.append,
        rng=random.Random(1),
        **kw,
    )
    return client, slept


def test_retries_keep_every_header_and_sign_each_try_afresh():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            return httpx.Response(503, json={"error": "unavailable", "detail": "busy"})
        return httpx.Response(200, json={"ok": True})

    nonces = iter(range(100))
    client, slept = _client(handler, headers={"authorization": "Bearer k"})
    answer = client.json(
        "POST", "/v1/work", {"x": 1}, sign=lambda m, p, b: {"x-nonce": str(next(nonces))}
    )
    assert answer == {"ok": True} and len(seen) == 3 and len(slept) == 2
    assert [r.headers["x-nonce"] for r in seen] == ["0", "1", "2"]
    assert all(r.headers["authorization"] == "Bearer k" for r in seen)
    assert all(r.headers["content-type"] == "application/json" for r in seen)
    assert all(r.content == b'{"x": 1}' for r in seen)


@pytest.mark.parametrize(
    ("method", "status", "tries"),
    [
        ("GET", 502, 3),  # idempotent: a gateway's failure is retried
        ("POST", 502, 1),  # a POST may have been applied behind a gateway: not retried
        ("POST", 503, 3),  # the service answers 503 before applying anything
        ("POST", 429, 3),
        ("GET", 500, 1),  # a server's bug is not retried
        ("GET", 404, 1),
        ("POST", 422, 1),
    ],
)
def test_only_what_is_retryable_is_retried(method, status, tries):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json={"error": "their_code", "detail": "why"})

    client, _ = _client(handler, retry=RetryPolicy(attempts=3))
    with pytest.raises(FoldnetError) as info:
        client.request(method, "/x")
    assert len(calls) == tries
    assert info.value.status == (500 if status == 502 else status)
    assert info.value.code == "their_code"
    assert f"answered {status} (their_code: why)" in str(info.value)


def test_a_connection_that_was_never_made_is_retried_for_any_method():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) == 2 and request.method == "GET":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, text="fine")

    client, _ = _client(handler)
    assert client.request("POST", "/x", content=b"body").text == "fine"
    calls.clear()
    assert client.request("GET", "/x").text == "fine" and len(calls) == 3


def test_a_post_that_timed_out_is_not_sent_twice():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    client, _ = _client(handler)
    with pytest.raises(UnreachableError, match="may or may not have been applied"):
        client.request("POST", "/v1/jobs", content=b"{}")
    assert len(calls) == 1


def test_unreachable_after_every_try_says_so():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, slept = _client(handler, retry=RetryPolicy(attempts=4, backoff_s=1, max_backoff_s=3))
    with pytest.raises(UnreachableError, match=r"cannot reach .*tried 4 times"):
        client.request("GET", "/x")
    assert len(slept) == 3 and all(0.5 <= s <= 3 for s in slept)  # jittered, capped
    assert slept[2] >= 1.5  # exponential: 4 s capped at 3, jittered down to half at most


def test_retry_after_is_honoured_and_non_ascii_digits_ignored():
    answers = iter(
        [
            httpx.Response(429, headers={"retry-after": "7"}),
            httpx.Response(429, headers={"retry-after": "²".encode()}),
            httpx.Response(200),
        ]
    )
    client, slept = _client(lambda r: next(answers), retry=RetryPolicy(attempts=3))
    client.request("GET", "/x")
    assert slept[0] >= 7 and slept[1] < 7


def test_error_bodies_are_parsed_once_whatever_they_are():
    bodies = {
        "/json": httpx.Response(404, json={"error": "no_job", "detail": "no job abc"}),
        "/text": httpx.Response(404, text="plain words"),
        "/empty": httpx.Response(404),
        "/junk": httpx.Response(404, content=b"\xff\xfe{not json"),
    }
    client, _ = _client(lambda r: bodies[r.url.path])
    messages = {}
    for path in bodies:
        with pytest.raises(NotFound) as info:
            client.request("GET", path)
        messages[path] = (info.value.code, str(info.value))
    assert messages["/json"] == ("no_job", "GET /json answered 404 (no_job: no job abc)")
    assert messages["/text"][1].endswith("(error: plain words)")
    assert messages["/empty"][1].endswith("(error: Not Found)")
    assert messages["/junk"][0] == "not_found"


def test_allowed_statuses_and_bounded_bodies():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/gone":
            return httpx.Response(404)
        if request.url.path == "/notjson":
            return httpx.Response(200, text="<html>")
        return httpx.Response(200, content=b"x" * 100)

    client, _ = _client(handler)
    assert client.get_bytes("/gone", limit=10, allow={404}) == (404, b"")
    assert client.get_bytes("/big", limit=100) == (200, b"x" * 100)
    with pytest.raises(TooLarge, match="100 bytes, more than the 99"):
        client.get_bytes("/big", limit=99)
    with pytest.raises(InvalidAnswerError, match="not JSON"):
        client.json("GET", "/notjson")


@pytest.mark.parametrize("url", ["ftp://x/y", "not a url", "http://", ""])
def test_bad_base_urls_are_the_callers_mistake(url):
    with pytest.raises(BadRequest):
        HttpClient(url)


def test_the_three_clients_wait_on_the_clock_they_are_given(tmp_path):
    """No real sleep in a retry: the lab's, the volunteer's and the auditor's clients pass
    their ``sleep`` to the one base."""
    from coordinator.labclient import LabClient
    from ledger.remote import HttpFetcher
    from worker.client import HttpVolunteer

    def flaky():
        answers = iter([httpx.Response(503), httpx.Response(200, json={"jobs": [], "next": None})])
        return httpx.MockTransport(lambda r: next(answers))

    waits: list[float] = []
    with LabClient("http://svc.test", "k", transport=flaky(), sleep=waits.append) as lab:
        assert list(lab.jobs()) == []
    with HttpFetcher("http://svc.test/v1/ledger", transport=flaky(), sleep=waits.append) as f:
        assert f.get("checkpoint", limit=100) is not None
    v = HttpVolunteer(
        "http://svc.test",
        home=tmp_path / "home",
        key_path=tmp_path / "key",
        transport=flaky(),
        sleep=waits.append,
    )
    try:
        v.register()
    finally:
        v.close()
    assert len(waits) == 3
