"""The ``go`` engine: a C-alpha structure-based model, numba kernels, Philox noise."""

from sims.go.engine import GoEngine, GoParameters
from sims.go.model import GoModel

__all__ = ["GoEngine", "GoModel", "GoParameters"]
