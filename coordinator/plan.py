"""The job plan: what a lab asks for, in one object shared by every face.

``foldnet submit`` (both to a folder and to a URL), ``POST /v1/jobs``, the Python API
(:class:`JobPlan` with :func:`coordinator.runner.submit_job` or
:meth:`coordinator.labclient.LabClient.submit`) and the preparation
(:mod:`coordinator.prepare`) all take a :class:`JobPlan`. The engine-aware defaults and
ranges live here and nowhere else (DESIGN section 12: a kelvin temperature is never read as
reduced units, nor the reverse).

A plan is checked on construction, cheaply (numbers, ranges, the shape of the input); what
needs the structure itself (parsing, the size limits, PDBFixer, minimisation) is the
preparation's business and runs in a separate process (:mod:`coordinator.preparer`).
Once prepared, a plan becomes the :class:`~coordinator.jobs.JobSpec` the scheduler keeps.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from coordinator.errors import SubmissionError
from coordinator.jobs import ADAPTIVE_POLICIES, ENGINES, JobSpec
from sims.errors import StructureError
from sims.structure import parse_sequence

#: Steps of the Go model (``sims.go.engine.GoParameters.timestep``), in tau.
GO_TIMESTEP_TAU = 0.005
#: The Go engine's own bound on temperature (``sims.go.engine.MAX_TEMPERATURE``), eps/kB.
GO_MAX_TEMPERATURE = 5.0
#: The openmm engine's time step (``sims.allatom.engine.TIMESTEP_FS``), femtoseconds.
OPENMM_TIMESTEP_FS = 4.0
#: The openmm engine's own bound on temperature (``sims.allatom.engine.MAX_TEMPERATURE_K``).
OPENMM_MAX_TEMPERATURE_K = 1000.0
#: The longest sequence the openmm engine builds (``sims.allatom.prepare.MAX_SEQUENCE_LENGTH``).
MAX_SEQUENCE_LENGTH = 500
MAX_SEED = 2**31 - 1
MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class EngineRules:
    """One engine's units, defaults and the temperatures a scientist would accept."""

    engine: str
    model: str  # what the engine simulates, for descriptions
    unit: str  # the temperature's unit, as messages and help print it
    unit_name: str  # ... spelt out
    temperature: float  # default
    usual: tuple[float, float]  # accepted without allow_unusual_temperature
    limit: float  # the engine's hard upper bound (never accepted beyond)
    timestep: float  # in ``time_unit``
    time_unit: str  # "tau" or "fs"
    steps_per_wu: int
    segment_steps: int
    report_steps: int
    #: The largest system the engine prepares and runs in reasonable time (None: no limit
    #: beyond a service's own): amino-acid residues, then particles once prepared.
    max_residues: int | None = None
    max_atoms: int | None = None

    def duration(self, steps: int) -> str:
        """``steps`` as simulated time: ``"2.5 ps"``, ``"0.5 ns"``, ``"500 tau"``."""
        t = steps * self.timestep
        if self.time_unit == "tau":
            return f"{t:,.4g} tau"
        ps = t / 1000.0
        if ps >= 1000.0:
            return f"{ps / 1000.0:,.4g} ns"
        if ps >= 1.0:
            return f"{ps:,.4g} ps"
        return f"{t:,.4g} fs"


#: The engines' rules. Go: reduced units; the defaults are what ``foldnet submit`` always
#: used (100,000-step WUs of 500 tau, segments of 100 tau, a frame every 5 tau); villin
#: folds near 0.78 eps/kB. openmm: kelvin at 4 fs; a frame every 10 ps, segments of 2.5 ps
#: (the longest over which another determinism class can still check a result, DESIGN
#: section 4) and WUs of 0.5 ns.
RULES: dict[str, EngineRules] = {
    "go": EngineRules(
        engine="go",
        model="C-alpha Go model",
        unit="eps/kB",
        unit_name="reduced units of epsilon/k_B",
        temperature=0.7,
        usual=(0.2, 2.0),
        limit=GO_MAX_TEMPERATURE,
        timestep=GO_TIMESTEP_TAU,
        time_unit="tau",
        steps_per_wu=100_000,
        segment_steps=20_000,
        report_steps=1000,
    ),
    "openmm": EngineRules(
        engine="openmm",
        model="all-atom Amber ff14SB + GBn2 implicit solvent",
        unit="K",
        unit_name="kelvin",
        temperature=300.0,
        usual=(200.0, 500.0),
        limit=OPENMM_MAX_TEMPERATURE_K,
        timestep=OPENMM_TIMESTEP_FS,
        time_unit="fs",
        steps_per_wu=125_000,
        segment_steps=625,
        report_steps=2500,
        # Measured on a CPU thread: 1BHL chain A (133 residues, 2,333 atoms) costs 1.2 s per
        # force evaluation with the GB cutoff; mTOR chain A (~1,100 residues, ~17,000 atoms)
        # would need hours to minimise and days per 0.5-ns WU.
        max_residues=600,
        max_atoms=10_000,
    ),
}

#: What each field means, for ``foldnet submit --help`` and the REST schema alike.
HELP: dict[str, str] = {
    "engine": "go (C-alpha Go model, reduced units) or openmm (all-atom, kelvin)",
    "pdb": "PDB file contents (go needs one)",
    "sequence": "one-letter amino-acid sequence, built as an extended chain (openmm)",
    "chain": "chain of the PDB (default: the first)",
    "reference": "PDB file contents of the reference structure that RMSD, Q and the best "
    "structure are measured against (openmm; default: the input PDB, none for a sequence; "
    "go: always the native it is built from)",
    "runs": "starting structures",
    "clones": "trajectories per start",
    "gens": "generations (work units) per trajectory",
    "steps_per_wu": "steps per work unit (default: go 100,000 = 500 tau; openmm 125,000 = "
    "0.5 ns at 4 fs)",
    "segment_steps": "steps per verifiable segment (default: go 20,000 = 100 tau; openmm "
    "625 = 2.5 ps)",
    "report_steps": "steps between frames (default: go 1,000 = 5 tau; openmm 2,500 = 10 ps)",
    "temperature": "go: eps/kB (default 0.7, accepted 0.2-2.0); openmm: kelvin (default "
    "300, accepted 200-500)",
    "allow_unusual_temperature": "accept a temperature outside the usual range (up to the "
    "engine's limit: go 5 eps/kB, openmm 1000 K)",
    "min_quorum": "volunteers that must agree on each work unit",
    "deadline_s": "seconds a volunteer has for one work unit",
    "audit_rate": "share of validated work units audited (default: the network's)",
    "seed": "seed of the start states' velocities",
    "name": "a name for the job",
    "adaptive": "where each new generation starts: none (its own trajectory's last state), "
    "least-counts (the least visited validated state) or fast (folding progress balanced "
    "with under-sampling); needs a reference (always there for go)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanLimits:
    """A service's limits on one job (``None``: no limit), checked before anything is stored
    (the plan's numbers) and during preparation (the structure's size)."""

    max_job_steps: int | None = None
    max_job_wus: int | None = None
    min_steps_per_wu: int | None = None
    max_residues: int | None = None
    max_atoms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPlan:
    """One job as a lab asks for it: the input, the engine and its parameters, the ensemble.

    Build one with :meth:`create` (which fills the engine's defaults for what is not given)
    or directly with every engine parameter. Invalid plans raise
    :class:`~coordinator.errors.SubmissionError` naming what was wrong, what was expected
    (with its unit) and the remedy.
    """

    engine: str
    pdb: str | None = None  # PDB text
    sequence: str | None = None
    chain: str | None = None
    #: PDB text of the structure RMSD and Q are measured against (openmm only; ``None``: the
    #: input PDB when there is one). Its chain ``chain`` (else its first) is used.
    reference: str | None = None
    #: How messages name the structure (a file's path; "the uploaded PDB" over HTTP).
    source: str = "the uploaded PDB"
    runs: int = 1
    clones: int = 2
    gens: int = 2
    steps_per_wu: int
    segment_steps: int
    report_steps: int
    temperature: float
    allow_unusual_temperature: bool = False
    min_quorum: int = 2
    deadline_s: float = 600.0
    audit_rate: float | None = None
    seed: int = 1
    name: str = ""
    adaptive: str = "none"

    @classmethod
    def create(cls, *, engine: str, **given: Any) -> JobPlan:
        """A plan with the engine's defaults for every parameter not given (or given as
        ``None``): what the CLI, the REST API and Python callers use."""
        rules = _rules(engine)
        values = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SubmissionError(f"unknown job parameter(s): {', '.join(unknown)}")
        for name in ("steps_per_wu", "segment_steps", "report_steps", "temperature"):
            values.setdefault(name, getattr(rules, name))
        return cls(engine=engine, **values)

    def __post_init__(self) -> None:
        rules = _rules(self.engine)
        given = [x for x in (self.pdb, self.sequence) if x is not None]
        if len(given) != 1:
            raise SubmissionError("give exactly one of a PDB file or a sequence")
        if self.pdb is not None and (not isinstance(self.pdb, str) or not self.pdb.strip()):
            raise SubmissionError(f"{self.source} is empty: expected the text of a PDB file")
        if self.sequence is not None:
            self._check_sequence()
        if self.engine == "go" and self.pdb is None:
            raise SubmissionError(
                "the go engine needs a native structure: give a PDB file (a sequence can "
                "only be run by the openmm engine)"
            )
        if self.reference is not None:
            self._check_reference()
        if self.adaptive not in ADAPTIVE_POLICIES:
            raise SubmissionError(
                f"adaptive must be one of {', '.join(ADAPTIVE_POLICIES)}, got {self.adaptive!r}"
            )
        if self.adaptive != "none" and self.pdb is None and self.reference is None:
            raise SubmissionError(
                "adaptive sampling chooses starts by Q and RMSD to a reference: a job built "
                "from a sequence needs one (--reference PDB, REST: reference)"
            )
        if self.chain is not None and (
            not isinstance(self.chain, str) or not 1 <= len(self.chain) <= 4
        ):
            raise SubmissionError(f"chain must be a chain id of 1-4 characters, got {self.chain!r}")
        if not isinstance(self.allow_unusual_temperature, bool):
            raise SubmissionError("allow_unusual_temperature must be true or false")
        _check_temperature(rules, self.temperature, self.allow_unusual_temperature)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SubmissionError(f"seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise SubmissionError(f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME:
            raise SubmissionError(f"name must be text of at most {MAX_NAME} characters")
        self.spec(b"\0" * 32)  # the generic rules (counts, divisibility, quorum, deadline)

    def _check_sequence(self) -> None:
        seq = self.sequence
        if not isinstance(seq, str) or not seq:
            raise SubmissionError("the sequence is empty: expected one-letter amino-acid codes")
        if self.engine != "openmm":
            raise SubmissionError(
                "a sequence can only be run by the openmm engine: give --engine openmm, or a "
                "PDB file for the go engine"
            )
        if len(seq) > MAX_SEQUENCE_LENGTH:
            raise SubmissionError(
                f"the sequence has {len(seq):,} residues: at most {MAX_SEQUENCE_LENGTH} can be "
                "built as an extended chain; give a PDB file for a larger protein"
            )
        try:
            parse_sequence(seq)
        except StructureError as e:
            raise SubmissionError(str(e)) from e

    def _check_reference(self) -> None:
        if self.engine != "openmm":
            raise SubmissionError(
                f"a separate reference structure applies to openmm jobs only: the {self.engine} "
                "engine measures Q and RMSD against the native it is built from (the PDB given)"
            )
        if not isinstance(self.reference, str) or not self.reference.strip():
            raise SubmissionError("the reference is empty: expected the text of a PDB file")

    # -- what the plan becomes -------------------------------------------------------------

    @property
    def rules(self) -> EngineRules:
        return RULES[self.engine]

    @property
    def wus(self) -> int:
        return self.runs * self.clones * self.gens

    @property
    def total_steps(self) -> int:
        return self.wus * self.steps_per_wu

    def spec(self, system_digest: bytes) -> JobSpec:
        """The scheduler's :class:`JobSpec` for the prepared system ``system_digest``."""
        extra: dict[str, Any] = {} if self.audit_rate is None else {"audit_rate": self.audit_rate}
        return JobSpec(
            engine=self.engine,
            system_digest=system_digest,
            runs=self.runs,
            clones=self.clones,
            gens=self.gens,
            steps_per_wu=self.steps_per_wu,
            segment_steps=self.segment_steps,
            report_steps=self.report_steps,
            temperature=float(self.temperature),
            min_quorum=self.min_quorum,
            deadline_s=self.deadline_s,
            adaptive=self.adaptive,
            **extra,
        )

    def check(self, limits: PlanLimits) -> None:
        """Refuse a plan over a service's limits on its numbers (the structure's size is
        checked while it is prepared)."""
        wus, total = self.wus, self.total_steps
        if limits.max_job_steps is not None and total > limits.max_job_steps:
            raise SubmissionError(
                f"the plan asks for {total:,} steps in all (runs x clones x gens x "
                f"steps_per_wu); this service's limit is {limits.max_job_steps:,}"
            )
        if limits.max_job_wus is not None and wus > limits.max_job_wus:
            raise SubmissionError(
                f"the plan has {wus:,} work units (runs x clones x gens); this service's "
                f"limit is {limits.max_job_wus:,}: fewer, longer WUs (a larger steps_per_wu)"
            )
        if limits.min_steps_per_wu is not None and self.steps_per_wu < limits.min_steps_per_wu:
            raise SubmissionError(
                f"steps_per_wu is {self.steps_per_wu:,}; this service takes at least "
                f"{limits.min_steps_per_wu:,} steps per work unit"
            )
        if (
            self.sequence is not None
            and limits.max_residues is not None
            and len(self.sequence) > limits.max_residues
        ):
            raise SubmissionError(
                f"the sequence has {len(self.sequence):,} residues; this service's limit is "
                f"{limits.max_residues:,}"
            )

    def describe(self) -> str:
        """The plan in a lab's words, with time in the engine's units."""
        r = self.rules
        per_traj = self.gens * self.steps_per_wu
        trajs = self.runs * self.clones
        what = "sequence " + _short(self.sequence) if self.sequence is not None else self.source
        if self.reference is not None:
            what += " (RMSD and Q against the given reference)"
        return (
            f"{self.engine} ({r.model}) at {self.temperature:g} {r.unit}, {what}: "
            f"{self.runs} run(s) x {self.clones} clone(s) x {self.gens} generation(s); "
            f"work units of {self.steps_per_wu:,} steps ({r.duration(self.steps_per_wu)}) in "
            f"segments of {self.segment_steps:,} ({r.duration(self.segment_steps)}), a frame "
            f"every {self.report_steps:,} steps ({r.duration(self.report_steps)}); "
            f"{r.duration(per_traj)} per trajectory, {r.duration(per_traj * trajs)} in all "
            f"(time step {r.timestep:g} {r.time_unit})"
            + ("" if self.adaptive == "none" else f"; adaptive sampling: {self.adaptive}")
        )

    def parameters(self) -> dict[str, Any]:
        """The engine and ensemble parameters (no input), as progress reports show them."""
        d = self.to_json()
        for k in ("pdb", "sequence", "chain", "reference", "source", "name"):
            d.pop(k)
        return d

    # -- plain data ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (what the store keeps, and what ``POST /v1/jobs`` takes but ``source``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_request(self) -> dict[str, Any]:
        """The body of ``POST /v1/jobs`` for this plan."""
        d = self.to_json()
        d.pop("source")
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobPlan:
        try:
            return cls(**data)
        except TypeError as e:
            raise SubmissionError(f"not a job plan: {e}") from e

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


def _rules(engine: object) -> EngineRules:
    if not isinstance(engine, str) or engine not in RULES:
        raise SubmissionError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    return RULES[engine]


def _check_temperature(rules: EngineRules, t: object, allow_unusual: bool) -> None:
    u = rules.unit
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise SubmissionError(
            f"temperature must be a finite number in {rules.unit_name} ({u}) for the "
            f"{rules.engine} engine, got {t!r}"
        )
    lo, hi = rules.usual
    hint = ""
    if rules.engine == "go" and t > 10:
        hint = (
            f"; {t:g} looks like kelvin, but the go engine takes reduced units (villin folds "
            "near 0.78 eps/kB)"
        )
    elif rules.engine == "openmm" and t < 10:
        hint = (
            f"; {t:g} looks like the Go model's reduced units (eps/kB), but the openmm engine "
            "takes kelvin (300 K is room temperature)"
        )
    if t <= 0 or t > rules.limit:
        raise SubmissionError(
            f"temperature {t:g} {u} is outside what the {rules.engine} engine can run: "
            f"expected more than 0 and at most {rules.limit:g} {u} ({rules.unit_name}){hint}"
        )
    if not lo <= t <= hi and not allow_unusual:
        raise SubmissionError(
            f"temperature {t:g} {u} is outside {lo:g}-{hi:g} {u}, the usual range of the "
            f"{rules.engine} engine ({rules.unit_name}){hint}. If you mean it, say so: "
            "--allow-unusual-temperature (REST: allow_unusual_temperature: true)"
        )


def _short(seq: str | None, n: int = 20) -> str:
    s = seq or ""
    return s if len(s) <= n else f"{s[:n]}... ({len(s)} residues)"
