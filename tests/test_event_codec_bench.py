"""benchmarks.event_codec measures what it says: one realistic event of every type the log
holds, each encoded as the generic encoder encodes it, and the command ends with one JSON
line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.event_codec import events, measure
from coordinator.codec import _TYPES, _encode_generic, decode_event, encode_event


def test_every_event_type_is_measured_and_encoded_as_before():
    evs = events()
    assert {type(e).__name__ for e in evs.values()} == set(_TYPES)
    for ev in evs.values():
        assert encode_event(ev) == _encode_generic(ev)
        assert decode_event(encode_event(ev)) == ev
    per = measure(50, 1)
    assert set(per) == set(evs)
    assert all(m[k] > 0 for m in per.values() for k in ("generic", "encode", "decode")), per


def test_the_command_ends_with_one_json_line():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.event_codec", "--quick"],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["quick"] is True, last
    for kind in _TYPES:
        assert last[f"encode_us_{kind}"] > 0 and last[f"decode_us_{kind}"] > 0, (kind, last)
