"""One coordinator process per folder: an exclusive lock file, held while it runs."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coordinator.errors import UsageError


@contextmanager
def owned(workdir: Path) -> Iterator[None]:
    """Hold the folder's lock, or fail at once naming the reason."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / "coordinator.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise UsageError(
                f"a coordinator is running in {workdir}: stop it first (or submit over HTTP)"
            ) from e
        yield
    finally:
        os.close(fd)
