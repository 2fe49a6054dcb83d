"""What a worker is asked to do, and what it computes. Plain, picklable data only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.entries import PriceInputs
from sims.engine import PartialRun, ProgressCallback, SegmentCallback
from sims.spec import RunSpec
from sims.state import State
from worker.errors import ResultSignatureError, WireError
from worker.identity import Identity
from worker.result import WorkerResult, segment_digest, sign_result
from worker.systems import EngineCache, SystemDefinition, engine_name, particle_count

_CHECK_DOMAIN = b"foldnet/spot-check/v1\n"
#: The most memory a task's result may take (its boundary states, frames and observables):
#: far more than a coordinator takes in an upload (64 MiB by default), and what a
#: volunteer's machine can hold. A task that needs more is given back before it runs.
MAX_RESULT_BYTES = 1 << 30
#: Bytes per frame and particle (float32 xyz), per state and particle (float64 positions
#: and velocities), and per frame for its step and a handful of observables.
_FRAME, _STATE, _FRAME_ROW = 12, 48, 8 * 8


@dataclass(frozen=True, slots=True)
class ComputeTask:
    """Run one WU: ``spec`` from ``input_state`` on ``system``. ``price`` is what the credit
    formula will price the WU with; the worker signs it with its result."""

    wu_id: bytes
    replica: int
    system: SystemDefinition
    spec: RunSpec
    input_state: State
    price: PriceInputs


def check_price(task: ComputeTask) -> None:
    """Raise :class:`WireError` unless the task's price states the engine, particle count and
    steps of the work it asks for: a worker signs only what it can see is its WU (the deadline
    and issue time are the coordinator's to set)."""
    want = {
        "engine": engine_name(task.system),
        "n_particles": int(particle_count(task.system)),
        "steps": task.spec.steps,
    }
    bad = [
        f"{name}: expected {value!r}, got {getattr(task.price, name)!r}"
        for name, value in want.items()
        if getattr(task.price, name) != value
    ]
    if bad:
        raise WireError("task.price does not describe the task's work: " + "; ".join(bad))


def check_size(n_particles: int, spec: RunSpec, segments: int | None = None) -> None:
    """Raise :class:`WireError` if the result of a task would take more than
    :data:`MAX_RESULT_BYTES`: the whole WU's (``segments`` None), or that of a spot check
    of ``segments`` segments (each alone, with its frames)."""
    if segments is None:
        states, frames = spec.n_segments + 1, spec.steps // spec.report_steps
    else:
        states, frames = 2 * segments, segments * (spec.segment_steps // spec.report_steps)
    need = states * n_particles * _STATE + frames * (n_particles * _FRAME + _FRAME_ROW)
    if need > MAX_RESULT_BYTES:
        raise WireError(
            f"the task's result would take {need / 2**30:,.1f} GiB of memory ({states:,} "
            f"states and {frames:,} frames of {n_particles:,} particles); this worker takes "
            f"tasks of at most {MAX_RESULT_BYTES / 2**30:g} GiB: expected fewer frames "
            "(a larger report_steps) or a shorter WU"
        )


@dataclass(frozen=True, slots=True)
class SpotCheckTask:
    """Recompute ``segments`` of a WU, each alone from its claimed starting boundary state."""

    wu_id: bytes
    check: int
    system: SystemDefinition
    spec: RunSpec
    segments: tuple[int, ...]
    start_states: tuple[State, ...]


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """A task of a batch that raised on the worker; the others of the batch still count."""

    reason: str


@dataclass(frozen=True, slots=True, eq=False)
class SegmentFrames:
    """One recomputed segment's frames (float32), their steps and observables (float64):
    what a check sends with its end states when the engine compares other determinism
    classes with a tolerance (its digest is the check's signed ``segment_data`` entry).
    Frames and observables are what a lab receives, so they are compared too, not only the
    end state."""

    frames: np.ndarray
    steps: np.ndarray
    observables: Mapping[str, np.ndarray]

    def digest(self) -> bytes:
        return segment_digest(self.frames, self.steps, self.observables)

    def agrees(
        self,
        frames: np.ndarray,
        steps: np.ndarray,
        observables: Mapping[str, np.ndarray],
        tolerance: float,
    ) -> bool:
        """Whether a claim's frames, steps and observables of this segment are these, within
        ``tolerance`` (the engine's, for end states: length units, and relative for the
        observables) plus the float32 rounding of a frame."""
        mine = np.asarray(self.frames, np.float64)
        theirs = np.asarray(frames, np.float64)
        if mine.shape != theirs.shape or not np.array_equal(self.steps, steps):
            return False
        slack = tolerance + np.spacing(np.maximum(np.abs(mine), np.abs(theirs)).astype(np.float32))
        if not bool(np.all(np.abs(mine - theirs) <= slack)):
            return False
        if sorted(self.observables) != sorted(observables):
            return False
        return all(
            np.shape(v) == np.shape(observables[k])
            and bool(
                np.all(
                    np.isclose(
                        np.asarray(v, np.float64),
                        np.asarray(observables[k], np.float64),
                        rtol=tolerance,
                        atol=tolerance,
                        equal_nan=True,
                    )
                )
            )
            for k, v in self.observables.items()
        )


@dataclass(frozen=True, slots=True)
class SpotCheckResult:
    wu_id: bytes
    check: int
    segments: tuple[int, ...]
    end_digests: tuple[bytes, ...]
    determinism: str
    worker_key: bytes
    signature: bytes
    #: The recomputed end states (their digests are ``end_digests``, which the signature
    #: covers), sent when the engine allows comparing them across determinism classes.
    end_states: tuple[State, ...] = ()
    #: Digest of the frames and observables of each checked segment, as the result's
    #: ``segment_data`` has them (``worker.result.segment_data_digests``).
    segment_data: tuple[bytes, ...] = ()
    #: The checked segments' frames and observables themselves (their digests are
    #: ``segment_data``), sent with ``end_states`` for a comparison across classes.
    segment_frames: tuple[SegmentFrames, ...] = ()

    def message(self) -> bytes:
        return (
            _CHECK_DOMAIN
            + self.wu_id
            + self.check.to_bytes(8, "little")
            + b"".join(k.to_bytes(8, "little") for k in self.segments)
            + b"".join(self.end_digests)
            + len(self.segment_data).to_bytes(8, "little")
            + b"".join(self.segment_data)
            + self.determinism.encode()
        )

    def verify(self) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(self.worker_key).verify(
                self.signature, self.message()
            )
        except (InvalidSignature, ValueError) as e:
            raise ResultSignatureError("the spot-check signature does not verify") from e


def compute(
    task: ComputeTask,
    *,
    engines: EngineCache,
    identity: Identity,
    resume: PartialRun | None = None,
    on_segment: SegmentCallback | None = None,
    progress: ProgressCallback | None = None,
) -> WorkerResult:
    """Run and sign one WU; ``resume``/``on_segment`` let a client survive a restart."""
    check_price(task)
    engine = engines.get(task.system)
    run = engine.run(
        task.input_state, task.spec, resume=resume, on_segment=on_segment, progress=progress
    )
    return sign_result(run, wu_id=task.wu_id, identity=identity, price=task.price)


def spot_check(task: SpotCheckTask, *, engines: EngineCache, identity: Identity) -> SpotCheckResult:
    engine = engines.get(task.system)
    runs = [
        engine.run_segment_data(start, task.spec, k)
        for k, start in zip(task.segments, task.start_states, strict=True)
    ]
    states = tuple(r.boundaries[-1] for r in runs)
    segments = tuple(
        SegmentFrames(
            np.asarray(r.frames, np.float32),
            np.asarray(r.frame_steps, np.int64),
            {k: np.asarray(v, np.float64) for k, v in r.observables.items()},
        )
        for r in runs
    )
    data = tuple(s.digest() for s in segments)
    ends = tuple(s.digest() for s in states)
    shared = engine.cross_class_tolerance(task.spec.segment_steps) is not None
    unsigned = SpotCheckResult(
        task.wu_id,
        task.check,
        task.segments,
        ends,
        engine.determinism_class().canonical().decode(),
        identity.public_key,
        b"",
        segment_data=data,
    )
    return SpotCheckResult(
        task.wu_id,
        task.check,
        task.segments,
        ends,
        unsigned.determinism,
        identity.public_key,
        identity.sign(unsigned.message()),
        states if shared else (),
        data,
        segments if shared else (),
    )
