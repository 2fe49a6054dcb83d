"""coordinator/http/heap.py: a started server's objects leave garbage collection."""

from __future__ import annotations

import json
import subprocess
import sys


def test_settle_freezes_what_is_alive_and_makes_young_collections_rarer():
    # in a process of its own: frozen objects stay frozen for the life of the process
    code = (
        "import gc, json\n"
        "from coordinator.http.heap import OLD, MIDDLE, YOUNG, settle\n"
        "keep = [[i] for i in range(10_000)]\n"
        "s = settle()\n"
        "print(json.dumps({'frozen': s.frozen, 'count': gc.get_freeze_count(),\n"
        "    'before': s.thresholds_before, 'now': gc.get_threshold(),\n"
        "    'want': [YOUNG, MIDDLE, OLD]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    got = json.loads(out.stdout)
    assert got["frozen"] == got["count"] >= 10_000  # the lists above among them
    assert got["before"] == [700, 10, 10]  # CPython's defaults
    assert got["now"] == got["want"]
