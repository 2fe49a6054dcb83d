"""Random bodies at every POST endpoint of the OpenAPI schema, authenticated (so they get past
the door): the answer is never a 5xx, and every error has the JSON error shape."""

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

FAST = ServiceConfig(
    lab_rate=1e6, lab_burst=1e6, volunteer_rate=1e6, volunteer_burst=1e6, register_burst=1e6
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
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
        posts = {p: op["post"] for p, op in schema["paths"].items() if "post" in op}
        yield s, c, key, me, posts


def _bodies(props: list[str]) -> st.SearchStrategy[bytes]:
    names = st.sampled_from(props) if props else st.text(max_size=8)
    keyed = st.dictionaries(names, json_values, max_size=max(3, len(props)))
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        keyed.map(lambda v: json.dumps(v).encode()),
    )


def _props(op: dict) -> list[str]:
    content = op.get("requestBody", {}).get("content", {})
    schema = next(iter(content.values()), {}).get("schema", {})
    return sorted(schema.get("properties", {}))


PARAM = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet="0123456789abcdefxyz-_.", min_size=1, max_size=70),
)


def test_every_post_endpoint_survives_random_bodies(world):
    _s, c, key, me, posts = world
    assert {"/v1/jobs", "/v1/work", "/v1/volunteers", "/v1/results/{replica}"} <= set(posts)

    for path, op in sorted(posts.items()):
        _fuzz(c, key, me, path, op)()


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
