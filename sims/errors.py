"""The one exception tree of ``sims``.

Every error a caller can act on is a :class:`SimsError`; foreign exceptions (OpenMM's,
numpy's, file-system ones) are translated at the boundary with ``raise X(...) from e`` so a
user sees what was wrong and what was expected, never a traceback from a library.

::

    FoldnetError (foldnet.errors)
    └── SimsError
        ├── InputError               bad input; nothing was run             Invalid, 422, exit 2
        │   ├── StructureError       not a PDB, empty chain, missing atoms, bad sequence
        │   │   └── UnknownResidueError  a residue no engine has parameters for
        │   ├── ParameterError       non-positive steps or temperature, bad segment plan
        │   ├── StateError           wrong shape, NaN/inf coordinates or velocities
        │   └── PreparedSystemError  a prepared system foldnet does not run (a Go model whose
        │                            arrays do not fit its beads, an OpenMM force it never makes)
        └── SimulationError          the run itself failed (blew up)         Internal, 500, exit 3
"""

from __future__ import annotations

from foldnet.errors import FoldnetError, Internal, Invalid


class SimsError(FoldnetError):
    """Base class of every error raised by ``sims``."""


class InputError(SimsError, Invalid):
    """The caller gave something the engines cannot use; nothing was run."""

    code = "invalid_input"


class StructureError(InputError):
    """A structure (PDB file or sequence) is malformed or unusable."""


class UnknownResidueError(StructureError):
    """A residue name that the engine has no parameters for."""


class ParameterError(InputError):
    """A run parameter is out of range (steps, temperature, segment plan, ...)."""


class StateError(InputError):
    """An input state has the wrong shape or non-finite values."""


class PreparedSystemError(InputError):
    """A prepared system that is not one foldnet makes: a Go model whose arrays do not fit its
    beads, an OpenMM System holding a force foldnet never makes (such as a PythonForce, whose
    reading runs code). Nothing of it was run."""


class SimulationError(SimsError, Internal):
    """The simulation failed while running (for example it became non-finite)."""

    code = "simulation_failed"
