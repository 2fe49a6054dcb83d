"""Dishonest volunteers, for ``foldnet demo`` and the tests: each cheat is one a real attacker
could run with modified client code, and each must be caught by validation.

Never used by ``foldnet worker``: a volunteer's own client is always :data:`HONEST`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from sims.result import RunResult
from sims.state import State, state_digest
from worker.identity import Identity
from worker.result import WorkerResult, arrays_digest, segment_root, sign_result
from worker.systems import EngineCache
from worker.tasks import ComputeTask, compute

Behaviour = Callable[[ComputeTask, EngineCache, Identity], WorkerResult]


def honest(task: ComputeTask, engines: EngineCache, identity: Identity) -> WorkerResult:
    return compute(task, engines=engines, identity=identity)


def _resign(
    result: WorkerResult,
    identity: Identity,
    positions: np.ndarray,
    velocities: np.ndarray | None = None,
) -> WorkerResult:
    """Re-derive every digest and the signature, so the lie is internally consistent."""
    velocities = result.velocities if velocities is None else velocities
    digests = tuple(state_digest(positions[k], velocities[k]) for k in range(len(positions)))
    header = dataclasses.replace(
        result.header,
        boundary_digests=digests,
        final_digest=digests[-1],
        segment_root=segment_root(digests),
    )
    sig = identity.sign(header.message())
    return dataclasses.replace(
        result, header=header, signature=sig, positions=positions, velocities=velocities
    )


def perturb_final_state(
    task: ComputeTask, engines: EngineCache, identity: Identity
) -> WorkerResult:
    """Computes honestly, then nudges the final state (say, to steer the next generation)."""
    result = honest(task, engines, identity)
    positions = result.positions.copy()
    positions[-1] += 1e-3
    return _resign(result, identity, positions)


def skip_segments(task: ComputeTask, engines: EngineCache, identity: Identity) -> WorkerResult:
    """Computes only the first segment and claims the rest by repeating its end state."""
    engine = engines.get(task.system)
    run = engine.run(
        task.input_state, dataclasses.replace(task.spec, steps=task.spec.segment_steps)
    )
    result = sign_result(run, wu_id=task.wu_id, identity=identity, price=task.price)
    n = task.spec.n_segments
    first = run.final
    positions = np.stack([task.input_state.positions] + [first.positions] * n)
    velocities = np.stack([task.input_state.velocities] + [first.velocities] * n)
    frames = np.repeat(result.frames[-1:], task.spec.steps // task.spec.report_steps, axis=0)
    steps = np.arange(1, len(frames) + 1, dtype=np.int64) * task.spec.report_steps
    obs = {k: np.repeat(v[-1:], len(frames)) for k, v in result.observables.items()}
    header = dataclasses.replace(
        result.header,
        frames_digest=arrays_digest({"frames": frames, "steps": steps}),
        observables_digest=arrays_digest(obs),
    )
    faked = dataclasses.replace(
        result,
        header=header,
        velocities=velocities,
        frames=frames,
        frame_steps=steps,
        observables=obs,
    )
    return _resign(faked, identity, positions)


def fabricate(task: ComputeTask, engines: EngineCache, identity: Identity) -> WorkerResult:
    """Computes nothing beyond a first step: invents the boundary states as random jiggles
    of the input, hot and torn (what a client that only wants credit would send)."""
    result = honest(task, engines, identity)
    rng = np.random.default_rng(int.from_bytes(task.wu_id[:8], "little"))
    positions = result.positions.copy()
    velocities = result.velocities.copy()
    positions[1:] = positions[0] + rng.normal(scale=2.0, size=positions[1:].shape)
    velocities[1:] = rng.normal(scale=5.0, size=velocities[1:].shape)
    return _resign(result, identity, positions, velocities)


def never_computed(task: ComputeTask, engines: EngineCache, identity: Identity) -> WorkerResult:
    """Computes nothing at all: the input state at every boundary, the input's frames and
    observables at every frame. Physically plausible (a real state), well formed, signed: only
    another volunteer's computation tells it apart (issue 9's Sybil attack)."""
    spec = task.spec
    engine = engines.get(task.system)
    s0 = task.input_state
    n_frames = spec.steps // spec.report_steps
    obs = {"energy": 0.0, **engine.observe(s0)}
    run = RunResult(
        spec=spec,
        boundaries=tuple(
            State(positions=s0.positions, velocities=s0.velocities, step=s0.step)
            for _ in range(spec.n_segments + 1)
        ),
        frames=np.repeat(s0.positions.astype(np.float32)[None], n_frames, axis=0),
        frame_steps=s0.step + spec.report_steps * np.arange(1, n_frames + 1, dtype=np.int64),
        observables={k: np.full(n_frames, v) for k, v in obs.items()},
        determinism=engine.determinism_class(),
        wall_time_s=0.01,
    )
    return sign_result(run, wu_id=task.wu_id, identity=identity, price=task.price)


def inflate_price(task: ComputeTask, engines: EngineCache, identity: Identity) -> WorkerResult:
    """Computes honestly, then signs the result over inflated pricing inputs (a thousand
    times the particles, ten times the steps) to be credited for work it was never given."""
    engine = engines.get(task.system)
    run = engine.run(task.input_state, task.spec)
    inflated = dataclasses.replace(
        task.price, n_particles=task.price.n_particles * 1000, steps=task.price.steps * 10
    )
    return sign_result(run, wu_id=task.wu_id, identity=identity, price=inflated)


BEHAVIOURS: dict[str, Behaviour] = {
    "honest": honest,
    "perturb": perturb_final_state,
    "skip": skip_segments,
    "fabricate": fabricate,
    "never-computed": never_computed,
    "inflate-price": inflate_price,
}
HONEST = "honest"
