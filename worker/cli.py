"""``foldnet worker``: join a Ray cluster as a volunteer node, or leave it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from foldnet.terminal import printable
from worker.errors import JoinError, SetupError
from worker.identity import Identity, default_key_path

app = typer.Typer(help="Run a volunteer worker.", no_args_is_help=True)
console = Console()


def _ray_binary() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise SetupError("the 'ray' command is not installed: pip install foldnet installs it")
    return found


def join_command(address: str, *, volunteer_id: str, cpus: int, node_ip: str | None) -> list[str]:
    cmd = [
        _ray_binary(),
        "start",
        f"--address={address}",
        f"--num-cpus={cpus}",
        f"--resources={json.dumps({f'vol:{volunteer_id}': 1})}",
        f"--labels=volunteer-id={volunteer_id}",
        "--disable-usage-stats",
    ]
    if node_ip:
        cmd.append(f"--node-ip-address={node_ip}")
    return cmd


@app.command()
def join(
    address: Annotated[str, typer.Argument(help="The coordinator's Ray address, host:port.")],
    cpus: Annotated[int, typer.Option(help="CPUs to lend (one WU runs per CPU).")] = 1,
    key: Annotated[
        Path | None, typer.Option(help="Volunteer key file (made on first use).")
    ] = None,
    node_ip: Annotated[
        str | None, typer.Option(help="This machine's address as the cluster should see it.")
    ] = None,
) -> None:
    """Join a Ray cluster as a volunteer node, labelled with this volunteer's key."""
    if cpus < 1 or cpus > (os.cpu_count() or 1):
        raise SetupError(f"--cpus must be between 1 and {os.cpu_count()}, got {cpus}")
    key_path = (key or default_key_path()).expanduser().resolve()
    identity = Identity.load_or_create(key_path)
    vid = identity.fingerprint
    console.print(f"volunteer [bold]{vid}[/] (key {key_path})")
    console.print(f"public key {identity.public_key.hex()}")
    console.print(f"joining {address} with {cpus} CPU(s) as resource vol:{vid}")
    env = {**os.environ, "FOLDNET_KEY": str(key_path), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        join_command(address, volunteer_id=vid, cpus=cpus, node_ip=node_ip),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise JoinError(f"could not join {address}: " + " / ".join(tail))
    console.print("[green]joined[/]: this machine now computes work units for the coordinator")


@app.command()
def leave() -> None:
    """Stop this machine's Ray node (work in flight is reissued to other volunteers)."""
    proc = subprocess.run([_ray_binary(), "stop"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise JoinError("ray stop failed: " + (proc.stderr or proc.stdout).strip()[-300:])
    console.print("left the cluster")


@app.command("run")
def run_cmd(
    url: Annotated[
        str | None, typer.Argument(help="The coordinator's URL, e.g. http://host:8000.")
    ] = None,
    server: Annotated[str | None, typer.Option(help="The coordinator's URL (as URL).")] = None,
    key: Annotated[
        Path | None, typer.Option(help="Volunteer key file (made on first use).")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="Saved work, caches, status (default $FOLDNET_HOME).")
    ] = None,
    engine: Annotated[
        list[str] | None, typer.Option(help="Engines to run: go, openmm (repeatable).")
    ] = None,
    cpus: Annotated[
        int, typer.Option(help="CPU slots: WUs computed at once, one process each.")
    ] = 1,
    gpu: Annotated[
        bool, typer.Option("--gpu", help="One more slot: openmm WUs on OpenMM's CUDA platform.")
    ] = False,
    name: Annotated[str, typer.Option(help="A public name for this volunteer.")] = "",
    max_tasks: Annotated[int | None, typer.Option(help="Stop after this many work units.")] = None,
    exit_when_idle: Annotated[
        bool, typer.Option(help="Stop when the server has no work, instead of waiting.")
    ] = False,
) -> None:
    """Compute work units for a coordinator over HTTP (Ctrl-C: finish those in flight, stop)."""
    from worker.client import HttpVolunteer, StopFlag, default_home, install_signal_handlers
    from worker.display import SlotBars
    from worker.pool import SlotPlan, gpu_platform

    if (url is None) == (server is None) or url == "" or server == "":
        raise SetupError("give the coordinator's URL once: foldnet worker run URL")
    target = str(url or server)
    engines = tuple(engine or ["go", "openmm"])
    for e in engines:
        if e not in ("go", "openmm"):
            raise SetupError(f"--engine must be go or openmm, got {e!r}")
    accelerator = None
    if gpu:
        from sims.allatom.engine import available_platforms

        accelerator = gpu_platform(available_platforms())
    plan = SlotPlan(cpus=cpus, accelerator=accelerator)
    plan.specs(engines)  # refuse a plan that cannot work before anything starts
    bars = SlotBars(console)

    def say(message: str) -> None:
        """What the worker reports: plain text (it quotes the server), never markup."""
        console.print(printable(message), markup=False, highlight=False)

    client = HttpVolunteer(
        target,
        home=(home or default_home()).expanduser(),
        key_path=(key or default_key_path()).expanduser(),
        engines=engines,
        slots=plan,
        name=name,
        report=say,
        on_status=bars.update,
    )
    stop = StopFlag()
    install_signal_handlers(stop, say, slots=len(client.specs))
    console.print(
        f"volunteer [bold]{client.identity.fingerprint}[/] computing for {escape(target)}",
        highlight=False,
    )
    say(f"public key {client.identity.public_key.hex()} (an operator trusts it with --trust)")
    say(
        f"{len(client.specs)} slot(s): "
        + ", ".join(f"{s.name} ({s.platform}: {', '.join(s.engines)})" for s in client.specs)
        + f"; status: foldnet worker status --home {client.home}"
    )
    try:
        with bars:
            stats = client.run(stop, max_tasks=max_tasks, exit_when_idle=exit_when_idle)
    finally:
        client.close()
    say(
        f"done: {stats.computed} WUs computed, {stats.accepted} accepted, "
        f"{stats.spot_checks} spot checks; credit in the ledger: "
        + ("unknown" if stats.credit is None else f"{stats.credit:,}")
    )


@app.command("status")
def status_cmd(
    home: Annotated[
        Path | None,
        typer.Option(help="The worker's home (default $FOLDNET_HOME, else ~/.foldnet)."),
    ] = None,
) -> None:
    """What the worker running from a home is doing: its slots, WUs, credit."""
    from worker.client import default_home
    from worker.display import render_status
    from worker.status import read_status

    where = (home or default_home()).expanduser()
    render_status(console, where, read_status(where))
