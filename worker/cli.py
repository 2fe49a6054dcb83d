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
    server: Annotated[str, typer.Option(help="The coordinator's URL, e.g. http://host:8000.")],
    key: Annotated[
        Path | None, typer.Option(help="Volunteer key file (made on first use).")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="Saved work and caches (default $FOLDNET_HOME).")
    ] = None,
    engine: Annotated[
        list[str] | None, typer.Option(help="Engines to run: go, openmm (repeatable).")
    ] = None,
    slots: Annotated[int, typer.Option(help="Work units to pull at once.")] = 1,
    name: Annotated[str, typer.Option(help="A public name for this volunteer.")] = "",
    max_tasks: Annotated[int | None, typer.Option(help="Stop after this many work units.")] = None,
    exit_when_idle: Annotated[
        bool, typer.Option(help="Stop when the server has no work, instead of waiting.")
    ] = False,
) -> None:
    """Compute work units for a coordinator over HTTP (Ctrl-C: stop after this one)."""
    from worker.client import HttpVolunteer, StopFlag, default_home, install_signal_handlers

    engines = tuple(engine or ["go", "openmm"])
    for e in engines:
        if e not in ("go", "openmm"):
            raise SetupError(f"--engine must be go or openmm, got {e!r}")
    if not 1 <= slots <= 8:
        raise SetupError(f"--slots must be between 1 and 8, got {slots}")

    def say(message: str) -> None:
        console.print(message, highlight=False)

    client = HttpVolunteer(
        server,
        home=(home or default_home()).expanduser(),
        key_path=(key or default_key_path()).expanduser(),
        engines=engines,
        slots=slots,
        name=name,
        report=say,
    )
    stop = StopFlag()
    install_signal_handlers(stop, say)
    say(f"volunteer [bold]{client.identity.fingerprint}[/] computing for {server}")
    say(f"public key {client.identity.public_key.hex()} (an operator trusts it with --trust)")
    try:
        stats = client.run(stop, max_tasks=max_tasks, exit_when_idle=exit_when_idle)
    finally:
        client.close()
    say(
        f"done: {stats.computed} WUs computed, {stats.accepted} accepted, "
        f"{stats.spot_checks} spot checks; credit in the ledger: "
        + ("unknown" if stats.credit is None else f"{stats.credit:,}")
    )
