"""A throwaway PostgreSQL cluster for the tests: initdb in a private folder, a server on
127.0.0.1 (a free port) with its unix socket in that folder, trust authentication (local test
use only), a fresh database per test, and ``pg_ctl stop -m fast`` at the end.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user (which
Debian's package creates) from a folder it owns outside pytest's private temp tree. The
server's data is throwaway: ``fsync=off`` spares CI the disk flushes; the crash tests kill the
coordinator, never the server, so what they check does not depend on it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

INSTALL_HINT = (
    "the PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH nor in "
    "/usr/lib/postgresql/*/bin; the PostgreSQL tests need them: install Debian's package "
    "with 'sudo apt-get install -y postgresql' (.ci/run does so), or run the other tests "
    "with -m 'not postgres'"
)


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, else the newest Debian version."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A running server; :meth:`new_database` makes an empty database and returns its URL."""

    root: Path
    bindir: Path
    port: int
    as_user: list[str]
    _count: int = 0
    _made: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres", driver="postgresql"), autocommit=True)

    def new_database(self, label: str = "t") -> str:
        self._count += 1
        name = f"{''.join(c for c in label.lower() if c.isalnum())[:40]}_{self._count}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[call-overload]
        self._made.append(name)
        return self.url(name)

    def drop_databases(self) -> None:
        """Drop the databases made since the last call (a test's own), connections and all."""
        made, self._made = self._made, []
        with self._admin() as conn:
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[call-overload]

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """Start a cluster, yield it, and stop and remove it whatever happened in between."""
    import pytest

    bindir = find_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="foldnet-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse root: run them as the postgres user
        if shutil.which("runuser") is None:
            pytest.fail(
                "running as root needs runuser (util-linux) to start PostgreSQL as "
                "the postgres user",
                pytrace=False,
            )
        shutil.chown(root, user="postgres", group="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(root=root, bindir=bindir, port=_free_port(), as_user=as_user)
    started = False
    try:
        try:
            subprocess.run(
                [
                    *as_user,
                    str(bindir / "initdb"),
                    "-D",
                    str(cluster.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={cluster.port} "
                f"-c unix_socket_directories={root} -c fsync=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            cluster.pg_ctl(
                "start", "-w", "-t", "120", "-l", str(root / "server.log"), "-o", options
            )
            started = True
        except subprocess.CalledProcessError as e:
            log = root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"PostgreSQL did not start: {e.stderr or e.stdout}\n{tail}", pytrace=False)
        yield cluster
    finally:
        if started:
            try:
                cluster.pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
            except subprocess.SubprocessError:
                cluster.pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")
        shutil.rmtree(root, ignore_errors=True)
