"""A real foldnet HTTP service on loopback for tests: uvicorn in a thread, random port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from coordinator.accounts import Accounts
from coordinator.http.app import ServiceConfig, create_app
from sims.examples import VILLIN_PDB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_service(workdir: Path, config: ServiceConfig | None = None) -> Iterator[str]:
    """Serve ``workdir`` on 127.0.0.1 until the block exits; yields the base URL."""
    port = free_port()
    app = create_app(workdir, config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def add_lab(workdir: Path, name: str) -> str:
    accounts = Accounts.in_folder(workdir)
    try:
        return accounts.add_lab(name)
    finally:
        accounts.close()


def go_job(**kw: object) -> dict[str, object]:
    """A small Go-model villin job as a lab submits it over HTTP."""
    return {
        "engine": "go",
        "pdb": VILLIN_PDB.read_text(),
        "runs": 1,
        "clones": 2,
        "gens": 2,
        "steps_per_wu": 2000,
        "segment_steps": 500,
        "report_steps": 500,
        "temperature": 0.8,
        "name": "villin test",
    } | kw


def lab_client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
