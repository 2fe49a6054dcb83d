"""Attacks on ``foldnet serve --workers N`` (the coordinator in one process, HTTP front-ends
in others, docs/architecture.md §9.2), tried by volunteers with real keys over HTTP.

A front-end checks an upload against what it remembers of the work it handed out (a hint:
``svc.work``), and the coordinator only checks the upload's binding to its replica; nonces
and rates are kept by the coordinator for all front-ends. These tests send a volunteer's
requests to the front-end of its choice (an attacker can: a new connection lands on some
front-end, and it may open as many as it likes) and check what the design relies on: the
coordinator's word, not a front-end's hint, decides whether a result counts; a result is
counted once, whatever front-ends it is sent to; a refused request is answered with a 4xx
and keeps nothing.

The front-ends here are the real ones (``create_app(front=...)``, each with its own link to
the coordinator's :class:`~coordinator.http.core.Core` over a socket pair, the link codec,
the gate); they run in threads of this process, each on a port of its own, so that a test
picks the front-end that answers (``foldnet serve`` puts them on one port, in processes).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from http_helpers import FakeClock, add_lab, free_port, go_job, lab_client, post_job

from coordinator.classes import CLASSES_FILE
from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.http.app import ServiceConfig, create_app
from coordinator.http.context import FrontEnd, Service
from coordinator.http.core import Core
from coordinator.http.link import Hub, Port
from coordinator.http.wire import FORGET_AFTER_S, PRUNE_EVERY_S
from coordinator.messages import ResultReturned
from coordinator.policy import NetworkPolicy
from coordinator.service import Coordinator
from sims.examples import VILLIN_PDB
from sims.go import GoModel
from worker.identity import Identity
from worker.result import WorkerResult
from worker.systems import EngineCache, decode_system
from worker.tasks import ComputeTask, compute
from worker.wire import decode_task, encode_result, sign_headers

T = TypeVar("T")
ENGINES = EngineCache()
FAST = ServiceConfig(policy=NetworkPolicy(offer_s=3.0), idle_retry_s=0.1)


@dataclass
class FrontEnds:
    """A coordinator and its front-ends: ``urls[i]`` reaches front-end ``i``; every signed
    request names ``origin``."""

    workdir: Path
    origin: str
    urls: list[str]
    core: Core
    services: list[Service]
    clock: Clock
    clients: list[httpx.Client] = dataclasses.field(default_factory=list)  # closed at the end

    def call(self, fn: Callable[[Coordinator], T]) -> T:
        assert self.core.thread is not None
        return self.core.thread.call_sync(fn)

    def stored(self) -> tuple[int, int, tuple[tuple[int, str], ...]]:
        """(events, ledger entries, every replica's state): what a refused request must not
        change."""

        def count(c: Coordinator) -> tuple[int, int, tuple[tuple[int, str], ...]]:
            reps = tuple(sorted((r.id, r.state) for r in c.scheduler.replicas.values()))
            return len(list(c.store.events())), c.log.size, reps

        return self.call(count)

    def returned(self, replica: int) -> int:
        """How many results of ``replica`` the coordinator took (events in its log)."""
        return self.call(
            lambda c: sum(
                1
                for e in c.store.events()
                if isinstance(e, ResultReturned) and e.replica == replica
            )
        )


@contextmanager
def _serving(app: FastAPI, port: int) -> Iterator[None]:
    """``app`` on 127.0.0.1:``port`` in a thread until the block exits."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "a front-end did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def front_ends(
    workdir: Path, config: ServiceConfig = FAST, *, n: int = 2, clock: Clock = SYSTEM_CLOCK
) -> Iterator[FrontEnds]:
    """The coordinator of ``workdir`` with ``n`` front-ends on loopback, as ``foldnet serve
    --workers n`` wires them (coordinator/http/workers.py), until the block exits."""
    ports = [free_port() for _ in range(n)]
    origin = f"http://127.0.0.1:{ports[0]}"
    cfg = dataclasses.replace(config, origin=origin)
    hub = Hub()
    core = Core(workdir, cfg, clock=clock)
    ticket_key = secrets.token_bytes(32)
    with ExitStack() as stack:
        core.start(hub)
        stack.callback(hub.close)
        stack.callback(core.stop)
        services = []
        for worker, port in enumerate(ports):
            mine, theirs = socket.socketpair()
            hub.add(Port(mine, worker))
            app = create_app(
                workdir, cfg, clock=clock, front=FrontEnd(theirs, worker, ticket_key=ticket_key)
            )
            stack.enter_context(_serving(app, port))
            services.append(app.state.service)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        fronts = FrontEnds(workdir, origin, urls, core, services, clock)
        try:
            yield fronts
        finally:
            for c in fronts.clients:
                c.close()


class Volunteer:
    """A volunteer key that sends each request to the front-end it names."""

    def __init__(self, fronts: FrontEnds, name: str) -> None:
        self.me = Identity.ephemeral()
        self.fronts = fronts
        self.clients = [httpx.Client(base_url=u, timeout=60) for u in fronts.urls]
        fronts.clients += self.clients
        self.det_class = self.real_class()
        body = json.dumps({"public_key": self.me.public_key.hex(), "name": name}).encode()
        r = self.send(0, "POST", "/v1/volunteers", body)
        assert r.status_code == 201, r.text

    @staticmethod
    def real_class() -> str:
        """The determinism class this machine computes villin's Go WUs in."""
        return ENGINES.get(GoModel.from_pdb(VILLIN_PDB)).determinism_class().canonical().decode()

    def headers(self, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        return sign_headers(
            self.me, method, path, body, origin=self.fronts.origin, now=self.fronts.clock.now()
        )

    def send(
        self, front: int, method: str, path: str, body: bytes = b"", headers: dict | None = None
    ) -> httpx.Response:
        """A request signed now (or with ``headers``), sent to front-end ``front``."""
        h = headers if headers is not None else self.headers(method, path, body)
        return self.clients[front].request(method, path, content=body or None, headers=h)

    def pull(self, front: int, slots: int = 1, det_class: str | None = None) -> httpx.Response:
        doc = {"det_class": det_class or self.det_class, "slots": slots}
        return self.send(front, "POST", "/v1/work", json.dumps(doc).encode())

    def tasks(self, front: int, slots: int = 1) -> list[ComputeTask]:
        r = self.pull(front, slots)
        assert r.status_code == 200, r.text
        return [self.task(front, doc) for doc in r.json()["tasks"]]

    def task(self, front: int, doc: dict) -> ComputeTask:
        r = self.send(front, "GET", f"/v1/systems/{doc['system']}")
        assert r.status_code == 200, r.text
        t = decode_task(doc, decode_system(r.content))
        assert isinstance(t, ComputeTask)
        return t

    def result(self, t: ComputeTask) -> WorkerResult:
        return compute(t, engines=ENGINES, identity=self.me)


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.json()["error"] == code, r.text[:300]


@pytest.fixture
def fronts(tmp_path: Path) -> Iterator[FrontEnds]:
    key = add_lab(tmp_path / "c", "lab-a")
    with front_ends(tmp_path / "c") as f, lab_client(f.urls[0], key) as lab:
        r = post_job(lab, go_job(clones=2, gens=1))
        assert r.status_code == 202, r.text
        yield f


# -- one result, many front-ends -------------------------------------------------------------


def test_one_signed_upload_sent_to_both_front_ends_at_once_counts_once(fronts):
    """The same signed upload, raced to two front-ends: each verifies it, one is taken, the
    other is refused (its nonce was spent at the coordinator, or the replica is no longer
    the key's); re-signed, it is refused at either front-end."""
    v = Volunteer(fronts, "racer")
    (t,) = v.tasks(0)
    body = encode_result(v.result(t))
    path = f"/v1/results/{t.replica}"
    headers = v.headers("POST", path, body)
    answers: list[httpx.Response] = []
    go = threading.Barrier(2)

    def upload(front: int) -> None:
        go.wait()
        answers.append(v.send(front, "POST", path, body, headers))

    threads = [threading.Thread(target=upload, args=(f,)) for f in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    statuses = sorted((r.status_code, r.json().get("error", "")) for r in answers)
    assert statuses[0] == (200, "") and statuses[1] in {(401, "replayed"), (404, "not_assigned")}
    assert fronts.returned(t.replica) == 1
    before = fronts.stored()
    for front in (0, 1):  # signed afresh: the replica is no longer this key's to upload
        _error(v.send(front, "POST", path, body), 404, "not_assigned")
    assert fronts.stored() == before


def test_a_front_ends_stale_hint_does_not_take_a_replica_back(fronts):
    """Pulled through front-end 0, uploaded through front-end 1: front-end 0 still holds
    its hints of the replicas, but the coordinator's word decides. Uploading one again there
    (garbage, which would count as invalid) or giving one back is refused, and nothing
    changes."""
    v = Volunteer(fronts, "two-doors")
    tasks = v.tasks(0, slots=2)
    assert len(tasks) == 2
    results = {t.replica: v.result(t) for t in tasks}
    for t in tasks:
        first = v.send(1, "POST", f"/v1/results/{t.replica}", encode_result(results[t.replica]))
        assert first.status_code == 200 and first.json()["state"] == "returned", first.text
    before = fronts.stored()
    one, two = (t.replica for t in tasks)
    garbage = dataclasses.replace(results[one], signature=bytes(64))
    _error(v.send(0, "POST", f"/v1/results/{one}", encode_result(garbage)), 409, "conflict")
    give_back = json.dumps({"reason": "changed my mind"}).encode()
    _error(v.send(0, "POST", f"/v1/results/{two}/failure", give_back), 409, "conflict")
    assert fronts.stored() == before
    assert fronts.returned(one) == fronts.returned(two) == 1


def test_another_keys_replica_is_refused_at_every_front_end(fronts):
    """An intruder uploads garbage to (or gives back) a replica another key pulled: at the
    front-end that handed it out (whose hint names its key) and at the other (which asks
    the coordinator). Refused before anything reaches the coordinator's invalid path (which
    counts a failed verification against the replica's key, on the front-end's word)."""
    owner, intruder = Volunteer(fronts, "owner"), Volunteer(fronts, "intruder")
    (t,) = owner.tasks(0)
    garbage = dataclasses.replace(owner.result(t), signature=bytes(64))
    body = encode_result(garbage)
    before = fronts.stored()
    for front in (0, 1):
        _error(intruder.send(front, "POST", f"/v1/results/{t.replica}", body), 404, "not_assigned")
        give_back = json.dumps({"reason": "not mine"}).encode()
        r = intruder.send(front, "POST", f"/v1/results/{t.replica}/failure", give_back)
        _error(r, 404, "not_assigned")
    assert fronts.stored() == before
    r = owner.send(1, "POST", f"/v1/results/{t.replica}", encode_result(owner.result(t)))
    assert r.status_code == 200 and r.json()["state"] == "returned", r.text


# -- ?next=N ---------------------------------------------------------------------------------


def test_a_class_refused_to_a_key_is_not_the_one_its_uploads_pull_next_in(tmp_path):
    """A key declares a class past its most (refused, 409), then uploads a result with
    ``?next=1``: the upload is taken and answered as taken, and the next work is pulled in
    a class the key may use, never in the refused one (which would refuse the upload's
    answer after its result was kept)."""
    workdir = tmp_path / "c"
    workdir.mkdir()
    real = json.loads(Volunteer.real_class())
    variants = [
        json.dumps(real | {"cpu": f"x86_64/variant{i}"}, sort_keys=True, separators=(",", ":"))
        for i in range(NetworkPolicy().max_classes_per_volunteer)
    ]
    (workdir / CLASSES_FILE).write_text(json.dumps({"accepted": variants}))
    key = add_lab(workdir, "lab-a")
    with front_ends(workdir) as fronts, lab_client(fronts.urls[0], key) as lab:
        assert post_job(lab, go_job(clones=1, gens=1)).status_code == 202
        v = Volunteer(fronts, "collector")
        (t,) = v.tasks(0)  # in the real class
        for i, cls in enumerate(variants):  # the last one is past the key's most
            r = v.pull(0, det_class=cls)
            assert r.status_code == (409 if i == len(variants) - 1 else 200), r.text
        r = v.send(0, "POST", f"/v1/results/{t.replica}?next=1", encode_result(v.result(t)))
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "returned" and r.json()["tasks"] == []
        assert fronts.returned(t.replica) == 1


# -- what a front-end remembers ----------------------------------------------------------------


def test_work_past_its_deadline_is_refused_then_forgotten(tmp_path):
    """A replica pulled through a front-end and never uploaded in time: once its deadline
    passed and it was reissued, its late upload is refused at the front-end that still
    holds its hint (the coordinator's word), and once long past its deadline the front-end
    forgets it, as the coordinator does (free keys that pull work and drop it cannot grow a
    front-end's memory without bound)."""
    clock = FakeClock()
    key = add_lab(tmp_path / "c", "lab-a")
    with front_ends(tmp_path / "c", clock=clock) as fronts, lab_client(fronts.urls[0], key) as lab:
        assert post_job(lab, go_job(clones=1, gens=1, deadline_s=30)).status_code == 202
        v = Volunteer(fronts, "late")
        (t,) = v.tasks(0)
        late = encode_result(v.result(t))
        work = fronts.services[0].work
        assert len(work) == 1
        clock.advance(31)
        deadline = time.monotonic() + 30
        while fronts.call(lambda c: c.scheduler.replicas[t.replica].state) == "assigned":
            assert time.monotonic() < deadline, "the coordinator never ticked"
            time.sleep(0.05)
        before = fronts.stored()
        _error(v.send(0, "POST", f"/v1/results/{t.replica}", late), 409, "conflict")
        assert fronts.stored() == before and fronts.returned(t.replica) == 0
        clock.advance(FORGET_AFTER_S + PRUNE_EVERY_S)
        again = v.tasks(0)  # (the WU was reissued, never to the key that let it go)
        assert again == [] and len(work) == 0


# -- rates, for all front-ends together -------------------------------------------------------


def test_a_key_gets_its_rate_once_however_many_front_ends_it_talks_to(tmp_path):
    """Each front-end holds a key to the rate, and so does the coordinator, for all of them:
    a key that spreads its requests over the front-ends still gets ``volunteer_burst``
    requests, not that many per front-end."""
    clock = FakeClock()  # frozen: no bucket refills during the test
    cfg = dataclasses.replace(FAST, volunteer_rate=0.001, volunteer_burst=4)
    with front_ends(tmp_path / "c", cfg, clock=clock) as fronts:
        v = Volunteer(fronts, "greedy")  # (registering spends one)
        answers = [v.send(front, "GET", "/v1/volunteers/me") for front in (0, 0, 1, 1, 1)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
        assert all(r.json()["error"] == "rate_limited" for r in answers[3:])
