"""foldnet's science: simulation engines, states and observables. Imports nothing else of foldnet.

Engines: :mod:`sims.go` (C-alpha structure-based model in numba) and :mod:`sims.allatom`
(OpenMM, Amber ff14SB + GBn2 implicit solvent). Both follow :class:`sims.engine.Engine`.
"""

from sims.engine import Engine, ProgressCallback
from sims.errors import (
    InputError,
    ParameterError,
    SimsError,
    SimulationError,
    StateError,
    StructureError,
    UnknownResidueError,
)
from sims.result import DeterminismClass, RunResult
from sims.seeds import seed_from_id, segment_seed
from sims.spec import RunSpec
from sims.state import State, state_digest

__all__ = [
    "DeterminismClass",
    "Engine",
    "InputError",
    "ParameterError",
    "ProgressCallback",
    "RunResult",
    "RunSpec",
    "SimsError",
    "SimulationError",
    "State",
    "StateError",
    "StructureError",
    "UnknownResidueError",
    "seed_from_id",
    "segment_seed",
    "state_digest",
]
