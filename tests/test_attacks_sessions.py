"""Attacks on volunteer authentication (coordinator/http/auth.py, sessions.py), by someone
who saw a volunteer's requests (a log, a proxy, the wire) and can send any HTTP request.

What tests/test_http_sessions.py does not try: replaying a captured request after the
service restarted (its nonce book is in memory), moving a MAC'd upload to another replica
or another ``?next=`` on the hot route (authenticated in two halves, before and after the
body is read), and a flood of sessions against the ticket memo.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_helpers import (
    FakeClock,
    add_lab,
    free_port,
    go_job,
    in_session,
    lab_client,
    open_session,
    post_job,
    running_service,
    signed,
)

from coordinator.http.auth import VolunteerAuth
from coordinator.http.sessions import Tickets
from foldnet.errors import Unauthenticated
from sims.examples import VILLIN_PDB
from sims.go import GoModel
from worker.identity import Identity
from worker.session import Opening, mac_headers
from worker.systems import EngineCache
from worker.wire import sign_headers


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert body["error"] == code and body["detail"], body
    return str(body["detail"])


def _det_class() -> str:
    return EngineCache().get(GoModel.from_pdb(VILLIN_PDB)).determinism_class().canonical().decode()


def _register(c: httpx.Client, me: Identity) -> None:
    body = json.dumps({"public_key": me.public_key.hex(), "name": "a"}).encode()
    assert signed(c, me, "POST", "/v1/volunteers", body).status_code == 201


# -- replays across a restart ------------------------------------------------------------------


def test_a_signed_request_captured_before_a_restart_is_refused_after_it(tmp_path: Path) -> None:
    """The nonce book is in memory: after a restart a captured signed ``POST /v1/work`` (still
    inside its timestamp window) would pull work in the victim's name, work it never sees and
    that then times out against it. A request stamped before the service started is refused;
    one signed after it, by the same key, is served."""
    port = free_port()
    me = Identity.ephemeral()
    pull = json.dumps({"det_class": _det_class(), "slots": 1}).encode()
    with running_service(tmp_path / "c", port=port) as s, httpx.Client(base_url=s.url) as c:
        _register(c, me)
        captured = sign_headers(me, "POST", "/v1/work", pull, origin=s.url)
        assert c.post("/v1/work", content=pull, headers=captured).status_code == 200
        me_too = sign_headers(me, "GET", "/v1/volunteers/me", origin=s.url)
        assert c.get("/v1/volunteers/me", headers=me_too).status_code == 200
        _error(c.post("/v1/work", content=pull, headers=captured), 401, "replayed")
    restarted = FakeClock()  # the restart took a second (else the request stamped in the
    restarted.advance(1.0)  # very second it started stays replayable: module docstring)
    with (
        running_service(tmp_path / "c", port=port, clock=restarted) as s,
        httpx.Client(base_url=s.url) as c,
    ):
        detail = _error(c.post("/v1/work", content=pull, headers=captured), 401, "expired")
        assert "before this service started" in detail
        _error(c.get("/v1/volunteers/me", headers=me_too), 401, "expired")
        assert signed(c, me, "POST", "/v1/work", pull, now=restarted.now()).status_code == 200
        # registering and opening a session stay open to a clock a little behind: replaying
        # them gains nothing (a registration is idempotent; a session's key needs the
        # volunteer's X25519 private key)
        session = open_session(c, me)
        r = in_session(c, session, "GET", "/v1/volunteers/me", now=restarted.now())
        assert r.status_code == 200, r.text


def test_the_floor_is_the_start_second_and_spares_registering_and_sessions() -> None:
    now = [1_000_000.5]
    tickets = Tickets(ticket_key=os.urandom(32), ttl_s=600, clock=lambda: now[0])
    auth = VolunteerAuth(window_s=300, clock=lambda: now[0], tickets=tickets)
    origin = "http://127.0.0.1:1"
    me = Identity.ephemeral()
    auth.registered.add(me.public_key)
    now[0] += 30.0

    def verify(headers: dict[str, str], **kw: bool) -> bytes:
        return auth.verify("GET", "/x", headers, b"", origin=origin, **kw)

    with pytest.raises(Unauthenticated) as e:  # stamped the second before it started
        verify(sign_headers(me, "GET", "/x", origin=origin, now=999_999.9))
    assert e.value.code == "expired"
    # stamped in the second it started: served (every fresh request of its first moments is)
    assert verify(sign_headers(me, "GET", "/x", origin=origin, now=1_000_000.0)) == me.public_key
    early = sign_headers(me, "GET", "/x", origin=origin, now=999_800.0)
    assert verify(early, registering=True) == me.public_key
    early = sign_headers(me, "GET", "/x", origin=origin, now=999_800.0)
    assert verify(early, signed_only=True) == me.public_key
    opening = Opening.new(me.public_key, origin=origin)
    client = bytes.fromhex(opening.request["x25519"])
    answer = tickets.open(volunteer=me.public_key, client_x25519=client, origin=origin).answer()
    session = opening.session(answer)
    assert verify(mac_headers(session, "GET", "/x", now=999_800.0)) == me.public_key


# -- a MAC'd upload moved to another replica or another ?next= --------------------------------


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A service with a job of two WUs, so that one volunteer holds a replica of each."""
    d = tmp_path_factory.mktemp("hot")
    key = add_lab(d / "c", "lab")
    with (
        running_service(d / "c") as s,
        httpx.Client(base_url=s.url, timeout=30) as c,
        lab_client(s.url, key) as lab,
    ):
        post_job(lab, go_job(clones=2, gens=1))
        yield c


def test_a_maced_upload_is_bound_to_its_replica_and_its_next(two_replicas: httpx.Client) -> None:
    """The hot route checks the headers, then the replica is this key's, then reads the body
    and only then verifies the MAC: the replica and ``?next=`` must still be the MAC'd ones
    (both replicas are the volunteer's own, so only the MAC can tell them apart)."""
    c = two_replicas
    me = Identity.ephemeral()
    _register(c, me)
    session = open_session(c, me)
    pull = json.dumps({"det_class": _det_class(), "slots": 2}).encode()
    r = in_session(c, session, "POST", "/v1/work", pull)
    tasks = r.json()["tasks"]
    assert r.status_code == 200 and len(tasks) == 2, r.text
    a, b = (t["replica"] for t in tasks)
    body = b"not a result, and never read as one: the MAC is checked first"
    headers = mac_headers(session, "POST", f"/v1/results/{a}", body)
    for moved in (f"/v1/results/{b}", f"/v1/results/{a}?next=1", f"/v1/results/{a}?next=64"):
        _error(c.post(moved, content=body, headers=headers), 401, "bad_mac")
    # as MAC'd, it authenticates (and is then read, and refused, as the non-result it is)
    _error(c.post(f"/v1/results/{a}", content=body, headers=headers), 422, "invalid_body")


# -- a flood of sessions -----------------------------------------------------------------------


def test_very_many_sessions_keep_the_ticket_memo_bounded() -> None:
    """A key may open sessions as fast as its rate allows, and every front-end remembers each
    ticket it read: the memo keeps its bound, and a ticket it forgot still reads."""
    tickets = Tickets(ticket_key=os.urandom(32), ttl_s=600, memo_size=16)
    me = bytes(range(32))
    issued = []
    for _ in range(100):
        client = bytes.fromhex(Opening.new(me, origin="http://a:1").request["x25519"])
        issued.append(tickets.open(volunteer=me, client_x25519=client, origin="http://a:1"))
    for opened in issued:
        assert tickets.read(opened.ticket, volunteer=me).volunteer == me
        assert len(tickets._memo) <= 16
    first = tickets.read(issued[0].ticket, volunteer=me)  # forgotten long ago: read afresh
    assert first.expires == issued[0].expires
