"""What a running ``foldnet worker run`` is doing, in a small JSON file in its home.

The worker rewrites ``$FOLDNET_HOME/worker-status.json`` atomically (a reader sees the old
file or the new one) whenever a slot changes state, and at most once a second for segment
progress; ``foldnet worker status`` reads it. A file alone does not say the worker runs: it
names the worker's process (pid and the kernel's start time of that pid, so a pid reused by
another program is not mistaken for it), and a worker that stopped cleanly says so itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from foldnet.files import atomic_write
from worker.errors import SetupError

STATUS_FILE = "worker-status.json"
LOCK_FILE = "worker.lock"
VERSION = 1


def status_path(home: Path) -> Path:
    return home / STATUS_FILE


def process_start(pid: int) -> str:
    """The kernel's start time of process ``pid`` (Linux; "" where unknown): with the pid, it
    names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def process_alive(pid: int, start: str) -> bool:
    """Whether process ``pid`` exists and (if ``start`` is known) is the one that started
    at ``start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    except OSError:
        return False
    if start and sys.platform.startswith("linux"):
        return process_start(pid) == start
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotStatus:
    """One slot: ``state`` is starting, idle, computing, checking (a spot check),
    uploading, refused (the server does not accept its class) or stopped."""

    name: str
    platform: str
    state: str
    pid: int = 0  # the slot's process
    engine: str = ""
    wu: str = ""  # the WU id, hex
    task: str = ""  # "replica N" or "check N"
    segments_done: int = 0
    segments: int = 0
    note: str = ""

    @property
    def percent(self) -> float:
        return 100.0 * self.segments_done / self.segments if self.segments else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStatus:
    pid: int
    process_start: str
    server: str
    volunteer: str  # the key's fingerprint
    home: str
    started_at: float  # wall seconds
    updated_at: float
    running: bool  # False once the worker stopped cleanly (its last write)
    stopping: bool  # a stop was asked for: in-flight WUs finish, nothing new is pulled
    slots: tuple[SlotStatus, ...]
    computed: int = 0
    returned: int = 0
    accepted: int = 0
    spot_checks: int = 0
    validated: int | None = None  # from the server (/v1/volunteers/me), when last asked
    credit: int | None = None
    credit_at: float | None = None

    def alive(self) -> bool:
        """Whether the worker that wrote this is still running."""
        return self.running and process_alive(self.pid, self.process_start)

    def to_json(self) -> bytes:
        doc = {"version": VERSION, **asdict(self)}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> WorkerStatus:
        try:
            doc: dict[str, Any] = json.loads(data)
            if doc.pop("version") != VERSION:
                raise SetupError(
                    f"{where} was written by another foldnet version (expected status format "
                    f"{VERSION}); it is rewritten by the next foldnet worker run from this home"
                )
            slots = tuple(SlotStatus(**s) for s in doc.pop("slots"))
            return cls(slots=slots, **doc)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            raise SetupError(
                f"{where} is not a worker status file ({e}); it is rewritten by the next "
                "foldnet worker run from this home"
            ) from e


def write_status(home: Path, status: WorkerStatus) -> None:
    atomic_write(status_path(home), status.to_json())


def read_status(home: Path) -> WorkerStatus | None:
    """The status the last worker of ``home`` wrote, or None if none ever ran there."""
    path = status_path(home)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SetupError(f"cannot read {path}: {e.strerror or e}") from e
    return WorkerStatus.from_json(data, path)


@contextlib.contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """Hold ``home`` for one worker: its saved WUs and its status file are that worker's
    alone. The lock (``flock``) goes with the process, however it ends."""
    path = home / LOCK_FILE
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise SetupError(f"cannot use {home} as the worker's home: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            other = None
            with contextlib.suppress(SetupError):
                other = read_status(home)
            who = f" (pid {other.pid})" if other is not None and other.alive() else ""
            raise SetupError(
                f"another foldnet worker{who} is running from {home}, and two workers would "
                "share its saved work: stop that one, or give this one a home of its own "
                "(--home or $FOLDNET_HOME)"
            ) from e
        yield
    finally:
        os.close(fd)
