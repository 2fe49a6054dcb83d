"""The ``openmm`` all-atom engine: Amber ff14SB + GBn2 implicit solvent, 4 fs LangevinMiddle.

Input is a PDB file (completed by PDBFixer) or a sequence (built as an extended chain);
see :class:`AllAtomEngine` and docs/architecture.md §4.2 for the determinism recipe.
"""

from sims.allatom.build import extended_backbone, extended_chain_pdb
from sims.allatom.engine import (
    DEFAULT_MINIMIZE_ITERATIONS,
    MAX_TEMPERATURE_K,
    PLATFORMS,
    POLISH_MINIMIZE_ITERATIONS,
    TIMESTEP_FS,
    AllAtomEngine,
    available_platforms,
    benchmark_ns_per_day,
    cpu_description,
    openmm_seed,
)
from sims.allatom.prepare import (
    FORCEFIELD_FILES,
    HYDROGEN_MASS_AMU,
    Model,
    PreparedSystem,
    complete_pdb,
    complete_sequence,
    find_clashes,
)

__all__ = [
    "DEFAULT_MINIMIZE_ITERATIONS",
    "FORCEFIELD_FILES",
    "HYDROGEN_MASS_AMU",
    "MAX_TEMPERATURE_K",
    "PLATFORMS",
    "POLISH_MINIMIZE_ITERATIONS",
    "TIMESTEP_FS",
    "AllAtomEngine",
    "Model",
    "PreparedSystem",
    "available_platforms",
    "benchmark_ns_per_day",
    "complete_pdb",
    "complete_sequence",
    "cpu_description",
    "extended_backbone",
    "extended_chain_pdb",
    "find_clashes",
    "openmm_seed",
]
