"""A job's results as a lab receives them: one pure function from the validated data to a
mapping of file name -> bytes, for both engines and both paths (``foldnet results`` writes the
files into a folder, ``GET /v1/jobs/{job}/results`` zips them).

The files (names are stable: ``foldnet analyze`` and labs' scripts read them):

- ``topology.pdb`` and per trajectory ``trajectory_runR_cloneC.xtc`` (every generation
  joined), ``observables_runR_cloneC.csv`` (step, every signed observable, then the derived
  columns), ``final_runR_cloneC.pdb`` and ``plot_runR_cloneC.png``;
- ``best_structure.pdb`` by the first rule of :data:`BEST_RULES` that applies (named in its
  REMARK, in ``summary.json`` and in the README), ``reference.pdb`` when the job has one;
- ``summary.json`` and ``README.txt`` (what exactly the files present are);
- whatever each source of :data:`EXTRA_FILES` adds (the provenance of every WU is one,
  :mod:`coordinator.provenance`, passed in by the caller that has the ledger).

Extending it happens here and nowhere else: a per-frame column derived from the frames is a
:class:`Column` in :data:`COLUMNS`; a file built from the whole job is a :data:`FileSource`
in :data:`EXTRA_FILES`; a criterion for the best structure a :data:`BestRule` in
:data:`BEST_RULES`. Each brings its own README lines.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.plan import RULES
from coordinator.trajfiles import frames_nm, pdb_text, xtc_bytes
from sims.state import State
from worker.result import ResultHeader
from worker.systems import SystemDefinition

__all__ = [
    "BEST_RULES",
    "COLUMNS",
    "EXTRA_FILES",
    "Best",
    "Column",
    "Contribution",
    "Generation",
    "JobInfo",
    "Results",
    "Trajectory",
    "build_bundle",
    "csv_name",
    "final_name",
    "lowest_rmsd",
    "observables_csv",
    "summary_doc",
    "xtc_name",
]

FORMAT = "foldnet-results/2"


def xtc_name(run: int, clone: int) -> str:
    return f"trajectory_run{run}_clone{clone}.xtc"


def csv_name(run: int, clone: int) -> str:
    return f"observables_run{run}_clone{clone}.csv"


def final_name(run: int, clone: int) -> str:
    return f"final_run{run}_clone{clone}.pdb"


def plot_name(run: int, clone: int) -> str:
    return f"plot_run{run}_clone{clone}.png"


def dssp_name(run: int, clone: int) -> str:
    return f"dssp_run{run}_clone{clone}.txt"


def ps_per_step(engine: str) -> float:
    """Picoseconds per step of ``engine`` (the XTC files' time axis), 0 for reduced units."""
    rules = RULES[engine]
    return rules.timestep / 1000.0 if rules.time_unit == "fs" else 0.0


# -- the data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Seeded:
    """An adaptive generation's start: the validated boundary state it came from (WU
    ``wu_id``, boundary ``boundary``; run/clone/gen of that WU) and the state it started in
    (the same positions, velocities redrawn)."""

    wu_id: bytes
    boundary: int
    run: int
    clone: int
    gen: int
    parent_positions: np.ndarray
    parent_velocities: np.ndarray
    start_positions: np.ndarray
    start_velocities: np.ndarray


@dataclass(frozen=True, slots=True)
class Generation:
    """One validated WU of a trajectory: the result its worker signed (header and
    signature) and the part of it a lab receives (frames, observables, the final state)."""

    gen: int
    header: ResultHeader
    signature: bytes
    frames: np.ndarray  # float32 (frames, atoms, 3), the engine's length unit
    steps: np.ndarray  # int64 (frames,), counted from the trajectory's start
    observables: Mapping[str, np.ndarray]  # float64 (frames,) each
    final_positions: np.ndarray  # float64 (atoms, 3)
    final_velocities: np.ndarray
    #: An adaptive job's generation: where it started (None: from the generation before).
    seeded: Seeded | None = None
    #: > 0: the generation was computed again after a retraction (part of its WU's id).
    attempt: int = 0
    #: Generation 0: the job's start state it began from (its digest is the WU's input).
    start: State | None = None

    @property
    def wu_id(self) -> bytes:
        return self.header.wu_id


@dataclass(frozen=True, slots=True, eq=False)
class Trajectory:
    """A trajectory's validated generations 0..k, joined."""

    run: int
    clone: int
    generations: tuple[Generation, ...]
    steps: np.ndarray
    frames: np.ndarray
    observables: dict[str, np.ndarray]

    @classmethod
    def join(cls, run: int, clone: int, generations: Sequence[Generation]) -> Trajectory:
        gens = tuple(generations)
        names = list(gens[0].observables) if gens else []
        return cls(
            run=run,
            clone=clone,
            generations=gens,
            steps=np.concatenate([g.steps for g in gens]) if gens else np.zeros(0, np.int64),
            frames=np.concatenate([g.frames for g in gens])
            if gens
            else np.zeros((0, 0, 3), np.float32),
            observables={k: np.concatenate([g.observables[k] for g in gens]) for k in names},
        )

    @property
    def tag(self) -> str:
        return f"run{self.run}_clone{self.clone}"


@dataclass(frozen=True, slots=True)
class JobInfo:
    job: str
    engine: str
    temperature: float
    steps_per_wu: int
    segment_steps: int
    report_steps: int
    system: SystemDefinition
    #: The structure RMSD and Q are measured against (engine units), or None.
    reference: np.ndarray | None
    #: Where generations start (coordinator/adaptive.py): "none" joins each trajectory's
    #: generations; otherwise each generation starts from a state its policy chose.
    adaptive: str = "none"
    #: The job's canonical engine parameters (``JobSpec.engine_parameters``), which every
    #: WU id of the job is computed with (b"" where no provenance is written).
    params: bytes = b""


@dataclass(frozen=True, slots=True, eq=False)
class Results:
    info: JobInfo
    trajectories: tuple[Trajectory, ...]


# -- extension points ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """A per-frame column derived from a trajectory (not signed by the workers: recomputed
    from the signed frames by whoever wants to check it). ``compute`` returns one value per
    frame, or None when the column does not apply to this job."""

    name: str
    description: str
    compute: Callable[[JobInfo, Trajectory], np.ndarray | None]


@dataclass(frozen=True, slots=True)
class Contribution:
    """Files a source adds, and the README lines that describe them: ``(pattern,
    description)``, a pattern such as ``msm/timescales.png`` or ``wu_runR_cloneC_genG.npz``."""

    files: dict[str, bytes] = field(default_factory=dict)
    readme: tuple[tuple[str, str], ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)  # merged into summary.json


FileSource = Callable[[Results], Contribution]


@dataclass(frozen=True, slots=True)
class Best:
    """The best structure: which frame, and the criterion in words."""

    criterion: str
    run: int
    clone: int
    index: int  # frame of the trajectory
    step: int
    positions: np.ndarray


BestRule = Callable[[Results], Best | None]

#: What RMSD to the reference is called per engine (the best structure's criterion).
RMSD_COLUMN = {"go": "rmsd", "openmm": "rmsd_ca"}


def lowest_rmsd(results: Results) -> Best | None:
    """The frame of lowest RMSD to the reference, when the job has one."""
    col = RMSD_COLUMN.get(results.info.engine)
    best: tuple[float, Trajectory, int] | None = None
    for t in results.trajectories:
        values = t.observables.get(col or "")
        if values is None or not len(values) or not np.isfinite(values).any():
            continue
        i = int(np.nanargmin(values))
        if best is None or values[i] < best[0]:
            best = (float(values[i]), t, i)
    if best is None:
        return None
    value, t, i = best
    return Best(
        f"lowest {col} to the reference structure: {value:.3f} Angstrom",
        t.run,
        t.clone,
        i,
        int(t.steps[i]),
        t.frames[i],
    )


def msm_centre(results: Results) -> Best | None:
    """Without a reference: the centre of the most populated state of a Markov state model
    of the trajectories (coordinator/analysis.py, default parameters), when one can be built
    from them; else None (the next rule applies)."""
    from coordinator import analysis as an
    from coordinator.errors import AnalysisError
    from coordinator.trajfiles import md_topology

    trajs = [t for t in results.trajectories if len(t.frames) >= 2]
    if results.info.reference is not None or not trajs:
        return None
    info = results.info
    xyz = [frames_nm(info.system, t.frames).astype(np.float64) for t in trajs]
    topology = md_topology(pdb_text(info.system, trajs[0].frames[0]), xyz[0])
    rules = RULES[info.engine]
    data = an.ResultsData(
        engine=info.engine,
        topology=topology,
        trajectories=tuple(
            an.TrajectoryData(
                run=t.run, clone=t.clone, steps=t.steps, observables=t.observables, xyz_nm=x
            )
            for t, x in zip(trajs, xyz, strict=True)
        ),
        ps_per_step=rules.timestep / 1000.0 if rules.time_unit == "fs" else None,
    )
    try:
        a = an.analyze(data)
    except AnalysisError:
        return None
    i, j = an.most_populated_centre(a)
    t = trajs[i]
    return Best(
        "no reference structure: the frame nearest the centre of the most populated state "
        f"of a Markov state model of the trajectories ({a.clusters} microstates, lag "
        f"{a.msm.lag} frames; foldnet analyze)",
        t.run,
        t.clone,
        j,
        int(t.steps[j]),
        t.frames[j],
    )


def last_of_longest(results: Results) -> Best | None:
    """Without a reference: the last frame of the longest trajectory (the first such)."""
    trajs = [t for t in results.trajectories if len(t.frames)]
    if not trajs:
        return None
    t = max(trajs, key=lambda t: len(t.frames))
    i = len(t.frames) - 1
    return Best(
        "no reference structure, so no RMSD: the last frame of the longest trajectory",
        t.run,
        t.clone,
        i,
        int(t.steps[i]),
        t.frames[i],
    )


_METRICS: dict[int, tuple[Trajectory, Any]] = {}


def _allatom_metrics(info: JobInfo, t: Trajectory) -> Any:
    """Best-Hummer-Eaton Q and DSSP of an all-atom trajectory (coordinator/framemetrics.py),
    computed once per trajectory for the columns and the DSSP file alike."""
    from coordinator.framemetrics import allatom_metrics

    hit = _METRICS.get(id(t))
    if hit is not None and hit[0] is t:
        return hit[1]
    topology = pdb_text(info.system, t.frames[0], "topology")
    metrics = allatom_metrics(topology, frames_nm(info.system, t.frames), info.reference)
    if len(_METRICS) >= 8:
        _METRICS.clear()
    _METRICS[id(t)] = (t, metrics)
    return metrics


def _metric_column(name: str) -> Callable[[JobInfo, Trajectory], np.ndarray | None]:
    def compute(info: JobInfo, t: Trajectory) -> np.ndarray | None:
        if info.engine != "openmm" or not len(t.frames):
            return None
        column: np.ndarray | None = _allatom_metrics(info, t).columns.get(name)
        return column

    return compute


def _dssp_files(results: Results) -> Contribution:
    """All-atom jobs: the secondary structure of every frame, one line per frame."""
    if results.info.engine != "openmm":
        return Contribution()
    files = {}
    for t in results.trajectories:
        m = _allatom_metrics(results.info, t)
        lines = [f"{int(step)} {codes}" for step, codes in zip(t.steps, m.dssp, strict=True)]
        files[dssp_name(t.run, t.clone)] = ("\n".join(lines) + "\n").encode()
    return Contribution(
        files=files,
        readme=(
            (
                "dssp_runR_cloneC.txt",
                "per frame: the step, then one DSSP letter per residue (mdtraj, simplified: "
                "H helix, E strand, C coil)",
            ),
        ),
    )


#: Per-frame columns derived from the frames, in CSV order (after the signed observables).
COLUMNS: tuple[Column, ...] = (
    Column(
        "q_bhe",
        "fraction of native contacts by Best, Hummer and Eaton (heavy atoms within 4.5 A in "
        "the reference, beta 5/A, lambda 1.8; all-atom jobs with a reference)",
        _metric_column("q_bhe"),
    ),
    Column("helix", "fraction of residues in a helix (DSSP; all-atom)", _metric_column("helix")),
    Column("strand", "fraction of residues in a strand (DSSP; all-atom)", _metric_column("strand")),
)
#: Files built from the whole job, by sources that need nothing but the results.
EXTRA_FILES: tuple[FileSource, ...] = (_dssp_files,)
#: Criteria for ``best_structure.pdb``, in order of preference; the first that applies wins.
BEST_RULES: tuple[BestRule, ...] = (lowest_rmsd, msm_centre, last_of_longest)

# -- the files -------------------------------------------------------------------------------

_LABELS = {
    "q": "Q (fraction of native contacts)",
    "rmsd": "C-alpha RMSD (A)",
    "rmsd_ca": "C-alpha RMSD (A)",
    "rmsd_heavy": "heavy-atom RMSD (A)",
    "rg": "Rg (A)",
}
#: The observables each engine's plot shows, in order, when the job has them.
PLOTTED = {"go": ("q", "rmsd"), "openmm": ("rmsd_ca", "rmsd_heavy", "q", "rg", "energy")}


def observables_csv(t: Trajectory, derived: Mapping[str, np.ndarray]) -> str:
    """``step``, every signed observable (sorted by name), then the derived columns; values
    as ``%.6g`` (what a verifier formats the signed values with to compare)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    names = sorted(t.observables)
    writer.writerow(["step", *names, *derived])
    columns = [t.observables[n] for n in names] + list(derived.values())
    for i, step in enumerate(t.steps):
        writer.writerow([int(step), *(f"{c[i]:.6g}" for c in columns)])
    return buf.getvalue()


def _plot_png(info: JobInfo, t: Trajectory) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        n
        for n in PLOTTED.get(info.engine, ())
        if n in t.observables and np.isfinite(t.observables[n]).any()
    ] or sorted(t.observables)[:1]
    rules = RULES[info.engine]
    if rules.time_unit == "fs":
        x, xlabel = t.steps * rules.timestep * 1e-6, "time (ns)"
    else:
        x, xlabel = t.steps / 1e3, "step (thousands)"
    energy = "energy (kJ/mol)" if info.engine == "openmm" else "energy (eps)"
    fig, axes = plt.subplots(
        max(1, len(names)), 1, figsize=(8, 1.2 + 1.8 * max(1, len(names))), dpi=100, sharex=True
    )
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=False):
        ax.plot(x, t.observables[name], lw=0.8)
        ax.set_ylabel(energy if name == "energy" else _LABELS.get(name, name), fontsize=8)
        if name == "q":
            ax.set_ylim(0, 1)
    axes[-1].set_xlabel(xlabel)
    axes[0].set_title(
        f"job {info.job[:12]} run {t.run} clone {t.clone}: {info.engine}, "
        f"T = {info.temperature:g} {rules.unit}",
        fontsize=9,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def summary_doc(
    results: Results, best: Best | None, derived: Sequence[str], names: Sequence[str]
) -> dict[str, Any]:
    """``summary.json`` but what sources add: the job, the best structure's criterion and each
    trajectory's generations, frames, steps (and an adaptive job's starts), from the data
    alone, so that ``verify-results`` states it again from the signed data to compare."""
    info = results.info
    rules = RULES[info.engine]
    return {
        "format": FORMAT,
        "job": info.job,
        "engine": info.engine,
        "model": rules.model,
        "temperature": {"value": info.temperature, "unit": rules.unit},
        "timestep": {"value": rules.timestep, "unit": rules.time_unit},
        "steps_per_wu": info.steps_per_wu,
        "segment_steps": info.segment_steps,
        "report_steps": info.report_steps,
        "length_unit": "Angstrom" if info.engine == "go" else "nm",
        "observables": {"signed": list(names), "derived": list(derived)},
        "best_structure": None
        if best is None
        else {"criterion": best.criterion, "run": best.run, "clone": best.clone, "step": best.step},
        "reference": info.reference is not None,
        "adaptive": info.adaptive,
        "trajectories": [
            {
                "run": t.run,
                "clone": t.clone,
                "generations": len(t.generations),
                "frames": len(t.frames),
                "steps": len(t.generations) * info.steps_per_wu,
            }
            | ({} if info.adaptive == "none" else {"starts": _starts(t)})
            for t in results.trajectories
        ],
    }


def _starts(t: Trajectory) -> list[dict[str, Any]]:
    """Where each generation of an adaptive trajectory started: the tree of the job."""
    out = []
    for g in t.generations:
        s = g.seeded
        frames = len(g.steps)
        if s is None:
            out.append({"gen": g.gen, "frames": frames, "from": "start state"})
        else:
            out.append(
                {
                    "gen": g.gen,
                    "frames": frames,
                    "from": {
                        "wu": s.wu_id.hex(),
                        "run": s.run,
                        "clone": s.clone,
                        "gen": s.gen,
                        "boundary": s.boundary,
                    },
                }
            )
    return out


def build_bundle(
    results: Results,
    *,
    sources: Sequence[FileSource] = (),
    columns: Sequence[Column] = COLUMNS,
    best_rules: Sequence[BestRule] = BEST_RULES,
) -> dict[str, bytes]:
    """Every file of the job's results, by name. ``sources`` add files (after those of
    :data:`EXTRA_FILES`); a trajectory without frames yet is left out."""
    info = results.info
    trajs = [t for t in results.trajectories if len(t.frames)]
    results = Results(info, tuple(trajs))
    rules = RULES[info.engine]
    dt_ps = ps_per_step(info.engine)
    files: dict[str, bytes] = {}
    readme: list[tuple[str, str]] = []
    names = sorted(trajs[0].observables) if trajs else []
    derived_names: list[str] = []
    if trajs:
        topology = pdb_text(
            info.system, trajs[0].frames[0], f"foldnet job {info.job[:16]} topology"
        )
        files["topology.pdb"] = topology.encode()
        readme.append(
            (
                "topology.pdb",
                "the system's atoms (at the first frame of the first trajectory): open the "
                "XTCs with it, e.g. mdtraj.load('trajectory_run0_clone0.xtc', "
                "top='topology.pdb') or vmd topology.pdb trajectory_*.xtc",
            )
        )
    for t in trajs:
        derived = {}
        for c in columns:
            values = c.compute(info, t)
            if values is not None:
                derived[c.name] = np.asarray(values)
        derived_names = derived_names or list(derived)
        files[xtc_name(t.run, t.clone)] = xtc_bytes(
            topology, frames_nm(info.system, t.frames), t.steps, dt_ps
        )
        files[csv_name(t.run, t.clone)] = observables_csv(t, derived).encode()
        last = t.generations[-1]
        files[final_name(t.run, t.clone)] = pdb_text(
            info.system,
            last.final_positions,
            f"foldnet job {info.job[:16]} run {t.run} clone {t.clone}",
            (f"final state after generation {last.gen} (step {int(t.steps[-1])})",),
        ).encode()
        files[plot_name(t.run, t.clone)] = _plot_png(info, t)
    unit = "Angstrom" if info.engine == "go" else "nm"
    time = (
        "time = step" if dt_ps == 0 else f"time in ps ({rules.timestep:g} {rules.time_unit} steps)"
    )
    if trajs:
        readme += [
            (
                "trajectory_runR_cloneC.xtc",
                (
                    f"one trajectory, every validated generation joined; nm to 0.001 nm; {time}"
                    if info.adaptive == "none"
                    else f"the generations of one slot of an adaptive job ({info.adaptive}), "
                    "one after the other: each generation starts from a validated state its "
                    "policy chose (summary.json: 'starts'), so the frames are continuous "
                    f"within a generation only; nm to 0.001 nm; {time}"
                ),
            ),
            (
                "observables_runR_cloneC.csv",
                "per frame: step, then the observables the workers signed ("
                + ", ".join(names)
                + ")"
                + (
                    "; then derived columns (not signed; recomputed from the frames): "
                    + "; ".join(f"{c.name}: {c.description}" for c in columns)
                    if derived_names
                    else ""
                ),
            ),
            ("final_runR_cloneC.pdb", "the trajectory's last validated state (full precision)"),
            ("plot_runR_cloneC.png", "the trajectory's observables against time"),
        ]
    best = next((b for rule in best_rules if (b := rule(results)) is not None), None)
    if best is not None:
        files["best_structure.pdb"] = pdb_text(
            info.system,
            best.positions,
            "foldnet best structure",
            (
                f"criterion: {best.criterion}",
                f"run {best.run} clone {best.clone} frame {best.index} step {best.step}",
            ),
        ).encode()
        readme.append(("best_structure.pdb", f"criterion: {best.criterion}"))
    if info.reference is not None:
        files["reference.pdb"] = pdb_text(
            info.system, info.reference, "reference structure: RMSD and Q are measured to it"
        ).encode()
        readme.append(("reference.pdb", "the reference (native) structure of RMSD and Q"))
    summary = summary_doc(results, best, derived_names, names)
    for source in (*EXTRA_FILES, *sources):
        part = source(results)
        files |= part.files
        readme += part.readme
        summary |= part.summary
    files["summary.json"] = json.dumps(summary, indent=1).encode()
    readme.append(
        (
            "summary.json",
            "the job (engine, temperature and time step with units) and each trajectory's "
            "generations, frames and steps",
        )
    )
    readme.append(("README.txt", "this file"))
    files["README.txt"] = _readme(info, unit, readme).encode()
    return files


def _readme(info: JobInfo, unit: str, lines: Sequence[tuple[str, str]]) -> str:
    rules = RULES[info.engine]
    out = [
        f"foldnet results of job {info.job}",
        f"{info.engine} ({rules.model}) at T = {info.temperature:g} {rules.unit}; "
        f"positions in {unit} (XTC: nm)",
        "",
    ]
    width = max((len(p) for p, _ in lines), default=0) + 2
    for pattern, description in lines:
        text = textwrap.wrap(" ".join(description.split()), max(40, 96 - width))
        out.append(f"{pattern:<{width}}{text[0] if text else ''}")
        out += [" " * width + r for r in text[1:]]
    out += [
        "",
        "Every frame comes from results that agreeing volunteers computed and the coordinator",
        "validated; none from a retracted result. `foldnet verify-results` checks this folder",
        "(or zip) against the signed results and the ledger.",
        "",
    ]
    return "\n".join(out)


def plain_go_files(
    model: SystemDefinition, runs: Sequence[tuple[np.ndarray, Mapping[str, np.ndarray], np.ndarray]]
) -> dict[str, bytes]:
    """The files ``foldnet analyze`` reads (topology, one XTC and observables CSV per
    trajectory, run 0 and clone = its index) for Go runs computed outside the network, as
    ``(frame_steps, observables, frames)``: what benchmarks and tests analyse. Nothing signed,
    so no provenance."""
    if not runs:
        return {}
    topology = pdb_text(model, runs[0][2][0], "topology")
    files = {"topology.pdb": topology.encode()}
    for c, (steps, obs, frames) in enumerate(runs):
        t = Trajectory(0, c, (), np.asarray(steps), np.asarray(frames), dict(obs))
        files[xtc_name(0, c)] = xtc_bytes(topology, frames_nm(model, t.frames), t.steps, 0.0)
        files[csv_name(0, c)] = observables_csv(t, {}).encode()
    return files
