"""Markov state models of a job's results: what a lab needs to publish folding kinetics.

The pipeline (deeptime): features per frame -> TICA -> k-means microstates -> a reversible
maximum-likelihood MSM at a chosen lag -> folded/unfolded macrostates by the microstates'
mean Q -> folding and unfolding mean first-passage times (transition path theory) with
bootstrap intervals over trajectories. Pure functions on frozen records; the command line
(``foldnet analyze``) and the HTTP service only call :func:`load_results`, :func:`analyze`
and :func:`analysis_files` / :func:`write_analysis`.

Reads only the stable names of a results folder or zip: ``topology.pdb``,
``trajectory_runR_cloneC.xtc``, ``observables_runR_cloneC.csv`` (``step`` then the
observables; ``q`` for the macrostates) and, if present, ``summary.json`` (its ``engine``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.errors import AnalysisError
from foldnet.files import atomic_write

__all__ = [
    "FEATURES",
    "LAG_CANDIDATES",
    "Analysis",
    "AnalysisParams",
    "Mfpt",
    "MsmResult",
    "ResultsData",
    "TrajectoryData",
    "analysis_files",
    "analyze",
    "direct_mfpt",
    "load_results",
    "markov_analysis",
    "write_analysis",
]

#: Feature sets: C-alpha pair distances (|i-j| >= 3, capped at CAP_NM so that only contacts
#: and near-contacts count), backbone torsions (sin/cos of phi, psi), or the observables Q and
#: RMSD. ``auto``: C-alpha distances for Go (C-alpha beads), torsions for all-atom jobs.
FEATURES = ("auto", "ca-distances", "torsions", "q-rmsd")
CAP_NM = 1.5
#: Lags tried for the implied timescales, in frames.
LAG_CANDIDATES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: The lag rule: the smallest candidate lag whose slowest implied timescale is within this
#: fraction of the slowest timescale at the next candidate lag (about twice as long).
ITS_CONVERGED = 0.2
_NAME = re.compile(r"^(trajectory|observables)_run(\d+)_clone(\d+)\.(xtc|csv)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrajectoryData:
    """One trajectory of a results folder: frames in nm, the step of each, its observables."""

    run: int
    clone: int
    steps: np.ndarray
    observables: Mapping[str, np.ndarray]
    xyz_nm: np.ndarray


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultsData:
    """What :func:`load_results` read: the engine, the topology and every trajectory.

    ``ps_per_step`` is None for the Go model (reduced units: time in steps only)."""

    engine: str
    topology: Any  # mdtraj.Topology
    trajectories: tuple[TrajectoryData, ...]
    ps_per_step: float | None
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisParams:
    """The knobs; defaults that work on a small job (a few trajectories of a few hundred
    frames). ``lag`` (frames) None: chosen by the rule of :data:`ITS_CONVERGED`."""

    lag: int | None = None
    clusters: int = 50
    features: str = "auto"
    tica_dim: int = 2
    tica_lag: int | None = None
    q_folded: float = 0.75
    q_unfolded: float = 0.55
    bootstrap: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise AnalysisError(
                f"features {self.features!r} unknown; expected one of {', '.join(FEATURES)}"
            )
        for name in ("clusters", "tica_dim", "bootstrap"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "bootstrap" else 1):
                raise AnalysisError(f"{name} must be a positive integer, got {v!r}")
        for name in ("lag", "tica_lag"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise AnalysisError(f"{name} must be a number of frames >= 1, got {v!r}")
        qf, qu = self.q_folded, self.q_unfolded
        if not (0 <= qu < qf <= 1 and math.isfinite(qf) and math.isfinite(qu)):
            raise AnalysisError(
                f"Q thresholds must satisfy 0 <= q_unfolded < q_folded <= 1, got "
                f"q_unfolded={qu}, q_folded={qf}; give e.g. --q-unfolded 0.55 --q-folded 0.75"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Mfpt:
    """A mean first-passage time in steps (None with ``reason`` when it cannot be had) and
    its bootstrap 95% interval (percentiles 2.5, 97.5 of the replicates that had one)."""

    steps: float | None
    low: float | None = None
    high: float | None = None
    replicates: int = 0
    reason: str | None = None

    def as_dict(self, ps_per_step: float | None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "steps": self.steps,
            "interval_steps": None if self.low is None else [self.low, self.high],
            "bootstrap_replicates": self.replicates,
        }
        if ps_per_step is not None:
            ns = ps_per_step / 1000.0
            d["ns"] = None if self.steps is None else self.steps * ns
            d["interval_ns"] = (
                None if self.low is None or self.high is None else [self.low * ns, self.high * ns]
            )
        if self.reason is not None:
            d["reason"] = self.reason
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class MsmResult:
    """The Markov model part: implied timescales per lag, the chosen lag, macrostates, MFPTs.

    ``microstate_q`` is each microstate's mean Q (NaN without Q); ``folded``/``unfolded`` are
    microstate indices (of the largest connected set) of the macrostates."""

    frame_steps: int
    lags: tuple[int, ...]
    timescales: tuple[tuple[float, ...], ...]  # per lag, the slowest ones, in steps
    lag: int
    lag_rule: str
    active_states: int
    stationary: np.ndarray
    microstate_q: np.ndarray
    folded: tuple[int, ...]
    unfolded: tuple[int, ...]
    folding: Mfpt
    unfolding: Mfpt
    q_folded: float
    q_unfolded: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """Everything :func:`analyze` found, ready for :func:`analysis_files`."""

    engine: str
    ps_per_step: float | None
    params: AnalysisParams
    features: str
    n_features: int
    trajectories: int
    frames: int
    clusters: int
    tica_lag: int
    tica_dim: int
    tics: tuple[np.ndarray, ...]
    dtrajs: tuple[np.ndarray, ...]
    msm: MsmResult


# -- loading -----------------------------------------------------------------------------------


def load_results(path: str | Path) -> ResultsData:
    """Read a results folder, or the HTTP results zip (extracted to a private temporary
    folder), as the lab got it."""
    p = Path(path)
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise AnalysisError(f"{p} is neither a results folder nor a results .zip")
        with tempfile.TemporaryDirectory(prefix="foldnet-analysis-") as d:
            try:
                with zipfile.ZipFile(p) as zf:
                    seen: dict[str, str] = {}
                    for info in zf.infolist():
                        name = Path(info.filename).name  # flat: never a path out of d
                        if info.is_dir() or not name or name.startswith("."):
                            continue
                        if name in seen:  # which one would be read is up to the zip's order
                            raise AnalysisError(
                                f"the zip {p} holds {name} twice ({seen[name]} and "
                                f"{info.filename}): which is the result is not for foldnet "
                                "to guess; check it with foldnet verify-results"
                            )
                        seen[name] = info.filename
                        (Path(d) / name).write_bytes(zf.read(info))
            except (zipfile.BadZipFile, OSError) as e:
                raise AnalysisError(f"cannot read the zip {p}: {e}") from e
            return _load_folder(Path(d))
    if not p.is_dir():
        raise AnalysisError(
            f"no results folder or zip at {p}; give the folder `foldnet results` wrote"
        )
    return _load_folder(p)


def _load_folder(folder: Path) -> ResultsData:
    import mdtraj

    summary: dict[str, Any] = {}
    if (folder / "summary.json").is_file():
        try:
            loaded = json.loads((folder / "summary.json").read_text())
        except (ValueError, OSError, RecursionError) as e:
            raise AnalysisError(f"summary.json does not decode: {e}") from e
        summary = loaded if isinstance(loaded, dict) else {}
    found: dict[tuple[int, int], dict[str, Path]] = {}
    for f in folder.iterdir():
        m = _NAME.match(f.name)
        if m:
            found.setdefault((int(m[2]), int(m[3])), {})[m[4]] = f
    pairs = sorted(k for k, v in found.items() if "xtc" in v)
    if not pairs:
        raise AnalysisError(
            f"no trajectory_runR_cloneC.xtc in {folder}: nothing to analyse (are these "
            "foldnet results, and has the job validated any work unit yet?)"
        )
    top_path = folder / "topology.pdb"
    if not top_path.is_file():
        raise AnalysisError(f"{folder} has trajectories but no topology.pdb to read them with")
    try:
        top = mdtraj.load_pdb(str(top_path), standard_names=False).topology
    except Exception as e:  # mdtraj raises a zoo of errors on a bad PDB
        raise AnalysisError(f"topology.pdb does not read as PDB: {e}") from e
    is_ca = top.n_atoms == top.n_residues and all(a.name == "CA" for a in top.atoms)
    engine = str(summary.get("engine") or ("go" if is_ca else "openmm"))
    trajs = []
    ratios = []
    for run, clone in pairs:
        files = found[(run, clone)]
        try:
            t = mdtraj.load_xtc(str(files["xtc"]), top=top)
        except Exception as e:
            raise AnalysisError(f"{files['xtc'].name} does not read as XTC: {e}") from e
        if "csv" not in files:
            raise AnalysisError(f"{files['xtc'].name} has no observables_run{run}_clone{clone}.csv")
        steps, obs = _read_csv(files["csv"])
        if len(steps) != t.n_frames:
            raise AnalysisError(
                f"run {run} clone {clone}: {t.n_frames} frames in the XTC but {len(steps)} rows "
                "in the observables CSV; expected one row per frame"
            )
        xyz = np.asarray(t.xyz, dtype=np.float64)
        if not np.all(np.isfinite(xyz)):
            raise AnalysisError(f"run {run} clone {clone}: frames hold NaN or infinite coordinates")
        if len(steps) and steps[-1] > 0:
            ratios.append(float(t.time[-1]) / float(steps[-1]))
        trajs.append(TrajectoryData(run=run, clone=clone, steps=steps, observables=obs, xyz_nm=xyz))
    ps_per_step: float | None = None
    if engine != "go":
        from sims.allatom import TIMESTEP_FS

        ps_per_step = float(np.median(ratios)) if ratios else TIMESTEP_FS / 1000.0
    return ResultsData(
        engine=engine,
        topology=top,
        trajectories=_split_generations(trajs, summary),
        ps_per_step=ps_per_step,
        summary=summary,
    )


def _split_generations(
    trajs: Sequence[TrajectoryData], summary: Mapping[str, Any]
) -> tuple[TrajectoryData, ...]:
    """An adaptive job's slot is a row of generations that each start from a state the policy
    chose, not from where the one before ended: each generation is its own trajectory piece
    (summary.json's ``starts`` says how many frames each has), so the MSM never counts the
    jump between two generations as a transition."""
    if summary.get("adaptive", "none") in ("none", None):
        return tuple(trajs)
    frames = {
        (int(t["run"]), int(t["clone"])): [int(g["frames"]) for g in t.get("starts", [])]
        for t in summary.get("trajectories", [])
        if isinstance(t, dict)
    }
    out: list[TrajectoryData] = []
    for t in trajs:
        sizes = frames.get((t.run, t.clone))
        if not sizes or sum(sizes) != len(t.steps):
            raise AnalysisError(
                f"run {t.run} clone {t.clone} of an adaptive job: summary.json's 'starts' do not "
                f"account for its {len(t.steps)} frames; expected the file foldnet results wrote"
            )
        edges = np.cumsum([0, *sizes])
        for a, b in itertools.pairwise(edges.tolist()):
            out.append(
                TrajectoryData(
                    run=t.run,
                    clone=t.clone,
                    steps=t.steps[a:b],
                    observables={k: v[a:b] for k, v in t.observables.items()},
                    xyz_nm=t.xyz_nm[a:b],
                )
            )
    return tuple(out)


def _read_csv(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    try:
        rows = list(csv.reader(io.StringIO(path.read_text())))
        header = rows[0]
    except (OSError, ValueError, IndexError) as e:
        raise AnalysisError(f"{path.name} is not an observables CSV (step, ...): {e}") from e
    if not header or header[0] != "step":
        raise AnalysisError(
            f"{path.name} is not an observables CSV: the first column is {header[:1]}, "
            "expected 'step'"
        )
    try:
        values = np.array([[float(v) for v in r] for r in rows[1:] if r], dtype=np.float64)
    except (OSError, ValueError, IndexError) as e:
        raise AnalysisError(f"{path.name} is not an observables CSV (step, ...): {e}") from e
    values = values.reshape(-1, len(header))
    obs = {name: values[:, i] for i, name in enumerate(header) if i > 0}
    return values[:, 0].astype(np.int64), obs


# -- features ----------------------------------------------------------------------------------


def featurize(data: ResultsData, kind: str) -> tuple[str, list[np.ndarray]]:
    """Per trajectory a (frames, features) array of the named feature set."""
    import mdtraj

    if kind == "auto":
        kind = "ca-distances" if data.engine == "go" else "torsions"
    out = []
    for t in data.trajectories:
        if kind == "q-rmsd":
            rmsd = t.observables.get("rmsd", t.observables.get("rmsd_ca"))
            if "q" not in t.observables or rmsd is None:
                raise AnalysisError(
                    "features q-rmsd need the observables q and rmsd (or rmsd_ca); these results "
                    f"have {', '.join(t.observables) or 'none'}; use --features ca-distances"
                )
            out.append(np.column_stack([t.observables["q"], rmsd / 10.0]))
            continue
        traj = mdtraj.Trajectory(t.xyz_nm.astype(np.float32), data.topology)
        if kind == "torsions":
            _, phi = mdtraj.compute_phi(traj)
            _, psi = mdtraj.compute_psi(traj)
            ang = np.concatenate([phi, psi], axis=1)
            if ang.shape[1] == 0:
                raise AnalysisError(
                    "backbone torsions need N, CA and C atoms; these frames have none (Go frames "
                    "are C-alpha beads); use --features ca-distances"
                )
            out.append(np.concatenate([np.sin(ang), np.cos(ang)], axis=1).astype(np.float64))
        else:
            ca = [a.index for a in data.topology.atoms if a.name == "CA"]
            pairs = np.array(
                [(ca[i], ca[j]) for i in range(len(ca)) for j in range(i + 3, len(ca))]
            )
            if len(pairs) == 0:
                raise AnalysisError(f"C-alpha distances need at least 4 residues; found {len(ca)}")
            d = mdtraj.compute_distances(traj, pairs, periodic=False)
            out.append(np.minimum(d, CAP_NM).astype(np.float64))
    for f in out:
        if not np.all(np.isfinite(f)):
            raise AnalysisError(f"features {kind} hold NaN (an observable or frame is NaN)")
    return kind, out


# -- the Markov model (pure: discrete trajectories in, numbers out) ----------------------------


def _msm(dtrajs: Sequence[np.ndarray], lag: int) -> tuple[Any, np.ndarray]:
    """A reversible MLE MSM on the largest connected set; and that set's microstates."""
    from deeptime.markov import TransitionCountEstimator
    from deeptime.markov.msm import MaximumLikelihoodMSM

    try:
        counts = TransitionCountEstimator(lagtime=lag, count_mode="sliding").fit(list(dtrajs))
        cm = counts.fetch_model().submodel_largest()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "did not converge" on tiny data; numbers still hold
            msm = MaximumLikelihoodMSM(reversible=True).fit(cm).fetch_model()
    except ValueError as e:  # deeptime: no connected set with a transition at this lag
        raise AnalysisError(
            f"no Markov model at a lag of {lag} frames ({e}): too little data or too many "
            "microstates; run longer, or use fewer --clusters or another --lag"
        ) from e
    return msm, np.asarray(cm.state_symbols)


def _tpt_mfpt(
    msm: Any, active: np.ndarray, a: np.ndarray, b: np.ndarray, lag_steps: float
) -> float | None:
    """Mean first passage A -> B, in steps: 1 / TPT rate (Noe et al. PNAS 2009), i.e. the
    time spent having last visited A per A -> B transition, the quantity a direct count
    measures (:func:`direct_mfpt`)."""
    ia = np.flatnonzero(np.isin(active, a))
    ib = np.flatnonzero(np.isin(active, b))
    if len(ia) == 0 or len(ib) == 0:
        return None
    rate = float(msm.reactive_flux(ia, ib).rate)
    if not math.isfinite(rate) or rate <= 0:
        return None
    return lag_steps / rate


def direct_mfpt(
    labels: Sequence[np.ndarray], frame_steps: float
) -> tuple[float | None, int, float]:
    """Mean first passage unfolded (0) -> folded (1) counted along trajectories of labels
    (0, 1, or -1 in between): the time whose last macrostate was 0, divided by the number of
    0 -> 1 transitions (the maximum-likelihood estimate for exponential waiting times, so a
    trajectory that ends unfolded still counts). Returns (steps or None, transitions, time)."""
    transitions = 0
    time_in = 0
    for lab in labels:
        last = -1
        for v in np.asarray(lab):
            if v >= 0:
                if last == 0 and v == 1:
                    transitions += 1
                last = int(v)
            if last == 0:
                time_in += 1
    t = time_in * frame_steps
    return (t / transitions if transitions else None), transitions, t


def _its(msm: Any, k: int, lag: int, frame_steps: int) -> tuple[float, ...]:
    n = min(k, msm.n_states - 1)
    if n < 1:
        return ()
    ts = np.asarray(msm.timescales(n), dtype=np.float64) * frame_steps  # deeptime: x lag
    _ = lag
    return tuple(float(x) for x in ts)


def choose_lag(lags: Sequence[int], slowest: Sequence[float]) -> tuple[int, str]:
    """The rule: the smallest lag whose slowest implied timescale is within ITS_CONVERGED of
    the next lag's (the model's slowest process no longer changes with the lag); if none,
    the longest lag tried, said so."""
    for i in range(len(lags) - 1):
        a, b = slowest[i], slowest[i + 1]
        if a > 0 and math.isfinite(a) and abs(b - a) <= ITS_CONVERGED * a:
            return lags[i], (
                f"smallest lag whose slowest implied timescale is within "
                f"{ITS_CONVERGED:.0%} of the next lag's ({lags[i + 1]} frames)"
            )
    return lags[-1], (
        "implied timescales did not converge within the lags the data allow; the longest lag "
        "tried is used (give --lag, or longer trajectories)"
    )


def markov_analysis(
    dtrajs: Sequence[np.ndarray],
    q: Sequence[np.ndarray] | None,
    *,
    frame_steps: int,
    params: AnalysisParams,
) -> MsmResult:
    """The MSM of discrete trajectories (microstate per frame) and, given Q per frame, its
    macrostates and MFPTs with a bootstrap over trajectories (seeded: same input, same
    numbers)."""
    dtrajs = [np.asarray(d, dtype=np.int32) for d in dtrajs]
    lengths = [len(d) for d in dtrajs]
    if not dtrajs or max(lengths) < 2:
        raise AnalysisError(
            "the trajectories have fewer than 2 frames each: no transition to count; run more "
            "generations (or a smaller report interval) before analysing"
        )
    n_states = int(max(int(d.max()) for d in dtrajs if len(d))) + 1
    longest = max(lengths)
    if params.lag is not None:
        if params.lag >= longest:
            raise AnalysisError(
                f"lag {params.lag} frames is not shorter than the longest trajectory "
                f"({longest} frames); give a shorter --lag"
            )
        candidates = sorted({*(c for c in LAG_CANDIDATES if c < longest // 2), params.lag})
    else:
        candidates = [c for c in LAG_CANDIDATES if c <= max(1, longest // 4)]
    lags: list[int] = []
    its: list[tuple[float, ...]] = []
    for lag in candidates:
        try:
            msm, _ = _msm(dtrajs, lag)
        except AnalysisError:
            continue  # no model at this lag: it is not a candidate
        ts = _its(msm, 5, lag, frame_steps)
        if ts:
            lags.append(lag)
            its.append(ts)
    if params.lag is not None:
        lag, rule = params.lag, "given (--lag)"
    elif not lags:
        raise AnalysisError(
            "the microstates are not connected at any lag: too little data for a Markov model; "
            "run longer, or use fewer --clusters"
        )
    else:
        lag, rule = choose_lag(lags, [t[0] for t in its])
    msm, active = _msm(dtrajs, lag)
    pi = np.zeros(n_states)
    pi[active] = msm.stationary_distribution
    mq = np.full(n_states, np.nan)
    folded: tuple[int, ...] = ()
    unfolded: tuple[int, ...] = ()
    if q is None:
        why = "the observables have no q column (a job without a reference structure)"
        folding = unfolding = Mfpt(steps=None, reason=why)
    else:
        allq = np.concatenate([np.asarray(x, dtype=np.float64) for x in q])
        alld = np.concatenate(dtrajs)
        if len(allq) != len(alld) or not np.all(np.isfinite(allq)):
            raise AnalysisError("Q must be finite and given for every frame")
        cnt = np.bincount(alld, minlength=n_states)
        with np.errstate(invalid="ignore", divide="ignore"):
            mq = np.bincount(alld, weights=allq, minlength=n_states) / cnt
        folded = tuple(int(s) for s in active if mq[s] >= params.q_folded)
        unfolded = tuple(int(s) for s in active if mq[s] <= params.q_unfolded)
        folding, unfolding = _mfpts(dtrajs, active, folded, unfolded, lag, frame_steps, params)
    return MsmResult(
        frame_steps=frame_steps,
        lags=tuple(lags),
        timescales=tuple(its),
        lag=lag,
        lag_rule=rule,
        active_states=len(active),
        stationary=pi,
        microstate_q=mq,
        folded=folded,
        unfolded=unfolded,
        folding=folding,
        unfolding=unfolding,
        q_folded=params.q_folded,
        q_unfolded=params.q_unfolded,
    )


def _mfpts(
    dtrajs: list[np.ndarray],
    active: np.ndarray,
    folded: tuple[int, ...],
    unfolded: tuple[int, ...],
    lag: int,
    frame_steps: int,
    params: AnalysisParams,
) -> tuple[Mfpt, Mfpt]:
    if not folded or not unfolded:
        which = "folded" if not folded else "unfolded"
        rule = f"mean Q >= {params.q_folded}" if not folded else f"mean Q <= {params.q_unfolded}"
        why = f"no {which} microstate ({rule}) was observed in the connected model"
        return Mfpt(steps=None, reason=why), Mfpt(steps=None, reason=why)
    f_arr, u_arr = np.array(folded), np.array(unfolded)
    lag_steps = float(lag * frame_steps)
    msm, act = _msm(dtrajs, lag)
    fold = _tpt_mfpt(msm, act, u_arr, f_arr, lag_steps)
    unfold = _tpt_mfpt(msm, act, f_arr, u_arr, lag_steps)
    rng = np.random.default_rng(params.seed)
    fold_bs: list[float] = []
    unfold_bs: list[float] = []
    if len(dtrajs) >= 2:
        for _ in range(params.bootstrap):
            pick = rng.integers(0, len(dtrajs), size=len(dtrajs))
            sample = [dtrajs[i] for i in pick]
            if max(len(d) for d in sample) <= lag:
                continue
            try:
                m, a = _msm(sample, lag)
            except AnalysisError:  # a replicate with no transition at this lag
                continue
            f = _tpt_mfpt(m, a, u_arr, f_arr, lag_steps)
            u = _tpt_mfpt(m, a, f_arr, u_arr, lag_steps)
            if f is not None:
                fold_bs.append(f)
            if u is not None:
                unfold_bs.append(u)

    def mk(value: float | None, reps: list[float]) -> Mfpt:
        if value is None:
            return Mfpt(steps=None, reason="no transition between the macrostates at this lag")
        if len(reps) < 2:
            why = (
                "one trajectory only: no bootstrap over trajectories"
                if len(dtrajs) < 2
                else "too few bootstrap replicates had a transition"
            )
            return Mfpt(steps=value, replicates=len(reps), reason=f"no interval: {why}")
        lo, hi = np.percentile(reps, [2.5, 97.5])
        return Mfpt(steps=value, low=float(lo), high=float(hi), replicates=len(reps))

    return mk(fold, fold_bs), mk(unfold, unfold_bs)


# -- the whole pipeline ------------------------------------------------------------------------


def analyze(data: ResultsData, params: AnalysisParams | None = None) -> Analysis:
    """Features -> TICA -> k-means -> MSM, macrostates and MFPTs of a job's results."""
    from deeptime.clustering import KMeans
    from deeptime.decomposition import TICA

    params = params or AnalysisParams()
    trajs = data.trajectories
    if not trajs:
        raise AnalysisError("no trajectories: nothing to analyse")
    lengths = [len(t.steps) for t in trajs]
    total = sum(lengths)
    if max(lengths) < 2:
        raise AnalysisError(
            f"every trajectory has fewer than 2 frames ({total} in all): no transition to "
            "count; run more generations before analysing"
        )
    frame_steps = _frame_steps(trajs)
    kind, feats = featurize(data, params.features)
    longest = max(lengths)
    tica_lag = params.tica_lag or max(1, min(10, longest // 10))
    if tica_lag >= longest:
        raise AnalysisError(
            f"TICA lag {tica_lag} frames is not shorter than the longest trajectory ({longest})"
        )
    usable = [f for f in feats if len(f) > tica_lag]
    dim = min(params.tica_dim, feats[0].shape[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tica = TICA(lagtime=tica_lag, dim=dim).fit(usable).fetch_model()
            tics = [np.asarray(tica.transform(f), dtype=np.float64) for f in feats]
    except (ValueError, np.linalg.LinAlgError) as e:
        raise AnalysisError(f"TICA failed on these features ({kind}): {e}") from e
    if not all(np.all(np.isfinite(t)) for t in tics):
        raise AnalysisError(f"TICA of the {kind} features gave NaN: the frames barely move")
    clusters = max(2, min(params.clusters, total // 10))
    if total < 20:
        raise AnalysisError(
            f"{total} frames in all: too few for microstates (at least 20); run longer"
        )
    stacked = np.concatenate(tics)
    km = (
        KMeans(
            n_clusters=clusters,
            init_strategy="kmeans++",
            max_iter=200,
            fixed_seed=params.seed + 1,
            n_jobs=1,
        )
        .fit(stacked)
        .fetch_model()
    )
    dtrajs = [np.asarray(km.transform(t), dtype=np.int32) for t in tics]
    q = [t.observables["q"] for t in trajs] if all("q" in t.observables for t in trajs) else None
    msm = markov_analysis(dtrajs, q, frame_steps=frame_steps, params=params)
    return Analysis(
        engine=data.engine,
        ps_per_step=data.ps_per_step,
        params=params,
        features=kind,
        n_features=int(feats[0].shape[1]),
        trajectories=len(trajs),
        frames=total,
        clusters=clusters,
        tica_lag=tica_lag,
        tica_dim=dim,
        tics=tuple(tics),
        dtrajs=tuple(dtrajs),
        msm=msm,
    )


def _frame_steps(trajs: Sequence[TrajectoryData]) -> int:
    """Steps between frames (the report interval), the same for every trajectory."""
    gaps = np.concatenate([np.diff(t.steps) for t in trajs if len(t.steps) > 1])
    if len(gaps) == 0 or np.any(gaps <= 0):
        raise AnalysisError("frame steps must increase along every trajectory")
    values = np.unique(gaps)
    if len(values) != 1:
        raise AnalysisError(
            f"frames are not evenly spaced (steps between frames: {values[:5].tolist()}); an "
            "MSM needs one frame interval"
        )
    return int(values[0])


# -- output ------------------------------------------------------------------------------------


def _summary(a: Analysis) -> dict[str, Any]:
    m = a.msm
    units = "steps" if a.ps_per_step is None else f"steps; ns at {a.ps_per_step:g} ps per step"
    lag_ns = None if a.ps_per_step is None else m.lag * m.frame_steps * a.ps_per_step / 1000
    return {
        "engine": a.engine,
        "units": units,
        "data": {"trajectories": a.trajectories, "frames": a.frames, "frame_steps": m.frame_steps},
        "features": {"kind": a.features, "count": a.n_features, "ca_distance_cap_nm": CAP_NM},
        "tica": {"lag_frames": a.tica_lag, "dim": a.tica_dim, "scaling": "kinetic map"},
        "clustering": {"method": "k-means++", "clusters": a.clusters, "seed": a.params.seed + 1},
        "msm": {
            "estimator": "reversible maximum likelihood, largest connected set",
            "lag_frames": m.lag,
            "lag_steps": m.lag * m.frame_steps,
            **({"lag_ns": lag_ns} if lag_ns is not None else {}),
            "lag_rule": m.lag_rule,
            "active_states": m.active_states,
            "implied_timescales_steps": {
                str(lag): list(ts) for lag, ts in zip(m.lags, m.timescales, strict=True)
            },
        },
        "macrostates": {
            "rule": (
                f"a microstate is folded if its frames' mean Q >= {m.q_folded}, unfolded if "
                f"<= {m.q_unfolded}; in between is neither (transition region)"
            ),
            "q_folded": m.q_folded,
            "q_unfolded": m.q_unfolded,
            "folded_microstates": len(m.folded),
            "unfolded_microstates": len(m.unfolded),
            "folded_population": float(m.stationary[list(m.folded)].sum()) if m.folded else None,
            "unfolded_population": (
                float(m.stationary[list(m.unfolded)].sum()) if m.unfolded else None
            ),
        },
        "mfpt": {
            "method": (
                "transition path theory: 1/rate, the time spent having last been in the start "
                "macrostate per transition into the target; 95% interval from "
                f"{a.params.bootstrap} bootstrap resamples of whole trajectories (seed "
                f"{a.params.seed})"
            ),
            "folding": m.folding.as_dict(a.ps_per_step),
            "unfolding": m.unfolding.as_dict(a.ps_per_step),
        },
    }


def _its_png(a: Analysis) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = a.msm
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    lag_steps = np.array(m.lags, dtype=np.float64) * m.frame_steps
    k = max((len(t) for t in m.timescales), default=0)
    for i in range(k):
        ys = [t[i] if i < len(t) else np.nan for t in m.timescales]
        ax.plot(lag_steps, ys, "o-", lw=1, ms=3, label=f"process {i + 1}")
    if len(lag_steps):
        ax.fill_between(lag_steps, lag_steps.min() * 0.5, lag_steps, color="0.85", label="t < lag")
    ax.axvline(
        m.lag * m.frame_steps,
        color="k",
        ls="--",
        lw=1,
        label=f"chosen lag {m.lag * m.frame_steps:,} steps",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lag (steps)")
    ax.set_ylabel("implied timescale (steps)")
    ax.set_title("Implied timescales")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig, plt)


def _fes_png(a: Analysis) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.concatenate(a.tics)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    if y.shape[1] >= 2:
        h, xe, ye = np.histogram2d(y[:, 0], y[:, 1], bins=50)
        with np.errstate(divide="ignore"):
            f = -np.log(h / h.sum())
        f -= np.nanmin(f[np.isfinite(f)])
        f[~np.isfinite(f)] = np.nan
        im = ax.pcolormesh(xe, ye, f.T, cmap="viridis", shading="flat")
        fig.colorbar(im, ax=ax, label="free energy (kT)")
        ax.set_ylabel("TIC 2")
    else:
        h, xe = np.histogram(y[:, 0], bins=50)
        with np.errstate(divide="ignore"):
            f = -np.log(h / h.sum())
        ax.plot(0.5 * (xe[1:] + xe[:-1]), f - np.nanmin(f[np.isfinite(f)]))
        ax.set_ylabel("free energy (kT)")
    ax.set_xlabel("TIC 1")
    ax.set_title(f"Free energy on the first TICs ({a.features} features)")
    fig.tight_layout()
    return _png(fig, plt)


def _png(fig: Any, plt: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _readme(a: Analysis) -> str:
    m = a.msm
    return "\n".join(
        [
            f"foldnet analysis: a Markov state model of this job's trajectories ({a.engine})",
            "",
            "analysis.json            every number: data, features, TICA, clustering, the MSM's",
            "                         lag and implied timescales, macrostates, folding and",
            "                         unfolding mean first-passage times (MFPT) with 95% intervals",
            "                         (steps" + ("" if a.ps_per_step is None else ", and ns") + ")",
            "implied_timescales.png   implied timescales against the lag; the chosen lag dashed",
            "free_energy.png          free energy -ln p (kT) on the first two TICs",
            "",
            "Method (deeptime): per frame, features "
            + (
                f"(C-alpha pair distances with |i-j| >= 3, capped at {CAP_NM} nm)"
                if a.features == "ca-distances"
                else f"({a.features})"
            ),
            f"-> TICA (lag {a.tica_lag} frames, {a.tica_dim} dimensions, kinetic map) -> k-means++",
            f"({a.clusters} microstates) -> reversible maximum-likelihood MSM at lag {m.lag}",
            "frames",
            f"({m.lag * m.frame_steps:,} steps): {m.lag_rule}.",
            f"Macrostates: a microstate is folded if its frames' mean Q >= {m.q_folded}, unfolded",
            f"if its mean Q <= {m.q_unfolded}. MFPT = 1 / rate of transition path theory: the time",
            "spent having last been in the start macrostate per transition into the target",
            "(what a direct count along long trajectories measures). Intervals: percentiles",
            "2.5 and 97.5 of MSMs re-estimated from trajectories resampled with replacement",
            "(microstates fixed; seeded, so the same input gives the same numbers).",
            "",
        ]
    )


def most_populated_centre(a: Analysis) -> tuple[int, int]:
    """The frame (trajectory index, frame index) nearest, in TICA coordinates, to the centre
    of the microstate of highest stationary probability: a representative structure of the
    most populated state when there is no reference to measure against."""
    state = int(np.argmax(a.msm.stationary))
    best: tuple[float, int, int] | None = None
    members = [t[d == state] for t, d in zip(a.tics, a.dtrajs, strict=True)]
    centre = np.concatenate(members).mean(axis=0)
    for i, (t, d) in enumerate(zip(a.tics, a.dtrajs, strict=True)):
        for j in np.flatnonzero(d == state):
            dist = float(np.sum((t[j] - centre) ** 2))
            if best is None or dist < best[0]:
                best = (dist, i, int(j))
    assert best is not None  # the state of highest probability has frames
    return best[1], best[2]


def analysis_files(a: Analysis) -> dict[str, bytes]:
    """The analysis as files, name -> bytes (the service serves them as a zip)."""
    return {
        "analysis.json": (json.dumps(_summary(a), indent=1) + "\n").encode(),
        "implied_timescales.png": _its_png(a),
        "free_energy.png": _fes_png(a),
        "README.txt": _readme(a).encode(),
    }


def write_analysis(a: Analysis, out: str | Path) -> list[Path]:
    """Write :func:`analysis_files` into ``out`` (atomically, file by file)."""
    return [atomic_write(Path(out) / name, data) for name, data in analysis_files(a).items()]
