"""benchmarks.scale on a small network: every metric, and a replay that rebuilds the same
scheduler from the events the coordinator would have logged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scale import _pct, measure


def test_a_small_run_measures_everything_and_replays_to_the_same_state(capsys):
    m = measure(300, 3000, 0.75)
    out = capsys.readouterr().out
    assert "CPU us/event" in out and "replay of the whole log, CPU" in out
    assert m["events"] > 1000 and m["validated"] > 0
    assert 0.5 < m["memory_kib_per_wu"] < 5 and m["replay_events_per_s"] > 0  # traced
    assert {"WorkRequested", "ResultReturned", "Tick"} <= set(m["cpu_us_per_event_by_kind"])
    # the keys: a distribution per event, bytes per WU, replay scaled to 10^6 events
    assert 0 < m["event_us_p50"] <= m["event_us_p99"] <= m["event_us_max"]
    assert m["bytes_per_wu"] == pytest.approx(1024 * m["memory_kib_per_wu"], abs=1)  # KiB rounded
    assert m["replay_s_1m_events"] == pytest.approx(1e6 / m["replay_events_per_s"], 0.001)
    for p50, p99, top in m["p50_p99_max_us_by_kind"].values():
        assert p50 <= p99 <= top
    assert "p99 us" in out and "replay scaled to 10^6 events" in out


def test_the_command_ends_with_one_json_line():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--volunteers", "200", "--wus", "2000",
         "--hours", "0.5"],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["quick"] is False and (last["volunteers"], last["wus"]) == (200, 2000)


def test_the_quantiles_are_values_that_were_measured():
    values = list(range(1, 101))  # 1..100
    assert (_pct(values, 0.5), _pct(values, 0.99), _pct(values, 1.0)) == (50, 99, 100)
    assert _pct([7], 0.5) == _pct([7], 0.99) == 7
