"""The ``foldnet`` command: one sub-command per role. Errors are messages, never tracebacks."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coordinator.errors import UsageError
from coordinator.labclient import LabClient, is_url
from coordinator.plan import HELP, RULES, JobPlan
from foldnet.errors import EXIT_CLIENT, FoldnetError, exit_code_of
from foldnet.terminal import printable
from ledger.cli import audit_cmd, export_cmd, witness_app
from worker.cli import app as worker_app

app = typer.Typer(
    name="foldnet",
    help="Volunteer protein folding with verified results and an auditable credit ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

app.command("audit", help="Audit a ledger (database, tiles or URL) from public data.")(audit_cmd)
app.add_typer(witness_app, name="witness", help="Run a witness that cosigns checkpoints.")
ledger_app = typer.Typer(help="Ledger tools.", no_args_is_help=True)
ledger_app.command("export", help="Export a ledger as C2SP tlog-tiles.")(export_cmd)
app.add_typer(ledger_app, name="ledger")
app.add_typer(worker_app, name="worker")


lab_app = typer.Typer(help="Labs of an HTTP service (operator).", no_args_is_help=True)
app.add_typer(lab_app, name="lab")


@lab_app.command("add")
def lab_add(
    name: Annotated[str, typer.Argument(help="The lab's name (letters, digits, _ . -).")],
    workdir: Annotated[Path, typer.Option(help="The coordinator folder.")] = Path("."),
) -> None:
    """Create a lab and print its API key (shown once; only its hash is kept)."""
    from coordinator.accounts import Accounts

    with Accounts.in_folder(workdir) as accounts:
        key = accounts.add_lab(name)
    console.print(f"lab [bold]{name}[/] created. Its API key (shown once, keep it secret):")
    print(key)


@lab_app.command("revoke")
def lab_revoke(
    name: Annotated[str, typer.Argument(help="The lab's name.")],
    workdir: Annotated[Path, typer.Option(help="The coordinator folder.")] = Path("."),
) -> None:
    """Withdraw a lab's API key (a running service refuses it within 30 s)."""
    from coordinator.accounts import Accounts

    with Accounts.in_folder(workdir) as accounts:
        accounts.revoke_lab(name)
    console.print(f"the key of lab [bold]{name}[/] is revoked")


@lab_app.command("list")
def lab_list(
    workdir: Annotated[Path, typer.Option(help="The coordinator folder.")] = Path("."),
) -> None:
    """The labs of a coordinator folder."""
    from coordinator.accounts import Accounts

    with Accounts.in_folder(workdir) as accounts:
        for lab in accounts.lab_names():
            print(lab)


@app.command()
def serve(
    workdir: Annotated[Path, typer.Argument(help="The coordinator folder (created if absent).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_job_steps: Annotated[
        int, typer.Option(help="Largest job (runs x clones x gens x steps) accepted.")
    ] = 5 * 10**8,
    max_job_wus: Annotated[
        int, typer.Option(help="Most work units (runs x clones x gens) in one job.")
    ] = 100_000,
    min_steps_per_wu: Annotated[int, typer.Option(help="Fewest steps in one work unit.")] = 100,
    volunteer_rate: Annotated[
        float, typer.Option(help="Requests per second per volunteer key.")
    ] = 50.0,
    register_burst: Annotated[
        float, typer.Option(help="Registrations in a burst from one address (IPv6: one /64).")
    ] = 50.0,
    register_global_burst: Annotated[
        float, typer.Option(help="Registrations in a burst from all addresses together.")
    ] = 500.0,
    max_requests_per_address: Annotated[
        int, typer.Option(help="Requests in flight at once from one address (IPv6: one /64).")
    ] = 64,
    origin: Annotated[
        str | None,
        typer.Option(
            help="This service's public origin (scheme://host:port) as volunteers reach it; "
            "their signatures name it. Default: http://HOST:PORT."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    trust: Annotated[
        list[str] | None,
        typer.Option(
            help="Hex public key of one of the operator's own volunteers: established from "
            "the start, so that the first WUs can be validated (repeatable; remembered)."
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL (postgresql://user@host/dbname) of an existing database for "
            "the coordinator, its accounts and its ledger; remembered in the folder. Default: "
            "SQLite files in the folder."
        ),
    ] = None,
    ledger_db: Annotated[
        str | None,
        typer.Option(help="PostgreSQL URL of another database for the ledger. Default: --db."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="HTTP front-end processes: with N > 1 the coordinator runs in this process and "
            "N others parse, authenticate and verify requests in parallel (one per core is "
            "plenty). 1: one process does everything.",
            min=1,
        ),
    ] = 1,
) -> None:
    """Run the coordinator as an HTTP service for labs and volunteers (Ctrl-C stops it)."""
    import uvicorn

    from coordinator.databases import Databases
    from coordinator.http.app import ServiceConfig, create_app

    Databases.of_folder(workdir, db=db, ledger_db=ledger_db)  # checked, and remembered

    config = ServiceConfig(
        trusted_keys=_volunteer_keys(trust),
        max_job_steps=max_job_steps,
        max_job_wus=max_job_wus,
        min_steps_per_wu=min_steps_per_wu,
        volunteer_rate=volunteer_rate,
        volunteer_burst=4 * volunteer_rate,
        register_burst=register_burst,
        register_global_burst=register_global_burst,
        max_requests_per_address=max_requests_per_address,
        origin=origin or f"http://{host}:{port}",
        settle_heap=True,  # a server process: coordinator/http/heap.py
    )
    if origin is None and host in ("0.0.0.0", "::", ""):
        console.print(
            f"[yellow]note:[/] volunteers sign for this service's origin; listening on {host} "
            "you will want --origin set to the URL they use (else their signatures name "
            f"http://{host}:{port} and are refused)"
        )
    if workers > 1:
        from coordinator.http.workers import serve_workers

        serve_workers(
            workdir,
            config,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            say=lambda text: console.print(escape(text)),
            warn=lambda text: err_console.print(f"[yellow]warning:[/] {escape(text)}"),
        )
        return
    app_ = create_app(workdir, config)
    console.print(
        f"foldnet coordinator for {workdir} on http://{host}:{port} "
        f"(docs: http://{host}:{port}/docs)"
    )
    uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=False)


def _volunteer_keys(hexes: list[str] | None) -> tuple[bytes, ...]:
    keys = []
    for k in hexes or []:
        try:
            raw = bytes.fromhex(k)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise typer.BadParameter(
                f"--trust expects a volunteer's public key as 64 hex digits, got {k[:80]!r}"
            )
        keys.append(raw)
    return tuple(keys)


@app.callback()
def _root() -> None:
    """Volunteer protein folding with verified results and an auditable credit ledger."""


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the results.")] = Path("foldnet-results"),
    runs: Annotated[int, typer.Option(help="Starting structures.")] = 2,
    clones: Annotated[int, typer.Option(help="Trajectories per start.")] = 2,
    gens: Annotated[int, typer.Option(help="Generations (WUs) per trajectory.")] = 8,
    steps_per_wu: Annotated[int, typer.Option(help="Steps per work unit.")] = 100_000,
    segment_steps: Annotated[int, typer.Option(help="Steps per verifiable segment.")] = 20_000,
    temperature: Annotated[
        float, typer.Option(help="Temperature in epsilon/k_B (villin's Tf is about 0.78).")
    ] = 0.7,
    serve_after: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Then serve the demo's coordinator on 127.0.0.1 (web dashboard at /) until "
            "Ctrl-C, with a lab key for its job.",
        ),
    ] = False,
    port: Annotated[int, typer.Option(help="TCP port for --serve.")] = 8000,
    adaptive: Annotated[str, typer.Option(help=HELP["adaptive"].capitalize() + ".")] = "none",
) -> None:
    """Run the whole network locally: Ray, coordinator, ledger, honest and dishonest volunteers."""
    from coordinator.demo import VOLUNTEERS, DemoConfig, run_demo

    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty: choose another --out or remove it")
    config = DemoConfig(
        runs=runs,
        clones=clones,
        gens=gens,
        steps_per_wu=steps_per_wu,
        segment_steps=min(segment_steps, steps_per_wu),
        report_steps=min(1000, segment_steps),
        temperature=temperature,
        adaptive=adaptive,
    )
    total = runs * clones * gens
    console.print(
        f"[bold]foldnet demo[/]: villin headpiece (36 residues), C-alpha Go model at "
        f"T = {temperature} eps/kB; {runs} runs x {clones} clones x {gens} generations of "
        f"{steps_per_wu:,} steps; "
        + ("" if adaptive == "none" else f"adaptive sampling ({adaptive}); ")
        + "quorum of 2 on volunteers "
        + ", ".join(
            f"{n}{'' if b == 'honest' else ' (dishonest: ' + b + ')'}" for n, b in VOLUNTEERS
        )
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("WUs validated", total=total, extra="")

        def progress(coord: object, job: str) -> None:
            s = coord.scheduler  # type: ignore[attr-defined]
            done = sum(1 for w in s.wus.values() if w.unit.job == job and w.state == "validated")
            bad = sum(1 for r in s.replicas.values() if r.state == "invalid")
            bar.update(task, completed=done, extra=f"rejected results: {bad}")

        report = run_demo(out, config, on_progress=progress)
        bar.update(task, completed=report.validated)

    t = Table(title="Trajectories")
    for col in ("run", "clone", "steps", "best Q", "lowest RMSD (A)", "final Q", "final RMSD (A)"):
        t.add_column(col, justify="right")
    for tr in report.trajectories:
        q, r = tr.observables["q"], tr.observables["rmsd"]
        t.add_row(
            str(tr.run),
            str(tr.clone),
            f"{int(tr.steps[-1]):,}",
            f"{q.max():.2f}",
            f"{r.min():.2f}",
            f"{q[-1]:.2f}",
            f"{r[-1]:.2f}",
        )
    console.print(t)
    v = Table(title="Verification and credit")
    v.add_column("volunteer")
    v.add_column("credit", justify="right")
    v.add_column("results returned", justify="right")
    v.add_column("results rejected", justify="right")
    v.add_column("standing")
    for name, _ in VOLUNTEERS:
        v.add_row(
            name,
            f"{report.credits.get(name, 0):,}",
            str(report.returned_by.get(name, 0)),
            str(report.rejected_by.get(name, 0)),
            report.trust.get(name, "probation"),
        )
    console.print(v)
    console.print(f"WUs validated: {report.validated}; results rejected: {report.rejected}")
    console.print("[bold]Ledger checkpoint[/]\n" + report.checkpoint.rstrip())
    a = report.audit
    verdict = (
        "[green]PASSED[/]" if a.ok else f"[red]FAILED ({len(a.discrepancies)} discrepancies)[/]"
    )
    ledger_db = out / "coordinator" / "ledger.db"
    console.print(
        f"[bold]foldnet audit[/] {ledger_db}: {verdict}: {a.entries} entries, "
        f"{a.signatures} signatures, {a.checkpoints} checkpoints, balances of "
        f"{len(a.balances)} volunteers recomputed"
    )
    if report.analysis is not None:
        _print_analysis(report.analysis)
    else:
        console.print(f"analysis: none ({report.analysis_error})")
    top = sorted({p.relative_to(out).parts[0] for p in report.files if p.is_relative_to(out)})
    folders = {p for p in top if (out / p).is_dir()}
    console.print(f"results in {out}: " + ", ".join(p + "/" if p in folders else p for p in top))
    if not a.ok:
        raise typer.Exit(1)
    if serve_after:
        from coordinator.http.demo import serve_demo

        serve_demo(out / "coordinator", port, console)


ApiKey = Annotated[
    str,
    typer.Option(envvar="FOLDNET_API_KEY", help="The lab's API key, for a URL (foldnet lab add)."),
]


def _plan_default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(JobPlan) if f.name == name)


def _submit_help() -> str:
    lines = [
        "Submit a folding job: to a coordinator folder (no coordinator may be running there; "
        "foldnet run prepares and computes it), or to a running service over HTTP. Returns at "
        "once with the job id: the job is 'preparing' (in a separate process) until it runs, "
        "or 'failed' with the reason (foldnet status).",
        "",
        "Defaults per engine, in time units:",
    ]
    for r in RULES.values():
        lines.append(
            f"{r.engine}: T = {r.temperature:g} {r.unit} (accepted {r.usual[0]:g}-{r.usual[1]:g} "
            f"{r.unit}, {r.unit_name}); WU {r.steps_per_wu:,} steps "
            f"({r.duration(r.steps_per_wu)}), segments {r.segment_steps:,} "
            f"({r.duration(r.segment_steps)}), frames every {r.report_steps:,} "
            f"({r.duration(r.report_steps)}); time step {r.timestep:g} {r.time_unit}."
        )
        lines.append("")
    return "\n".join(lines)


@app.command(help=_submit_help())
def submit(
    target: Annotated[
        str,
        typer.Argument(help="A coordinator folder (created if absent), or a foldnet serve URL."),
    ],
    pdb: Annotated[Path | None, typer.Option(help="Structure (PDB file).")] = None,
    sequence: Annotated[
        str | None, typer.Option(help="One-letter sequence, built extended (openmm).")
    ] = None,
    engine: Annotated[str, typer.Option(help=HELP["engine"] + ".")] = "go",
    chain: Annotated[str | None, typer.Option(help="Chain of the PDB (default: first).")] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Reference structure (PDB file) for RMSD, Q and the best structure (openmm; "
            "default: the input PDB, none for a sequence)."
        ),
    ] = None,
    runs: Annotated[int, typer.Option(help="Starting structures.")] = _plan_default("runs"),
    clones: Annotated[int, typer.Option(help="Trajectories per start.")] = _plan_default("clones"),
    gens: Annotated[int, typer.Option(help="Generations (WUs) per trajectory.")] = _plan_default(
        "gens"
    ),
    steps_per_wu: Annotated[
        int | None, typer.Option(help=HELP["steps_per_wu"].capitalize() + ".")
    ] = None,
    segment_steps: Annotated[
        int | None, typer.Option(help=HELP["segment_steps"].capitalize() + ".")
    ] = None,
    report_steps: Annotated[
        int | None, typer.Option(help=HELP["report_steps"].capitalize() + ".")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help=HELP["temperature"].capitalize() + ".")
    ] = None,
    allow_unusual_temperature: Annotated[
        bool, typer.Option(help=HELP["allow_unusual_temperature"].capitalize() + ".")
    ] = False,
    quorum: Annotated[
        int, typer.Option(help="Volunteers that must agree on each WU.")
    ] = _plan_default("min_quorum"),
    seed: Annotated[int, typer.Option(help="Seed of the start velocities.")] = _plan_default(
        "seed"
    ),
    name: Annotated[str, typer.Option(help="A name for the job.")] = "",
    adaptive: Annotated[str, typer.Option(help=HELP["adaptive"].capitalize() + ".")] = "none",
    lab: Annotated[
        str, typer.Option(help="Your lab's name (folder only; a URL knows it).")
    ] = "lab",
    api_key: ApiKey = "",
) -> None:
    text = None
    if pdb is not None:
        text = _read_pdb_text(pdb)
    plan = JobPlan.create(
        engine=engine,
        pdb=text,
        source=str(pdb) if pdb is not None else "the uploaded PDB",
        sequence=sequence,
        chain=chain,
        reference=_read_pdb_text(reference) if reference is not None else None,
        runs=runs,
        clones=clones,
        gens=gens,
        steps_per_wu=steps_per_wu,
        segment_steps=segment_steps,
        report_steps=report_steps,
        temperature=temperature,
        allow_unusual_temperature=allow_unusual_temperature,
        min_quorum=quorum,
        seed=seed,
        name=name,
        adaptive=adaptive,
    )
    if is_url(target):
        with LabClient(target, api_key) as client:
            answer = client.submit(plan)
        console.print(f"submitted job [bold]{answer['job']}[/] to {target}: preparing")
        console.print(plan.describe(), soft_wrap=True)
        console.print(f"follow it with: foldnet status {target}")
        return
    from coordinator.runner import accept_job

    job_id = accept_job(Path(target), lab=lab, plan=plan)
    console.print(f"submitted job [bold]{job_id}[/]: preparing")
    console.print(plan.describe(), soft_wrap=True)
    console.print(f"prepare and compute it with: foldnet run {target}")


def _read_pdb_text(path: Path) -> str:
    """A PDB file's text, for the plan (its size bounded as the parser bounds it)."""
    from sims.structure import MAX_PDB_BYTES

    try:
        size = path.stat().st_size
        if size > MAX_PDB_BYTES:
            raise UsageError(
                f"{path}: {size:,} bytes is larger than the {MAX_PDB_BYTES:,}-byte limit for a "
                "PDB file"
            )
        return path.read_text(errors="replace")
    except FileNotFoundError as e:
        raise UsageError(f"no PDB file at {path}") from e
    except OSError as e:
        raise UsageError(f"cannot read the PDB file {path}: {e.strerror or e}") from e


@app.command()
def run(
    workdir: Annotated[Path, typer.Argument(help="The coordinator folder.")],
    address: Annotated[
        str | None, typer.Option(help="A Ray cluster of volunteers (foldnet worker join).")
    ] = None,
    volunteers: Annotated[int, typer.Option(help="Local volunteers, without --address.")] = 3,
    trust: Annotated[
        list[str] | None,
        typer.Option(
            help="With --address: hex public key of one of the operator's own volunteer "
            "nodes, established from the start (repeatable; remembered). Local volunteers "
            "are the operator's already."
        ),
    ] = None,
) -> None:
    """Prepare the folder's new jobs (in a child process), then run the coordinator until
    every job in the folder is done."""
    from coordinator.runner import run_coordinator

    trusted = _volunteer_keys(trust)
    with Progress(
        TextColumn("WUs validated"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("wus", total=None)

        def progress(coord: object) -> None:
            s = coord.scheduler  # type: ignore[attr-defined]
            total = sum(j.spec.runs * j.spec.clones * j.spec.gens for j in s.jobs.values())
            done = sum(1 for w in s.wus.values() if w.state == "validated")
            bar.update(task, completed=done, total=total)

        credits = run_coordinator(
            workdir,
            address=address,
            local_volunteers=volunteers,
            on_progress=progress,
            trusted=trusted,
            on_stage=lambda job, stage: console.print(f"job {job[:16]}: {stage}"),
        )
    for key, amount in sorted(credits.items()):
        console.print(f"volunteer {key[:16]}: {amount:,} credit")
    console.print(f"all jobs done; see: foldnet status {workdir}")


@app.command()
def status(
    target: Annotated[
        str, typer.Argument(help="A coordinator folder (holds coordinator.db), or a URL.")
    ],
    api_key: ApiKey = "",
) -> None:
    """Progress of every job: of a coordinator folder (read-only), or of your lab's jobs on a
    running service."""
    t = Table(title=f"Jobs in {target}")
    for col in ("job", "lab", "engine", "state", "WUs validated", "in progress", "failed", "steps"):
        t.add_column(col, justify="right" if col not in ("job", "lab", "state") else "left")
    errors: list[str] = []
    if is_url(target):
        with LabClient(target, api_key) as client:
            for j in client.jobs():
                w = j["wus"]
                state = str(j.get("state", ""))
                prep = j.get("preparation") or {}
                if state == "preparing" and prep.get("stage"):
                    state = f"preparing: {prep['stage']}"
                if j.get("error"):
                    errors.append(f"job {j['job'][:16]}: {j['error']}")
                t.add_row(
                    j["job"][:16],
                    j.get("name") or "",
                    j["engine"],
                    state,
                    f"{w['validated']}/{w['total']}",
                    str(w["in_flight"]),
                    str(w["failed"]),
                    f"{j['steps_simulated']:,}",
                )
        console.print(t)
        for e in errors:
            console.print(f"[red]failed:[/] {e}")
        return
    from coordinator.lab import CoordinatorView

    view = CoordinatorView(Path(target))
    try:
        for js in view.jobs():
            if js.error:
                errors.append(f"job {js.job[:16]}: {js.error}")
            t.add_row(
                js.job[:16],
                js.lab,
                js.engine,
                js.state,
                f"{js.validated}/{js.wus_total}",
                str(js.in_flight),
                str(js.failed),
                f"{js.steps_validated:,}",
            )
        console.print(t)
        for e in errors:
            console.print(f"[red]failed:[/] {e}")
    finally:
        view.close()


@app.command()
def results(
    target: Annotated[
        str, typer.Argument(help="A coordinator folder (holds coordinator.db), or a URL.")
    ],
    job: Annotated[str, typer.Argument(help="Job id (as `foldnet status` shows, or in full).")],
    out: Annotated[Path, typer.Option(help="Folder for the results.")] = Path("job-results"),
    api_key: ApiKey = "",
) -> None:
    """Write a job's results: trajectories (XTC + topology PDB), observables (CSV), plots,
    structures, summary.json and the provenance of every WU (`foldnet verify-results`)."""
    if is_url(target):
        with LabClient(target, api_key) as client:
            files = client.download(job, out)
        console.print(f"wrote {len(files)} files to {out}")
        return
    from coordinator.lab import CoordinatorView
    from coordinator.results import write_folder

    view = CoordinatorView(Path(target))
    try:
        matches = [j for j in [*view.scheduler.pending, *view.scheduler.jobs] if j.startswith(job)]
        if len(matches) != 1:
            raise UsageError(f"job {job!r} matches {len(matches)} jobs; give more of its id")
        bundle, uncovered = view.results(matches[0])
    finally:
        view.close()
    written = write_folder(out, bundle)
    console.print(f"wrote {len(written)} files to {out} (README.txt says what each is)")
    if uncovered:
        console.print(
            f"[yellow]note:[/] {uncovered} WU(s) are not yet covered by a signed checkpoint "
            "(a coordinator runs in the folder): run this again once it has signed one"
        )


def _vkey_arg(option: str, spec: str) -> str:
    """A verifier key given as its string or as a file holding it."""
    if "+" in spec:
        return spec.strip()
    if not Path(spec).is_file():
        raise UsageError(f"{option} {spec!r} is neither a vkey string nor a file")
    return Path(spec).read_text().strip()


@app.command("verify-results")
def verify_results_cmd(
    bundle: Annotated[Path, typer.Argument(help="A results folder or zip.")],
    log_key: Annotated[
        str | None,
        typer.Option(
            help="The coordinator's log key (vkey string or file), as its operator publishes "
            "it (GET /v1/ledger/log.vkey). Without it only self-consistency is checked."
        ),
    ] = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option(
            help="A witness you trust (vkey string or file, as 'foldnet witness init' prints "
            "it); repeat for several. Its cosignature on the checkpoint must verify."
        ),
    ] = None,
    witness_threshold: Annotated[
        int | None,
        typer.Option(
            help="How many of the --witness-key witnesses must have cosigned the checkpoint "
            "(default: all of them)."
        ),
    ] = None,
) -> None:
    """Check that every frame of a results bundle is the agreed, validated result: digests
    against the signed headers, attestations against the ledger entries, inclusion proofs
    against the signed checkpoint, and the checkpoint's witness cosignatures against the
    witnesses named. Exit 0 if all holds, 1 on a finding, 2 on a usage error."""
    from coordinator.errors import ResultsVerificationError
    from coordinator.provenance import verify_results

    vkey = None if log_key is None else _vkey_arg("--log-key", log_key)
    witnesses = [_vkey_arg("--witness-key", w) for w in witness_key or []]
    try:
        report = verify_results(
            bundle, log_key=vkey, witness_keys=witnesses, witness_threshold=witness_threshold
        )
    except ResultsVerificationError as e:
        console.print(f"[bold red]FAILED[/] ({e.code}): {escape(str(e))}")
        raise typer.Exit(1) from e
    console.print(f"[bold]trust:[/] {escape(report.trust)}")
    for line in report.checked:
        console.print(f"[green]ok[/] {escape(line)}")
    for line in report.not_checked:
        console.print(f"[yellow]not checked[/] {escape(line)}")
    verdict = "against the pinned log key" if log_key else "self-consistent only (no --log-key)"
    if report.witness_threshold:
        verdict += (
            f", cosigned by {len(report.witnesses)} of the {len(witnesses)} named witnesses "
            f"(threshold {report.witness_threshold})"
        )
    else:
        verdict += ", witness cosignatures unchecked (no --witness-key)"
    console.print(f"[bold green]PASSED[/] {verdict}")


@app.command()
def analyze(
    results_path: Annotated[
        Path, typer.Argument(metavar="RESULTS", help="A results folder or the HTTP results .zip.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the analysis (default: RESULTS/analysis).")
    ] = None,
    lag: Annotated[
        int | None, typer.Option(help="MSM lag in frames (default: chosen by the ITS rule).")
    ] = None,
    clusters: Annotated[int, typer.Option(help="k-means microstates.")] = 50,
    features: Annotated[str, typer.Option(help="auto, ca-distances, torsions or q-rmsd.")] = "auto",
    tica_dim: Annotated[int, typer.Option(help="TICA dimensions kept.")] = 2,
    q_folded: Annotated[
        float, typer.Option(help="A microstate with mean Q >= this is folded.")
    ] = 0.75,
    q_unfolded: Annotated[
        float, typer.Option(help="A microstate with mean Q <= this is unfolded.")
    ] = 0.55,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of k-means and the bootstrap.")] = 0,
) -> None:
    """A Markov state model of a job's results: implied timescales, folding and unfolding
    times with 95% intervals, a free-energy plot (written to RESULTS/analysis/)."""
    from coordinator import analysis as an

    try:
        params = an.AnalysisParams(
            lag=lag,
            clusters=clusters,
            features=features,
            tica_dim=tica_dim,
            q_folded=q_folded,
            q_unfolded=q_unfolded,
            bootstrap=bootstrap,
            seed=seed,
        )
        data = an.load_results(results_path)
        result = an.analyze(data, params)
        if out is not None:
            target = out
        elif results_path.is_dir():
            target = results_path / "analysis"
        else:
            target = results_path.parent / f"{results_path.stem}-analysis"
        files = an.write_analysis(result, target)
    except FoldnetError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}")
        raise typer.Exit(exit_code_of(e)) from None
    _print_analysis(result)
    console.print(f"wrote {', '.join(f.name for f in files)} to {files[0].parent}")


def _print_analysis(result: Any) -> None:
    """The MSM's numbers as a table (``foldnet analyze`` and ``foldnet demo``)."""
    m = result.msm
    unit = "steps" if result.ps_per_step is None else "steps (ns)"

    def fmt(steps: float | None) -> str:
        if steps is None:
            return "-"
        if result.ps_per_step is None:
            return f"{steps:,.0f}"
        return f"{steps:,.0f} ({steps * result.ps_per_step / 1000:.3g})"

    t = Table(
        title=f"Markov state model: {result.trajectories} trajectories, {result.frames:,} frames"
    )
    t.add_column("quantity")
    t.add_column(f"value, {unit}")
    t.add_row("lag", f"{fmt(m.lag * m.frame_steps)}  ({m.lag} frames; {m.lag_rule})")
    its = dict(zip(m.lags, m.timescales, strict=True)).get(m.lag, ())
    t.add_row("implied timescales", ", ".join(fmt(x) for x in its[:3]) or "-")
    t.add_row("macrostates", f"folded: mean Q >= {m.q_folded}; unfolded: mean Q <= {m.q_unfolded}")
    for name, mf in (("folding MFPT", m.folding), ("unfolding MFPT", m.unfolding)):
        if mf.steps is None:
            t.add_row(name, f"none: {mf.reason}")
        elif mf.low is None:
            t.add_row(name, f"{fmt(mf.steps)}  ({mf.reason})")
        else:
            t.add_row(name, f"{fmt(mf.steps)}  95% [{fmt(mf.low)}, {fmt(mf.high)}]")
    console.print(t)


@app.command()
def cancel(
    url: Annotated[str, typer.Argument(help="The URL of a running foldnet serve.")],
    job: Annotated[str, typer.Argument(help="Job id (as `foldnet status URL` shows).")],
    api_key: ApiKey = "",
) -> None:
    """Withdraw one of your lab's jobs: nothing more is handed out; validated work stays."""
    with LabClient(url, api_key) as client:
        answer = client.cancel(job)
    console.print(f"job {answer['job'][:16]}: {answer['state']}")


def main() -> None:
    """Console-script entry point: run the app, turning our errors into one clear line.

    Exit status (foldnet.errors): 1 a finding, 2 the caller's mistake, 3 a fault.
    """
    try:
        app()
    except FoldnetError as e:  # (its message may quote a server: printed as text)
        err_console.print(f"[bold red]error:[/] {escape(printable(str(e)))}")
        sys.exit(exit_code_of(e))
    except OSError as e:  # a path the user named: unreadable, missing, not a folder ...
        err_console.print(f"[bold red]error:[/] {escape(printable(str(e)))}")
        sys.exit(EXIT_CLIENT)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
