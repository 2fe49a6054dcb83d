"""``foldnet`` as a user runs it: the installed command line in a process of its own, so that
Ray's process state (auth token, environment) never leaks into the test process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
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


def start_foldnet(*args: str, home: Path, env: Mapping[str, str] | None = None) -> Lines:
    """``foldnet ARGS`` started in the background with ``HOME`` and ``FOLDNET_HOME`` at
    ``home``; its output (stdout and stderr together) is read as it comes."""
    full = {
        **os.environ,
        "COLUMNS": "160",
        "NO_COLOR": "1",
        "HOME": str(home),
        "FOLDNET_HOME": str(home),
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from coordinator.cli import main; main()", *args],
        cwd=home,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Lines(proc)


class Lines:
    """A process's output lines as they come (read on a thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, done: Callable[[list[str]], bool], what: str, timeout: float = 120) -> None:
        """Until ``done(lines)``; fails (with the output) at ``timeout`` or if the process
        ended first."""
        deadline = time.monotonic() + timeout
        while not done(list(self.lines)):
            if time.monotonic() > deadline or (
                self.proc.poll() is not None and not self._t.is_alive()
            ):
                raise AssertionError(f"{what} never came; output:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.05)

    def finish(self, timeout: float = 180) -> str:
        """Wait up to ``timeout`` for the process to end, then kill it; its whole output
        (a killed process's return code says it was killed)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self._t.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.text
