"""benchmarks.sessions measures what it says, small: both ways authenticate, every request
through the service is answered as expected, and the command ends with one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.sessions import isolated, through_http

#: ``python -m benchmarks.sessions --quick`` with fewer requests (its tables and JSON line)
_SMALL = (
    "import sys, benchmarks.sessions as b\n"
    "iso, http = b.isolated, b.through_http\n"
    "b.isolated = lambda n: iso(10)\n"
    "b.through_http = lambda rounds, per_client: http(1, 3)\n"
    "sys.argv = ['benchmarks.sessions', '--quick']\n"
    "b.main()\n"
)


def test_in_isolation_every_way_is_measured():
    us = isolated(20)
    assert set(us) == {
        "server_signed_us",
        "server_session_us",
        "server_session_unremembered_us",
        "volunteer_signed_us",
        "volunteer_session_us",
        "open_session_server_us",
    }
    assert all(v > 0 for v in us.values()), us


@pytest.mark.slow
def test_through_http_both_modes_are_answered():
    per, errors = through_http(2, 5)
    assert errors == 0
    assert {m: len(v) for m, v in per.items()} == {"signed": 2, "session": 2}
    assert all(x > 0 for v in per.values() for x in v), per


@pytest.mark.slow
def test_the_command_ends_with_one_json_line():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-c", _SMALL],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["quick"] is True and last["http_errors"] == 0, last
    assert last["http_service_us_per_request_session"] > 0, last
