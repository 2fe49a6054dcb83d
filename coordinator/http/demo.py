"""``foldnet demo --serve``: after the demo, its coordinator as a service on loopback, so a
newcomer can look at the network, the ledger and the demo's job in the web dashboard."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from coordinator.accounts import Accounts

#: The lab the demo submits its job as (coordinator.demo.run_demo).
DEMO_LAB = "demo-lab"


def demo_lab_key(workdir: Path) -> str:
    """An API key of the demo's lab (whose job the demo submitted straight to its
    coordinator, so no lab account holds it yet)."""
    with Accounts.in_folder(workdir) as accounts:
        return accounts.add_lab(DEMO_LAB)


def serve_demo(workdir: Path, port: int, console: Console) -> None:
    """Serve ``workdir`` on http://127.0.0.1:PORT until Ctrl-C."""
    import uvicorn

    from coordinator.http.app import ServiceConfig, create_app

    key = demo_lab_key(workdir)
    url = f"http://127.0.0.1:{port}"
    app = create_app(workdir, ServiceConfig(origin=url))
    console.print(
        f"\n[bold]dashboard[/] {url}/  ·  ledger explorer {url}/ledger  ·  leaderboard "
        f"{url}/leaderboard  ·  API docs {url}/docs\n"
        f"the demo's job is in {url}/jobs with this lab API key (shown once):"
    )
    print(key, flush=True)
    console.print("Ctrl-C stops the service.")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
