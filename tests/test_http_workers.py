"""``foldnet serve --workers 2``: the coordinator in one process, two HTTP front-ends in
others, as an operator runs it (the command line, in a process of its own, on loopback).

A job completes and downloads; whatever one front-end is told (a lab key, a job, a volunteer
registered, a nonce spent) the other knows; hostile input gets the same answers as from one
process; a front-end that dies is started again while the other serves; and stopping the
service leaves none of its processes behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import (
    add_lab,
    free_port,
    go_job,
    in_session,
    lab_client,
    open_session,
    wait_for_job,
    wait_prepared,
)

from coordinator.http.middleware import FRONT_END_HEADER
from worker.client import HttpVolunteer
from worker.identity import Identity
from worker.session import mac_headers
from worker.wire import sign_headers

WORKERS = 2


class Service:
    """``foldnet serve DIR --workers 2`` in a process group of its own, and its processes."""

    def __init__(
        self, workdir: Path, port: int, log: Path, trust: list[str], db: str | None = None
    ) -> None:
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        cmd = [sys.executable, "-c", "from coordinator.cli import main; main()", "serve"]
        cmd += [str(workdir), "--port", str(port), "--workers", str(WORKERS)]
        if db is not None:
            cmd += ["--db", db]
        for key in trust:
            cmd += ["--trust", key]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
            )
        deadline = time.monotonic() + 120
        while len(self.front_ends()) < WORKERS or not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the service did not start:\n{self.output()}")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> set[int]:
        """The service's process and every process under it (Linux /proc)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        out, todo = {self.proc.pid}, [self.proc.pid]
        while todo:
            parent = todo.pop()
            for pid, ppid in parents.items():
                if ppid == parent and pid not in out:
                    out.add(pid)
                    todo.append(pid)
        return out

    def front_ends(self) -> dict[int, int]:
        """Front-end number -> pid, as the service reported them (started, or restarted)."""
        text = self.output().replace("\n", " ")
        found: dict[int, int] = {}
        if "pids " in text:
            listed = text.split("pids ", 1)[1].split(")", 1)[0]
            for worker, pid in enumerate(int(p) for p in listed.replace(",", " ").split()):
                found[worker] = pid
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # as Ctrl-C in its terminal
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def volunteer_keys(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("keys")
    return [d / f"v{i}.key" for i in range(2)]


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, volunteer_keys: list[Path]
) -> Iterator[Service]:
    d = tmp_path_factory.mktemp("workers")
    trusted = Identity.load_or_create(volunteer_keys[0]).public_key.hex()  # the operator's
    s = Service(d / "c", free_port(), d / "serve.log", [trusted])
    try:
        yield s
    finally:
        s.stop()


Send = Callable[[httpx.Client], httpx.Response]


def on(service: Service, worker: int, send: Send) -> httpx.Response:
    """``send`` over new connections until front-end ``worker`` answers it (the kernel spreads
    connections over the front-ends): only for requests that may be answered twice."""
    for _ in range(64):
        with httpx.Client(base_url=service.url, timeout=60) as c:
            try:
                r = send(c)
            except httpx.TransportError:  # a connection to a front-end that just died
                continue
        if r.headers.get(FRONT_END_HEADER) == str(worker):
            return r
    raise AssertionError(f"front-end {worker} never answered")


def _signed(identity: Identity, method: str, path: str, body: bytes = b"") -> Send:
    def send(c: httpx.Client) -> httpx.Response:
        headers = sign_headers(identity, method, path, body, origin=str(c.base_url))
        return c.request(method, path, content=body or None, headers=headers)

    return send


def _register(service: Service, me: Identity) -> int:
    """Register ``me`` (with whichever front-end answers): that front-end's number."""
    body = json.dumps({"public_key": me.public_key.hex(), "name": "w"}).encode()
    with httpx.Client(base_url=service.url, timeout=60) as c:
        r = _signed(me, "POST", "/v1/volunteers", body)(c)
    assert r.status_code == 201, r.text
    return int(r.headers[FRONT_END_HEADER])


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.json()["error"] == code, r.text[:300]


def test_front_ends_share_labs_jobs_registrations_and_nonces(service: Service) -> None:
    key = add_lab(service.workdir, "lab-late")  # while it runs
    auth = {"Authorization": f"Bearer {key}"}
    for worker in range(WORKERS):  # a key added while the service runs works on each
        r = on(service, worker, lambda c: c.get("/v1/jobs", headers=auth))
        assert r.status_code == 200 and r.json()["jobs"] == [], r.text
    with lab_client(service.url, key) as lab:
        r = lab.post("/v1/jobs", json=go_job(clones=1, gens=1))
        assert r.status_code == 202, r.text
        job, took = r.json()["job"], int(r.headers[FRONT_END_HEADER])
    other = 1 - took
    seen = on(service, other, lambda c: c.get(f"/v1/jobs/{job}", headers=auth))
    assert seen.status_code == 200 and seen.json()["job"] == job, seen.text
    listed = on(service, other, lambda c: c.get("/v1/jobs", headers=auth)).json()["jobs"]
    assert [j["job"] for j in listed] == [job]
    with lab_client(service.url, key) as lab:  # cancelled on one, cancelled for the other
        cancel = lab.post(f"/v1/jobs/{job}/cancel")
        assert cancel.status_code == 200, cancel.text
        other = 1 - int(cancel.headers[FRONT_END_HEADER])
    again = on(service, other, lambda c: c.get(f"/v1/jobs/{job}", headers=auth))
    assert again.json()["state"] == "cancelled", again.text

    me = Identity.ephemeral()
    took = _register(service, me)
    mine = on(service, 1 - took, _signed(me, "GET", "/v1/volunteers/me"))  # knows it too
    assert mine.status_code == 200 and mine.json()["volunteer"] == me.public_key.hex()
    # one signed request, sent to one front-end and replayed to the other: refused there
    headers = sign_headers(me, "GET", "/v1/volunteers/me", b"", origin=service.url)
    with httpx.Client(base_url=service.url, timeout=60) as c:
        first = c.get("/v1/volunteers/me", headers=headers)
    assert first.status_code == 200, first.text
    other = 1 - int(first.headers[FRONT_END_HEADER])
    _error(
        on(service, other, lambda c: c.get("/v1/volunteers/me", headers=headers)), 401, "replayed"
    )
    metrics = on(service, 0, lambda c: c.get("/metrics")).text
    assert "foldnet_wus" in metrics and "foldnet_http_requests_total" in metrics


def test_a_session_opened_at_one_front_end_serves_at_the_other(service: Service) -> None:
    """Tickets are sealed with the service's one ticket key: any front-end reads them; the
    nonce of a MAC'd request is spent at the coordinator, for all front-ends."""
    me = Identity.ephemeral()
    _register(service, me)
    with httpx.Client(base_url=service.url, timeout=60) as c:
        session = open_session(c, me)
    for worker in range(WORKERS):  # the one that opened it, and the other
        r = on(service, worker, lambda c: in_session(c, session, "GET", "/v1/volunteers/me"))
        assert r.status_code == 200 and r.json()["volunteer"] == me.public_key.hex(), r.text
    headers = mac_headers(session, "GET", "/v1/volunteers/me")
    with httpx.Client(base_url=service.url, timeout=60) as c:
        first = c.get("/v1/volunteers/me", headers=headers)
    assert first.status_code == 200, first.text
    other = 1 - int(first.headers[FRONT_END_HEADER])
    _error(
        on(service, other, lambda c: c.get("/v1/volunteers/me", headers=headers)), 401, "replayed"
    )
    # the request that opened a session, replayed to the other front-end: refused there too
    body = json.dumps({"x25519": "22" * 32}).encode()
    opening = sign_headers(me, "POST", "/v1/sessions", body, origin=service.url)
    with httpx.Client(base_url=service.url, timeout=60) as c:
        first = c.post("/v1/sessions", content=body, headers=opening)
    assert first.status_code == 201, first.text
    other = 1 - int(first.headers[FRONT_END_HEADER])
    _error(
        on(service, other, lambda c: c.post("/v1/sessions", content=body, headers=opening)),
        401,
        "replayed",
    )


def test_a_job_completes_with_two_volunteers_and_downloads(
    service: Service, volunteer_keys: list[Path], tmp_path: Path
) -> None:
    _complete_a_job(service, volunteer_keys, tmp_path)


@pytest.mark.postgres
def test_on_postgresql_a_job_completes_across_front_ends(tmp_path: Path, pg_cluster: Any) -> None:
    """The same with the store, accounts and ledger in a PostgreSQL server (``--db``): every
    front-end reads results, lab keys and the ledger from the server itself."""
    keys = [tmp_path / "v0.key", tmp_path / "v1.key"]
    trusted = Identity.load_or_create(keys[0]).public_key.hex()
    url = pg_cluster.new_database("mproc")
    s = Service(tmp_path / "c", free_port(), tmp_path / "serve.log", [trusted], db=url)
    try:
        assert not list((tmp_path / "c").glob("*.db")), "SQLite files beside a PostgreSQL URL"
        _complete_a_job(s, keys, tmp_path)
        for worker in range(WORKERS):
            for _ in range(3):  # a front-end's kept ledger connection serves the next request
                r = on(s, worker, lambda c: c.get("/v1/ledger/checkpoint"))
                assert r.status_code == 200 and r.text.startswith("foldnet"), r.text[:300]
    finally:
        s.stop()
        pg_cluster.drop_databases()


def _complete_a_job(service: Service, volunteer_keys: list[Path], tmp_path: Path) -> None:
    key = add_lab(service.workdir, "lab-a")
    with lab_client(service.url, key) as lab:
        job = lab.post("/v1/jobs", json=go_job()).json()["job"]
        assert wait_prepared(lab, job)["state"] == "running"
        vols = [
            HttpVolunteer(service.url, home=tmp_path / f"h{i}", key_path=k)
            for i, k in enumerate(volunteer_keys)
        ]
        threads = [threading.Thread(target=v.run, kwargs={"max_tasks": 4}) for v in vols]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        progress = wait_for_job(lab, job)
        assert progress["state"] == "completed", progress
        assert progress["wus"]["validated"] == 4 and progress["steps_simulated"] == 8000
        for worker in range(WORKERS):  # each front-end reads the results from the store itself
            r = on(service, worker, lambda c: c.get(f"/v1/jobs/{job}/results", headers=lab.headers))
            assert r.headers["content-type"] == "application/zip", r.text[:300]
            names = set(zipfile.ZipFile(io.BytesIO(r.content)).namelist())
            assert {"summary.json", "observables_run0_clone1.csv"} <= names
        assert all(v.me()["credit"] > 0 for v in vols)
        for v in vols:
            v.close()


def test_bad_input_is_refused_with_the_same_answers(service: Service) -> None:
    me = Identity.ephemeral()
    key = add_lab(service.workdir, "lab-b")
    auth = {"Authorization": f"Bearer {key}"}
    bad = {"Authorization": "Bearer fnlab_not-a-key"}
    refused: list[tuple[Send, int, str]] = [
        (lambda c: c.post("/v1/work", content=b"{}"), 401, "unsigned"),
        (lambda c: c.get("/v1/jobs", headers=bad), 403, "bad_api_key"),
        (_signed(me, "GET", "/v1/volunteers/me"), 401, "unknown_volunteer"),
        (lambda c: c.post("/v1/jobs", json=go_job(runs=0), headers=auth), 422, "invalid_job"),
        (lambda c: c.get("/v1/jobs/" + "ab" * 32, headers=auth), 404, "not_found"),
        (lambda c: c.post("/v1/jobs", content=b"x" * (17 << 20), headers=auth), 413, "too_large"),
    ]
    for worker in range(WORKERS):
        for send, status, code in refused:
            _error(on(service, worker, send), status, code)
    _register(service, me)
    for worker in range(WORKERS):
        not_mine = _signed(me, "POST", "/v1/results/12345", b"x")
        _error(on(service, worker, not_mine), 404, "not_assigned")
        junk = _signed(me, "POST", "/v1/work", b'{"det_class": 7, "slots": 1}')
        assert on(service, worker, junk).status_code in (400, 422)


def test_a_dead_front_end_is_replaced_and_stopping_leaves_no_process(service: Service) -> None:
    pids = service.pids()
    fronts = service.front_ends()
    assert len(fronts) == WORKERS and set(fronts.values()) <= pids, (fronts, pids)
    me = Identity.ephemeral()
    _register(service, me)
    with httpx.Client(base_url=service.url, timeout=60) as c:
        session = open_session(c, me)  # before the death: the new front-end reads its ticket
    os.kill(fronts[1], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while "starting a new one" not in service.output():
        assert time.monotonic() < deadline, service.output()
        assert on(service, 0, lambda c: c.get("/v1/health")).status_code == 200  # still served
        time.sleep(0.2)
    while True:  # the new front-end answers
        try:
            r = on(service, 1, lambda c: c.get("/v1/health"))
            break
        except AssertionError:
            assert time.monotonic() < deadline, service.output()
    assert r.json()["status"] == "ok"
    mine = on(service, 1, lambda c: in_session(c, session, "GET", "/v1/volunteers/me"))
    assert mine.status_code == 200, mine.text
    pids = service.pids()
    assert fronts[1] not in pids and len(pids) >= 1 + WORKERS
    service.stop()
    assert service.proc.returncode == 0, service.output()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids):
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        states = {p: _state(p) for p in left}
        if all(s in ("Z", "gone") for s in states.values()):  # ended, not yet reaped
            break
        assert time.monotonic() < deadline, f"left behind: {states}\n{service.output()}"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
