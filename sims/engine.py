"""The one engine contract, and the segment driver both engines share.

An engine wraps a *prepared* system (immutable parameters) and runs WUs on it. The driver
here cuts a WU into segments, seeds segment ``k`` with ``segment_seed(wu_seed, k)`` and
starts it from the boundary state alone. That is what makes a segment recomputable in
isolation: a verifier given boundary ``k`` and the WU seed reproduces boundary ``k+1``.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from sims.errors import ParameterError, SimulationError, StateError
from sims.result import DeterminismClass, RunResult
from sims.seeds import segment_seed
from sims.spec import RunSpec
from sims.state import State

#: Called after each finished segment with (segments done, segments total).
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True, eq=False)
class PartialRun:
    """A WU stopped at a segment boundary: everything needed to finish it bit for bit.

    Segment ``k`` depends only on boundary ``k`` and its own seed, so continuing from here
    gives the same boundaries, frames and observables as a run that never stopped; the
    frames and observables of the finished segments are kept because the result commits to
    all of them.
    """

    segments_done: int
    boundaries: tuple[State, ...]  # boundaries[0] is the WU's input state
    frames: tuple[np.ndarray, ...]  # float32 (N, 3), one per report
    frame_steps: tuple[int, ...]
    rows: tuple[dict[str, float], ...]  # observables, one row per frame
    wall_time_s: float


#: Called after each finished segment with the run so far (to save it for a resume).
SegmentCallback = Callable[[PartialRun], None]


class SegmentRun(Protocol):
    """One segment in flight: created seeded from a boundary state, advanced in chunks."""

    def step(self, n: int) -> None: ...

    def state(self) -> State: ...

    def potential_energy(self) -> float: ...


class Engine(abc.ABC):
    """Base class of the engines: subclasses supply a segment runner and observables."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def n_atoms(self) -> int: ...

    @abc.abstractmethod
    def determinism_class(self) -> DeterminismClass: ...

    @abc.abstractmethod
    def check_temperature(self, temperature: float) -> None:
        """Raise :class:`ParameterError` if ``temperature`` is outside the engine's range."""

    @abc.abstractmethod
    def start_segment(self, state: State, *, seed: int, temperature: float) -> SegmentRun:
        """A runner positioned at ``state`` whose random stream depends only on ``seed``."""

    @abc.abstractmethod
    def thermalized(self, state: State, *, temperature: float, seed: int, step: int) -> State:
        """``state``'s positions with velocities drawn afresh from Maxwell-Boltzmann at
        ``temperature`` (a function of ``seed`` alone), at simulation step ``step``: an
        adaptive restart (coordinator/adaptive.py)."""

    @abc.abstractmethod
    def observe(self, state: State) -> dict[str, float]:
        """Structural observables of one state (RMSD, Q, Rg, ...), without the energy."""

    @abc.abstractmethod
    def kinetic_temperature(self, state: State) -> float:
        """Instantaneous temperature of ``state``'s velocities, in the engine's units."""

    def sanity_problems(self, state: State, *, temperature: float) -> list[str]:
        """Why ``state`` cannot come from an honest run at ``temperature`` (empty if it can).

        For results someone else computed, before anything counts. The bounds are generous:
        only garbage must fail, and an honest trajectory out of equilibrium (an extended chain
        collapsing heats up to about three times the bath temperature) must pass. Hence a
        factor of five either way, widened by eight standard deviations of the kinetic
        temperature for small systems.
        """
        if state.n_atoms != self.n_atoms:
            return [f"the state has {state.n_atoms} atoms, the system {self.n_atoms}"]
        if not (np.all(np.isfinite(state.positions)) and np.all(np.isfinite(state.velocities))):
            return ["the state has NaN or infinite coordinates"]
        t = self.kinetic_temperature(state)
        factor = 5.0 * (1.0 + 8.0 * math.sqrt(2.0 / max(1, self.degrees_of_freedom)))
        lo, hi = temperature / factor, temperature * factor
        if not lo <= t <= hi:
            return [
                f"kinetic temperature {t:.4g} is outside [{lo:.4g}, {hi:.4g}], the range of an "
                f"honest run at {temperature:g}"
            ]
        return []

    def first_insane_state(
        self, positions: np.ndarray, velocities: np.ndarray, *, temperature: float
    ) -> tuple[int, list[str]] | None:
        """The first state ``k >= 1`` of stacked states (S, N, 3) (a result's boundaries
        after its input) for which :meth:`sanity_problems` finds problems, with them; None
        if every one passes. An engine may answer faster, never differently."""
        for k in range(1, len(positions)):
            state = State(positions=positions[k], velocities=velocities[k])
            problems = self.sanity_problems(state, temperature=temperature)
            if problems:
                return k, problems
        return None

    @property
    def degrees_of_freedom(self) -> int:
        return 3 * self.n_atoms - 3

    def cross_class_tolerance(self, steps: int) -> float | None:
        """How far (max abs difference of positions and of velocities) an honest recomputation
        of ``steps`` steps in another determinism class may land from the original, or None
        if the dynamics diverge too fast for any tolerance to mean something."""
        return None

    # -- shared driver -------------------------------------------------------------------

    def _check_inputs(self, state: State, spec: RunSpec) -> None:
        if not isinstance(spec, RunSpec):
            raise ParameterError(f"expected a RunSpec, got {type(spec).__name__}")
        self._check_state(state)
        self.check_temperature(spec.temperature)

    def _check_state(self, state: State) -> None:
        """Refuse a state that is not one of this engine's system."""
        if not isinstance(state, State):
            raise StateError(f"expected a State, got {type(state).__name__}")
        if state.n_atoms != self.n_atoms:
            raise StateError(
                f"state has {state.n_atoms} atoms but the {self.name} system has "
                f"{self.n_atoms}: was the state made for another system?"
            )

    def run(
        self,
        state: State,
        spec: RunSpec,
        *,
        progress: ProgressCallback | None = None,
        resume: PartialRun | None = None,
        on_segment: SegmentCallback | None = None,
    ) -> RunResult:
        """Run a whole WU from ``state``: boundaries, frames and observables
        (docs/architecture.md §4.1).

        ``resume`` continues a run that stopped at a segment boundary (as ``on_segment``
        reported it); the result is identical to an uninterrupted run's.
        """
        self._check_inputs(state, spec)
        t0 = time.perf_counter()
        boundaries = [state]
        frames: list[np.ndarray] = []
        frame_steps: list[int] = []
        rows: list[dict[str, float]] = []
        first = 0
        earlier_s = 0.0
        if resume is not None:
            self._check_resume(state, spec, resume)
            boundaries = list(resume.boundaries)
            frames, frame_steps = list(resume.frames), list(resume.frame_steps)
            rows = [dict(r) for r in resume.rows]
            first = resume.segments_done
            earlier_s = resume.wall_time_s
        for k in range(first, spec.n_segments):
            boundaries.append(self._segment(boundaries[-1], spec, k, frames, frame_steps, rows))
            if on_segment is not None:
                on_segment(
                    PartialRun(
                        k + 1,
                        tuple(boundaries),
                        tuple(frames),
                        tuple(frame_steps),
                        tuple(rows),
                        earlier_s + time.perf_counter() - t0,
                    )
                )
            if progress is not None:
                progress(k + 1, spec.n_segments)
        names = list(rows[0]) if rows else ["energy"]
        observables = {n: np.array([r[n] for r in rows], dtype=np.float64) for n in names}
        return RunResult(
            spec=spec,
            boundaries=tuple(boundaries),
            frames=np.stack(frames) if frames else np.zeros((0, self.n_atoms, 3), np.float32),
            frame_steps=np.array(frame_steps, dtype=np.int64),
            observables=observables,
            determinism=self.determinism_class(),
            wall_time_s=earlier_s + time.perf_counter() - t0,
        )

    def _segment(
        self,
        start: State,
        spec: RunSpec,
        k: int,
        frames: list[np.ndarray],
        frame_steps: list[int],
        rows: list[dict[str, float]],
    ) -> State:
        """Run segment ``k`` from ``start``, appending the frames reported inside it."""
        runner = self.start_segment(
            start, seed=segment_seed(spec.seed, k), temperature=spec.temperature
        )
        done = k * spec.segment_steps
        seg_done = 0
        current: State | None = None  # the state read at the last report, if no step since
        while seg_done < spec.segment_steps:
            to_report = spec.report_steps - (done % spec.report_steps)
            n = min(to_report, spec.segment_steps - seg_done)
            runner.step(n)
            current = None
            seg_done += n
            done += n
            if done % spec.report_steps == 0:
                current = runner.state()
                frames.append(current.positions.astype(np.float32))
                frame_steps.append(current.step)
                rows.append({"energy": runner.potential_energy(), **self.observe(current)})
        # (a segment that ends on a report: its end state was just read; States are immutable)
        return current if current is not None else runner.state()

    def _check_resume(self, state: State, spec: RunSpec, resume: PartialRun) -> None:
        k = resume.segments_done
        n_frames = k * spec.segment_steps // spec.report_steps
        if not 0 <= k <= spec.n_segments or len(resume.boundaries) != k + 1:
            raise ParameterError(
                f"cannot resume: {len(resume.boundaries)} boundary states for {k} segments "
                f"done of {spec.n_segments}"
            )
        if resume.boundaries[0].digest() != state.digest():
            raise StateError("cannot resume: the saved run started from another input state")
        if len(resume.frames) != n_frames or len(resume.frame_steps) != n_frames:
            raise ParameterError(
                f"cannot resume: expected {n_frames} frames after {k} segments, "
                f"got {len(resume.frames)}"
            )
        if len(resume.rows) != n_frames:
            raise ParameterError(f"cannot resume: expected {n_frames} observable rows")

    def run_segment_data(self, state: State, spec: RunSpec, segment: int) -> RunResult:
        """Recompute segment ``segment`` alone with its frames and observables (what a
        spot-checker compares with the claim's per-segment digest)."""
        self._check_inputs(state, spec)
        if not 0 <= segment < spec.n_segments:
            raise ParameterError(
                f"segment must be in [0, {spec.n_segments}) for this WU, got {segment}"
            )
        t0 = time.perf_counter()
        frames: list[np.ndarray] = []
        frame_steps: list[int] = []
        rows: list[dict[str, float]] = []
        end = self._segment(state, spec, segment, frames, frame_steps, rows)
        names = list(rows[0]) if rows else ["energy"]
        return RunResult(
            spec=spec,
            boundaries=(state, end),
            frames=np.stack(frames) if frames else np.zeros((0, self.n_atoms, 3), np.float32),
            frame_steps=np.array(frame_steps, dtype=np.int64),
            observables={n: np.array([r[n] for r in rows], dtype=np.float64) for n in names},
            determinism=self.determinism_class(),
            wall_time_s=time.perf_counter() - t0,
        )

    def run_segment(self, state: State, spec: RunSpec, segment: int) -> State:
        """Recompute segment ``segment`` of the WU alone, from its starting boundary state."""
        self._check_inputs(state, spec)
        if not 0 <= segment < spec.n_segments:
            raise ParameterError(
                f"segment must be in [0, {spec.n_segments}) for this WU, got {segment}"
            )
        runner = self.start_segment(
            state, seed=segment_seed(spec.seed, segment), temperature=spec.temperature
        )
        runner.step(spec.segment_steps)
        return runner.state()


def engine_state(positions: np.ndarray, velocities: np.ndarray, step: int, *, engine: str) -> State:
    """Build a State from an engine's arrays; a blow-up is a SimulationError, not bad input."""
    if not (np.isfinite(positions).all() and np.isfinite(velocities).all()):
        raise SimulationError(
            f"the {engine} simulation became non-finite (NaN or inf) by step {step}: "
            "the time step may be too large or the starting structure has clashes"
        )
    return State(positions=positions, velocities=velocities, step=step)
