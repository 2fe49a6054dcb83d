"""Random bodies at every POST endpoint and random parameters at every GET endpoint of the
OpenAPI schema, authenticated (so they get past the door), and random signature headers:
the answer is never a 5xx, and every error has the JSON error shape.

The strategies reach what plain ``st.text()`` never makes: lone surrogates (JSON's
``"\ud800"``), nesting deeper than the parser's recursion limit, array shapes huge,
negative or fractional, and digits from other scripts ("²", "١")."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from http_helpers import add_lab, running_service, signed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.http.app import ServiceConfig
from worker.identity import Identity
from worker.wire import sign_headers

FAST = ServiceConfig(
    lab_rate=1e6, lab_burst=1e6, volunteer_rate=1e6, volunteer_burst=1e6, register_burst=1e6
)

#: Text with what a hostile client sends and st.text() leaves out.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=12),  # "²", "١"
    st.sampled_from(["\ud800", "a\udfffb", "²", "١٢٣", "\x00", "9" * 40]),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | HOSTILE_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz") / "c"
    key = add_lab(d, "lab-a")
    me = Identity.ephemeral()
    with running_service(d, FAST) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        body = json.dumps({"public_key": me.public_key.hex()}).encode()
        assert signed(c, me, "POST", "/v1/volunteers", body).status_code == 201
        schema = c.get("/v1/openapi.json").json()
        yield s, c, key, me, schema["paths"]


#: JSON nested past the parser's recursion limit (built as text: json.dumps would recurse).
DEEP = st.integers(min_value=900, max_value=20_000).flatmap(
    lambda n: st.sampled_from(
        ["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, '{"det_class":' + "[" * n + "]" * n + "}"]
    )
)

#: Array shapes no honest upload has.
SHAPES = st.lists(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, 1e30, -1, 2**31, 2**40, 2**63]),
    ),
    max_size=5,
)


def _containers() -> st.SearchStrategy[bytes]:
    """Result uploads (worker.arrays layout) declaring random arrays of random shapes."""
    spec = st.tuples(
        st.sampled_from(["positions", "velocities", "frames", "frame_steps", "obs_q", "x"]),
        st.sampled_from(["<f8", "<f4", "<i8", "|O", "<f2"]),
        SHAPES,
    )
    meta = st.fixed_dictionaries(
        {"arrays": st.lists(spec.map(list), max_size=4)},
        optional={"header": HOSTILE_TEXT, "signature": HOSTILE_TEXT},
    )

    def pack(doc: dict, tail: bytes) -> bytes:
        manifest = json.dumps(doc).encode()
        return b"FNA1" + len(manifest).to_bytes(4, "little") + manifest + tail

    return st.builds(pack, meta, st.binary(max_size=64))


def _bodies(props: list[str]) -> st.SearchStrategy[bytes]:
    names = st.sampled_from(props) if props else HOSTILE_TEXT
    keyed = st.dictionaries(names, json_values, max_size=max(3, len(props)))
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        keyed.map(lambda v: json.dumps(v).encode()),
        DEEP.map(str.encode),
        _containers(),
    )


def _props(op: dict) -> list[str]:
    content = op.get("requestBody", {}).get("content", {})
    schema = next(iter(content.values()), {}).get("schema", {})
    return sorted(schema.get("properties", {}))


PARAM = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet="0123456789abcdefxyz-_.", min_size=1, max_size=70),
    st.text(alphabet="0123456789²³¹١٢٣", min_size=1, max_size=20),  # non-ASCII digits
)


def test_every_post_endpoint_survives_random_bodies(world):
    _s, c, key, me, paths = world
    posts = {p: op["post"] for p, op in paths.items() if "post" in op}
    assert {"/v1/jobs", "/v1/work", "/v1/volunteers", "/v1/results/{replica}"} <= set(posts)

    for path, op in sorted(posts.items()):
        _fuzz(c, key, me, path, op)()


def test_every_get_endpoint_survives_random_parameters(world):
    _s, c, key, me, paths = world
    gets = {p: op["get"] for p, op in paths.items() if "get" in op}
    assert {"/v1/jobs/{job}", "/v1/ledger/entries", "/v1/systems/{digest}"} <= set(gets)
    for path, op in sorted(gets.items()):
        names = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
        _fuzz_get(c, key, me, path, op, names)()


def test_random_signature_headers_are_a_401_never_a_5xx(world):
    _s, c, _key, me, _paths = world
    latin1 = st.text(
        st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=80
    )
    field = st.one_of(latin1, st.text(alphabet="0123456789²³¹", max_size=14), st.just(""))

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(
        which=st.sampled_from(sorted(sign_headers(me, "GET", "/", origin="http://x"))), value=field
    )
    def fire(which: str, value: str) -> None:
        headers = sign_headers(me, "GET", "/v1/volunteers/me", origin=str(c.base_url))
        headers[which] = value.strip(" \t")
        r = c.get("/v1/volunteers/me", headers={k: v.encode("latin-1") for k, v in headers.items()})
        # 400: uvicorn's own refusal of control characters in a header (before the app)
        assert r.status_code in (200, 400, 401), (which, value, r.status_code, r.text[:300])
        if r.status_code == 401:
            assert set(r.json()) == {"error", "detail"}

    fire()


def _fuzz_get(c: httpx.Client, key: str, me: Identity, path: str, op: dict, names: list[str]):  # type: ignore[no-untyped-def]
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
              derandomize=True)  # fmt: skip
    @given(param=PARAM, query=st.dictionaries(st.sampled_from(names or ["x"]), PARAM, max_size=3))
    def fire(param: str, query: dict[str, str]) -> None:
        target = re.sub(r"\{[^}]+\}", param, path)
        if query:
            target += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        if "labs" in op.get("tags", []):
            r = c.get(target, headers={"Authorization": f"Bearer {key}"})
        else:
            r = signed(c, me, "GET", target)
        assert r.status_code < 500, (target, r.status_code, r.text[:300])
        if r.status_code >= 400 and r.headers.get("content-type", "").startswith(
            "application/json"
        ):
            assert set(r.json()) == {"error", "detail"}, r.text[:300]

    return fire


def _fuzz(c: httpx.Client, key: str, me: Identity, path: str, op: dict):  # type: ignore[no-untyped-def]
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=True,
    )
    @given(body=_bodies(_props(op)), param=PARAM)
    def fire(body: bytes, param: str) -> None:
        target = re.sub(r"\{[^}]+\}", param, path)
        if "labs" in op.get("tags", []):
            headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
            r = c.post(target, content=body, headers=headers)
        else:
            r = signed(c, me, "POST", target, body)
        assert r.status_code < 500, (target, body[:200], r.status_code, r.text[:300])
        if r.status_code >= 400:
            doc = r.json()
            assert set(doc) == {"error", "detail"}, doc

    return fire
