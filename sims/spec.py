"""Immutable run parameters of one work unit, as an engine sees them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sims.errors import ParameterError
from sims.seeds import SEED_MAX

#: Upper bound on steps in one WU: beyond it a WU cannot return in any sane deadline.
MAX_STEPS_PER_WU = 100_000_000


def _positive_int(name: str, value: object, upper: int = MAX_STEPS_PER_WU) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    if value <= 0:
        raise ParameterError(f"{name} must be > 0, got {value}")
    if value > upper:
        raise ParameterError(f"{name} must be <= {upper:,}, got {value:,}")
    return value


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to run: ``steps`` in segments of ``segment_steps``, a frame every ``report_steps``.

    ``temperature`` is in the engine's unit (Go model: reduced units of epsilon/k_B;
    OpenMM: kelvin); each engine also checks its own plausible range.
    """

    steps: int
    segment_steps: int
    report_steps: int
    temperature: float
    seed: int

    def __post_init__(self) -> None:
        _positive_int("steps", self.steps)
        _positive_int("segment_steps", self.segment_steps)
        _positive_int("report_steps", self.report_steps)
        if self.steps % self.segment_steps:
            raise ParameterError(
                f"steps ({self.steps}) must be a multiple of segment_steps ({self.segment_steps})"
            )
        if self.steps % self.report_steps:
            raise ParameterError(
                f"steps ({self.steps}) must be a multiple of report_steps ({self.report_steps})"
            )
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ParameterError(f"temperature must be a number, got {t!r}")
        if not math.isfinite(t) or t <= 0:
            raise ParameterError(f"temperature must be finite and > 0, got {t}")
        object.__setattr__(self, "temperature", float(t))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ParameterError(f"seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= SEED_MAX:
            raise ParameterError(f"seed must be in [0, 2**64), got {self.seed}")

    @property
    def n_segments(self) -> int:
        return self.steps // self.segment_steps
