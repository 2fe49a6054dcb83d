"""``foldnet`` as a user runs it: the installed command line in a process of its own, so that
Ray's process state (auth token, environment) never leaks into the test process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path


def run_foldnet(
    *args: str,
    home: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``foldnet ARGS`` with ``HOME=home`` (and its working folder there), plain wide output,
    ``env`` on top, and a private short ``RAY_TMPDIR`` (Ray's socket paths must fit in 107
    bytes) that is removed afterwards."""
    raytmp = tempfile.mkdtemp(prefix="fncli-", dir="/tmp")
    full = {
        **os.environ,
        "COLUMNS": "160",
        "NO_COLOR": "1",
        "HOME": str(home),
        "RAY_TMPDIR": raytmp,
        "RAY_USAGE_STATS_ENABLED": "0",
        **(env or {}),
    }
    try:
        return subprocess.run(
            [sys.executable, "-c", "from coordinator.cli import main; main()", *args],
            cwd=home,
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        shutil.rmtree(raytmp, ignore_errors=True)
