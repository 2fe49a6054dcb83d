"""What a run returns: boundary states, frames, observables and the determinism class."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from sims.spec import RunSpec
from sims.state import State


@dataclass(frozen=True, slots=True)
class DeterminismClass:
    """Everything that changes the bits of a result.

    Two runs of one WU with equal determinism classes must give bit-identical states; results
    from different classes are compared only with a tolerance over short segments.
    """

    engine: str
    engine_version: str
    platform: str
    precision: str
    threads: int
    cpu: str
    extra: tuple[tuple[str, str], ...] = field(default=())

    def canonical(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no spaces): stable across processes."""
        return _canonical(self)

    @property
    def key(self) -> str:
        """Short stable identifier, for grouping replicas into one class."""
        return hashlib.sha256(self.canonical()).hexdigest()[:16]

    def __str__(self) -> str:
        return (
            f"{self.engine} {self.engine_version} {self.platform}/{self.precision} "
            f"threads={self.threads} cpu={self.cpu}"
        )


@functools.lru_cache(maxsize=64)
def _canonical(dc: DeterminismClass) -> bytes:
    """(Cached: every result and spot check names its class; a worker has one or two.)"""
    d: dict[str, object] = {f.name: getattr(dc, f.name) for f in fields(dc)}
    d["extra"] = [list(kv) for kv in dc.extra]
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True, eq=False)
class RunResult:
    """The outcome of running one WU.

    ``boundaries[k]`` is the state at the start of segment ``k``; ``boundaries[0]`` is the
    input state and ``boundaries[-1]`` the final state. ``frames`` are float32 positions
    every ``report_steps`` (the first after ``report_steps`` steps), and each observable
    array has one value per frame.
    """

    spec: RunSpec
    boundaries: tuple[State, ...]
    frames: np.ndarray
    frame_steps: np.ndarray
    observables: Mapping[str, np.ndarray]
    determinism: DeterminismClass
    wall_time_s: float

    @property
    def final(self) -> State:
        return self.boundaries[-1]

    def boundary_digests(self) -> list[bytes]:
        return [b.digest() for b in self.boundaries]
