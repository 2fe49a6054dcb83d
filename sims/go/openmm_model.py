"""The same Go model written with OpenMM custom forces: an independent implementation.

Used to cross-check the numba kernels (energies and forces must agree to 1e-6 relative on the
Reference platform) and as the baseline of ``python -m benchmarks.engines``. Units map as
1 A = 0.1 nm and 1 eps = 1 kJ/mol, so energies compare directly and forces differ by x10.
"""

from __future__ import annotations

import numpy as np
import openmm as mm
from openmm import unit

from sims.errors import ParameterError
from sims.go.model import GoModel

NM_PER_A = 0.1


def build_system(model: GoModel) -> mm.System:
    """An OpenMM System of the Go model: one particle of 1 amu per bead.

    Native contacts are bonds (no cutoff); the non-native repulsion is a
    CustomNonbondedForce with the model's cutoff and OpenMM's switching function (the one
    the numba kernel writes out), excluding |i - j| < 4 and the native pairs.
    """
    system = mm.System()
    for _ in range(model.n_beads):
        system.addParticle(1.0)
    kr_nm = model.kr / NM_PER_A**2

    bonds = mm.CustomBondForce("kr*(r-r0)^2")
    bonds.addGlobalParameter("kr", kr_nm)
    bonds.addPerBondParameter("r0")
    for i, r0 in enumerate(model.bond_r0):
        bonds.addBond(i, i + 1, [r0 * NM_PER_A])

    angles = mm.CustomAngleForce("kt*(theta-theta0)^2")
    angles.addGlobalParameter("kt", model.ktheta)
    angles.addPerAngleParameter("theta0")
    for i, t0 in enumerate(model.theta0):
        angles.addAngle(i, i + 1, i + 2, [t0])

    torsions = mm.CustomTorsionForce("k1*(1-cos(theta-phi0)) + k3*(1-cos(3*(theta-phi0)))")
    torsions.addGlobalParameter("k1", model.k1)
    torsions.addGlobalParameter("k3", model.k3)
    torsions.addPerTorsionParameter("phi0")
    for i, p0 in enumerate(model.phi0):
        torsions.addTorsion(i, i + 1, i + 2, i + 3, [p0])

    native = mm.CustomBondForce("eps*(5*(s/r)^12 - 6*(s/r)^10)")
    native.addGlobalParameter("eps", model.eps)
    native.addPerBondParameter("s")
    repulsive = mm.CustomNonbondedForce("eps*(c/r)^12")
    repulsive.addGlobalParameter("eps", model.eps)
    repulsive.addGlobalParameter("c", model.rep_c * NM_PER_A)
    repulsive.setNonbondedMethod(mm.CustomNonbondedForce.CutoffNonPeriodic)
    repulsive.setCutoffDistance(model.REP_CUTOFF * NM_PER_A)
    repulsive.setUseSwitchingFunction(True)
    repulsive.setSwitchingDistance(model.REP_SWITCH * NM_PER_A)
    repulsive.setUseLongRangeCorrection(False)
    n = model.n_beads
    for _ in range(n):
        repulsive.addParticle([])
    for i in range(n):
        for j in range(i + 1, min(n, i + 4)):
            repulsive.addExclusion(i, j)
    nat_i, nat_j, nat_s2 = model.native_pairs()
    for i, j, s2 in zip(nat_i.tolist(), nat_j.tolist(), nat_s2.tolist(), strict=True):
        native.addBond(i, j, [float(np.sqrt(s2)) * NM_PER_A])
        repulsive.addExclusion(i, j)
    for force in (bonds, angles, torsions, native, repulsive):
        system.addForce(force)
    return system


def make_context(
    model: GoModel,
    *,
    platform: str = "Reference",
    threads: int = 1,
    integrator: mm.Integrator | None = None,
) -> mm.Context:
    """A Context for the Go model on ``platform`` ("Reference" for double precision)."""
    try:
        plat = mm.Platform.getPlatformByName(platform)
    except mm.OpenMMException as e:
        raise ParameterError(f"OpenMM platform {platform!r} is not available: {e}") from e
    props = {"Threads": str(threads)} if platform == "CPU" else {}
    integ = integrator or mm.VerletIntegrator(0.001)
    return mm.Context(build_system(model), integ, plat, props)


def energy_forces(context: mm.Context, x_angstrom: np.ndarray) -> tuple[float, np.ndarray]:
    """Energy (eps) and forces (eps/A) at ``x_angstrom``, in the numba kernels' units."""
    context.setPositions(np.asarray(x_angstrom, dtype=np.float64) * NM_PER_A)
    st = context.getState(getEnergy=True, getForces=True)
    e = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return float(e), np.asarray(f, dtype=np.float64) * NM_PER_A
