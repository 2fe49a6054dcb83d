"""coordinator/http/heap.py: a started server's objects leave garbage collection."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


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


@pytest.mark.parametrize("settle_heap", [True, False])
def test_a_settled_service_has_loaded_what_the_first_upload_needs(tmp_path, settle_heap):
    # in a fresh process: numba loads a kernel on its first call, once per process
    code = (
        "import asyncio, gc, json, sys\n"
        "from coordinator.http.config import ServiceConfig\n"
        "from coordinator.http.context import Service\n"
        "from sims.go import kernels\n"
        "async def main():\n"
        f"    s = Service(sys.argv[1], ServiceConfig(settle_heap={settle_heap}))\n"
        "    await s.start()\n"
        "    try:\n"
        "        return {'kernels': len(kernels.potential_energy.signatures),\n"
        "                'frozen': gc.get_freeze_count()}\n"
        "    finally:\n"
        "        await s.stop()\n"
        "print(json.dumps(asyncio.run(main())))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if settle_heap:
        assert got["kernels"] >= 1 and got["frozen"] > 0, got
    else:  # tests and embedders start nothing they did not ask for
        assert got == {"kernels": 0, "frozen": 0}, got
