"""The HTTP service for labs and volunteers, on loopback: real uvicorn, real coordinator,
real engine and signatures. Hostile input is answered 4xx with the JSON error shape and
leaves nothing stored."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from http_helpers import (
    FakeClock,
    add_lab,
    go_job,
    lab_client,
    post_job,
    running_service,
    signed,
    trust,
    wait_for_job,
)

from coordinator.databases import Databases
from coordinator.http.app import ServiceConfig
from ledger import run_audit
from ledger.checkpoint import Checkpoint
from ledger.entries import PriceInputs
from ledger.merkle import leaf_hash, verify_inclusion
from ledger.note import parse_note
from sims.engine import PartialRun
from sims.go import GoEngine, GoModel
from sims.spec import RunSpec
from worker.arrays import pack_arrays, read_container
from worker.client import HttpVolunteer
from worker.errors import WireError
from worker.identity import Identity
from worker.result import sign_result
from worker.systems import EngineCache, decode_system
from worker.tasks import compute
from worker.wire import decode_task, encode_result, sign_headers

SMALL = ServiceConfig(max_job_bytes=200_000, max_result_bytes=200_000, max_json_bytes=20_000)


def _error(r: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if code is not None:
        assert body["error"] == code, body
    return body


_OPEN: list[httpx.Client] = []


def _client(url: str, key: str | None = None) -> httpx.Client:
    c = lab_client(url, key) if key else httpx.Client(base_url=url, timeout=30)
    _OPEN.append(c)
    return c


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("svc") / "c"
    keys = {"a": add_lab(d, "lab-a"), "b": add_lab(d, "lab-b")}
    with running_service(d, SMALL) as s:
        s.keys = keys
        yield s


@pytest.fixture(scope="module")
def job(served):
    with lab_client(served.url, served.keys["a"]) as lab:
        r = post_job(lab, go_job(clones=8, gens=1))
        assert r.status_code == 202, r.text
        return r.json()["job"]


def _registered(url: str) -> tuple[httpx.Client, Identity]:
    me = Identity.ephemeral()
    c = _client(url)
    body = json.dumps({"public_key": me.public_key.hex(), "name": "t"}).encode()
    r = signed(c, me, "POST", "/v1/volunteers", body)
    assert r.status_code == 201, r.text
    return c, me


def _det_class() -> str:
    return EngineCache().get(GoModel.from_pdb(_villin())).determinism_class().canonical().decode()


def _villin() -> Path:
    from sims.examples import VILLIN_PDB

    return VILLIN_PDB


def _pull(c: httpx.Client, me: Identity, slots: int = 1) -> list[dict]:
    body = json.dumps({"det_class": _det_class(), "slots": slots}).encode()
    r = signed(c, me, "POST", "/v1/work", body)
    assert r.status_code == 200, r.text
    return r.json()["tasks"]


def _computed(c: httpx.Client, me: Identity, task: dict):
    r = signed(c, me, "GET", f"/v1/systems/{task['system']}")
    assert r.status_code == 200
    t = decode_task(task, decode_system(r.content))
    return t, compute(t, engines=EngineCache(), identity=me)


# -- labs ------------------------------------------------------------------------------------


def test_health_metrics_and_openapi_are_public(served):
    with httpx.Client(base_url=served.url) as c:
        assert c.get("/v1/health").json()["status"] == "ok"
        text = c.get("/metrics").text
        assert "foldnet_http_requests_total" in text and "foldnet_wus" in text
        assert "foldnet_coordinator_ledger_pending 0" in text.splitlines()
        paths = c.get("/v1/openapi.json").json()["paths"]
        assert {"/v1/jobs", "/v1/work", "/v1/results/{replica}", "/v1/volunteers"} <= set(paths)
        assert c.get("/docs").status_code == 200
        _error(c.get("/v1/nothing-here"), 404, "not_found")


def test_a_lab_sees_lists_and_cancels_only_its_own_jobs(served, job):
    a = _client(served.url, served.keys["a"])
    b = _client(served.url, served.keys["b"])
    progress = a.get(f"/v1/jobs/{job}").json()
    assert progress["state"] == "running" and progress["wus"]["total"] == 8
    assert progress["plan"]["steps_per_wu"] == 2000
    other = post_job(b, go_job(clones=1, gens=1)).json()["job"]
    before = served.stored()
    for method, path in [
        ("GET", f"/v1/jobs/{job}"),
        ("GET", f"/v1/jobs/{job}/results"),
        ("POST", f"/v1/jobs/{job}/cancel"),
    ]:
        _error(b.request(method, path), 404, "not_found")
    assert served.stored() == before
    assert [j["job"] for j in b.get("/v1/jobs").json()["jobs"]] == [other]
    assert job in [j["job"] for j in a.get("/v1/jobs").json()["jobs"]]
    page = b.get("/v1/jobs", params={"limit": 1}).json()
    assert len(page["jobs"]) == 1 and page["next"] is None
    _error(b.get("/v1/jobs", params={"limit": 1000}), 422)
    assert b.post(f"/v1/jobs/{other}/cancel").json()["state"] == "cancelled"
    assert b.get(f"/v1/jobs/{other}").json()["state"] == "cancelled"
    _error(b.post(f"/v1/jobs/{other}/cancel"), 422, "invalid_job")


# -- hostile input ---------------------------------------------------------------------------

BAD_JOBS = [
    (b"{not json", "invalid_request"),
    (json.dumps(go_job(runs="2")).encode(), "invalid_request"),
    (json.dumps(go_job(temperature="warm")).encode(), "invalid_request"),
    (json.dumps(go_job(surprise=1)).encode(), "invalid_request"),
    (json.dumps(go_job(gens=1000, steps_per_wu=1_000_000)).encode(), "invalid_job"),  # 1e9
    (json.dumps(go_job(steps_per_wu=10**9, segment_steps=10**9)).encode(), "invalid_job"),
    (json.dumps(go_job(temperature=300.0)).encode(), "invalid_job"),  # kelvin, for go
    (json.dumps(go_job(pdb="")).encode(), "invalid_job"),
    (json.dumps(go_job(segment_steps=300)).encode(), "invalid_job"),
    (json.dumps(go_job(engine="quantum")).encode(), "invalid_request"),
    (json.dumps([1, 2, 3]).encode(), "invalid_request"),
]


@pytest.mark.parametrize(("body", "code"), BAD_JOBS)
def test_bad_job_submissions_are_refused_and_store_nothing(served, body, code):
    with lab_client(served.url, served.keys["a"]) as lab:
        before = served.stored()
        r = lab.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
        _error(r, 422, code)
        assert served.stored() == before


def test_oversized_bodies_are_413(served):
    c, me = _registered(served.url)
    with lab_client(served.url, served.keys["a"]) as lab:
        before = served.stored()
        _error(post_job(lab, go_job(pdb="x" * 300_000)), 413, "too_large")
        _error(signed(c, me, "POST", "/v1/results/1", b"\0" * 300_000), 413, "too_large")
        assert served.stored() == before


def test_lab_keys_are_required_and_checked(served):
    with httpx.Client(base_url=served.url) as c:
        _error(c.get("/v1/jobs"), 401, "missing_api_key")
        _error(c.get("/v1/jobs", headers={"Authorization": "Basic abc"}), 401)
        _error(c.get("/v1/jobs", headers={"Authorization": "Bearer fnlab_wrong"}), 403)
        before = served.stored()
        _error(post_job(c, go_job()), 401)
        assert served.stored() == before


def test_volunteer_requests_must_be_signed_fresh_and_once(served):
    c, me = _registered(served.url)
    body = json.dumps({"det_class": _det_class(), "slots": 1}).encode()
    before = served.stored()
    _error(c.post("/v1/work", content=body), 401, "unsigned")
    stranger = Identity.ephemeral()
    _error(signed(c, stranger, "POST", "/v1/work", body), 401, "unknown_volunteer")
    forged = {
        **sign_headers(stranger, "POST", "/v1/work", body, origin=served.url),
        "x-foldnet-key": me.public_key.hex(),
    }
    _error(c.post("/v1/work", content=body, headers=forged), 401, "bad_signature")
    r = c.post(
        "/v1/work",
        content=b"{}",
        headers=sign_headers(me, "POST", "/v1/work", body, origin=served.url),
    )
    _error(r, 401, "bad_signature")
    _error(signed(c, me, "POST", "/v1/work", body, now=time.time() - 3600), 401, "expired")
    _error(signed(c, me, "POST", "/v1/work", body, now=time.time() + 3600), 401, "expired")
    assert served.stored() == before
    assert signed(c, me, "POST", "/v1/work", body, nonce="n" * 32).status_code == 200
    _error(signed(c, me, "POST", "/v1/work", body, nonce="n" * 32), 401, "replayed")
    _error(signed(c, me, "POST", "/v1/work", body, nonce="short"), 401, "bad_nonce")


def test_registration_needs_proof_of_the_key(served):
    me, other = Identity.ephemeral(), Identity.ephemeral()
    with httpx.Client(base_url=served.url) as c:
        body = json.dumps({"public_key": other.public_key.hex()}).encode()
        _error(signed(c, me, "POST", "/v1/volunteers", body), 422, "invalid_body")
        _error(signed(c, me, "POST", "/v1/volunteers", b"[]"), 422, "invalid_body")
        ok = json.dumps({"public_key": me.public_key.hex()}).encode()
        assert signed(c, me, "POST", "/v1/volunteers", ok).status_code == 201
        assert signed(c, me, "POST", "/v1/volunteers", ok).status_code == 200  # idempotent


def test_bad_result_uploads_are_refused_and_store_nothing(served, job):
    c, me = _registered(served.url)
    intruder_c, intruder = _registered(served.url)
    (task,) = _pull(c, me)
    t, good = _computed(c, me, task)
    path = f"/v1/results/{t.replica}"
    before = served.stored()

    def bad(**arrays):
        return encode_result(dataclasses.replace(good, **arrays))

    def raw(meta=None, **arrays):  # written by hand: what the client would never send
        manifest, parsed = read_container(encode_result(good))
        del manifest["arrays"]
        return pack_arrays(parsed | arrays, manifest | (meta or {}))

    nan = good.positions.copy()
    nan[1, 0, 0] = np.nan

    cases = [
        (intruder_c, intruder, encode_result(good), 404, "not_assigned"),  # not its WU
        (c, me, b"PK\x03\x04 not really a zip", 422, "invalid_body"),
        (c, me, b"", 422, "invalid_body"),
        (c, me, bad(positions=good.positions[:-1]), 422, "invalid_result"),
        (c, me, bad(frames=good.frames[:, :5]), 422, "invalid_result"),
        (c, me, bad(positions=nan), 422, "invalid_result"),
        (c, me, raw(velocities=good.velocities.astype(np.float32)), 422, "invalid_body"),
        (c, me, raw(obs_q=np.array([1, 2, 3, 4], np.int64)), 422, "invalid_body"),
        (c, me, raw(extra=np.zeros(3)), 422, "invalid_body"),
        (c, me, raw({"header": '{"a":1}'}), 422, "invalid_body"),
        (c, me, raw({"signature": "00"}), 422, "invalid_body"),
        (c, me, raw({"extra": 1}), 422, "invalid_body"),
        (c, me, encode_result(good)[:-8], 422, "invalid_body"),  # truncated
        (c, me, encode_result(good) + b"\0", 422, "invalid_body"),
        (c, me, raw(obs_q=np.zeros((4, 2))), 422, "invalid_body"),
    ]
    for client, who, body, status, code in cases:
        _error(signed(client, who, "POST", path, body), status, code)
    _error(signed(c, me, "POST", "/v1/results/999999", encode_result(good)), 404)
    assert served.stored() == before
    r = signed(c, me, "POST", path, encode_result(good))
    assert r.status_code == 200 and r.json()["accepted"], r.text
    _error(signed(c, me, "POST", path, encode_result(good)), 404, "not_assigned")  # once only


def test_a_pickle_or_an_npz_is_never_loaded(served, job):
    c, me = _registered(served.url)
    (task,) = _pull(c, me)
    buf = io.BytesIO()
    np.savez(buf, header=np.array([{"evil": 1}], dtype=object))
    evil = pack_arrays({}, {"header": "{}", "signature": "00" * 64}).replace(
        b'"arrays":[]', b'"arrays":[["positions","|O",[1]]]'
    )
    before = served.stored()
    for body in (buf.getvalue(), pickle.dumps({"a": 1}), evil):
        _error(signed(c, me, "POST", f"/v1/results/{task['replica']}", body), 422)
    assert served.stored() == before


# -- computing over HTTP ---------------------------------------------------------------------


def test_two_volunteers_complete_a_job_and_the_lab_downloads_results(tmp_path, backend, new_db):
    if backend == "postgres":  # as `foldnet serve --db URL` leaves the folder
        Databases.of_folder(tmp_path / "c", db=str(new_db("service")))
    key = add_lab(tmp_path / "c", "lab-a")
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        job = post_job(lab, go_job()).json()["job"]
        vols = [
            HttpVolunteer(s.url, home=tmp_path / f"h{i}", key_path=tmp_path / f"v{i}.key")
            for i in range(2)
        ]
        trust(s, vols[0].identity)  # the operator's machine: fresh keys alone validate nothing
        threads = [threading.Thread(target=v.run, kwargs={"max_tasks": 4}) for v in vols]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        progress = wait_for_job(lab, job)
        assert progress["state"] == "completed", progress
        assert progress["wus"]["validated"] == 4 and progress["steps_simulated"] == 8000
        r = lab.get(f"/v1/jobs/{job}/results")
        assert r.headers["content-type"] == "application/zip"
        names = set(zipfile.ZipFile(io.BytesIO(r.content)).namelist())
        assert {"best_structure.pdb", "summary.json", "observables_run0_clone1.csv"} <= names
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            rows = zf.read("observables_run0_clone0.csv").decode().splitlines()
            assert rows[0] == "step,energy,q,rg,rmsd" and len(rows) == 1 + 8
            signed = [
                np.load(io.BytesIO(zf.read(f"provenance/wu_run0_clone0_gen{g}.npz")))["frames"]
                for g in (0, 1)
            ]
            frames = np.concatenate(signed)
            assert frames.shape == (8, 36, 3)
            # what VMD, PyMOL, mdtraj and MDAnalysis open: the XTC with its topology
            traj = _load_xtc(zf, "trajectory_run0_clone0.xtc")
            assert traj.n_frames == 8 and traj.n_atoms == 36
            assert np.abs(traj.xyz - frames / 10.0).max() <= 1e-3  # XTC: 0.001 nm
            assert "mdtraj.load" in zf.read("README.txt").decode()
        credit = [v.me()["credit"] for v in vols]
        assert all(c > 0 for c in credit)
        proofs = vols[0]._json("GET", "/v1/volunteers/me/proofs")
        assert proofs["pending"] == 0 and len(proofs["entries"]) >= 9  # registered, 4+4 grants
        cp = Checkpoint.from_body(parse_note(proofs["checkpoint"]).text)
        for e in proofs["entries"]:
            verify_inclusion(
                leaf_hash(bytes.fromhex(e["entry"])),
                e["index"],
                cp.size,
                [bytes.fromhex(p) for p in e["proof"]],
                cp.root_hash,
            )
        # the auditor's view of the same live service (ledger.http, mounted at /v1/ledger)
        assert lab.get("/v1/ledger/checkpoint").text.startswith("foldnet.local/ledger\n")
        report = run_audit(f"{s.url}/v1/ledger", workers=1)
        assert report.ok, report.discrepancies
        assert report.balances[vols[0].identity.public_key] == credit[0]
        for v in vols:
            v.close()


def test_resuming_from_a_partial_run_is_bit_identical(villin_pdb):
    engine = GoEngine.from_pdb(villin_pdb)
    start = engine.initial_state(temperature=0.8, seed=3)
    spec = RunSpec(steps=3000, segment_steps=500, report_steps=250, temperature=0.8, seed=11)
    whole = engine.run(start, spec)
    saved: list[PartialRun] = []

    class KilledError(Exception):
        pass

    def stop_after_two(p: PartialRun) -> None:
        saved.append(p)
        if p.segments_done == 2:
            raise KilledError

    with pytest.raises(KilledError):
        engine.run(start, spec, on_segment=stop_after_two)
    again = GoEngine.from_pdb(villin_pdb).run(start, spec, resume=saved[-1])
    assert again.boundary_digests() == whole.boundary_digests()
    assert np.array_equal(again.frames, whole.frames)
    assert np.array_equal(again.frame_steps, whole.frame_steps)
    for k in whole.observables:
        assert np.array_equal(again.observables[k], whole.observables[k])
    me = Identity.ephemeral()
    price = PriceInputs("go", 36, spec.steps, 600, 1_700_000_000_000)
    a = sign_result(whole, wu_id=b"w" * 32, identity=me, price=price)
    b = sign_result(again, wu_id=b"w" * 32, identity=me, price=price)
    assert (a.header.segment_root, a.header.final_digest, a.header.frames_digest) == (
        b.header.segment_root,
        b.header.final_digest,
        b.header.frames_digest,
    )


def test_a_client_killed_mid_wu_resumes_from_its_last_segment(tmp_path):
    key = add_lab(tmp_path / "c", "lab-a")
    job = go_job(clones=1, gens=1, steps_per_wu=4000, segment_steps=500, report_steps=500)
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        job_id = post_job(lab, job).json()["job"]

        class KilledError(BaseException):
            pass

        said: list[str] = []

        def die_after_three(message: str) -> None:
            said.append(message)
            if "segment 3/8 done" in message:
                raise KilledError

        first = HttpVolunteer(
            s.url, home=tmp_path / "h", key_path=tmp_path / "v.key", report=die_after_three
        )
        trust(s, first.identity)
        with pytest.raises(KilledError):
            first.run(max_tasks=1)
        first.close()
        assert list((tmp_path / "h" / "work").glob("*.progress.npz"))
        again = HttpVolunteer(
            s.url, home=tmp_path / "h", key_path=tmp_path / "v.key", report=said.append
        )
        again.run(max_tasks=0)  # only the saved WU
        assert any("resuming after segment 3" in m for m in said), said
        assert not list((tmp_path / "h" / "work").iterdir())
        other = HttpVolunteer(s.url, home=tmp_path / "o", key_path=tmp_path / "o.key")
        other.run(max_tasks=1)  # from scratch: the quorum needs both to be bit-identical
        assert wait_for_job(lab, job_id)["state"] == "completed"
        again.close()
        other.close()


def test_a_vanished_volunteers_wu_is_reissued_after_its_deadline(tmp_path):
    key = add_lab(tmp_path / "c", "lab-a")
    clock = FakeClock()
    with running_service(tmp_path / "c", clock=clock) as s, lab_client(s.url, key) as lab:
        job = post_job(lab, go_job(clones=1, gens=1, deadline_s=1)).json()["job"]
        (ca, a), (cb, b), (cc, c) = (_registered(s.url) for _ in range(3))
        trust(s, a, b, c)
        (ta,) = _pull(ca, a)  # a takes the WU and vanishes
        (tb,) = _pull(cb, b)
        assert _pull(cc, c) == []  # both replicas are out
        _, rb = _computed(cb, b, tb)
        assert signed(cb, b, "POST", f"/v1/results/{tb['replica']}", encode_result(rb)).json()[
            "accepted"
        ]
        assert _pull(cc, c) == []  # a's replica is still within its deadline
        clock.advance(1.5)  # past the deadline, and past when the service's next tick is due
        assert s.service.thread is not None
        s.service.thread.call_sync(lambda c: None)  # so the batch that runs this ticks too
        (tc,) = _pull(cc, c)
        assert tc["wu_id"] == ta["wu_id"] and tc["replica"] != ta["replica"]
        _, rc = _computed(cc, c, tc)
        assert signed(cc, c, "POST", f"/v1/results/{tc['replica']}", encode_result(rc)).json()[
            "accepted"
        ]
        clock.advance(1.0)  # a tick and a beacon are due: the beacon decides the quorum's audit
        s.service.thread.call_sync(lambda c: None)
        assert wait_for_job(lab, job)["state"] == "completed"
        _, ra = _computed(ca, a, ta)
        late = signed(ca, a, "POST", f"/v1/results/{ta['replica']}", encode_result(ra))
        _error(late, 409, "conflict")


def test_rate_limits_answer_429_with_retry_after(tmp_path):
    key = add_lab(tmp_path / "c", "lab-a")
    tight = ServiceConfig(lab_rate=0.01, lab_burst=2, volunteer_rate=0.01, volunteer_burst=3)
    with running_service(tmp_path / "c", tight) as s:
        lab = _client(s.url, key)
        assert [lab.get("/v1/jobs").status_code for _ in range(2)] == [200, 200]
        r = lab.get("/v1/jobs")
        _error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
        c, me = _registered(s.url)  # one request of the burst
        body = json.dumps({"det_class": _det_class(), "slots": 1}).encode()
        codes = [signed(c, me, "POST", "/v1/work", body).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


@pytest.mark.slow
def test_an_openmm_job_from_a_sequence_is_accepted_and_reports_ns(tmp_path):
    key = add_lab(tmp_path / "c", "lab-a")
    job = {
        "engine": "openmm",
        "sequence": "AAA",
        "runs": 1,
        "clones": 1,
        "gens": 2,
        "steps_per_wu": 1000,
        "segment_steps": 500,
        "report_steps": 500,
        "temperature": 300.0,
    }
    with running_service(tmp_path / "c") as s:
        lab = _client(s.url, key)
        r = post_job(lab, job)
        assert r.status_code == 202, r.text
        progress = lab.get(f"/v1/jobs/{r.json()['job']}").json()
        assert progress["engine"] == "openmm" and progress["ns_simulated"] == 0.0
        assert progress["wus"] == {
            "total": 2,
            "validated": 0,
            "in_flight": 0,
            "queued": 2,
            "failed": 0,
            "cancelled": 0,
            "results_returned": 0,
        }
        hot = _error(post_job(lab, job | {"temperature": 5000.0}), 422, "invalid_job")
        assert "at most 1000 K" in hot["detail"], hot
        bad = _error(post_job(lab, job | {"sequence": "AXZ"}), 422, "invalid_job")
        assert "unknown residue code(s) 'X', 'Z'" in bad["detail"], bad


def test_a_spot_check_with_its_end_states_survives_the_wire(tmp_path, villin_pdb):
    from worker.tasks import SpotCheckTask, spot_check
    from worker.wire import decode_spot_check, encode_spot_check

    model = GoModel.from_pdb(villin_pdb)
    engines = EngineCache()
    start = GoEngine(model).initial_state(temperature=0.8, seed=1)
    spec = RunSpec(steps=200, segment_steps=100, report_steps=100, temperature=0.8, seed=5)
    task = SpotCheckTask(b"\7" * 32, 3, model, spec, (1,), (start,))
    r = spot_check(task, engines=engines, identity=Identity.ephemeral())
    assert len(r.end_states) == 1  # the Go engine compares across classes: states travel
    back = decode_spot_check(json.loads(json.dumps(encode_spot_check(r))))
    back.verify()
    assert back.end_digests == r.end_digests
    assert back.end_states[0].digest() == r.end_states[0].digest() == r.end_digests[0]
    # ... and so do the segment's frames and observables (what a lab receives), as signed
    assert back.segment_frames[0].digest() == r.segment_data[0]
    doc = encode_spot_check(r)
    doc["end_states"] = [{"step": 0, "positions": "not an array"}]
    with pytest.raises(WireError, match="end_states"):
        decode_spot_check(doc)
    doc = encode_spot_check(r)
    doc["segment_frames"][0]["observables"] = {"q": "not an array"}
    with pytest.raises(WireError, match=r"segment_frames\[0\]\.observables\.q"):
        decode_spot_check(doc)


def _load_xtc(zf: zipfile.ZipFile, name: str):
    import tempfile

    import mdtraj

    with tempfile.TemporaryDirectory() as d:
        zf.extract("topology.pdb", d)
        zf.extract(name, d)
        return mdtraj.load(f"{d}/{name}", top=f"{d}/topology.pdb")
