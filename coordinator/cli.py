"""The ``foldnet`` command: one sub-command per role. Errors are messages, never tracebacks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sims.errors import SimsError

app = typer.Typer(
    name="foldnet",
    help="Volunteer protein folding with verified results and an auditable credit ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Volunteer protein folding with verified results and an auditable credit ledger."""


@app.command()
def demo(
    steps: Annotated[int, typer.Option(help="Steps in the trajectory.")] = 1_000_000,
    segment_steps: Annotated[int, typer.Option(help="Steps per verifiable segment.")] = 50_000,
    temperature: Annotated[
        float, typer.Option(help="Temperature in epsilon/k_B (villin's Tf is about 0.78).")
    ] = 0.7,
    seed: Annotated[int, typer.Option(help="Seed of the trajectory.")] = 1,
    out: Annotated[Path, typer.Option(help="Folder for the results.")] = Path("foldnet-results"),
) -> None:
    """Fold villin headpiece with the Go engine, then verify segments by recomputation."""
    from coordinator.demo import run_demo

    console.print(
        f"[bold]foldnet demo[/]: villin headpiece (36 residues), C-alpha Go model, "
        f"T = {temperature} eps/kB, {steps:,} steps from an extended chain"
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("segments", total=max(1, steps // max(1, segment_steps)))
        report = run_demo(
            steps=steps,
            segment_steps=segment_steps,
            temperature=temperature,
            seed=seed,
            out=out,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    r = report.result
    obs = r.observables
    table = Table(title="Result", show_header=False)
    table.add_row(
        "steps / wall time",
        f"{r.spec.steps:,} in {r.wall_time_s:.1f} s ({r.spec.steps / r.wall_time_s:,.0f} steps/s)",
    )
    table.add_row(
        "folded (Q >= 0.8) first at",
        f"step {report.first_folded_step:,}" if report.first_folded_step is not None else "never",
    )
    table.add_row("best Q / lowest RMSD", f"{obs['q'].max():.2f} / {obs['rmsd'].min():.2f} A")
    table.add_row(
        "final Q / RMSD / Rg",
        f"{obs['q'][-1]:.2f} / {obs['rmsd'][-1]:.2f} A / {obs['rg'][-1]:.2f} A",
    )
    table.add_row("determinism class", str(r.determinism))
    table.add_row("final state digest", r.final.digest().hex())
    ok = not report.mismatched_segments
    table.add_row(
        "segments recomputed",
        f"{', '.join(map(str, report.checked_segments))}: "
        + (
            "[green]bit-identical[/]" if ok else f"[red]MISMATCH in {report.mismatched_segments}[/]"
        ),
    )
    table.add_row("results", "\n".join(str(p) for p in report.files))
    console.print(table)
    if not ok:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point: run the app, turning our errors into one clear line."""
    try:
        app()
    except SimsError as e:
        err_console.print(f"[bold red]error:[/] {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
