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
from http_helpers import add_lab, go_job, lab_client, running_service, signed

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
            r = lab.post("/v1/jobs", json=go_job(clones=16, gens=1))
            assert r.status_code == 201, r.text
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
    _error(signed(c, me, "POST", f"/v1/results/{task['replica']}", _with_manifest(obj)), 422)
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
    headers = sign_headers(me, "GET", "/v1/volunteers/me") | {"x-foldnet-timestamp": stamp}
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
    headers = sign_headers(me, "POST", path, body)
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
        before = served.stored()
        one_atom = "ATOM      1  N   ALA A   1      11.104   6.134  -6.504\n"
        for pdb in ("HELLO not a PDB\n", one_atom):
            job = go_job(engine="openmm", pdb=pdb, temperature=300.0)
            detail = _error(lab.post("/v1/jobs", json=job), 422)["detail"]
            assert "/tmp" not in detail and "foldnet-pdb" not in detail, detail
            assert str(Path.cwd()) not in detail, detail
        assert served.stored() == before


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
