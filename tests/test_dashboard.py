"""The web dashboard and the offline API docs: the JSON the pages read (fast, no browser),
then the pages themselves in Debian's headless chromium against a live service with a small
Go job and two volunteers (marked slow)."""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from browser_helpers import CHROMIUM, browser
from http_helpers import add_lab, go_job, lab_client, running_service, trust, wait_for_job

from coordinator.http.dashboard import WEB_DIR
from ledger import run_audit
from worker.client import HttpVolunteer

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if code:
        assert body["error"] == code, body
    return body


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> Iterator[dict]:
    """A live service, a lab with a small job that two volunteers are computing."""
    d = tmp_path_factory.mktemp("dash")
    key = add_lab(d / "c", "lab-a")
    other = add_lab(d / "c", "lab-b")
    with running_service(d / "c") as s, lab_client(s.url, key) as lab:
        job = lab.post("/v1/jobs", json=go_job(clones=2, gens=4, name="villin dash")).json()["job"]
        vols = [
            HttpVolunteer(s.url, home=d / f"h{i}", key_path=d / f"v{i}.key", name=f"vol{i}")
            for i in range(2)
        ]
        trust(s, vols[0].identity)
        threads = [
            threading.Thread(target=v.run, kwargs={"max_tasks": 8}, daemon=True) for v in vols
        ]
        for t in threads:
            t.start()
        yield {
            "served": s,
            "url": s.url,
            "key": key,
            "other": other,
            "job": job,
            "lab": lab,
            "vols": vols,
            "threads": threads,
            "dir": d,
        }
        for t in threads:
            t.join(120)
        for v in vols:
            v.close()


@pytest.fixture(scope="module")
def finished(network) -> dict:
    """The job completed and a checkpoint signed over everything."""
    progress = wait_for_job(network["lab"], network["job"], timeout=180)
    assert progress["state"] == "completed", progress
    for t in network["threads"]:
        t.join(120)
    th = network["served"].service.thread
    th.call_sync(lambda c: c.log.publish_checkpoint())
    return network


# -- docs, offline ---------------------------------------------------------------------------


def _local_refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)


def test_docs_reference_only_files_served_here(network):
    with httpx.Client(base_url=network["url"]) as c:
        r = c.get("/docs")
        assert r.status_code == 200
        html = r.text
        assert "cdn" not in html.lower() and "https://" not in html and "http://" not in html
        refs = _local_refs(html)
        assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in refs
        assert "/v1/openapi.json" in refs
        assert '"validatorUrl": null' in html
        for ref in refs:
            assert ref.startswith("/"), ref
            assert c.get(ref).status_code == 200, ref


def test_vendored_libraries_ship_with_their_licences():
    for lib, files in {
        "swagger-ui": ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"],
        "3dmol": ["3Dmol-min.js", "LICENSE"],
    }.items():
        for f in files:
            assert (WEB_DIR / "vendor" / lib / f).stat().st_size > 0, (lib, f)
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"coordinator.http" = ["web/*.html"' in pyproject and "web/vendor/*/*" in pyproject


def test_pages_are_served_with_a_strict_content_security_policy(network):
    with httpx.Client(base_url=network["url"]) as c:
        for path in ("/", "/ledger", "/leaderboard", "/jobs", f"/jobs/{network['job']}"):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            for ref in _local_refs(r.text):
                assert ref.startswith("/"), (path, ref)
                assert c.get(ref).status_code == 200, (path, ref)
        vol = network["vols"][0].identity.public_key.hex()
        assert c.get(f"/volunteers/{vol}").status_code == 200
        _error(c.get("/volunteers/not-a-key"), 400, "invalid_key")


# -- the JSON the pages read -----------------------------------------------------------------


def test_network_numbers(finished):
    with httpx.Client(base_url=finished["url"]) as c:
        n = c.get("/v1/network").json()
    assert n["volunteers"]["online"] == 2 and n["volunteers"]["known"] == 2
    assert n["jobs"] == {"running": 0, "total": 1}
    assert n["validated"]["total"] == 8 and n["validated"]["last_minute"] == 8
    assert sum(m["validated"] for m in n["validated"]["per_minute"]) == 8
    assert n["wus"]["in_flight"] == 0 and n["wus"]["by_state"]["validated"] == 8
    cp = n["checkpoint"]
    assert cp["origin"] == "foldnet.local/ledger" and cp["size"] == n["ledger"]["size"] - 1
    assert n["samples"] and n["samples"][-1]["validated"] == 8


def test_ledger_records_decode_every_entry_and_refuse_bad_pages(finished):
    with httpx.Client(base_url=finished["url"]) as c:
        first = c.get("/v1/ledger/records", params={"start": 0, "limit": 100}).json()
        raw = c.get("/v1/ledger/entries", params={"start": 0, "end": first["end"]}).json()
        assert [r["data"] for r in first["records"]] == [e["data"] for e in raw["entries"]]
        kinds = {r["kind"] for r in first["records"]}
        assert {"volunteer registered", "job submitted", "result validated"} <= kinds
        assert "credit granted" in kinds
        reg = next(r for r in first["records"] if r["kind"] == "volunteer registered")
        assert re.fullmatch(r"[0-9a-f]{64}", reg["fields"]["volunteer_key"])
        _error(c.get("/v1/ledger/records", params={"start": 10**9}), 400, "out_of_range")
        _error(c.get("/v1/ledger/records", params={"start": -1}), 422)
        _error(c.get("/v1/ledger/records", params={"limit": 101}), 422)
        _error(c.get("/v1/ledger/records", params={"start": "x"}), 422)


def test_leaderboard_and_volunteer_numbers_are_the_auditors(finished):
    report = run_audit(f"{finished['url']}/v1/ledger", workers=1)
    assert report.ok, report.discrepancies
    with httpx.Client(base_url=finished["url"]) as c:
        board = c.get("/v1/ledger/leaderboard").json()
        assert board["volunteers"] == 2
        assert {bytes.fromhex(r["volunteer"]): r["credit"] for r in board["leaderboard"]} == {
            k: v for k, v in report.balances.items() if v
        }
        credits = [r["credit"] for r in board["leaderboard"]]
        assert credits == sorted(credits, reverse=True) and all(x > 0 for x in credits)
        key = finished["vols"][0].identity.public_key.hex()
        v = c.get(f"/v1/ledger/volunteers/{key}").json()
        assert v["credit"] == report.balances[bytes.fromhex(key)]
        assert v["results_validated"] == 8 and v["work"]["results_returned"] == 8
        assert v["credit_series"][-1]["credit"] == v["credit"]
        entries = c.get(f"/v1/ledger/volunteers/{key}/entries", params={"limit": 100}).json()
        assert len(entries["records"]) == v["ledger_entries"] == 1 + 8 + 8
        _error(c.get("/v1/ledger/volunteers/zz"), 400, "invalid_key")
        _error(c.get(f"/v1/ledger/volunteers/{'ab' * 32}"), 404, "not_found")
        _error(c.get("/v1/ledger/leaderboard", params={"limit": 0}), 422)


def test_lab_series_and_structures_are_the_labs_only(finished):
    job, url = finished["job"], finished["url"]
    lab = finished["lab"]
    s = lab.get(f"/v1/jobs/{job}/series").json()
    assert [(t["run"], t["clone"], t["generations"]) for t in s["trajectories"]] == [
        (0, 0, 4),
        (0, 1, 4),
    ]
    t0 = s["trajectories"][0]
    assert len(t0["steps"]) == 16 and set(t0["observables"]) == {"energy", "q", "rg", "rmsd"}
    best = lab.get(f"/v1/jobs/{job}/structure").text
    assert best.startswith("REMARK") and best.count("ATOM") == 36
    cur = lab.get(f"/v1/jobs/{job}/structure", params={"which": "current", "clone": 1})
    assert cur.status_code == 200 and "gen 3 current state" in cur.text
    traj = lab.get(f"/v1/jobs/{job}/structure", params={"which": "trajectory", "clone": 1})
    assert traj.status_code == 200 and traj.text.count("ENDMDL") == 16  # 4 gens x 4 frames
    assert traj.text.count("ATOM") == 16 * 36 and traj.text.endswith("ENDMDL\nEND\n")
    _error(lab.get(f"/v1/jobs/{job}/structure", params={"which": "worst"}), 422)
    _error(lab.get(f"/v1/jobs/{job}/structure", params={"which": "current", "run": 5}), 404)
    with lab_client(url, finished["other"]) as other:
        _error(other.get(f"/v1/jobs/{job}/series"), 404, "not_found")
    with lab_client(url, "wrong-key") as bad:
        _error(bad.get(f"/v1/jobs/{job}/structure"), 403, "bad_api_key")


# -- in a real browser -----------------------------------------------------------------------


@contextmanager
def tampering_proxy(target: str, tamper: dict[str, object]) -> Iterator[str]:
    """A loopback HTTP proxy to ``target`` that rewrites the answers named in ``tamper``
    (path prefix -> function of the body bytes)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            r = httpx.get(target + self.path, headers={"Accept-Encoding": "identity"})
            body = r.content
            for prefix, fn in tamper.items():
                if self.path.startswith(prefix):
                    body = fn(body)  # type: ignore[operator]
            self.send_response(r.status_code)
            for k in ("content-type", "content-security-policy"):
                if k in r.headers:
                    self.send_header(k, r.headers[k])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)


def _shots(tmp_path: Path) -> Path:
    out = tmp_path / "screenshots"
    out.mkdir(exist_ok=True)
    return out


def _only_local(page, origin: str) -> None:
    bad = [u for u in page.requests if not u.startswith((origin, "data:", "blob:", "about:"))]
    assert not bad, bad


def _verdicts(page) -> tuple[str, str]:
    page.wait_for(
        "['cp-status', 'proof-status'].every("
        "id => document.getElementById(id).dataset.state !== 'pending')"
    )
    return page.text("#cp-status"), page.text("#proof-status")


@pytest.mark.slow
@needs_chromium
def test_browser_ledger_page_verifies_and_catches_tampering(finished, tmp_path):
    url = finished["url"]
    with browser() as b:
        page = b.page()
        page.goto(url + "/ledger")
        assert _verdicts(page) == ("verified", "verified")
        page.wait_for("document.querySelectorAll('#entries tr').length === 25")
        # a button verifies any entry's inclusion proof, here the first one
        page.eval("document.querySelector('#entries tr button').click()")
        page.wait_for("!!document.querySelector('#entries tr [data-state]')")
        assert page.text("#entries tr [data-state]") == "verified"
        page.wait_for("[...document.querySelectorAll('#checkpoints .status')].length > 0")
        page.screenshot(_shots(tmp_path) / "ledger.png")
        _only_local(page, url)
        assert not page.exceptions, page.exceptions
        page.close()

    def flip_root(body: bytes) -> bytes:
        lines = body.decode().split("\n")
        root = bytearray(base64.b64decode(lines[2]))
        root[0] ^= 1
        lines[2] = base64.b64encode(bytes(root)).decode()
        return "\n".join(lines).encode()

    def flip_proof(body: bytes) -> bytes:
        doc = json.loads(body)
        h = bytearray(base64.b64decode(doc["hashes"][0]))
        h[5] ^= 0x10
        doc["hashes"][0] = base64.b64encode(bytes(h)).decode()
        return json.dumps(doc).encode()

    def flip_entry(body: bytes) -> bytes:
        doc = json.loads(body)
        for r in doc["records"]:
            data = bytearray(base64.b64decode(r["data"]))
            data[-1] ^= 1
            r["data"] = base64.b64encode(bytes(data)).decode()
        return json.dumps(doc).encode()

    cases = {
        "checkpoint": ({"/v1/ledger/checkpoint": flip_root}, "FAILED", "FAILED"),
        "proof": ({"/v1/ledger/proof/inclusion": flip_proof}, "verified", "FAILED"),
        "entry": ({"/v1/ledger/records": flip_entry}, "verified", "FAILED"),
    }
    for name, (tamper, cp_want, proof_want) in cases.items():
        with tampering_proxy(url, tamper) as proxied, browser() as b:
            page = b.page()
            page.goto(proxied + "/ledger")
            cp, proof = _verdicts(page)
            assert cp.startswith(cp_want) and proof.startswith(proof_want), (name, cp, proof)
            page.screenshot(_shots(tmp_path) / f"ledger-tampered-{name}.png")
            page.close()


_VERIFY_JS = """(async () => {
  const v = await import('/static/verify.js');
  const out = {vectors: [], notes: {}};
  for (const t of VECTORS) {
    let ok;
    try {
      const leaf = t.leafHash ? v.b64decode(t.leafHash) : new Uint8Array();
      const proof = (t.proof || []).map(v.b64decode);
      const root = await v.rootFromInclusionProof(leaf, t.leafIdx, t.treeSize, proof);
      ok = v.b64encode(root) === (t.root || '');
    } catch (e) {
      ok = false;
    }
    out.vectors.push(ok);
  }
  const key = await v.parseVkey(LOG_VKEY);
  const witness = await v.parseVkey(WITNESS_VKEY, 4);
  for (const [name, text] of Object.entries(NOTES)) {
    try {
      const cp = await v.verifyCheckpoint(text, key, [witness]);
      out.notes[name] = cp.cosignatures.map((c) => c.verified);
    } catch (e) {
      out.notes[name] = 'FAILED: ' + e.message;
    }
  }
  return out;
})()"""


@pytest.mark.slow
@needs_chromium
def test_browser_verifier_agrees_with_the_rfc6962_vectors_and_signed_notes(network):
    """verify.js in chromium: every transparency-dev inclusion vector, and signed notes and
    witness cosignatures made by ledger.note / ledger.cosignature, good and tampered."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.checkpoint import Checkpoint
    from ledger.cosignature import CosignatureV1Signer
    from ledger.note import Ed25519NoteSigner, Note, NoteSignature

    vendored = Path(__file__).resolve().parent / "data" / "rfc6962"  # (see tests/data)
    files = sorted((vendored / "inclusion").rglob("*.json"))
    assert len(files) == 80, f"expected the 80 vendored inclusion vectors in {vendored}"
    vectors = [json.loads(f.read_text()) for f in files]
    log = Ed25519NoteSigner("example.org/log", Ed25519PrivateKey.generate())
    witness = CosignatureV1Signer("witness.example/w1", Ed25519PrivateKey.generate())
    body = Checkpoint("example.org/log", 5, bytes(range(32))).body()
    signed = Note(body, (log.sign(body),))
    cosig = witness.cosign(body, 1_700_000_000)
    flipped = cosig.signature[:-1] + bytes([cosig.signature[-1] ^ 0x01])  # always a change
    bad_cosig = NoteSignature(cosig.name, cosig.key_id, flipped)
    other = Ed25519NoteSigner("example.org/log", Ed25519PrivateKey.generate())
    sig = signed.signatures[0]
    notes = {
        "good": signed.with_signatures([cosig]).encode(),
        "bad-cosignature": signed.with_signatures([bad_cosig]).encode(),
        "bad-signature": Note(body, (NoteSignature(sig.name, sig.key_id, bytes(64)),)).encode(),
        "other-key": Note(body, (other.sign(body),)).encode(),
        "changed-size": signed.encode().replace("\n5\n", "\n6\n"),
        "unknown-witness-only": signed.with_signatures(
            [CosignatureV1Signer("w2", Ed25519PrivateKey.generate()).cosign(body, 7)]
        ).encode(),
    }
    js = (
        _VERIFY_JS.replace("VECTORS", json.dumps(vectors))
        .replace("LOG_VKEY", json.dumps(log.verifier.vkey))
        .replace("WITNESS_VKEY", json.dumps(witness.verifier.vkey))
        .replace("NOTES", json.dumps(notes))
    )
    with browser() as b:
        page = b.page()
        page.goto(network["url"] + "/leaderboard")  # any page here: a secure context
        out = page.eval(js)
    assert out["vectors"] == [not v["wantErr"] for v in vectors], [
        (f.name, v["desc"])
        for f, v, ok in zip(files, vectors, out["vectors"], strict=True)
        if ok == v["wantErr"]
    ]
    got = out["notes"]
    assert got["good"] == [True] and got["bad-cosignature"] == [False]
    assert got["unknown-witness-only"] == [None]
    assert got["bad-signature"] == "FAILED: the log's Ed25519 signature does not verify"
    assert got["changed-size"] == "FAILED: the log's Ed25519 signature does not verify"
    assert got["other-key"].startswith("FAILED: no signature by the pinned key")


@pytest.mark.slow
@needs_chromium
def test_browser_docs_render_offline(network, tmp_path):
    with browser() as b:
        page = b.page()
        page.goto(network["url"] + "/docs")
        n = page.wait_for("document.querySelectorAll('.opblock').length", timeout=60)
        assert n >= 20
        assert "foldnet coordinator" in page.text(".info .title")
        page.screenshot(_shots(tmp_path) / "docs.png")
        _only_local(page, network["url"])
        page.close()


@pytest.mark.slow
@needs_chromium
def test_browser_lab_pages_with_good_and_wrong_keys(finished, tmp_path):
    url, job = finished["url"], finished["job"]
    with browser() as b:
        page = b.page()
        page.goto(url + "/jobs")
        page.eval(
            "document.getElementById('api-key').value = 'not-a-key';"
            "document.getElementById('key-form').requestSubmit()"
        )
        page.wait_for("!document.getElementById('error').hidden")
        assert "not valid" in page.text("#error")
        page.eval(
            f"document.getElementById('api-key').value = {json.dumps(finished['key'])};"
            "document.getElementById('key-form').requestSubmit()"
        )
        page.wait_for(f"!!document.querySelector('tr[data-job=\"{job}\"]')")
        assert "completed" in page.text(f'tr[data-job="{job}"]')
        assert finished["key"] not in page.eval("location.href")
        page.screenshot(_shots(tmp_path) / "jobs.png")
        page.goto(f"{url}/jobs/{job}")  # the key stays in this tab's session storage
        page.wait_for("document.querySelectorAll('#chart-q polyline').length === 2", 60)
        assert page.text("#state") == "completed" and page.text("#progress") == "8 / 8"
        page.wait_for("document.getElementById('viewer').dataset.rendered", 60)
        time.sleep(0.5)
        options = page.eval("[...document.getElementById('which').options].map(o => o.value)")
        assert "trajectory:0:1" in options and "current:0:0" in options, options
        shot = page.screenshot(_shots(tmp_path) / "job.png")
        box = page.eval(
            "(() => { const r = document.querySelector('#viewer canvas').getBoundingClientRect();"
            " return [r.x, r.y + window.scrollY, r.width, r.height]; })()"
        )
        _not_blank(shot, box)
        page.screenshot(_shots(tmp_path) / "job-phone.png", width=390, height=844)
        page.call("Emulation.clearDeviceMetricsOverride")
        page.eval(
            "const s = document.getElementById('which'); s.value = 'trajectory:0:1';"
            "s.dispatchEvent(new Event('change'))"
        )
        page.wait_for("document.getElementById('viewer-note').textContent.includes('16 frames')")
        page.screenshot(_shots(tmp_path) / "job-trajectory.png")
        page.eval("document.getElementById('analysis').click()")  # the MSM, as a download
        page.wait_for(
            "!document.getElementById('action-result').textContent.startsWith('building')", 120
        )
        assert page.text("#action-result") == "", page.text("#action-result")
        _only_local(page, url)
        assert not page.exceptions, page.exceptions
        page.close()


@pytest.mark.slow
@needs_chromium
def test_browser_lab_submits_and_cancels_a_job_through_the_forms(finished, tmp_path):
    from sims.examples import VILLIN_PDB

    url = finished["url"]
    with browser() as b:
        page = b.page()
        page.goto(url + "/jobs")
        page.eval(
            f"document.getElementById('api-key').value = {json.dumps(finished['key'])};"
            "document.getElementById('key-form').requestSubmit()"
        )
        page.wait_for("!document.getElementById('submit-panel').hidden")
        # the API's own validation answers, shown as it says: a Go job needs a structure
        page.eval("document.getElementById('submit-form').requestSubmit()")
        page.wait_for("document.getElementById('submit-result').textContent.startsWith('refused')")
        assert "PDB" in page.text("#submit-result") or "pdb" in page.text("#submit-result")
        page.set_files("#submit-form input[name=pdb]", VILLIN_PDB)
        page.eval(
            "const f = document.getElementById('submit-form');"
            "f.name.value = 'from the form'; f.gens.value = '5'; f.requestSubmit()"
        )
        page.wait_for(
            "document.getElementById('submit-result').textContent.startsWith('submitted')"
        )
        job = page.text("#submit-result").split()[2]
        page.wait_for(f"!!document.querySelector('tr[data-job=\"{job}\"]')")
        assert "from the form" in page.text(f'tr[data-job="{job}"]')
        page.goto(f"{url}/jobs/{job}")
        page.wait_for("document.getElementById('state').textContent === 'running'")
        page.eval("window.confirm = () => true; document.getElementById('cancel').click()")
        page.wait_for("document.getElementById('state').textContent === 'cancelled'")
        page.screenshot(_shots(tmp_path) / "job-cancelled.png")
        assert not page.exceptions, page.exceptions
    assert finished["lab"].get(f"/v1/jobs/{job}").json()["state"] == "cancelled"


@pytest.mark.slow
@needs_chromium
def test_browser_job_page_is_readable_without_webgl(finished, tmp_path):
    url, job = finished["url"], finished["job"]
    with browser("--disable-webgl", "--disable-3d-apis") as b:
        page = b.page()
        page.goto(url + "/jobs")
        page.eval(f"sessionStorage.setItem('foldnet.labKey', {json.dumps(finished['key'])})")
        page.goto(f"{url}/jobs/{job}")
        page.wait_for("!document.getElementById('pdb-text').hidden", 60)
        assert "no WebGL" in page.text("#viewer-note")
        assert page.text("#pdb-text").count("ATOM") == 36
        assert page.eval("document.querySelectorAll('#viewer canvas').length") == 0
        page.screenshot(_shots(tmp_path) / "job-no-webgl.png")
        assert not page.exceptions, page.exceptions


def _not_blank(png: Path, box: list[float]) -> None:
    """The viewer's part of a screenshot is not one flat colour."""
    import matplotlib.image

    img = matplotlib.image.imread(png)
    x, y, w, h = (int(v) for v in box)
    region = img[y + 2 : y + h - 2, x + 2 : x + w - 2, :3]
    assert region.size, box
    drawn = abs(region - region[0, 0]).sum(axis=2) > 0.1
    assert drawn.sum() > 500, drawn.sum()  # a blank canvas: 0; the 36-bead chain: ~3,000
    colours = {tuple(c) for c in (region[drawn] * 16).round().astype(int)}
    assert len(colours) > 10, colours  # shaded beads coloured along the chain


@pytest.mark.slow
@needs_chromium
def test_browser_volunteer_and_leaderboard_pages(finished, tmp_path):
    url = finished["url"]
    key = finished["vols"][0].identity.public_key.hex()
    with httpx.Client(base_url=url) as c:
        v = c.get(f"/v1/ledger/volunteers/{key}").json()
    with browser() as b:
        page = b.page()
        page.goto(url + "/leaderboard")
        page.wait_for("document.querySelectorAll('#rows tr').length === 2")
        assert f"{v['credit']:,}" in page.text("#rows")
        page.screenshot(_shots(tmp_path) / "leaderboard.png")
        page.goto(f"{url}/volunteers/{key}")
        n = min(20, v["ledger_entries"])
        page.wait_for(f"document.querySelectorAll('#entries [data-state]').length === {n}", 60)
        states = page.eval(
            "[...document.querySelectorAll('#entries [data-state]')].map(e => e.dataset.state)"
        )
        assert set(states) == {"verified"}
        assert page.text("#credit") == f"{v['credit']:,}"
        page.screenshot(_shots(tmp_path) / "volunteer.png")
        assert not page.exceptions, page.exceptions
        page.close()


def test_static_files_are_only_the_dashboards(network):
    with httpx.Client(base_url=network["url"]) as c:
        r = c.get("/static/vendor/3dmol/LICENSE")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "BSD" in r.text
        r = c.get("/static/common.js")
        assert r.headers["content-type"].startswith("text/javascript")
        assert r.headers["x-content-type-options"] == "nosniff"
        for bad in (
            "/static/../dashboard.py",
            "/static/%2e%2e/dashboard.py",
            "/static/vendor/../../dashboard.py",
            "/static/.hidden",
            "/static/nothing.js",
            "/static/vendor",
            "/static/" + "a" * 300 + ".js",
        ):
            r = c.get(bad)
            assert r.status_code == 404, (bad, r.status_code)
            assert set(r.json()) == {"error", "detail"}


@pytest.mark.slow
@needs_chromium
def test_browser_network_page_shows_live_rising_numbers(finished, tmp_path):
    """Last in this file: it runs a second job, which changes the ledger's numbers."""
    url, d = finished["url"], finished["dir"]
    with browser() as b:
        page = b.page()
        page.goto(url + "/")
        page.wait_for("document.body.dataset.updated")
        # (who is online depends on when they last asked: checked once they work again)
        assert page.text("#validated-total") == "8" and page.text("#jobs-running") == "0"
        assert page.eval("document.querySelectorAll('#chart rect.bar').length") == 30
        job = finished["lab"].post("/v1/jobs", json=go_job(clones=2, gens=3)).json()["job"]
        page.wait_for("document.getElementById('jobs-running').textContent === '1'", 30)
        vols = [HttpVolunteer(url, home=d / f"h{i}", key_path=d / f"v{i}.key") for i in range(2)]
        threads = [threading.Thread(target=v.run, kwargs={"max_tasks": 6}) for v in vols]
        for t in threads:
            t.start()
        try:
            seen = set()
            deadline = time.monotonic() + 180
            while page.text("#validated-total") != "14" and time.monotonic() < deadline:
                seen.add(page.text("#validated-total"))
                time.sleep(0.2)
            assert page.text("#validated-total") == "14", seen
            assert len(seen - {"8"}) >= 1, seen  # it rose while the page was open, in steps
            page.wait_for("document.getElementById('online').textContent === '2'", 30)
            page.wait_for("document.getElementById('jobs-running').textContent === '0'", 60)
            page.wait_for("document.getElementById('cp-size').textContent !== '–'")
            page.screenshot(_shots(tmp_path) / "network.png")
            page.screenshot(_shots(tmp_path) / "network-phone.png", width=390, height=844)
            _only_local(page, url)
            assert not page.exceptions, page.exceptions
        finally:
            for t in threads:
                t.join(120)
            for v in vols:
                v.close()
        assert wait_for_job(finished["lab"], job)["state"] == "completed"
