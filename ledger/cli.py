"""Command line of the ledger: ``audit``, ``witness ...`` and ``export``.

``app`` is a :class:`typer.Typer`; foldnet's console script mounts it as ``foldnet audit``,
``foldnet witness`` and ``foldnet ledger export``. Every error is printed as one line with the
exit status of :mod:`foldnet.errors` (2 for a bad file, key or argument, 3 for a fault);
``audit`` exits 1 when it found a discrepancy and 0 only when it found none.
"""

from __future__ import annotations

import base64
import binascii
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from foldnet.errors import EXIT_CLIENT, FoldnetError, exit_code_of
from ledger.audit import AuditReport, run_audit
from ledger.errors import KeyFileError, StorageError
from ledger.keys import (
    load_or_create_private_key,
    load_private_key,
    load_public_key,
    parse_vkey,
)
from ledger.log import Log
from ledger.store import Store
from ledger.tiles import export_tiles
from ledger.witness import UnsafeNoWitnessPolicy, Witness, WitnessPolicy, WitnessVerifier

__all__ = ["app", "witness_app"]

app = typer.Typer(
    help="foldnet credit ledger: audit it, witness it, export it.",
    no_args_is_help=True,
    add_completion=False,
)
witness_app = typer.Typer(
    help="Run a witness: cosign a log's checkpoints only along one append-only history.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(witness_app, name="witness")

P = ParamSpec("P")
R = TypeVar("R")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn errors into one readable line and the exit status of :mod:`foldnet.errors`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FoldnetError as e:
            Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(str(e))}")
            raise typer.Exit(exit_code_of(e)) from e
        except OSError as e:  # a path the user named
            Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(str(e))}")
            raise typer.Exit(EXIT_CLIENT) from e

    return wrapper


# ------------------------------------------------------------------------------ audit


def _print_report(report: AuditReport, console: Console) -> None:
    t = Table(title="ledger audit", show_header=False, title_justify="left")
    t.add_column("check", style="bold")
    t.add_column("result")
    t.add_row("source", report.source)
    t.add_row("log", f"{report.origin}  (key {report.log_key_source})")
    t.add_row("latest checkpoint", f"size {report.tree_size:,}")
    kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(report.entry_kinds.items()))
    t.add_row("entries recomputed", f"{report.entries:,}" + (f"  ({kinds})" if kinds else ""))
    t.add_row("checkpoint signatures", f"{report.checkpoints:,} verified")
    t.add_row("consistency proofs", f"{report.consistency_checks:,} verified")
    t.add_row("attestation signatures", f"{report.signatures:,} checked")
    if report.witness_threshold:
        t.add_row(
            "witnesses",
            f"{len(report.witnesses)} valid ({', '.join(report.witnesses) or 'none'}); "
            f"policy needs {report.witness_threshold}",
        )
    else:
        t.add_row("witnesses", f"{report.cosignatures} cosignatures verified; no quorum required")
    if report.previous_size is not None:
        t.add_row("since last audit", f"grew from size {report.previous_size:,}")
    total = report.total_credit
    t.add_row("balances recomputed", f"{len(report.balances):,} volunteers, {total:,} credit")
    v = report.volunteer
    if v is not None:
        t.add_row(
            "volunteer",
            f"{v.volunteer_key.hex()[:16]}…: {'registered' if v.registered else 'NOT registered'}, "
            f"{len(v.entries)} entries, {v.proven} proven by inclusion proofs"
            + (f", {len(v.unproven)} not yet in a checkpoint" if v.unproven else "")
            + f", balance {v.balance:,}",
        )
    t.add_row("time", f"{report.seconds:.2f} s")
    console.print(t)
    top = sorted(report.balances.items(), key=lambda kv: -kv[1])[:5]
    if top:
        bt = Table(title="top balances", title_justify="left")
        bt.add_column("volunteer")
        bt.add_column("credit", justify="right")
        for key, amount in top:
            bt.add_row(key.hex()[:16] + "…", f"{amount:,}")
        console.print(bt)
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    if report.ok:
        console.print("[bold green]OK[/]: no discrepancy")
    else:
        console.print(f"[bold red]{len(report.discrepancies)} discrepancies[/]:")
        for d in report.discrepancies:
            console.print(f"  [red]✗[/] {escape(str(d))}")


def _witness_policy(witness_keys: list[str], min_witnesses: int) -> WitnessVerifier:
    if not witness_keys:
        if min_witnesses:
            raise KeyFileError("--min-witnesses needs the witnesses' keys (--witness-key)")
        return UnsafeNoWitnessPolicy()
    texts = [
        Path(spec).read_text().strip() if "+" not in spec and Path(spec).is_file() else spec
        for spec in witness_keys
    ]
    return WitnessPolicy.from_vkeys(texts, threshold=min_witnesses or None)


@app.command("audit")
@_friendly
def audit_cmd(
    path: Annotated[
        str,
        typer.Argument(
            help="ledger database (a file, or a postgresql:// URL), tile export folder, or "
            "http(s):// URL of a tile server (e.g. http://127.0.0.1:8000/v1/ledger)"
        ),
    ],
    volunteer: Annotated[
        str | None,
        typer.Option(help="volunteer public key (hex or key file): prove its entries"),
    ] = None,
    state: Annotated[
        Path | None, typer.Option(help="state file remembering the last checkpoint audited")
    ] = None,
    log_key: Annotated[
        str | None, typer.Option(help="the log's verifier key (vkey string or file)")
    ] = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option(help="a witness verifier key (vkey or file); repeat for several"),
    ] = None,
    min_witnesses: Annotated[
        int, typer.Option(help="witness cosignatures required on the latest checkpoint")
    ] = 0,
    workers: Annotated[int, typer.Option(help="processes verifying signatures")] = 2,
) -> None:
    """Verify the ledger and every credit in it; exit 0 only if nothing is wrong.

    A server's URL is audited exactly as an export folder: its checkpoint, tiles and entries.
    """
    vkey = log_key
    if vkey is not None and "+" not in vkey and Path(vkey).is_file():
        vkey = Path(vkey).read_text().strip()
    policy = _witness_policy(list(witness_key or []), min_witnesses)
    key = None if volunteer is None else load_public_key(volunteer)
    report = run_audit(
        path,
        log_key=vkey,
        state_file=state,
        witness_policy=policy,
        volunteer=key,
        workers=workers,
    )
    _print_report(report, _console())
    raise typer.Exit(0 if report.ok else 1)


# ------------------------------------------------------------------------------ export


@app.command("export")
@_friendly
def export_cmd(
    db: Annotated[str, typer.Argument(help="ledger database: a file or a postgresql:// URL")],
    directory: Annotated[Path, typer.Argument(help="folder to write the tlog-tiles layout to")],
) -> None:
    """Export the log up to its latest checkpoint as static tlog-tiles files."""
    with Store.open_readonly(db) as store:
        stats = export_tiles(store, directory)
    _console().print(
        f"exported {stats.tree_size:,} entries to {directory}: {stats.files:,} files "
        f"({stats.hash_tiles:,} hash tiles, {stats.entry_bundles:,} entry bundles), "
        f"{stats.bytes:,} bytes"
    )


# ------------------------------------------------------------------------------ witness


def _open_witness(db: Path, key: Path, name: str | None) -> Witness:
    if not db.exists():
        raise StorageError(f"no witness database at {db}; run 'witness init' first")
    stored = Witness.stored_name(db)
    if name is not None and stored is not None and name != stored:
        raise KeyFileError(f"{db} is the database of witness {stored!r}, not {name!r}")
    use = name or stored
    if use is None:
        raise KeyFileError(f"{db} has no witness name; give --name")
    return Witness.open(db, name=use, signing_key=load_private_key(key))


DbOpt = Annotated[Path, typer.Option("--db", help="the witness's own state database")]
KeyOpt = Annotated[Path, typer.Option("--key", help="the witness's private key file (0600)")]


@witness_app.command("init")
@_friendly
def witness_init(
    db: DbOpt,
    key: KeyOpt,
    name: Annotated[str, typer.Option(help="witness name, e.g. witness.example.org/w1")],
) -> None:
    """Create a witness key (if absent, mode 0600) and database; print its verifier key."""
    w = Witness.open(db, name=name, signing_key=load_or_create_private_key(key))
    with w:
        _console().print(w.verifier.vkey)


@witness_app.command("add-log")
@_friendly
def witness_add_log(
    db: DbOpt,
    key: KeyOpt,
    log_key: Annotated[str, typer.Argument(help="the log's verifier key (vkey string or file)")],
    name: Annotated[str | None, typer.Option(help="witness name")] = None,
) -> None:
    """Follow a log: its checkpoints will be cosigned only along one history."""
    text = log_key
    if "+" not in text and Path(text).is_file():
        text = Path(text).read_text().strip()
    with _open_witness(db, key, name) as w:
        w.add_log(text)
        _console().print(f"following {parse_vkey(text).name}")


@witness_app.command("cosign")
@_friendly
def witness_cosign(
    db: DbOpt,
    key: KeyOpt,
    log: Annotated[
        Path | None,
        typer.Option(help="a log database: cosign its latest checkpoint and record it there"),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="a checkpoint note file to cosign (with --proof)")
    ] = None,
    proof: Annotated[
        Path | None,
        typer.Option(help="consistency proof file: one base64 hash per line, from the last size"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="witness name")] = None,
) -> None:
    """Cosign a checkpoint that extends the last one this witness cosigned."""
    if (log is None) == (checkpoint is None):
        raise typer.BadParameter("give exactly one of --log or --checkpoint")
    with _open_witness(db, key, name) as w:
        if checkpoint is not None:
            hashes: list[bytes] = []
            if proof is not None:
                try:
                    hashes = [
                        base64.b64decode(line.strip(), validate=True)
                        for line in proof.read_text().splitlines()
                        if line.strip()
                    ]
                except (binascii.Error, ValueError) as e:
                    raise KeyFileError(f"{proof}: not one base64 hash per line") from e
            note = w.cosign(checkpoint.read_bytes(), proof=hashes)
            sys.stdout.write(note.encode())
            return
        assert log is not None
        with Store.open_readonly(log) as s:
            origin = s.meta("origin")
        if origin is None:
            raise StorageError(f"{log} is not a ledger database")
        with Log.open(log, origin=origin) as lg:
            cp = lg.checkpoint()
            if cp is None:
                raise StorageError(f"{log} has no checkpoint to cosign")
            view = w.view(origin)
            if view is None:
                raise KeyFileError(
                    f"this witness does not follow {origin}; run 'witness add-log' first"
                )
            size = cp.checkpoint.size
            hashes = lg.consistency_proof(view.size, size) if 0 < view.size < size else []
            note = w.cosign(cp.encode(), proof=hashes)
            mine = [s for s in note.signatures if s.key_id == w.verifier.key_id]
            lg.add_cosignature(mine[-1], witness=w.verifier, tree_size=size)
        _console().print(f"cosigned {origin} at size {size:,}")
