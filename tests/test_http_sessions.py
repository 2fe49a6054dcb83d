"""Volunteer sessions (coordinator/http/sessions.py, worker/session.py): one signed request
opens one, then each request is MAC'd. Attacks first: every way to get a request through
without the session's key, or with a ticket that is not this key's and this service's, is
refused with its own code; then the client (reopening after a restart, retrying an upload
with the same bytes, signing each request at an older coordinator)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
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
    wait_for_job,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.errors import UsageError
from coordinator.http.app import ServiceConfig
from coordinator.http.sessions import TICKET_CHARS, Tickets
from foldnet.errors import Unauthenticated
from sims.examples import VILLIN_PDB
from sims.go import GoModel
from worker.client import HttpVolunteer
from worker.errors import PicklingRefusedError, WireError
from worker.identity import Identity
from worker.session import Opening, Session, derive_session_key, exchange, mac_headers
from worker.systems import EngineCache
from worker.wire import (
    KEY_HEADER,
    MAC_HEADER,
    SESSION_HEADER,
    SIGNATURE_HEADER,
    body_digest,
    origin_of,
    sign_headers,
    signing_message,
)

ORIGIN = "http://127.0.0.1:8000"


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert body["error"] == code and body["detail"], body


# -- sessions.py alone -------------------------------------------------------------------------


def _opened(tickets: Tickets, me: bytes, origin: str = ORIGIN) -> tuple[Session, str]:
    """A session as both sides see it: the client's, and the server's ticket."""
    opening = Opening.new(me, origin=origin)
    client = bytes.fromhex(opening.request["x25519"])
    answer = tickets.open(volunteer=me, client_x25519=client, origin=origin_of(origin)).answer()
    return opening.session(answer), str(answer["ticket"])


@settings(max_examples=30, deadline=None)
@given(me=st.binary(min_size=32, max_size=32), port=st.integers(1, 65535))
def test_both_sides_derive_the_key_the_ticket_holds(me: bytes, port: int) -> None:
    tickets = Tickets(ticket_key=os.urandom(32), ttl_s=600)
    session, ticket = _opened(tickets, me, f"http://example.org:{port}")
    read = tickets.read(ticket, volunteer=me)
    assert read.session_key == session.key and read.volunteer == me
    assert len(ticket) == TICKET_CHARS
    assert session.origin == f"http://example.org:{port}"
    assert abs(read.expires - (time.time() + 600)) <= 2


_TICKETS = Tickets(ticket_key=os.urandom(32), ttl_s=600)
_ME = bytes(range(32))
_, _TICKET = _opened(_TICKETS, _ME)


@settings(max_examples=200, deadline=None)
@given(bit=st.integers(0, 8 * 100 - 1))
def test_any_flipped_bit_of_a_ticket_makes_it_no_ticket(bit: int) -> None:
    import base64

    raw = bytearray(base64.urlsafe_b64decode(_TICKET + "=="))
    raw[bit // 8] ^= 1 << (bit % 8)
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated) as e:
        _TICKETS.read(forged, volunteer=_ME)
    assert e.value.code == "bad_session"


@pytest.mark.parametrize(
    "ticket",
    ["", "A" * TICKET_CHARS, "A" * (TICKET_CHARS - 1), _TICKET + "A", _TICKET[:-1] + "*"],
)
def test_what_is_not_a_ticket_is_bad_session(ticket: str) -> None:
    with pytest.raises(Unauthenticated) as e:
        Tickets(ticket_key=os.urandom(32), ttl_s=600).read(ticket, volunteer=_ME)
    assert e.value.code == "bad_session"


def test_a_ticket_is_its_keys_and_its_services_and_ends() -> None:
    now = [1_000_000.0]
    key = os.urandom(32)
    tickets = Tickets(ticket_key=key, ttl_s=60, clock=lambda: now[0])
    _, ticket = _opened(tickets, _ME)
    assert tickets.read(ticket, volunteer=_ME).volunteer == _ME
    with pytest.raises(Unauthenticated) as e:  # another key's
        tickets.read(ticket, volunteer=bytes(32))
    assert e.value.code == "bad_session"
    with pytest.raises(Unauthenticated) as e:  # another service's (or before a restart)
        Tickets(ticket_key=os.urandom(32), ttl_s=60).read(ticket, volunteer=_ME)
    assert e.value.code == "bad_session"
    now[0] += 59.0
    assert tickets.read(ticket, volunteer=_ME).volunteer == _ME
    now[0] += 1.0
    with pytest.raises(Unauthenticated) as e:  # remembered, and still checked for its time
        tickets.read(ticket, volunteer=_ME)
    assert e.value.code == "session_expired"
    again = Tickets(ticket_key=key, ttl_s=60, clock=lambda: now[0])  # read afresh: the same
    with pytest.raises(Unauthenticated) as e:
        again.read(ticket, volunteer=_ME)
    assert e.value.code == "session_expired"


def test_a_low_order_x25519_key_opens_nothing() -> None:
    with pytest.raises(WireError, match="x25519"):
        _TICKETS.open(volunteer=_ME, client_x25519=bytes(32), origin=ORIGIN)


def test_sessions_are_never_pickled_and_their_key_is_not_shown() -> None:
    import pickle

    session, _ = _opened(_TICKETS, _ME)
    assert session.key.hex() not in repr(session)
    for secret in (session, Opening.new(_ME, origin=ORIGIN)):
        with pytest.raises(PicklingRefusedError):
            pickle.dumps(secret)


@pytest.mark.parametrize("ttl", [0.0, 59.0, 86_401.0, float("nan")])
def test_the_session_lifetime_is_checked(ttl: float) -> None:
    with pytest.raises(UsageError, match="session_ttl_s"):
        ServiceConfig(session_ttl_s=ttl)


# -- attacks over HTTP -------------------------------------------------------------------------


def _det_class() -> str:
    return EngineCache().get(GoModel.from_pdb(VILLIN_PDB)).determinism_class().canonical().decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, httpx.Client]]:
    d = tmp_path_factory.mktemp("sessions")
    with running_service(d / "c") as s, httpx.Client(base_url=s.url, timeout=30) as c:
        yield s.url, c


def _member(c: httpx.Client) -> tuple[Identity, Session]:
    """A registered volunteer with a session."""
    me = Identity.ephemeral()
    body = json.dumps({"public_key": me.public_key.hex(), "name": "s"}).encode()
    assert signed(c, me, "POST", "/v1/volunteers", body).status_code == 201
    return me, open_session(c, me)


def test_a_session_request_is_answered(served) -> None:
    _, c = served
    me, session = _member(c)
    r = in_session(c, session, "GET", "/v1/volunteers/me")
    assert r.status_code == 200 and r.json()["volunteer"] == me.public_key.hex(), r.text
    pull = json.dumps({"det_class": _det_class(), "slots": 1}).encode()
    r = in_session(c, session, "POST", "/v1/work", pull)
    assert r.status_code == 200 and r.json()["tasks"] == [], r.text
    signed_too = signed(c, me, "GET", "/v1/volunteers/me")  # signing still works beside it
    assert signed_too.status_code == 200, signed_too.text


def test_a_mac_under_another_key_or_over_other_bytes_is_refused(served) -> None:
    _, c = served
    _, session = _member(c)
    wrong = dataclasses.replace(session, key=os.urandom(32))
    _error(in_session(c, wrong, "GET", "/v1/volunteers/me"), 401, "bad_mac")
    pull = json.dumps({"det_class": _det_class(), "slots": 1}).encode()
    headers = mac_headers(session, "POST", "/v1/work", pull)  # MAC'd for one body ...
    _error(c.post("/v1/work", content=pull.replace(b"1}", b"2}"), headers=headers), 401, "bad_mac")
    headers = mac_headers(session, "POST", "/v1/work", pull)  # ... and for one path
    _error(c.post("/v1/work?x=1", content=pull, headers=headers), 401, "bad_mac")
    elsewhere = dataclasses.replace(session, origin="http://127.0.0.1:1")  # another origin
    _error(in_session(c, elsewhere, "GET", "/v1/volunteers/me"), 401, "bad_mac")


def test_a_tampered_or_foreign_ticket_is_bad_session(served) -> None:
    url, c = served
    me, session = _member(c)
    flipped = (
        session.ticket[:40] + ("A" if session.ticket[40] != "A" else "B") + session.ticket[41:]
    )
    _error(
        in_session(c, dataclasses.replace(session, ticket=flipped), "GET", "/v1/volunteers/me"),
        401,
        "bad_session",
    )
    # a session opened, every step right, with another service (another ticket key)
    other, _ = _opened(Tickets(ticket_key=os.urandom(32), ttl_s=600), me.public_key, url)
    _error(in_session(c, other, "GET", "/v1/volunteers/me"), 401, "bad_session")
    # the ticket of key A, MAC'd with A's session key, sent as key B's request
    b, _ = _member(c)
    as_b = dataclasses.replace(session, volunteer=b.public_key)
    _error(in_session(c, as_b, "GET", "/v1/volunteers/me"), 401, "bad_session")
    r = in_session(c, session, "GET", "/v1/volunteers/me")  # A's own still works
    assert r.status_code == 200, r.text


def test_a_replayed_session_request_is_refused(served) -> None:
    _, c = served
    _, session = _member(c)
    headers = mac_headers(session, "GET", "/v1/volunteers/me")
    assert c.get("/v1/volunteers/me", headers=headers).status_code == 200
    _error(c.get("/v1/volunteers/me", headers=headers), 401, "replayed")


def test_a_signature_and_a_session_together_or_neither_are_refused(served) -> None:
    _, c = served
    me, session = _member(c)
    both = mac_headers(session, "GET", "/v1/volunteers/me")
    sig = sign_headers(me, "GET", "/v1/volunteers/me", origin=str(c.base_url))
    both[SIGNATURE_HEADER] = sig[SIGNATURE_HEADER]
    _error(c.get("/v1/volunteers/me", headers=both), 401, "ambiguous_auth")
    for dropped in (SESSION_HEADER, MAC_HEADER):
        half = mac_headers(session, "GET", "/v1/volunteers/me")
        del half[dropped]
        _error(c.get("/v1/volunteers/me", headers=half), 401, "unsigned")
    _error(c.get("/v1/volunteers/me", headers={KEY_HEADER: me.public_key.hex()}), 401, "unsigned")


def test_registering_and_opening_need_the_key_itself(served) -> None:
    _, c = served
    me, session = _member(c)
    x = json.dumps(Opening.new(me.public_key, origin=str(c.base_url)).request).encode()
    _error(in_session(c, session, "POST", "/v1/sessions", x), 401, "signature_required")
    reg = json.dumps({"public_key": me.public_key.hex()}).encode()
    _error(in_session(c, session, "POST", "/v1/volunteers", reg), 401, "signature_required")
    stranger = Identity.ephemeral()  # never registered: no session
    x = json.dumps(Opening.new(stranger.public_key, origin=str(c.base_url)).request).encode()
    _error(signed(c, stranger, "POST", "/v1/sessions", x), 401, "unknown_volunteer")
    low = json.dumps({"x25519": "00" * 32}).encode()
    _error(signed(c, me, "POST", "/v1/sessions", low), 422, "invalid_body")
    extra = json.dumps({"x25519": "11" * 32, "more": 1}).encode()
    _error(signed(c, me, "POST", "/v1/sessions", extra), 422, "invalid_body")


def test_an_expired_session_is_refused(tmp_path: Path) -> None:
    clock = FakeClock()
    with (
        running_service(tmp_path / "c", ServiceConfig(session_ttl_s=600), clock=clock) as s,
        httpx.Client(base_url=s.url, timeout=30) as c,
    ):
        _, session = _member(c)
        assert in_session(c, session, "GET", "/v1/volunteers/me").status_code == 200
        clock.advance(599)
        r = in_session(c, session, "GET", "/v1/volunteers/me", now=clock.now())
        assert r.status_code == 200, r.text
        clock.advance(1)
        r = in_session(c, session, "GET", "/v1/volunteers/me", now=clock.now())
        _error(r, 401, "session_expired")
        assert "POST /v1/sessions" in r.json()["detail"]


# -- the client --------------------------------------------------------------------------------


class Tap(httpx.BaseTransport):
    """A real transport with someone on the path: sees every request, may change answers."""

    def __init__(self, edit: Callable[[httpx.Request, httpx.Response], httpx.Response]) -> None:
        self.inner = httpx.HTTPTransport()
        self.edit = edit
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.seen.append(request)
        return self.edit(request, self.inner.handle_request(request))

    def close(self) -> None:
        self.inner.close()


def _as_is(_request: httpx.Request, response: httpx.Response) -> httpx.Response:
    return response


def test_a_man_in_the_middle_who_swaps_the_servers_key_authenticates_nobody(tmp_path) -> None:
    mitm = X25519PrivateKey.generate()
    mitm_pub = mitm.public_key().public_bytes_raw()
    real: dict[str, str] = {}

    def swap(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != "/v1/sessions" or response.status_code != 201:
            return response
        doc = json.loads(response.read())
        real.update(doc)
        return httpx.Response(201, json=doc | {"x25519": mitm_pub.hex()})

    with running_service(tmp_path / "c") as s, contextlib.ExitStack() as stack:
        tap = Tap(swap)
        v = HttpVolunteer(s.url, home=tmp_path / "h", key_path=tmp_path / "v.key", transport=tap)
        stack.callback(v.close)
        v.register()
        with pytest.raises(Unauthenticated) as e:
            v.me()
        assert e.value.code == "bad_mac"  # the volunteer cannot authenticate: a denial ...
        assert v.session is not None and real["ticket"] == v.session.ticket
        # ... and whatever the attacker derives from what it saw is no key the server takes
        opened = next(r for r in tap.seen if r.url.path == "/v1/sessions")
        client = bytes.fromhex(json.loads(opened.content)["x25519"])
        me = v.identity.public_key
        origin = origin_of(s.url)
        server = bytes.fromhex(real["x25519"])
        guesses = [
            derive_session_key(
                exchange(mitm, peer),
                origin=origin,
                volunteer=me,
                client_x25519=client,
                server_x25519=named,
            )
            for peer in (client, server)
            for named in (server, mitm_pub)
        ]
        assert v.session.key in guesses  # it does learn the volunteer's (useless) key
        with httpx.Client(base_url=s.url, timeout=30) as c:
            for key in guesses:
                forged = dataclasses.replace(v.session, key=key)
                _error(in_session(c, forged, "GET", "/v1/volunteers/me"), 401, "bad_mac")


def test_the_client_retries_an_upload_once_in_a_new_session_with_the_same_bytes(tmp_path):
    key = add_lab(tmp_path / "c", "lab")
    foreign = Tickets(ticket_key=os.urandom(32), ttl_s=600)
    tap = Tap(_as_is)
    said: list[str] = []
    holder: list[HttpVolunteer] = []

    def report(message: str) -> None:
        said.append(message)
        v = holder[0]
        if "steps in" in message and v.session is not None:  # computing: the upload is next
            other, _ = _opened(foreign, v.identity.public_key, v.server)
            v.session = dataclasses.replace(v.session, ticket=other.ticket)

    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        post_job(lab, go_job(clones=1, gens=1))
        v = HttpVolunteer(
            s.url, home=tmp_path / "h", key_path=tmp_path / "v.key", transport=tap, report=report
        )
        holder.append(v)
        stats = v.run(max_tasks=1)
        assert stats.uploaded == 1 and stats.accepted == 1, said
        uploads = [r for r in tap.seen if r.url.path.startswith("/v1/results/")]
        assert len(uploads) == 2, [r.url.path for r in tap.seen]
        first, second = uploads
        assert first.content == second.content and len(first.content) > 1000
        assert first.headers["x-foldnet-nonce"] != second.headers["x-foldnet-nonce"]
        assert first.headers[SESSION_HEADER] != second.headers[SESSION_HEADER]
        assert any("session ended (bad_session)" in m for m in said), said
        opens = [r for r in tap.seen if r.url.path == "/v1/sessions"]
        assert len(opens) == 2 and all(SIGNATURE_HEADER in r.headers for r in opens)
        v.close()


def test_the_client_reopens_before_its_session_ends(tmp_path):
    with running_service(tmp_path / "c") as s:
        v = HttpVolunteer(s.url, home=tmp_path / "h", key_path=tmp_path / "v.key")
        v.register()
        v.me()
        first = v.session
        assert first is not None and first.left_s() > 3000
        # two minutes before the end, counted from the server's Date, not this clock
        assert 3600 - 120 - 5 < v.reopen_at - time.monotonic() <= 3600 - 120 + 1
        v.me()
        assert v.session is first  # plenty of time left: the same session
        v.reopen_at = time.monotonic()
        v.me()
        assert v.session is not None and v.session.ticket != first.ticket
        v.close()


def test_the_servers_clock_is_read_from_its_date_header() -> None:
    from worker.client import _server_time

    r = httpx.Response(200, headers={"date": "Mon, 30 Nov 2026 10:00:00 GMT"})
    assert _server_time(r) == 1_796_032_800.0
    for broken in ({"date": "yesterday"}, {}):
        assert abs(_server_time(httpx.Response(200, headers=broken)) - time.time()) < 5


def test_at_an_older_coordinator_the_client_signs_every_request(tmp_path):
    def older(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/v1/sessions":
            response.close()
            return httpx.Response(404, json={"detail": "Not Found"})
        return response

    tap = Tap(older)
    with running_service(tmp_path / "c") as s:
        v = HttpVolunteer(s.url, home=tmp_path / "h", key_path=tmp_path / "v.key", transport=tap)
        v.register()
        for _ in range(3):
            assert v.me()["volunteer"] == v.identity.public_key.hex()
        assert v.session is None and not v.sessions
        rest = [r for r in tap.seen if r.url.path != "/v1/sessions"]
        assert len(rest) == 4 and all(SIGNATURE_HEADER in r.headers for r in rest)
        assert len([r for r in tap.seen if r.url.path == "/v1/sessions"]) == 1  # asked once
        v.close()


def test_after_a_restart_the_client_opens_a_new_session_and_its_wus_validate(tmp_path):
    key = add_lab(tmp_path / "c", "lab")
    port = free_port()
    said: list[str] = []
    first = Identity.load_or_create(tmp_path / "v0.key")
    cfg = ServiceConfig(trusted_keys=(first.public_key,))
    vols = [
        HttpVolunteer(
            f"http://127.0.0.1:{port}",
            home=tmp_path / f"h{i}",
            key_path=tmp_path / f"v{i}.key",
            report=said.append,
        )
        for i in range(2)
    ]
    with running_service(tmp_path / "c", cfg, port=port) as s, lab_client(s.url, key) as lab:
        job = post_job(lab, go_job(clones=2, gens=1)).json()["job"]
        assert vols[0].run(max_tasks=2).uploaded == 2
        vols[1].register()
        vols[1].me()
        before = [v.session for v in vols]
        assert all(b is not None for b in before)
    with running_service(tmp_path / "c", cfg, port=port) as s, lab_client(s.url, key) as lab:
        assert vols[1].run(max_tasks=2).uploaded == 2  # its old ticket: refused, reopened
        progress = wait_for_job(lab, job)
        assert progress["state"] == "completed" and progress["wus"]["validated"] == 2, progress
        assert vols[0].me()["credit"] > 0  # the other's old session too
        for v, old in zip(vols, before, strict=True):
            assert v.session is not None and old is not None and v.session.ticket != old.ticket
        assert sum("session ended (bad_session)" in m for m in said) == 2, said
    for v in vols:
        v.close()


def test_the_mac_is_hmac_sha256_of_the_signed_message() -> None:
    """The wire format, written out: what another client implementation must send."""
    import hashlib
    import hmac

    session, _ = _opened(_TICKETS, _ME)
    h = mac_headers(session, "POST", "/v1/work", b"{}", now=1_700_000_000, nonce="n" * 32)
    message = signing_message(
        "POST", "/v1/work", body_digest(b"{}"), 1_700_000_000, "n" * 32, _ME.hex(), ORIGIN
    )
    assert h[MAC_HEADER] == hmac.new(session.key, message, hashlib.sha256).hexdigest()
    assert h[SESSION_HEADER] == session.ticket and h[KEY_HEADER] == _ME.hex()
