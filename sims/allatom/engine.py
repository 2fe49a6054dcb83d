"""The ``openmm`` engine: Amber ff14SB + GBn2 implicit solvent, LangevinMiddle at 4 fs.

Determinism recipe (measured on OpenMM 8.6.1, see docs/architecture.md §4.2): on the CPU platform
with ``Threads=1`` a run is bit-identical run to run. Each segment is seeded on its own
(``setRandomNumberSeed`` + ``context.reinitialize(False)`` + positions and velocities from
the boundary state), so a segment recomputed from its boundary state is bit-identical too.
With more threads the nonbonded and GB force sums are not reproducible (even with
``DeterministicForces=true``), so such a class says ``bit_reproducible=false``.

One Context per engine: building one is slow on GPUs, re-seeding it is cheap. An engine is
therefore not thread-safe; use one per worker thread.
"""

from __future__ import annotations

import io
import math
import os
import platform as host
import time
from typing import ClassVar

import numpy as np
import openmm
from openmm import app, unit

from foldnet.files import atomic_write
from sims.allatom.prepare import (
    FORCEFIELD_FILES,
    HYDROGEN_MASS_AMU,
    Model,
    PreparedSystem,
    Progress,
    complete_pdb,
    complete_sequence,
    create_relax_system,
    create_system,
    prepared_system,
    with_reference,
)
from sims.engine import Engine, engine_state
from sims.errors import ParameterError, SimulationError
from sims.observables import fraction_native_contacts, kabsch_rmsd, radius_of_gyration
from sims.result import DeterminismClass
from sims.state import State

TIMESTEP_FS = 4.0
FRICTION_PER_PS = 1.0
#: Temperatures accepted, kelvin: (0, MAX_TEMPERATURE_K]. Above it a protein is just gas.
MAX_TEMPERATURE_K = 1000.0
#: Minimisation is two passes of L-BFGS (:meth:`AllAtomEngine._from_model`). The first, up
#: to this many iterations, runs in the relaxation system (:func:`create_relax_system`: the
#: same force field with native OBC2 in place of GBn2, 10-17x cheaper per force evaluation):
#: enough to relieve clashes (PDBFixer's rebuilt loops) and hydrogen strain before thermal
#: dynamics; full convergence is not needed.
DEFAULT_MINIMIZE_ITERATIONS = 500
#: The second pass, up to this many iterations in the production GBn2 system itself, so the
#: start is near a minimum of the model that is simulated, not of OBC2. Few suffice from
#: OBC2's minimum; each costs about 3 s for 1BHL chain A (2,333 atoms) on one CPU thread,
#: where 500 of them (the one pass before) did not finish in 45 minutes.
POLISH_MINIMIZE_ITERATIONS = 50
MINIMIZE_TOLERANCE = 10.0  # kJ/mol/nm, RMS force (OpenMM's default), both passes
PLATFORMS = ("auto", "CPU", "CUDA", "Reference")
MAX_THREADS = 256
#: CPU features that change which vectorized kernels (and so which bits) OpenMM uses.
_CPU_FLAGS = ("sse4_1", "avx", "avx2", "fma", "avx512f")

_NM = unit.nanometer
_NM_PER_PS = unit.nanometer / unit.picosecond
_KJ = unit.kilojoule_per_mole


def openmm_seed(seed: int) -> int:
    """Map a 64-bit seed to OpenMM's positive 31-bit one; 0 would mean "pick at random"."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    return seed % (2**31 - 1) + 1


def _from_openmm(st: openmm.State, step: int, engine: str) -> State:
    """The engine's State of an OpenMM state read with positions and velocities."""
    return engine_state(
        st.getPositions(asNumpy=True).value_in_unit(_NM),
        st.getVelocities(asNumpy=True).value_in_unit(_NM_PER_PS),
        step,
        engine=engine,
    )


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms that loaded on this machine."""
    return [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]


def _platform(name: str, threads: int) -> tuple[openmm.Platform, dict[str, str]]:
    if name not in PLATFORMS:
        raise ParameterError(f"platform must be one of {', '.join(PLATFORMS)}, got {name!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ParameterError(f"threads must be an integer in [1, {MAX_THREADS}], got {threads!r}")
    available = available_platforms()
    if name == "auto":
        name = "CUDA" if "CUDA" in available else "CPU"
    if name not in available:
        raise ParameterError(
            f"OpenMM platform {name!r} is not available on this machine: available are "
            f"{', '.join(available)}"
        )
    props: dict[str, str] = {}
    if name == "CPU":
        props = {"Threads": str(threads)}
    elif name == "CUDA":
        props = {"DeterministicForces": "true", "Precision": "mixed"}
    return openmm.Platform.getPlatformByName(name), props


def cpu_description() -> str:
    """Architecture, CPU model and the vector features that change OpenMM's CPU kernels."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    features = [f for f in _CPU_FLAGS if f in flags]
    return " ".join([host.machine(), model or host.processor() or "unknown", *features])


#: k_B N_A in kJ/(mol K): the gas constant (CODATA 2018, exact).
MOLAR_GAS_CONSTANT_KJ = 0.008314462618


class _Simulation:
    """The mutable half of an engine: one Context and its integrator."""

    def __init__(self, system: openmm.System, platform: str, threads: int) -> None:
        plat, props = _platform(platform, threads)
        self.integrator = openmm.LangevinMiddleIntegrator(
            300.0 * unit.kelvin, FRICTION_PER_PS / unit.picosecond, TIMESTEP_FS * unit.femtosecond
        )
        try:
            self.context = openmm.Context(system, self.integrator, plat, props)
        except openmm.OpenMMException as e:
            raise SimulationError(f"OpenMM could not create a {plat.getName()} context: {e}") from e
        self.platform = plat
        self.threads = threads if plat.getName() == "CPU" else 1
        self.generation = 0  # bumped whenever the context is repositioned

    def precision(self) -> str:
        name = self.platform.getName()
        if name == "Reference":
            return "double"
        if name == "CPU":
            return "mixed"  # single-precision forces, double-precision integration
        return self.platform.getPropertyValue(self.context, "Precision")

    def device(self) -> str:
        if self.platform.getName() == "CUDA":
            return "gpu " + self.platform.getPropertyValue(self.context, "DeviceName")
        return cpu_description()

    def minimize(
        self, positions: np.ndarray, iterations: int, source: str
    ) -> tuple[np.ndarray, float]:
        self.generation += 1
        try:
            self.context.setPositions(positions)
            openmm.LocalEnergyMinimizer.minimize(self.context, MINIMIZE_TOLERANCE, iterations)
            st = self.context.getState(getPositions=True, getEnergy=True)
        except openmm.OpenMMException as e:
            raise SimulationError(f"{source}: energy minimization failed: {e}") from e
        energy = st.getPotentialEnergy().value_in_unit(_KJ)
        pos = np.asarray(st.getPositions(asNumpy=True).value_in_unit(_NM), dtype=np.float64)
        if not (math.isfinite(energy) and np.all(np.isfinite(pos))):
            raise SimulationError(
                f"{source}: energy minimization ended at a non-finite energy ({energy}): the "
                "structure has overlapping atoms that the minimizer could not separate"
            )
        return pos, energy


def _referenced(model: Model, reference: str | os.PathLike[str] | None, chain: str | None) -> Model:
    """``model`` with the completed ``reference`` PDB as what RMSD and Q measure against."""
    if reference is None:
        return model
    return with_reference(model, complete_pdb(reference, chain=chain))


class AllAtomEngine(Engine):
    """All-atom engine over a :class:`PreparedSystem`; see the module docstring for determinism.

    Construct with :meth:`from_pdb` or :meth:`from_sequence` (which complete and minimize the
    structure), or directly from a PreparedSystem shipped from elsewhere.
    """

    name: ClassVar[str] = "openmm"

    def __init__(
        self, prepared: PreparedSystem, *, platform: str = "CPU", threads: int = 1
    ) -> None:
        if not isinstance(prepared, PreparedSystem):
            raise ParameterError(f"expected a PreparedSystem, got {type(prepared).__name__}")
        self._init(prepared, _Simulation(prepared.system(), platform, threads))

    def _init(self, prepared: PreparedSystem, sim: _Simulation) -> None:
        self._prepared = prepared
        self._sim = sim
        self._mass_dof: tuple[np.ndarray, int] | None = None
        self._determinism = DeterminismClass(
            engine=self.name,
            engine_version=f"{openmm.__version__} {'+'.join(FORCEFIELD_FILES)}",
            platform=sim.platform.getName(),
            precision=sim.precision(),
            threads=sim.threads,
            cpu=sim.device(),
            extra=(
                ("openmm_git", openmm.version.git_revision),
                (
                    "integrator",
                    f"LangevinMiddle dt={TIMESTEP_FS:g}fs friction={FRICTION_PER_PS:g}/ps",
                ),
                ("hydrogen_mass_amu", f"{HYDROGEN_MASS_AMU:g}"),
                ("bit_reproducible", "true" if sim.threads == 1 else "false"),
            ),
        )
        # Q only where it is defined: a reference with native contacts (a dipeptide has none,
        # and a NaN column would be refused on upload as corrupt data).
        self._has_q = prepared.contacts is not None and len(prepared.contacts.pairs) > 0
        self._observables: tuple[str, ...] = (
            (
                ("rmsd_ca", "rmsd_heavy", "q", "rg")
                if self._has_q
                else ("rmsd_ca", "rmsd_heavy", "rg")
            )
            if prepared.reference is not None
            else ("rg",)
        )

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def _from_model(
        cls,
        model: Model,
        platform: str,
        threads: int,
        minimize_iterations: int,
        polish_iterations: int,
        progress: Progress | None = None,
    ) -> AllAtomEngine:
        """Build the system and minimise in two passes: ``minimize_iterations`` in the cheap
        OBC2 relaxation system, then ``polish_iterations`` in the production GBn2 system (0:
        until converged, either). Each pass is a single-threaded CPU context by default, so
        the prepared start is a function of the inputs on one machine."""
        for name, value in (
            ("minimize_iterations", minimize_iterations),
            ("polish_iterations", polish_iterations),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ParameterError(
                    f"{name} must be an integer >= 0 (0: until converged), got {value!r}"
                )
        if progress is not None:
            progress("building the force field system")
        system = create_system(model.topology, model.source)
        relax = _Simulation(create_relax_system(system, model.topology), platform, threads)
        if progress is not None:
            progress("minimising")
        relaxed, _ = relax.minimize(model.positions, minimize_iterations, model.source)
        del relax  # its Context: the relaxation system is never simulated
        sim = _Simulation(system, platform, threads)
        if progress is not None:
            progress("polishing in GBn2")
        positions, energy = sim.minimize(relaxed, polish_iterations, model.source)
        engine = cls.__new__(cls)
        engine._init(prepared_system(model, system, positions, energy), sim)
        return engine

    @classmethod
    def from_pdb(
        cls,
        path: str | os.PathLike[str],
        *,
        chain: str | None = None,
        reference: str | os.PathLike[str] | None = None,
        platform: str = "CPU",
        threads: int = 1,
        minimize_iterations: int = DEFAULT_MINIMIZE_ITERATIONS,
        polish_iterations: int = POLISH_MINIMIZE_ITERATIONS,
        progress: Progress | None = None,
    ) -> AllAtomEngine:
        """Complete chain ``chain`` (default: the first) of a PDB file, then minimize it;
        ``progress`` is told each step as it starts. RMSD and Q are measured against
        ``reference`` (a PDB file of the same protein, its chain ``chain`` or else its first)
        when given, else against the completed input."""
        return cls._from_model(
            _referenced(complete_pdb(path, chain=chain, progress=progress), reference, chain),
            platform,
            threads,
            minimize_iterations,
            polish_iterations,
            progress,
        )

    @classmethod
    def from_sequence(
        cls,
        sequence: str,
        *,
        reference: str | os.PathLike[str] | None = None,
        chain: str | None = None,
        platform: str = "CPU",
        threads: int = 1,
        minimize_iterations: int = DEFAULT_MINIMIZE_ITERATIONS,
        polish_iterations: int = POLISH_MINIMIZE_ITERATIONS,
        progress: Progress | None = None,
    ) -> AllAtomEngine:
        """Build ``sequence`` (one-letter codes) as an extended chain, then minimize it;
        with ``reference`` (a PDB file of the folded protein), RMSD and Q are measured
        against it."""
        return cls._from_model(
            _referenced(complete_sequence(sequence, progress=progress), reference, chain),
            platform,
            threads,
            minimize_iterations,
            polish_iterations,
            progress,
        )

    # -- what the engine is ----------------------------------------------------------------

    @property
    def prepared(self) -> PreparedSystem:
        return self._prepared

    @property
    def topology(self) -> app.Topology:
        return self._prepared.topology

    @property
    def n_atoms(self) -> int:
        return self._prepared.n_atoms

    @property
    def observable_names(self) -> tuple[str, ...]:
        """Columns of :meth:`observe`: fixed per engine (only ``rg`` without a reference)."""
        return self._observables

    def determinism_class(self) -> DeterminismClass:
        return self._determinism

    def check_temperature(self, temperature: float) -> None:
        t = temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise ParameterError(f"temperature must be a finite number of kelvin, got {t!r}")
        if not 0 < t <= MAX_TEMPERATURE_K:
            raise ParameterError(
                f"temperature must be in (0, {MAX_TEMPERATURE_K:g}] kelvin for the openmm "
                f"engine, got {t}"
            )

    # -- running ---------------------------------------------------------------------------

    def initial_state(self, *, temperature: float, seed: int) -> State:
        """The minimized structure with Maxwell-Boltzmann velocities drawn from ``seed``."""
        self.check_temperature(temperature)
        sim = self._sim
        sim.generation += 1
        try:
            sim.integrator.setTemperature(temperature * unit.kelvin)
            sim.context.setPositions(self._prepared.positions)
            sim.context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed))
            st = sim.context.getState(getPositions=True, getVelocities=True)
        except openmm.OpenMMException as e:
            raise SimulationError(f"could not draw initial velocities: {e}") from e
        return _from_openmm(st, 0, self.name)

    def thermalized(self, state: State, *, temperature: float, seed: int, step: int) -> State:
        """``state``'s positions with velocities drawn by OpenMM from ``seed`` (constraints
        applied), as :meth:`initial_state` draws them."""
        self._check_state(state)
        self.check_temperature(temperature)
        sim = self._sim
        sim.generation += 1
        try:
            sim.context.setPositions(state.positions)
            sim.context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed))
            st = sim.context.getState(getVelocities=True)
        except openmm.OpenMMException as e:
            raise SimulationError(f"could not draw velocities: {e}") from e
        return engine_state(
            np.array(state.positions, dtype=np.float64),
            st.getVelocities(asNumpy=True).value_in_unit(_NM_PER_PS),
            step,
            engine=self.name,
        )

    def start_segment(self, state: State, *, seed: int, temperature: float) -> _Segment:
        self._check_state(state)
        self.check_temperature(temperature)
        sim = self._sim
        sim.generation += 1
        try:
            sim.integrator.setTemperature(temperature * unit.kelvin)
            sim.integrator.setRandomNumberSeed(openmm_seed(seed))
            # Without a reinitialize the integrator keeps its old random stream.
            sim.context.reinitialize(preserveState=False)
            sim.context.setPositions(state.positions)
            sim.context.setVelocities(state.velocities)
            sim.context.setStepCount(state.step)
        except openmm.OpenMMException as e:
            raise SimulationError(f"could not start a segment: {e}") from e
        return _Segment(self, sim, sim.generation, state.step)

    # -- looking at states -----------------------------------------------------------------

    def observe(self, state: State) -> dict[str, float]:
        """RMSDs (Angstrom) to the reference, Q and C-alpha Rg (Angstrom).

        Q only when the reference has native contacts (a dipeptide has none).
        """
        self._check_state(state)
        p = self._prepared
        x = state.positions * 10.0
        ca = x[p.ca_indices]
        out = {}
        if p.reference is not None:
            ref = p.reference * 10.0
            out["rmsd_ca"] = kabsch_rmsd(ca, ref[p.ca_indices])
            out["rmsd_heavy"] = kabsch_rmsd(x[p.heavy_indices], ref[p.heavy_indices])
            if self._has_q:
                assert p.contacts is not None
                out["q"] = fraction_native_contacts(ca, p.contacts)
        out["rg"] = radius_of_gyration(ca)
        return out

    def _masses_and_dof(self) -> tuple[np.ndarray, int]:
        if self._mass_dof is None:
            system = self._sim.context.getSystem()
            masses = np.array(
                [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(self.n_atoms)]
            )
            moving = masses > 0
            dof = 3 * int(moving.sum()) - system.getNumConstraints() - 3
            self._mass_dof = (masses, max(1, dof))
        return self._mass_dof

    @property
    def degrees_of_freedom(self) -> int:
        return self._masses_and_dof()[1]

    def kinetic_temperature(self, state: State) -> float:
        """Kelvin, from masses and the degrees of freedom left by the constraints."""
        masses, dof = self._masses_and_dof()
        v = np.asarray(state.velocities, dtype=np.float64)  # nm/ps
        kinetic = 0.5 * float(np.sum(masses[:, None] * v * v))  # kJ/mol
        return 2.0 * kinetic / (dof * MOLAR_GAS_CONSTANT_KJ)

    def potential_energy(self, state: State) -> float:
        """Potential energy (kJ/mol) of ``state``'s positions."""
        self._check_state(state)
        sim = self._sim
        sim.generation += 1
        try:
            sim.context.setPositions(state.positions)
            energy = sim.context.getState(getEnergy=True).getPotentialEnergy()
        except openmm.OpenMMException as e:
            raise SimulationError(f"could not compute the energy: {e}") from e
        return float(energy.value_in_unit(_KJ))

    def write_pdb(self, state: State, path: str | os.PathLike[str]) -> None:
        """Write ``state``'s positions as a PDB file, atomically (:mod:`foldnet.files`)."""
        self._check_state(state)
        text = io.StringIO()
        app.PDBFile.writeFile(self.topology, state.positions * _NM, text, keepIds=True)
        atomic_write(path, text.getvalue())

    def __repr__(self) -> str:
        return (
            f"AllAtomEngine({self._prepared.source!r}, n_atoms={self.n_atoms}, "
            f"{self._determinism.platform}/{self._determinism.precision}, "
            f"threads={self._determinism.threads})"
        )


class _Segment:
    """One segment on the engine's Context; invalid once the engine starts anything else."""

    def __init__(self, engine: AllAtomEngine, sim: _Simulation, generation: int, step: int) -> None:
        self._engine = engine
        self._sim = sim
        self._generation = generation
        self._start = step
        self._done = 0

    def _live(self) -> _Simulation:
        if self._sim.generation != self._generation:
            raise SimulationError(
                "this segment runner was superseded: the engine has since started another "
                "segment or repositioned its context (one engine runs one segment at a time)"
            )
        return self._sim

    def step(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ParameterError(f"steps must be a positive integer, got {n!r}")
        sim = self._live()
        try:
            sim.integrator.step(n)
        except openmm.OpenMMException as e:
            raise SimulationError(
                f"the openmm simulation failed between steps {self._start + self._done} and "
                f"{self._start + self._done + n}: {e}"
            ) from e
        self._done += n

    def state(self) -> State:
        sim = self._live()
        try:
            st = sim.context.getState(getPositions=True, getVelocities=True)
        except openmm.OpenMMException as e:
            raise SimulationError(f"could not read the openmm state: {e}") from e
        return _from_openmm(st, self._start + self._done, self._engine.name)

    def potential_energy(self) -> float:
        sim = self._live()
        try:
            st = sim.context.getState(getEnergy=True)
        except openmm.OpenMMException as e:
            raise SimulationError(f"could not compute the energy: {e}") from e
        return float(st.getPotentialEnergy().value_in_unit(_KJ))


def benchmark_ns_per_day(
    engine: AllAtomEngine,
    steps: int = 500,
    *,
    temperature: float = 300.0,
    seed: int = 1,
    warmup: int = 10,
) -> float:
    """Simulated ns per wall-clock day over ``steps`` steps (after ``warmup`` untimed ones)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ParameterError(f"steps must be a positive integer, got {steps!r}")
    segment = engine.start_segment(
        engine.initial_state(temperature=temperature, seed=seed), seed=seed, temperature=temperature
    )
    if warmup > 0:
        segment.step(warmup)
    t0 = time.perf_counter()
    segment.step(steps)
    elapsed = time.perf_counter() - t0
    return steps * TIMESTEP_FS * 1e-6 / elapsed * 86_400.0
