"""The volunteers' hot routes (coordinator/http/hot.py): the same answers as FastAPI's routing,
for every request it takes and every one it leaves to the framework."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest
from http_helpers import (
    add_lab,
    go_job,
    in_session,
    lab_client,
    open_session,
    post_job,
    running_service,
    signed,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.http.access import signed_target
from coordinator.http.app import ServiceConfig
from coordinator.http.hot import HotRouteTable, IntParam
from coordinator.http.volunteers import CHECK, NEXT, REPLICA
from sims.examples import VILLIN_PDB
from sims.go import GoModel
from worker.identity import Identity
from worker.session import mac_headers
from worker.systems import EngineCache, decode_system
from worker.tasks import compute
from worker.wire import decode_task, encode_result


async def _endpoint(**_kw: object) -> None:  # never called: match() only
    return None


@pytest.fixture(scope="module")
def table() -> HotRouteTable:
    t = HotRouteTable()
    t.add("POST", "/v1/work", _endpoint)
    t.add("POST", "/v1/results/{replica}", _endpoint, path_param=REPLICA, query=NEXT)
    t.add("POST", "/v1/checks/{check}", _endpoint, path_param=CHECK, query=NEXT)
    return t


@pytest.mark.parametrize(
    ("method", "path", "query", "args"),
    [
        ("POST", "/v1/work", b"", {}),
        ("POST", "/v1/results/7", b"", {"replica": 7, "pull_next": 0}),
        ("POST", "/v1/results/7", b"next=1", {"replica": 7, "pull_next": 1}),
        ("POST", "/v1/results/7", b"next=64", {"replica": 7, "pull_next": 64}),
        ("POST", f"/v1/results/{2**62}", b"", {"replica": 2**62, "pull_next": 0}),
        ("POST", "/v1/checks/3", b"next=0", {"check": 3, "pull_next": 0}),
        # left to FastAPI, which answers them as it always did
        ("POST", "/v1/results/0", b"", None),
        ("POST", f"/v1/results/{2**62 + 1}", b"", None),
        ("POST", "/v1/results/abc", b"", None),
        ("POST", "/v1/results/+7", b"", None),
        ("POST", "/v1/results/٣", b"", None),  # a digit, but not an ASCII one
        ("POST", "/v1/results/" + "9" * 40, b"", None),
        ("POST", "/v1/results/7/failure", b"", None),
        ("POST", "/v1/results/", b"", None),
        ("POST", "/v1/results/7", b"next=65", None),
        ("POST", "/v1/results/7", b"next=-1", None),
        ("POST", "/v1/results/7", b"next=", None),
        ("POST", "/v1/results/7", b"next", None),
        ("POST", "/v1/results/7", b"next=1&next=2", None),
        ("POST", "/v1/results/7", b"other=1", None),
        ("POST", "/v1/work", b"next=1", None),
        ("GET", "/v1/results/7", b"", None),
        ("PUT", "/v1/work", b"", None),
        ("POST", "/v1/workers", b"", None),
    ],
)
def test_the_table_takes_exactly_the_requests_it_understands(table, method, path, query, args):
    found = table.match(method, path, query)
    if args is None:
        assert found is None
    else:
        assert found is not None
        assert found[1] == args


def test_an_int_param_takes_only_plain_digits_in_range():
    p = IntParam("n", 2, 10)
    assert [p.parse(t) for t in ("2", "10", "1", "11", "02", "", "1e1", " 3")] == [
        2, 10, None, None, 2, None, None, None,
    ]  # fmt: skip


def _det_class() -> str:
    return EngineCache().get(GoModel.from_pdb(VILLIN_PDB)).determinism_class().canonical().decode()


def _session(tmp_path, hot: bool) -> list[tuple[str, int, str]]:
    """The same requests against a service with hot routes on or off: (what, status, error
    code or the answer's keys)."""
    d = tmp_path / ("hot" if hot else "framework")
    key = add_lab(d, "lab")
    me = Identity.ephemeral()
    out: list[tuple[str, int, str]] = []
    other = Identity.ephemeral()  # the same in a session: MAC'd instead of signed
    cfg = ServiceConfig(hot_routes=hot, trusted_keys=(me.public_key,))
    with running_service(d, cfg) as served, lab_client(served.url, key) as lab:
        assert post_job(lab, go_job(clones=4, gens=1)).status_code == 202
        with httpx.Client(base_url=served.url, timeout=30) as c:

            def note(what: str, r: httpx.Response) -> None:
                body = r.json()
                shown = body["error"] if r.status_code >= 400 else ",".join(sorted(body))
                out.append((what, r.status_code, shown))

            reg = json.dumps({"public_key": me.public_key.hex(), "name": "t"}).encode()
            note("register", signed(c, me, "POST", "/v1/volunteers", reg))
            pull = json.dumps({"det_class": _det_class(), "slots": 2}).encode()
            note("pull unsigned", c.post("/v1/work", content=pull))
            note("pull bad json", signed(c, me, "POST", "/v1/work", b"{"))
            note("pull bad query", signed(c, me, "POST", "/v1/work?next=1", pull))
            r = signed(c, me, "POST", "/v1/work", pull)
            note("pull", r)
            tasks = r.json()["tasks"]
            assert len(tasks) == 2
            sysblob = signed(c, me, "GET", f"/v1/systems/{tasks[0]['system']}").content
            computed = []
            for doc in tasks:
                t = decode_task(doc, decode_system(sysblob))
                computed.append((t.replica, compute(t, engines=EngineCache(), identity=me)))
            (r1, res1), (r2, res2) = computed
            body1, body2 = encode_result(res1), encode_result(res2)
            for what, path in [
                ("replica 0", "/v1/results/0"),
                ("replica too large", f"/v1/results/{2**62 + 1}"),
                ("replica not a number", "/v1/results/abc"),
                ("next too large", f"/v1/results/{r1}?next=65"),
                ("next negative", f"/v1/results/{r1}?next=-1"),
                ("next not a number", f"/v1/results/{r1}?next=x"),
                ("not assigned", f"/v1/results/{2**62}"),
                ("check 0", "/v1/checks/0"),
            ]:
                note(what, signed(c, me, "POST", path, body1))
            note("unsigned upload", c.post(f"/v1/results/{r1}", content=body1))
            note("garbage upload", signed(c, me, "POST", f"/v1/results/{r1}", b"garbage"))
            note("wrong body", signed(c, me, "POST", f"/v1/results/{r1}", body2))
            r = signed(c, me, "POST", f"/v1/results/{r1}?next=1", body1)
            note("upload", r)
            # verified once, into the coordinator's memo (it runs in this process), which its
            # ledger will consult; the WU awaits another volunteer's replica, so nothing
            # reached the ledger yet: only the upload's check can have put it there
            assert r.json()["state"] != "valid"
            memo = served.service.core.signatures
            assert (
                memo is not None and (me.public_key, res1.signature, res1.header.message()) in memo
            )
            note("again", signed(c, me, "POST", f"/v1/results/{r1}?next=1", body1))
            note("second upload", signed(c, me, "POST", f"/v1/results/{r2}", body2))
            note("wrong method", c.get(f"/v1/results/{r2}"))
            _in_session(c, other, pull, note)
            metrics = c.get("/metrics").text
        assert 'route="/v1/results/{replica}"' in metrics
        assert 'route="/v1/work"' in metrics
    return out


def _in_session(c: httpx.Client, me: Identity, pull: bytes, note) -> None:
    """Pull and upload MAC'd in a session, and the session's refusals."""
    reg = json.dumps({"public_key": me.public_key.hex(), "name": "s"}).encode()
    note("session register", signed(c, me, "POST", "/v1/volunteers", reg))
    session = open_session(c, me)
    r = in_session(c, session, "POST", "/v1/work", pull)
    note("session pull", r)
    (doc,) = json.loads(r.content)["tasks"][:1] or [None]
    assert doc is not None, r.text
    blob = in_session(c, session, "GET", f"/v1/systems/{doc['system']}").content
    t = decode_task(doc, decode_system(blob))
    body = encode_result(compute(t, engines=EngineCache(), identity=me))
    path = f"/v1/results/{t.replica}?next=1"
    wrong = dataclasses.replace(session, key=bytes(32))
    note("session upload bad mac", in_session(c, wrong, "POST", path, body))
    flipped = dataclasses.replace(session, ticket="A" + session.ticket[1:])
    if flipped.ticket == session.ticket:
        flipped = dataclasses.replace(session, ticket="B" + session.ticket[1:])
    note("session upload bad ticket", in_session(c, flipped, "POST", path, body))
    headers = mac_headers(session, "POST", path, body)
    note("session upload", c.post(path, content=body, headers=headers))
    note("session upload replayed", c.post(path, content=body, headers=headers))


def test_hot_routes_answer_as_the_framework_does(tmp_path):
    hot = _session(tmp_path, hot=True)
    framework = _session(tmp_path, hot=False)
    assert hot == framework
    # and the session saw what it meant to: refusals, then two accepted results
    answers = dict((what, (status, shown)) for what, status, shown in hot)
    assert answers["replica 0"][0] == answers["next too large"][0] == 422
    assert answers["unsigned upload"] == (401, "unsigned")
    assert answers["not assigned"] == (404, "not_assigned")
    assert answers["upload"] == (200, "accepted,problem,replica,state,tasks")
    assert answers["again"] == (404, "not_assigned")
    assert answers["wrong method"][0] == 405
    assert answers["session pull"] == (200, "retry_after_s,tasks")
    assert answers["session upload bad mac"] == (401, "bad_mac")
    assert answers["session upload bad ticket"] == (401, "bad_session")
    assert answers["session upload"] == (200, "accepted,problem,replica,state,tasks")
    assert answers["session upload replayed"] == (401, "replayed")


def _slow_target(request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


_PATH_CHARS = st.sampled_from([*"/abcXYZ09-._~%?#\\ \t\r\n+&=:@!$'()*,;[]", "é", "→", "\x00"])


@settings(max_examples=400, deadline=None)
@given(
    path=st.lists(_PATH_CHARS, max_size=30).map(lambda cs: "/" + "".join(cs)),
    query=st.lists(_PATH_CHARS, max_size=20).map(lambda cs: "".join(cs).encode()),
    host=st.sampled_from([b"127.0.0.1:8000", b"example.org", None]),
)
def test_the_signed_target_is_the_urls_path_and_query(path, query, host):
    from starlette.requests import Request

    headers = [(b"host", host)] if host is not None else []
    scope = {
        "type": "http", "method": "POST", "scheme": "http", "server": ("127.0.0.1", 8000),
        "path": path, "query_string": query, "headers": headers, "root_path": "",
    }  # fmt: skip
    request = Request(scope)
    assert signed_target(request) == _slow_target(request)
