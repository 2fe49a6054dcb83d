"""The one exception tree of ``sims``.

Every error a caller can act on is a :class:`SimsError`; foreign exceptions (OpenMM's,
numpy's, file-system ones) are translated at the boundary with ``raise X(...) from e`` so a
user sees what was wrong and what was expected, never a traceback from a library.

::

    SimsError
    ├── InputError                 bad input; nothing was run
    │   ├── StructureError         not a PDB, empty chain, missing atoms, bad sequence
    │   │   └── UnknownResidueError  a residue no engine has parameters for
    │   ├── ParameterError         non-positive steps or temperature, bad segment plan
    │   └── StateError             wrong shape, NaN/inf coordinates or velocities
    └── SimulationError            the run itself failed (blew up, engine error)
"""

from __future__ import annotations


class SimsError(Exception):
    """Base class of every error raised by ``sims``."""


class InputError(SimsError):
    """The caller gave something the engines cannot use; nothing was run."""


class StructureError(InputError):
    """A structure (PDB file or sequence) is malformed or unusable."""


class UnknownResidueError(StructureError):
    """A residue name that the engine has no parameters for."""


class ParameterError(InputError):
    """A run parameter is out of range (steps, temperature, segment plan, ...)."""


class StateError(InputError):
    """An input state has the wrong shape or non-finite values."""


class SimulationError(SimsError):
    """The simulation failed while running (for example it became non-finite)."""
