"""A real foldnet HTTP service on loopback for tests: uvicorn in a thread, random port."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn

from coordinator.accounts import Accounts
from coordinator.clock import SYSTEM_CLOCK, Clock
from coordinator.http.app import Service, ServiceConfig, create_app
from coordinator.service import Coordinator
from sims.examples import VILLIN_PDB
from worker.identity import Identity
from worker.session import Opening, Session, mac_headers
from worker.wire import sign_headers


class FakeClock:
    """A :class:`~coordinator.clock.Clock` that moves only when a test says so. Wall time
    starts at the real one, so requests signed with the real time stay within the window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wall = time.time()
        self._mono = 0.0

    def now(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += seconds
            self._mono += seconds


@dataclass
class Served:
    url: str
    service: Service
    keys: dict[str, str] = field(default_factory=dict)  # lab API keys, by lab

    def stored(self) -> tuple[int, int, int, int]:
        """(events, ledger entries, jobs, stored results): what a refused request must not
        change."""
        assert self.service.thread is not None

        def count(c: Coordinator) -> tuple[int, int, int, int]:
            returned = sum(1 for r in c.scheduler.replicas.values() if r.claim is not None)
            return len(list(c.store.events())), c.log.size, len(c.scheduler.jobs), returned

        return self.service.thread.call_sync(count)


def signed(
    client: httpx.Client,
    identity: Identity,
    method: str,
    path: str,
    body: bytes = b"",
    **kw: object,
) -> httpx.Response:
    """A request signed like foldnet worker run signs it (``kw`` overrides sign_headers)."""
    kw.setdefault("origin", str(client.base_url))
    headers = sign_headers(identity, method, path, body, **kw)  # type: ignore[arg-type]
    return client.request(method, path, content=body or None, headers=headers)


def open_session(client: httpx.Client, identity: Identity) -> Session:
    """A session of ``identity`` (registered) with the service, opened like the client does."""
    opening = Opening.new(identity.public_key, origin=str(client.base_url))
    body = json.dumps(opening.request).encode()
    r = signed(client, identity, "POST", "/v1/sessions", body)
    assert r.status_code == 201, r.text
    return opening.session(r.json())


def in_session(
    client: httpx.Client,
    session: Session,
    method: str,
    path: str,
    body: bytes = b"",
    **kw: object,
) -> httpx.Response:
    """A request MAC'd in ``session`` (``kw`` overrides mac_headers)."""
    headers = mac_headers(session, method, path, body, **kw)  # type: ignore[arg-type]
    return client.request(method, path, content=body or None, headers=headers)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_service(
    workdir: Path,
    config: ServiceConfig | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    port: int | None = None,
) -> Iterator[Served]:
    """Serve ``workdir`` on 127.0.0.1 (``port``, or a free one) until the block exits."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = dataclasses.replace(config or ServiceConfig(), origin=url)
    app = create_app(workdir, cfg, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    try:
        yield Served(url, app.state.service)
    finally:
        server.should_exit = True
        thread.join(30)


def add_lab(workdir: Path, name: str) -> str:
    with Accounts.in_folder(workdir) as accounts:
        return accounts.add_lab(name)


def go_job(**kw: object) -> dict[str, object]:
    """A small Go-model villin job as a lab submits it over HTTP."""
    return {
        "engine": "go",
        "pdb": VILLIN_PDB.read_text(),
        "runs": 1,
        "clones": 2,
        "gens": 2,
        "steps_per_wu": 2000,
        "segment_steps": 500,
        "report_steps": 500,
        "temperature": 0.8,
        "audit_rate": 0.0,  # two volunteers: nobody outside the quorum could audit
        "name": "villin test",
    } | kw


def lab_client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def trust(served: Served, *identities: Identity) -> None:
    """The operator vouches for these volunteers (its own machines): established at once."""
    assert served.service.thread is not None

    def go(c: Coordinator) -> None:
        for i in identities:
            c.trust(i.public_key)

    served.service.thread.call_sync(go)


def wait_for_job(
    lab: httpx.Client, job: str, state: str = "completed", timeout: float = 60
) -> dict:
    """The job's progress once it reaches ``state`` (validation may wait for the next
    beacon, a tick of the service's thread, after the last upload)."""
    deadline = time.monotonic() + timeout
    while True:
        progress = lab.get(f"/v1/jobs/{job}").json()
        if progress["state"] == state or time.monotonic() > deadline:
            return progress
        time.sleep(0.05)


def wait_prepared(lab: httpx.Client, job: str, timeout: float = 120) -> dict:
    """The job's progress once its preparation (a separate process) is over: ``running``,
    or ``failed`` with its ``error``."""
    deadline = time.monotonic() + timeout
    while True:
        progress = lab.get(f"/v1/jobs/{job}").json()
        if progress["state"] != "preparing":
            return progress
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job[:16]} still preparing after {timeout} s: {progress}")
        time.sleep(0.05)


def post_job(lab: httpx.Client, body: dict[str, object], *, ready: bool = True) -> httpx.Response:
    """``POST /v1/jobs``; a job it accepts (202) is waited for until it is prepared (unless
    ``ready`` is false), so that its work units exist when the caller goes on."""
    r = lab.post("/v1/jobs", json=body)
    if r.status_code == 202 and ready:
        wait_prepared(lab, r.json()["job"])
    return r
