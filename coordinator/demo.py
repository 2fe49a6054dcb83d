"""``foldnet demo``: the whole network on one machine.

Local Ray on loopback, a SQLite coordinator with its ledger, several local volunteers with
their own keys (one of them dishonest: it returns perturbed final states), and a villin
headpiece job with runs x clones x generations and replication on. At the end: trajectories,
best Q and RMSD, WUs validated and rejected, credit per volunteer, the ledger checkpoint and
an audit of the ledger; a results folder (:mod:`coordinator.results`, as ``foldnet results``
writes it: trajectories, observables, plots, structures and the provenance of every WU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.analysis import Analysis, analyze, load_results, write_analysis
from coordinator.bundle import Trajectory
from coordinator.errors import AnalysisError
from coordinator.jobs import JobSpec
from coordinator.provenance import gather_evidence, result_indices
from coordinator.raylocal import local_ray
from coordinator.raypool import RayPool, VolunteerSpec
from coordinator.results import bundle_files, load, select, write_folder
from coordinator.service import Coordinator
from foldnet.files import atomic_write
from ledger import AuditReport, run_audit
from sims.examples import VILLIN_PDB
from sims.go import GoEngine, GoModel
from worker.systems import system_digest

VOLUNTEERS = (("alice", "honest"), ("bob", "honest"), ("carol", "honest"), ("mallory", "perturb"))


@dataclass(frozen=True, slots=True)
class DemoConfig:
    runs: int = 2
    clones: int = 2
    gens: int = 8
    steps_per_wu: int = 100_000
    segment_steps: int = 20_000
    report_steps: int = 1000
    temperature: float = 0.7
    seed: int = 1
    #: Where new generations start (coordinator/adaptive.py): none, least-counts or fast.
    adaptive: str = "none"


@dataclass(slots=True)
class DemoReport:
    job: str
    trajectories: list[Trajectory]
    validated: int
    rejected: int
    rejected_by: dict[str, int]
    credits: dict[str, int]
    names: dict[str, str]
    checkpoint: str
    audit: AuditReport
    returned_by: dict[str, int] = field(default_factory=dict)
    trust: dict[str, str] = field(default_factory=dict)  # established / probation / banned
    files: list[Path] = field(default_factory=list)
    analysis: Analysis | None = None  # the MSM of the results (None: see analysis_error)
    analysis_error: str = ""


def run_demo(
    out: Path,
    config: DemoConfig = DemoConfig(),
    *,
    on_progress: Callable[[Coordinator, str], None] | None = None,
    ray_tmpdir: str | None = None,
) -> DemoReport:
    out = out.resolve()
    model = GoModel.from_pdb(VILLIN_PDB)
    engine = GoEngine(model)
    spec = JobSpec(  # validated here, before anything is written
        engine="go",
        system_digest=system_digest(model),
        runs=config.runs,
        clones=config.clones,
        gens=config.gens,
        steps_per_wu=config.steps_per_wu,
        segment_steps=config.segment_steps,
        report_steps=config.report_steps,
        temperature=config.temperature,
        # A demo WU takes about a second: an audit nobody can take (every volunteer touched
        # the WU) gives up after a minute, not after the default ten.
        deadline_s=60.0,
        adaptive=config.adaptive,
    )
    engine.check_temperature(config.temperature)
    coord = Coordinator.local(out / "coordinator", checkpoint_every=50)
    starts = [
        engine.initial_state(temperature=config.temperature, seed=config.seed + run)
        for run in range(config.runs)
    ]
    job = coord.submit(lab="demo-lab", system=model, starts=starts, spec=spec)
    volunteers = [
        VolunteerSpec(
            resource=f"vol:{name}",
            key_path=str(out / "volunteers" / f"{name}.key"),
            behaviour=behaviour,
            num_cpus=0.5,
            slots=1,  # spread the work so every volunteer, mallory too, takes part
            # alice is the operator's own machine; the others start on probation and are
            # established once their results agree with an established volunteer's
            trusted=name == "alice",
        )
        for name, behaviour in VOLUNTEERS
    ]
    with local_ray(num_cpus=2, resources={v.resource: 1 for v in volunteers}, tmpdir=ray_tmpdir):
        pool = RayPool(coord, volunteers)
        names = {m.key.hex(): m.spec.resource.removeprefix("vol:") for m in pool.members}
        try:
            pool.run(
                [model],
                until=lambda: coord.job_done(job),
                timeout_s=900,
                on_progress=None if on_progress is None else (lambda: on_progress(coord, job)),
            )
        finally:
            pool.shutdown()
    summary = coord.drain()
    cp = coord.log.publish_checkpoint()
    plan = select(coord.scheduler, job)
    results = load(coord.store, plan)
    evidence = gather_evidence(coord.log, plan.wu_ids, result_indices(coord.log), cp)
    audit = run_audit(coord.log.store.path, workers=2)
    rejected_by: dict[str, int] = {}
    for inv in summary.invalidated:
        rejected_by[names.get(inv.volunteer, inv.volunteer)] = (
            rejected_by.get(names.get(inv.volunteer, inv.volunteer), 0) + 1
        )
    returned_by: dict[str, int] = {}
    for r in coord.scheduler.replicas.values():
        if r.claim is not None:
            name = names.get(r.volunteer, r.volunteer)
            returned_by[name] = returned_by.get(name, 0) + 1
    report = DemoReport(
        job=job,
        returned_by=returned_by,
        trust={
            names.get(k, k): v.trust for k, v in coord.scheduler.volunteers.items() if k in names
        },
        trajectories=list(results.trajectories),
        validated=len(summary.validated),
        rejected=len(summary.invalidated),
        rejected_by=rejected_by,
        credits={names.get(k, k): v for k, v in coord.credits().items()},
        names=names,
        checkpoint=cp.encode(),
        audit=audit,
    )
    coord.close()
    report.files.extend(write_folder(out, bundle_files(results, evidence)))
    report.files.append(atomic_write(out / "checkpoint.txt", report.checkpoint))
    try:  # the Markov state model of what the network computed, as `foldnet analyze` does
        report.analysis = analyze(load_results(out))
        report.files.extend(write_analysis(report.analysis, out / "analysis"))
    except AnalysisError as e:
        report.analysis_error = str(e)
    return report
