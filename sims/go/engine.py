"""The ``go`` engine: the C-alpha Go model integrated with BAOAB Langevin dynamics in numba."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import llvmlite.binding as llvm
import numba
import numpy as np

from sims.engine import Engine, engine_state
from sims.errors import ParameterError, StateError
from sims.go import kernels
from sims.go.model import GoModel
from sims.observables import NativeObserver
from sims.result import DeterminismClass
from sims.state import State, all_finite

#: Bumped whenever the kernels change in a way that changes results. 2: the non-native
#: repulsion is switched off between 7 and 8 A (neighbour list), native contacts in their
#: own fixed list. 3: bonded terms share their geometry (three divisions a bead instead of
#: ten), native contacts summed bead by bead, only the pairs within the cutoff after the
#: bonded and native forces, the friction factor exp(-gamma dt) without libm.
KERNEL_VERSION = "3"
MAX_TEMPERATURE = 5.0
#: Verlet skin (A) of the non-native neighbour list, and how much wider the outer list it
#: is filtered from is (see :func:`kernels.baoab`). They set only how often the lists are
#: rebuilt, never a bit of the result, so they are not part of the determinism class.
DEFAULT_SKIN = 0.5
DEFAULT_OUTER_MARGIN = 4.0
_U32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class GoParameters:
    """Integrator settings (reduced units): time step, friction."""

    timestep: float = 0.005
    friction: float = 1.0

    def __post_init__(self) -> None:
        for name in ("timestep", "friction"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ParameterError(f"{name} must be a finite number > 0, got {v!r}")
        if self.timestep > 0.02:
            raise ParameterError(
                f"timestep {self.timestep} tau is unstable for Kr = 100 eps/A^2: use <= 0.02"
            )


@lru_cache(maxsize=1)
def _cpu_description() -> str:
    """The architecture: nothing else about the machine can change a bit of a result.

    The kernels call no libm function (their arccos is plain arithmetic, sqrt is IEEE's
    correctly rounded one) and use no fused multiply-add (fastmath off: LLVM contracts
    nothing), and the friction factor is :func:`exp_arithmetic`, not glibc's run-time
    FMA variants; vector lanes do the IEEE operations of the scalar code. So the FMA,
    AVX2/AVX-512 flags and the C library version, named by kernels 1 and 2, are not part
    of the class (tests/test_go_engine.py checks vector against scalar bits).
    """
    return platform.machine() or "unknown"


def exp_arithmetic(x: float) -> float:
    """e^x for finite x <= 0 with + - * / only (Python floats are IEEE doubles), so every
    machine gets the same bits whatever its libm: x halved to |x| <= 1/16, Taylor to
    degree 12 (truncation below 1e-25), squared back. Within 1 ulp of ``math.exp`` for
    |x| <= 1/16 (gamma dt = 0.005 by default), a few ulp beyond."""
    if not (math.isfinite(x) and x <= 0.0):
        raise ParameterError(f"exp_arithmetic takes a finite x <= 0, got {x!r}")
    halvings = 0
    while x < -0.0625:
        x *= 0.5
        halvings += 1
    s = 1.0
    for d in range(12, 0, -1):
        s = 1.0 + x * s / d
    for _ in range(halvings):
        s *= s
    return s


class SegmentRunner:
    """A segment in flight: positions, velocities and forces held in numba-friendly arrays."""

    __slots__ = (
        "_args",
        "_builds",
        "_c1",
        "_dt",
        "_e",
        "_engine",
        "_f",
        "_k0",
        "_k1",
        "_nl",
        "_noise",
        "_nw",
        "_outer_builds",
        "_start_step",
        "_steps",
        "_v",
        "_w",
        "_x",
    )

    def __init__(self, engine: GoEngine, state: State, seed: int, temperature: float) -> None:
        p = engine.parameters
        self._engine = engine
        # component-major (3, N) copies: the kernels' loops then run over contiguous arrays
        self._x = np.ascontiguousarray(np.asarray(state.positions, dtype=np.float64).T)
        self._v = np.ascontiguousarray(np.asarray(state.velocities, dtype=np.float64).T)
        self._f = np.zeros_like(self._x)
        self._w = kernels.scratch(self._x.shape[1])
        self._args = engine.kernel_args
        model = engine.model
        self._nl = kernels.NeighbourList(
            self._x,
            engine.native_start,
            self._args[5],
            model.REP_CUTOFF + engine.skin,
            model.REP_CUTOFF + engine.outer_skin,
        )
        self._nw = kernels.pair_scratch(len(self._args[5]))
        self._builds = 1
        self._outer_builds = 1
        nl = self._nl
        lists = (nl.pw, nl.near, nl.start, nl.pairs)
        call = (self._x, self._f, self._w, self._nw, *lists, *self._args, True)
        self._e = kernels.energy_forces(*call)
        self._dt = p.timestep
        self._c1 = exp_arithmetic(-p.friction * p.timestep)
        self._noise = math.sqrt(1.0 - self._c1 * self._c1) * math.sqrt(temperature)
        self._k0 = np.uint64(seed) & _U32
        self._k1 = np.uint64(seed) >> np.uint64(32)
        self._start_step = state.step
        self._steps = 0

    def step(self, n: int) -> None:
        if n <= 0:
            return
        nl = self._nl
        e, nl.pairs, nl.pw, nl.near, nl.out_pairs, builds, outer = kernels.baoab(
            self._x,
            self._v,
            self._f,
            self._w,
            self._nw,
            nl.pw,
            nl.near,
            n,
            self._steps,
            self._k0,
            self._k1,
            self._dt,
            self._c1,
            self._noise,
            nl.start,
            nl.pairs,
            nl.x_ref,
            self._engine.skin,
            nl.out_start,
            nl.out_pairs,
            nl.x_out,
            self._engine.outer_skin,
            *self._args,
        )
        self._e = e
        self._builds += builds
        self._outer_builds += outer
        self._steps += n

    def rebuild_neighbours(self) -> None:
        """Rebuild the neighbour list now. It changes no bit of the trajectory (the forces do
        not depend on when the list was built); tests use it to prove exactly that."""
        engine = self._engine
        cut = engine.model.REP_CUTOFF
        self._nl = kernels.NeighbourList(
            self._x, engine.native_start, self._args[5], cut + engine.skin, cut + engine.outer_skin
        )
        self._builds += 1
        self._outer_builds += 1

    @property
    def list_builds(self) -> int:
        """How many times the neighbour list was built in this segment (1 at the start)."""
        return self._builds

    @property
    def outer_builds(self) -> int:
        """How many times the outer list (the cell search) was built (1 at the start)."""
        return self._outer_builds

    def state(self) -> State:
        x = np.ascontiguousarray(self._x.T)
        v = np.ascontiguousarray(self._v.T)
        return engine_state(x, v, self._start_step + self._steps, engine="go")

    def potential_energy(self) -> float:
        return float(self._e)


class GoEngine(Engine):
    """Runs work units of one :class:`GoModel`. Single-threaded and bit-reproducible."""

    name: ClassVar[str] = "go"

    def __init__(
        self,
        model: GoModel,
        parameters: GoParameters | None = None,
        *,
        skin: float = DEFAULT_SKIN,
        outer_skin: float | None = None,
    ) -> None:
        if not (isinstance(skin, int | float) and math.isfinite(skin) and 0 < skin <= 20):
            raise ParameterError(f"neighbour-list skin must be in (0, 20] A, got {skin!r}")
        outer = skin + DEFAULT_OUTER_MARGIN if outer_skin is None else outer_skin
        if not (isinstance(outer, int | float) and math.isfinite(outer) and skin < outer <= 40):
            raise ParameterError(
                f"outer-list skin must be in ({skin}, 40] A (above the skin), got {outer!r}"
            )
        self.model = model
        self.parameters = parameters or GoParameters()
        self.skin = float(skin)
        self.outer_skin = float(outer)
        self.kernel_args = model.kernel_args()
        #: CSR index of the native contacts by bead (part of ``kernel_args``)
        self.native_start = self.kernel_args[4]
        self._observer = NativeObserver(model.native, model.contacts)
        self._determinism: tuple[GoParameters, DeterminismClass] | None = None

    @classmethod
    def from_pdb(
        cls,
        path: str | os.PathLike[str],
        *,
        chain: str | None = None,
        parameters: GoParameters | None = None,
    ) -> GoEngine:
        return cls(GoModel.from_pdb(path, chain=chain), parameters)

    @property
    def n_atoms(self) -> int:
        return self.model.n_beads

    def determinism_class(self) -> DeterminismClass:
        cached = self._determinism
        if cached is not None and cached[0] is self.parameters:
            return cached[1]
        dc = self._new_determinism_class()
        self._determinism = (self.parameters, dc)  # (every result and check names it)
        return dc

    def _new_determinism_class(self) -> DeterminismClass:
        return DeterminismClass(
            engine="go",
            engine_version=f"kernel-{KERNEL_VERSION}/numba-{numba.__version__}",
            platform="numba-cpu",
            precision="double",
            threads=1,
            cpu=_cpu_description(),
            extra=(
                ("llvm", ".".join(map(str, llvm.llvm_version_info))),
                ("timestep", repr(self.parameters.timestep)),
                ("friction", repr(self.parameters.friction)),
            ),
        )

    def check_temperature(self, temperature: float) -> None:
        if not (math.isfinite(temperature) and 0 < temperature <= MAX_TEMPERATURE):
            raise ParameterError(
                f"Go-model temperature must be in (0, {MAX_TEMPERATURE}] epsilon/k_B, got "
                f"{temperature}"
            )

    def cross_class_tolerance(self, steps: int) -> float | None:
        """1e-6 (A, and A per time unit) for segments of up to 10^6 steps. Measured: with the
        same random stream, a 1e-15 relative change of the start grows to 3e-14 A after 10^3
        steps and 4e-11 A after 10^5 (Langevin friction damps what the noise does not
        share); a result steered by more than the tolerance is caught."""
        return 1e-6 if steps <= 1_000_000 else None

    def kinetic_temperature(self, state: State) -> float:
        """Unit masses, k_B = 1, centre-of-mass motion removed (3N - 3 degrees of freedom)."""
        v = np.asarray(state.velocities, dtype=np.float64)
        return float(np.sum(v * v) / self.degrees_of_freedom)

    def sanity_problems(self, state: State, *, temperature: float) -> list[str]:
        problems = super().sanity_problems(state, temperature=temperature)
        if problems:
            return problems
        x = np.asarray(state.positions, dtype=np.float64)
        r = np.linalg.norm(x[1:] - x[:-1], axis=1)
        stretch = np.abs(r - self.model.bond_r0) / self.model.bond_r0
        if np.any(stretch > 0.5):  # kr = 100 eps/A^2: thermal stretch is a few percent
            k = int(np.argmax(stretch))
            return [
                f"bond {k}-{k + 1} is {r[k]:.3g} A long, native {self.model.bond_r0[k]:.3g} A: "
                "no honest run stretches a bond by half"
            ]
        energy, _ = self.model.energy_forces(x, args=self.kernel_args)
        if not math.isfinite(energy):
            return [f"potential energy {energy} is not finite"]
        return []

    def first_insane_state(
        self, positions: np.ndarray, velocities: np.ndarray, *, temperature: float
    ) -> tuple[int, list[str]] | None:
        """:meth:`sanity_problems` of every state after the first, with the same answers:
        the temperatures and bond stretches of all states at once, and only a state that
        comes near a bound (within 1e-9 relative, far more than summing in another order
        can move them) is checked alone by :meth:`sanity_problems`; the potential energy of
        each other state is the same bits as :meth:`sanity_problems` computes
        (:func:`kernels.potential_energy`), in one call."""
        pos = np.asarray(positions)
        vel = np.asarray(velocities)
        if not (
            pos.ndim == 3
            and pos.shape == vel.shape
            and pos.shape[1:] == (self.n_atoms, 3)
            and pos.dtype == np.float64
            and vel.dtype == np.float64
            and all_finite(pos[1:])
            and all_finite(vel[1:])
        ):
            return super().first_insane_state(pos, vel, temperature=temperature)
        later = slice(1, None)
        dof = self.degrees_of_freedom
        factor = 5.0 * (1.0 + 8.0 * math.sqrt(2.0 / max(1, dof)))
        lo, hi = temperature / factor * (1 + 1e-9), temperature * factor * (1 - 1e-9)
        v = vel[later]
        t = (v * v).reshape(len(v), -1).sum(axis=1) / dof
        x = pos[later]
        b = x[:, 1:] - x[:, :-1]
        r0 = self.model.bond_r0
        stretch = (np.abs(np.sqrt((b * b).sum(axis=2)) - r0) / r0).max(axis=1, initial=0.0)
        near = ~((lo < t) & (t < hi) & (stretch < 0.5 * (1 - 1e-9)))
        r_list = self.model.REP_CUTOFF + 1.0
        for k in range(1, len(pos)):
            if near[k - 1]:
                state = State(positions=pos[k], velocities=vel[k])
                problems = self.sanity_problems(state, temperature=temperature)
                if problems:
                    return k, problems
                continue
            call = (np.ascontiguousarray(pos[k].T), *self.kernel_args, r_list)
            energy = kernels.potential_energy(*call)
            if not math.isfinite(energy):
                return k, [f"potential energy {energy} is not finite"]
        return None

    @classmethod
    def warm_verification(cls) -> None:
        """Load now what checking the first Go upload needs: the compiled kernels from
        numba's cache, and the scipy that numba's BLAS check imports (about 0.7 s here),
        which the first upload's request would otherwise wait for, and every request served
        by the same event loop with it."""
        from sims.examples import VILLIN_PDB

        engine = cls.from_pdb(VILLIN_PDB)
        state = engine.initial_state(temperature=1.0, seed=0)
        positions = np.stack([state.positions, state.positions])
        velocities = np.stack([state.velocities, state.velocities])
        engine.first_insane_state(positions, velocities, temperature=1.0)

    def start_segment(self, state: State, *, seed: int, temperature: float) -> SegmentRunner:
        return SegmentRunner(self, state, seed, temperature)

    def observe(self, state: State) -> dict[str, float]:
        q, rmsd, rg = self._observer.observe(state.positions)
        return {"q": q, "rmsd": rmsd, "rg": rg}

    def initial_state(self, *, temperature: float, seed: int, extended: bool = True) -> State:
        """An extended (or native) chain with Maxwell-Boltzmann velocities at ``temperature``.

        Velocities come from numpy's Philox generator seeded with ``seed``, with the centre
        of mass motion removed.
        """
        self.check_temperature(temperature)
        x = self.model.extended_chain() if extended else np.array(self.model.native)
        return State(positions=x, velocities=self._velocities(x.shape, temperature, seed), step=0)

    def thermalized(self, state: State, *, temperature: float, seed: int, step: int) -> State:
        """``state``'s positions with velocities drawn as :meth:`initial_state` draws them."""
        self.check_temperature(temperature)
        x = np.array(state.positions, dtype=np.float64)
        if x.shape != (self.n_atoms, 3):
            raise StateError(
                f"state has positions of shape {x.shape}; the Go model has {self.n_atoms} beads"
            )
        return State(
            positions=x, velocities=self._velocities(x.shape, temperature, seed), step=step
        )

    @staticmethod
    def _velocities(shape: tuple[int, ...], temperature: float, seed: int) -> np.ndarray:
        rng = np.random.Generator(np.random.Philox(seed))
        v = rng.normal(scale=math.sqrt(temperature), size=shape)
        v -= v.mean(axis=0)
        return v
