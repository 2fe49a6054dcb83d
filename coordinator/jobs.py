"""Jobs and work units: Folding@home's Project/Run/Clone/Gen, with content-addressed WUs.

A job is ``runs`` starting structures x ``clones`` trajectories each x ``gens`` generations;
one WU is one generation of one trajectory. A WU's id is SHA-256 over a canonical encoding of
(job id, run, clone, gen, input-state digest, engine parameters), and its seed is derived
from that id (docs/architecture.md §3), so anyone holding the inputs can re-derive both.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from coordinator.errors import SubmissionError

ENGINES = ("go", "openmm")
#: Where each new generation starts (coordinator/adaptive.py): ``none``, from its own
#: trajectory's last state (Project/Run/Clone/Gen as Folding@home runs it); the others, from
#: a validated boundary state of the job that the policy chooses.
ADAPTIVE_POLICIES = ("none", "least-counts", "fast")
MAX_TRAJECTORIES = 100_000
MAX_GENS = 100_000
MAX_STEPS_PER_WU = 100_000_000
MAX_TOTAL_STEPS = 10**13
#: WUs of one job (runs x clones x gens): each is scheduler state, events and ledger entries,
#: whatever its steps, so the count is bounded on its own (a service sets a lower limit).
MAX_WUS_PER_JOB = 10**7


def _int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SubmissionError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SubmissionError(f"{name} must be in [{lo:,}, {hi:,}], got {value:,}")
    return value


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a lab asks for; immutable once submitted. Validated on construction."""

    engine: str
    system_digest: bytes
    runs: int
    clones: int
    gens: int
    steps_per_wu: int
    segment_steps: int
    report_steps: int
    temperature: float
    min_quorum: int = 2
    max_error_results: int = 3
    max_total_results: int = 6
    deadline_s: float = 600.0
    spot_check_segments: int = 2
    #: Fraction of quorum-validated WUs also spot-checked by a volunteer outside the quorum,
    #: so that two identities of one cheater agreeing on a fake result are caught too. An
    #: audit that no such volunteer takes within ``deadline_s`` is skipped (liveness).
    audit_rate: float = 0.1
    #: One of :data:`ADAPTIVE_POLICIES`.
    adaptive: str = "none"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise SubmissionError(
                f"unknown engine {self.engine!r}: expected one of {', '.join(ENGINES)}"
            )
        if not isinstance(self.system_digest, bytes) or len(self.system_digest) != 32:
            raise SubmissionError("system_digest must be 32 bytes (SHA-256 of the system)")
        _int("runs", self.runs, 1, MAX_TRAJECTORIES)
        _int("clones", self.clones, 1, MAX_TRAJECTORIES)
        if self.runs * self.clones > MAX_TRAJECTORIES:
            raise SubmissionError(
                f"runs x clones = {self.runs * self.clones:,} trajectories; the limit is "
                f"{MAX_TRAJECTORIES:,}"
            )
        _int("gens", self.gens, 1, MAX_GENS)
        wus = self.runs * self.clones * self.gens
        if wus > MAX_WUS_PER_JOB:
            raise SubmissionError(
                f"runs x clones x gens = {wus:,} work units; the limit is {MAX_WUS_PER_JOB:,} "
                "(fewer, longer WUs: raise steps_per_wu)"
            )
        _int("steps_per_wu", self.steps_per_wu, 1, MAX_STEPS_PER_WU)
        _int("segment_steps", self.segment_steps, 1, self.steps_per_wu)
        _int("report_steps", self.report_steps, 1, self.steps_per_wu)
        for name, div in (
            ("segment_steps", self.segment_steps),
            ("report_steps", self.report_steps),
        ):
            if self.steps_per_wu % div:
                raise SubmissionError(
                    f"steps_per_wu ({self.steps_per_wu:,}) must be a multiple of {name} ({div:,})"
                )
        total = self.runs * self.clones * self.gens * self.steps_per_wu
        if total > MAX_TOTAL_STEPS:
            raise SubmissionError(
                f"the job asks for {total:.3g} steps in all; the limit is {MAX_TOTAL_STEPS:.0e}"
            )
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise SubmissionError(f"temperature must be a finite number > 0, got {t!r}")
        _int("min_quorum", self.min_quorum, 1, 10)
        _int("max_error_results", self.max_error_results, 1, 100)
        _int("max_total_results", self.max_total_results, self.min_quorum, 100)
        d = self.deadline_s
        if isinstance(d, bool) or not isinstance(d, int | float) or not 1 <= d <= 30 * 86400:
            raise SubmissionError(f"deadline_s must be in [1, 2592000] seconds, got {d!r}")
        _int("spot_check_segments", self.spot_check_segments, 1, 1000)
        a = self.audit_rate
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1:
            raise SubmissionError(f"audit_rate must be a number in [0, 1], got {a!r}")
        if self.adaptive not in ADAPTIVE_POLICIES:
            raise SubmissionError(
                f"adaptive must be one of {', '.join(ADAPTIVE_POLICIES)}, got {self.adaptive!r}"
            )

    @property
    def n_segments(self) -> int:
        return self.steps_per_wu // self.segment_steps

    def engine_parameters(self) -> bytes:
        """Canonical JSON of everything that changes what a WU computes."""
        keep = ("engine", "steps_per_wu", "segment_steps", "report_steps", "temperature")
        params = {k: getattr(self, k) for k in keep} | {"system_digest": self.system_digest.hex()}
        if self.adaptive != "none":  # where generations start (plain jobs keep their digest)
            params["adaptive"] = self.adaptive
        return json.dumps(params, sort_keys=True, separators=(",", ":")).encode()

    def spec_digest(self) -> bytes:
        """SHA-256 of :meth:`engine_parameters`: the job's spec as the ledger states it (its
        ``job submitted`` entry, and every ``result validated`` entry of its WUs)."""
        return hashlib.sha256(self.engine_parameters()).digest()


@dataclass(frozen=True, slots=True, order=True)
class TrajectoryKey:
    job: str
    run: int
    clone: int


def attempt_params(params: bytes, attempt: int) -> bytes:
    """The parameters a WU's id is computed with: the job's :meth:`JobSpec.engine_parameters`,
    and for a generation computed again after a retraction (``attempt`` >= 1) its attempt,
    so that the new WU has an id of its own."""
    return params if attempt == 0 else params + b"#attempt=%d" % attempt


def wu_id(job: str, run: int, clone: int, gen: int, input_digest: bytes, params: bytes) -> bytes:
    """The content id of a WU (SHA-256 over a canonical, length-prefixed encoding)."""
    data = [b"foldnet/wu/v1\x00"]
    for part in (job.encode(), input_digest, params):
        data += (len(part).to_bytes(8, "little"), part)
    data += (run.to_bytes(8, "little"), clone.to_bytes(8, "little"), gen.to_bytes(8, "little"))
    # joined for one hash call (a job of 10^6 WUs computes 10^6 ids, again on every replay)
    return hashlib.sha256(b"".join(data)).digest()
