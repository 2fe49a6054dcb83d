"""Hostile edges of the HTTP service (issue 10), each written as the attack first: nothing a
client can send gets a 5xx, nothing is read before it is authenticated, nothing is lost.

Real uvicorn, real coordinator, real signatures on loopback, as in test_http."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from http_helpers import add_lab, go_job, lab_client, post_job, running_service, signed

from coordinator.http.app import ServiceConfig
from sims.examples import VILLIN_PDB
from sims.go import GoModel
from worker.arrays import pack_arrays, read_container
from worker.errors import WireError
from worker.identity import Identity
from worker.systems import EngineCache, decode_system
from worker.tasks import compute
from worker.wire import decode_spot_check, decode_task, encode_result, sign_headers

CFG = ServiceConfig(max_job_bytes=200_000, max_json_bytes=200_000)


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if code is not None:
        assert body["error"] == code, body
    return body


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("edges") / "c"
    keys = {"a": add_lab(d, "lab-a")}
    with running_service(d, CFG) as s:
        s.keys = keys
        with lab_client(s.url, keys["a"]) as lab:
            r = post_job(lab, go_job(clones=16, gens=1))
            assert r.status_code == 202, r.text
        yield s


@pytest.fixture
def volunteer(served):
    me = Identity.ephemeral()
    with httpx.Client(base_url=served.url, timeout=60) as c:
        body = json.dumps({"public_key": me.public_key.hex(), "name": "t"}).encode()
        r = signed(c, me, "POST", "/v1/volunteers", body)
        assert r.status_code == 201, r.text
        yield c, me


_DET: list[str] = []


def _det_class() -> str:
    if not _DET:
        model = GoModel.from_pdb(VILLIN_PDB)
        _DET.append(EngineCache().get(model).determinism_class().canonical().decode())
    return _DET[0]


def _pull(c: httpx.Client, me: Identity) -> dict:
    body = json.dumps({"det_class": _det_class(), "slots": 1}).encode()
    r = signed(c, me, "POST", "/v1/work", body)
    assert r.status_code == 200, r.text
    (task,) = r.json()["tasks"]
    return task


def _computed(c: httpx.Client, me: Identity, task: dict):
    r = signed(c, me, "GET", f"/v1/systems/{task['system']}")
    assert r.status_code == 200
    t = decode_task(task, decode_system(r.content))
    return t, compute(t, engines=EngineCache(), identity=me)


def _raw(good, meta: dict | None = None, **arrays) -> bytes:
    """An upload written by hand (what the client never sends)."""
    manifest, parsed = read_container(encode_result(good))
    del manifest["arrays"]
    return pack_arrays(parsed | arrays, manifest | (meta or {}))


def _with_manifest(manifest: bytes, rest: bytes = b"") -> bytes:
    return b"FNA1" + len(manifest).to_bytes(4, "little") + manifest + rest


# -- item 5: no 5xx for anything a client can send -------------------------------------------


def test_a_lone_surrogate_in_a_name_or_det_class_is_a_422(served):
    me = Identity.ephemeral()
    with httpx.Client(base_url=served.url, timeout=30) as c:
        before = served.stored()
        body = json.dumps({"public_key": me.public_key.hex(), "name": "\ud800"}).encode()
        detail = _error(signed(c, me, "POST", "/v1/volunteers", body), 422, "invalid_body")
        assert "name" in detail["detail"] and "surrogate" in detail["detail"]
        assert served.stored() == before
        ok = json.dumps({"public_key": me.public_key.hex()}).encode()
        assert signed(c, me, "POST", "/v1/volunteers", ok).status_code == 201
        before = served.stored()
        for det in ("\ud800", '{"engine":"go\ud800"}'):
            body = json.dumps({"det_class": det, "slots": 1}).encode()
            detail = _error(signed(c, me, "POST", "/v1/work", body), 422, "invalid_body")
            assert "det_class" in detail["detail"]
        assert served.stored() == before


def test_deeply_nested_json_is_a_422(served, volunteer):
    c, me = volunteer
    task = _pull(c, me)
    before = served.stored()
    deep = b"[" * 100_000 + b"]" * 100_000
    _error(signed(c, me, "POST", "/v1/work", deep), 422, "invalid_body")
    body = json.dumps({"det_class": "[" * 4000, "slots": 1}).encode()
    _error(signed(c, me, "POST", "/v1/work", body), 422, "invalid_body")
    obj = b'{"a":' * 30_000 + b"1" + b"}" * 30_000
    manifest = b'{"a":' * 10_000 + b"1" + b"}" * 10_000  # within what a result may take
    _error(signed(c, me, "POST", f"/v1/results/{task['replica']}", _with_manifest(manifest)), 422)
    _error(signed(c, me, "POST", f"/v1/results/{task['replica']}/failure", obj), 422)
    assert served.stored() == before


def test_absurd_shapes_are_a_422(served, volunteer):
    c, me = volunteer
    task = _pull(c, me)
    path = f"/v1/results/{task['replica']}"
    before = served.stored()
    for shape in ([0, 10**30], [2**40, 2**40, 0], [0, 1e30], [-1, 3], [0, -(2**70)]):
        manifest = json.dumps({"arrays": [["positions", "<f8", shape]]}).encode()
        detail = _error(signed(c, me, "POST", path, _with_manifest(manifest)), 422)
        assert "positions" in detail["detail"], detail
    with pytest.raises(WireError, match="at most"):
        from worker.wire import decode_array

        decode_array({"dtype": "<f8", "shape": [0, 10**30], "data": ""}, "x", "<f8", 2, 100)
    assert served.stored() == before


@pytest.mark.parametrize("ts", ["²", "¹²³", "1²", "+1", "1_0", "-5", "1" * 13, ""])
def test_a_timestamp_that_is_not_ascii_digits_is_a_401(served, volunteer, ts):
    c, me = volunteer
    # the server reads header bytes as Latin-1, where b"\xb2" is "²" (and "²".isdigit())
    stamp = ts.encode("latin-1")
    headers = sign_headers(me, "GET", "/v1/volunteers/me", origin=served.url) | {
        "x-foldnet-timestamp": stamp
    }
    detail = _error(c.get("/v1/volunteers/me", headers=headers), 401, "bad_timestamp")
    assert "ASCII digits" in detail["detail"]


def _uploads_by_status(url: str) -> dict[str, int]:
    """Answers the service gave to result uploads so far, by status (its own metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pattern = r'foldnet_http_requests_total\{method="POST",route="/v1/results/\{replica\}",'
    return {m[0]: int(m[1]) for m in re.findall(pattern + r'status="(\d+)"\} (\d+)', text)}


def test_a_client_disconnecting_mid_upload_is_no_server_error(served, volunteer):
    c, me = volunteer
    task = _pull(c, me)
    t, good = _computed(c, me, task)
    body = encode_result(good)
    path = f"/v1/results/{t.replica}"
    before = served.stored()
    seen = _uploads_by_status(served.url)
    headers = sign_headers(me, "POST", path, body, origin=served.url)
    host, port = served.url.removeprefix("http://").split(":")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port))) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])
    deadline = time.monotonic() + 30
    while sum(_uploads_by_status(served.url).values()) < sum(seen.values()) + 1:
        assert time.monotonic() < deadline, "the server never finished the cut-off request"
        time.sleep(0.05)
    after = _uploads_by_status(served.url)
    assert after.get("500", 0) == seen.get("500", 0), after
    assert served.stored() == before
    # the replica is still this volunteer's: the whole upload succeeds afterwards
    r = signed(c, me, "POST", path, body)
    assert r.status_code == 200, r.text


def test_a_spot_check_whose_digest_count_does_not_match_is_refused():
    doc = {
        "wu_id": "00" * 32,
        "check": 1,
        "segments": [0, 1],
        "end_digests": ["11" * 32],
        "determinism": "{}",
        "worker_key": "22" * 32,
        "signature": "33" * 64,
    }
    with pytest.raises(WireError, match="one digest per segment"):
        decode_spot_check(doc)


def test_a_bad_openmm_pdb_names_no_server_path(served):
    with lab_client(served.url, served.keys["a"]) as lab:
        one_atom = "ATOM      1  N   ALA A   1      11.104   6.134  -6.504\n"
        for pdb in ("HELLO not a PDB\n", one_atom):
            job = go_job(engine="openmm", pdb=pdb, temperature=300.0)
            r = post_job(lab, job)
            assert r.status_code == 202, r.text
            progress = lab.get(f"/v1/jobs/{r.json()['job']}").json()
            assert progress["state"] == "failed", progress
            detail = progress["error"]
            assert "the uploaded PDB" in detail, detail
            assert "/tmp" not in detail and "foldnet-pdb" not in detail, detail
            assert str(Path.cwd()) not in detail, detail


def test_an_upload_with_too_few_boundary_digests_is_refused_not_a_500(served, volunteer):
    c, me = volunteer
    task = _pull(c, me)
    t, good = _computed(c, me, task)
    header = json.loads(good.header.canonical())
    header["boundary_digests"] = header["boundary_digests"][:1]
    body = _raw(good, {"header": json.dumps(header)})
    r = signed(c, me, "POST", f"/v1/results/{t.replica}", body)
    assert r.status_code < 500, r.text
    _error(r, 422, "invalid_result")
    np.testing.assert_equal(good.positions.shape[0], len(good.header.boundary_digests))


# -- item 3: authenticate before reading -----------------------------------------------------


def _raw_request(url: str, head: list[str], body: bytes = b"") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=60)
    s.sendall(("\r\n".join([*head, f"Host: {host}"]) + "\r\n\r\n").encode() + body)
    return s


def _status(s: socket.socket) -> tuple[int, bytes]:
    """The status and body of the answer on ``s`` (read until the body is complete)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"the connection closed before an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += s.recv(65536)
    return int(head.split()[1]), rest


def test_an_unauthenticated_upload_is_answered_before_its_body_is_sent(served, volunteer):
    c, me = volunteer
    task = _pull(c, me)
    path = f"/v1/results/{task['replica']}"
    stranger = Identity.ephemeral()
    big = 60 << 20  # under the service's ceiling, far over what any result here needs
    cases = [
        ([], "unsigned"),  # no signature at all
        (
            list(sign_headers(stranger, "POST", path, b"x", origin=served.url).items()),
            "unknown_volunteer",
        ),
        (
            list(
                sign_headers(
                    me, "POST", path, b"x", origin=served.url, now=time.time() - 3600
                ).items()
            ),
            "expired",
        ),
    ]
    for headers, code in cases:
        head = [f"POST {path} HTTP/1.1", f"Content-Length: {big}"]
        head += [f"{k}: {v}" for k, v in headers]
        with _raw_request(served.url, head) as s:  # not one byte of the body is sent
            status, body = _status(s)
        assert status == 401 and json.loads(body)["error"] == code, body
    # signed by a registered key, but for a replica that is not its own: 404, unread
    other = f"/v1/results/{task['replica'] + 1000}"
    head = [f"POST {other} HTTP/1.1", f"Content-Length: {big}"]
    head += [
        f"{k}: {v}" for k, v in sign_headers(me, "POST", other, b"x", origin=served.url).items()
    ]
    with _raw_request(served.url, head) as s:
        status, body = _status(s)
    assert status == 404 and json.loads(body)["error"] == "not_assigned", body


def test_an_upload_is_held_to_what_its_assignment_can_need(served, volunteer):
    c, me = volunteer
    task = _pull(c, me)
    t, good = _computed(c, me, task)
    path = f"/v1/results/{t.replica}"
    honest = encode_result(good)
    before = served.stored()
    padded = _raw(good, {"pad": "x" * (100 << 10)})  # a manifest past any honest one
    detail = _error(signed(c, me, "POST", path, padded), 413, "too_large")["detail"]
    assert f"replica {t.replica} takes at most" in detail, detail
    assert len(padded) < CFG.max_result_bytes  # refused by the assignment's limit, not the cap

    def chunks():  # no Content-Length: the limit holds while the body streams
        yield padded

    headers = sign_headers(me, "POST", path, padded, origin=served.url)
    _error(c.post(path, content=chunks(), headers=headers), 413, "too_large")
    assert served.stored() == before
    r = signed(c, me, "POST", path, honest)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A service with a short body timeout and few requests per address."""
    d = tmp_path_factory.mktemp("tight") / "c"
    cfg = ServiceConfig(body_timeout_s=1.0, min_upload_rate=1e12, max_requests_per_address=3)
    with running_service(d, cfg) as s:
        yield s


def test_a_body_that_does_not_arrive_in_time_is_a_408(tight):
    head = ["POST /v1/work HTTP/1.1", "Content-Length: 1000", "Content-Type: application/json"]
    with _raw_request(tight.url, head, b'{"slots": ') as s:  # ... and then nothing
        status, body = _status(s)
    assert status == 408 and json.loads(body)["error"] == "body_timeout", body


def test_requests_in_flight_are_capped_per_address(tmp_path):
    cfg = ServiceConfig(max_requests_per_address=3)
    with running_service(tmp_path / "c", cfg) as served:
        head = ["POST /v1/work HTTP/1.1", "Content-Length: 1000"]
        held = [_raw_request(served.url, head, b"{") for _ in range(3)]  # bodies never end
        try:
            deadline = time.monotonic() + 30
            while (r := httpx.get(f"{served.url}/v1/health")).status_code != 429:
                assert time.monotonic() < deadline, r.text
            assert r.json()["error"] == "too_many_requests" and r.headers["retry-after"]
            assert "more than 3 requests at once from 127.0.0.1" in r.json()["detail"]
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 30
        while httpx.get(f"{served.url}/v1/health").status_code != 200:  # freed on hang-up
            assert time.monotonic() < deadline


def test_registrations_are_limited_per_ipv6_64_and_in_all():
    from coordinator.http.auth import client_block

    assert client_block("2001:db8:1:2::1") == client_block("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert client_block("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_block("2001:db8:1:3::1") != client_block("2001:db8:1:2::1")
    assert client_block("::ffff:192.0.2.7") == client_block("192.0.2.7") == "192.0.2.7"
    assert client_block("192.0.2.7") != client_block("192.0.2.8")


def test_registrations_from_many_addresses_share_one_budget(tmp_path):
    cfg = ServiceConfig(register_burst=1000, register_global_burst=3, register_global_rate=0.01)
    with running_service(tmp_path / "c", cfg) as served, httpx.Client(base_url=served.url) as c:
        codes = []
        for _ in range(5):
            me = Identity.ephemeral()
            body = json.dumps({"public_key": me.public_key.hex()}).encode()
            codes.append(signed(c, me, "POST", "/v1/volunteers", body).status_code)
        assert codes == [201, 201, 201, 429, 429], codes


# -- item 6: nothing lost, nothing leaking ---------------------------------------------------


def test_a_signature_for_one_coordinator_is_worthless_at_another(served, tight):
    me = Identity.ephemeral()
    reg = json.dumps({"public_key": me.public_key.hex()}).encode()
    with httpx.Client(base_url=served.url) as a, httpx.Client(base_url=tight.url) as b:
        assert signed(a, me, "POST", "/v1/volunteers", reg).status_code == 201
        assert signed(b, me, "POST", "/v1/volunteers", reg).status_code == 201
        headers = sign_headers(me, "GET", "/v1/volunteers/me", origin=served.url)
        detail = _error(b.get("/v1/volunteers/me", headers=headers), 401, "bad_signature")
        assert tight.url.removeprefix("http://") in detail["detail"], detail
        assert a.get("/v1/volunteers/me", headers=headers).status_code == 200
        # the Host header is the client's to choose: it does not make the replay good
        again = sign_headers(me, "GET", "/v1/volunteers/me", origin=served.url)
        host = {"host": served.url.removeprefix("http://")}
        _error(b.get("/v1/volunteers/me", headers=again | host), 401, "bad_signature")


@pytest.mark.slow  # SQLite's own 5 s busy wait before the commit fails
def test_a_transient_commit_failure_keeps_the_assignment_for_the_retry(tmp_path):
    import sqlite3

    d = tmp_path / "c"
    key = add_lab(d, "lab-a")
    with running_service(d, CFG) as served, httpx.Client(base_url=served.url, timeout=60) as c:
        with lab_client(served.url, key) as lab:
            assert post_job(lab, go_job(clones=2, gens=1)).status_code == 202
        me = Identity.ephemeral()
        reg = json.dumps({"public_key": me.public_key.hex()}).encode()
        assert signed(c, me, "POST", "/v1/volunteers", reg).status_code == 201
        task = _pull(c, me)
        t, good = _computed(c, me, task)
        path = f"/v1/results/{t.replica}"
        body = encode_result(good)
        before = served.stored()
        # another writer holds the database: the coordinator's group commit fails
        lock = sqlite3.connect(d / "coordinator.db", timeout=0)
        lock.execute("BEGIN IMMEDIATE")
        try:
            r = signed(c, me, "POST", path, body)
        finally:
            lock.rollback()
            lock.close()
        detail = _error(r, 503, "unavailable")["detail"]
        assert "retry" in detail, detail
        assert served.stored() == before
        r = signed(c, me, "POST", path, body)  # the retry the 503 asked for
        assert r.status_code == 200, r.text
        assert r.json()["state"] in ("returned", "valid"), r.json()


def test_client_retries_keep_the_callers_headers(tmp_path):
    """The volunteer's client retries a 429 with the headers its caller gave (a recording
    transport in front of the real service sees every try)."""
    from worker.client import HttpVolunteer

    cfg = ServiceConfig(volunteer_rate=2.0, volunteer_burst=1.0)
    with running_service(tmp_path / "c", cfg) as served:
        seen: list[tuple[str, int, str | None]] = []
        real = httpx.HTTPTransport()

        def record(request: httpx.Request) -> httpx.Response:
            r = real.handle_request(request)
            r.read()
            seen.append((request.url.path, r.status_code, request.headers.get("content-type")))
            return r

        v = HttpVolunteer(
            served.url,
            home=tmp_path / "home",
            key_path=tmp_path / "key",
            transport=httpx.MockTransport(record),
        )
        try:
            v.register()  # spends the key's one-request burst
            v.register()  # a JSON POST again: answered 429 first, then retried
        finally:
            v.close()
            real.close()
        tries = [s for s in seen if s[0] == "/v1/volunteers"][1:]
        assert [t[1] for t in tries][-1] == 200 and 429 in [t[1] for t in tries], seen
        assert all(t[2] == "application/json" for t in tries), tries


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_result_files_get_the_umasks_mode_not_0600(tmp_path, umask, mode):
    from foldnet.files import atomic_write

    old = __import__("os").umask(umask)
    try:
        a = atomic_write(tmp_path / "observables.csv", "step,q\n")
        b = atomic_write(tmp_path / "plot.png", b"\x89PNG")
    finally:
        __import__("os").umask(old)
    assert (a.stat().st_mode & 0o777, b.stat().st_mode & 0o777) == (mode, mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["observables.csv", "plot.png"]


def test_nonces_of_keys_that_stop_calling_are_pruned():
    from coordinator.http.auth import VolunteerAuth

    now = [1_000_000.0]
    auth = VolunteerAuth(window_s=300, clock=lambda: now[0])
    origin = "http://127.0.0.1:1"
    people = [Identity.ephemeral() for _ in range(50)]
    auth.registered = {p.public_key for p in people}
    for p in people:
        auth.verify("GET", "/x", sign_headers(p, "GET", "/x", origin=origin, now=now[0]), b"",
                    origin=origin)  # fmt: skip
    assert auth.keys_with_nonces == 50
    now[0] += 2 * 300 + 1  # all of them went quiet; one key still calls
    auth.verify(
        "GET", "/x", sign_headers(people[0], "GET", "/x", origin=origin, now=now[0]), b"",
        origin=origin,
    )  # fmt: skip
    assert auth.keys_with_nonces == 1


def test_the_ledgers_checkpoint_list_is_paginated(served):
    with httpx.Client(base_url=served.url) as c:
        for _ in range(3):  # a ledger entry (a registration), then a checkpoint over it
            me = Identity.ephemeral()
            reg = json.dumps({"public_key": me.public_key.hex()}).encode()
            assert signed(c, me, "POST", "/v1/volunteers", reg).status_code == 201
            served.service.thread.call_sync(lambda co: co.log.publish_checkpoint())
    everything = served.service.thread.call_sync(lambda co: co.log.store.checkpoint_sizes())
    assert len(everything) >= 2
    pages, after = [], None
    while True:
        params = {"limit": 1} | ({"after": after} if after is not None else {})
        page = httpx.get(f"{served.url}/v1/ledger/checkpoints", params=params).json()
        assert len(page["sizes"]) <= 1 and page["latest"] == everything[-1]
        pages += page["sizes"]
        if page["next"] is None:
            break
        after = page["next"]
    assert pages == everything
    r = httpx.get(f"{served.url}/v1/ledger/checkpoints", params={"limit": 100_000})
    _error(r, 400, "invalid_parameter")


# -- item 4: job limits that bound cost ------------------------------------------------------


def test_a_job_of_too_many_work_units_is_refused_whatever_its_steps(served):
    from coordinator.errors import SubmissionError
    from coordinator.jobs import JobSpec

    with pytest.raises(SubmissionError, match="work units"):
        JobSpec("go", b"\0" * 32, 100_000, 1, 5_000, 1, 1, 1, 0.8)
    before = served.stored()
    with lab_client(served.url, served.keys["a"]) as lab:
        attack = go_job(runs=100_000, clones=1, gens=5_000, steps_per_wu=1, segment_steps=1,
                        report_steps=1)  # fmt: skip
        assert CFG.max_job_steps >= 100_000 * 5_000 * 1  # the step limit alone lets it in
        detail = _error(post_job(lab, attack), 422, "invalid_job")["detail"]
        assert "500,000,000 work units" in detail, detail
        few_steps = go_job(steps_per_wu=10, segment_steps=10, report_steps=10)
        detail = _error(post_job(lab, few_steps), 422, "invalid_job")["detail"]
        assert f"at least {CFG.min_steps_per_wu}" in detail, detail
    assert served.stored() == before


def test_systems_over_the_residue_and_atom_limits_are_refused(tmp_path):
    d = tmp_path / "c"
    key = add_lab(d, "lab-a")
    limits = ServiceConfig(max_residues=30, max_atoms=5_000)

    def failed(lab: httpx.Client) -> str:
        r = post_job(lab, go_job())  # refused in its preparation, which parses the structure
        assert r.status_code == 202, r.text
        progress = lab.get(f"/v1/jobs/{r.json()['job']}").json()
        assert progress["state"] == "failed" and progress["wus"]["queued"] == 0, progress
        return str(progress["error"])

    with running_service(d, limits) as s, lab_client(s.url, key) as lab:
        before = s.stored()
        detail = failed(lab)
        assert "amino-acid residues; the limit here is 30" in detail, detail
        seq = {"sequence": "A" * 31, "pdb": None, "engine": "openmm", "temperature": 300.0}
        refused = _error(post_job(lab, go_job(**seq)), 422, "invalid_job")  # the plan alone
        assert "31 residues" in refused["detail"], refused
        _events, entries, jobs, results = s.stored()
        assert (entries, jobs, results) == before[1:]  # no ledger entry, WU or system
    with running_service(d, ServiceConfig(max_atoms=100)) as s, lab_client(s.url, key) as lab:
        detail = failed(lab)
        assert "atoms; the limit here is 100" in detail, detail


def test_a_labs_queued_work_units_are_capped(tmp_path):
    d = tmp_path / "c"
    key = add_lab(d, "lab-a")
    other = add_lab(d, "lab-b")
    quota = ServiceConfig(max_queued_wus_per_lab=20)
    with (
        running_service(d, quota) as s,
        lab_client(s.url, key) as lab,
        lab_client(s.url, other) as b,
    ):
        first = post_job(lab, go_job(clones=8, gens=2))  # 16 WUs
        assert first.status_code == 202, first.text
        before = s.stored()
        detail = _error(post_job(lab, go_job(clones=4, gens=2)), 409)["detail"]
        assert "16 work units queued" in detail and "limit is 20" in detail, detail
        assert s.stored() == before
        assert post_job(b, go_job(clones=4, gens=2)).status_code == 202
        lab.post(f"/v1/jobs/{first.json()['job']}/cancel")
        assert post_job(lab, go_job(clones=4, gens=2)).status_code == 202


def test_a_streamed_answer_after_the_body_limit_is_not_cut_short():
    """BodyLimit reads the body and hands it on; after that the app must hear the real
    channel, not an invented disconnect (which cut StaticFiles' and streaming answers)."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from coordinator.http.middleware import BodyLimit

    async def chunks():
        for i in range(50):
            await asyncio.sleep(0)
            yield b"%03d," % i

    async def stream(_request):
        return StreamingResponse(chunks(), media_type="text/plain")

    app = BodyLimit(
        Starlette(routes=[Route("/s", stream, methods=["GET", "POST"])]),
        limit_for=lambda _m, _p: 1 << 20,
        timeout_for=lambda _n: 10.0,
    )

    async def go() -> list[bytes]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [
                (await client.request(m, "/s", content=b"x" * 10)).content for m in ("GET", "POST")
            ]

    expected = b"".join(b"%03d," % i for i in range(50))
    assert asyncio.run(go()) == [expected, expected]
