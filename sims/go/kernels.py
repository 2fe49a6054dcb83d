"""numba kernels of the C-alpha Go model: energy, forces and BAOAB Langevin steps.

Reproducibility rules, kept on purpose:
- fastmath off and a fixed summation order: every pair and term is visited in the same order
  on every run, so the result does not depend on how a run is chunked or restarted;
- single-threaded per work unit (parallelism comes from running WUs side by side), so the
  thread count cannot change the bits;
- only + - * / and sqrt in the hot loops, except one ``acos`` per bond angle, and the noise is
  Philox4x32-10 keyed by (segment seed) with counter (step, particle): a pure function.

Units: Angstrom, epsilon (the native-contact energy), bead mass 1, reduced time
tau = sqrt(m A^2 / epsilon), temperature in epsilon / k_B.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from sims.go.philox import philox4x32_10, symmetric_uniform

_SQRT3 = math.sqrt(3.0)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@njit(cache=True, error_model="numpy")
def energy_forces(
    x: np.ndarray,
    f: np.ndarray,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    native_s2: np.ndarray,
    kr: float,
    ktheta: float,
    k1: float,
    k3: float,
    eps: float,
    rep_c2: float,
) -> float:
    """Fill ``f`` with forces (epsilon/A) and return the potential energy (epsilon)."""
    n = x.shape[0]
    for i in range(n):
        f[i, 0] = 0.0
        f[i, 1] = 0.0
        f[i, 2] = 0.0
    e = 0.0

    # Bonds: kr (r - r0)^2
    for i in range(n - 1):
        dx = x[i + 1, 0] - x[i, 0]
        dy = x[i + 1, 1] - x[i, 1]
        dz = x[i + 1, 2] - x[i, 2]
        r = math.sqrt(dx * dx + dy * dy + dz * dz)
        dr = r - bond_r0[i]
        e += kr * dr * dr
        g = 2.0 * kr * dr / r
        f[i, 0] += g * dx
        f[i, 1] += g * dy
        f[i, 2] += g * dz
        f[i + 1, 0] -= g * dx
        f[i + 1, 1] -= g * dy
        f[i + 1, 2] -= g * dz

    # Angles: ktheta (theta - theta0)^2, vertex at i + 1
    for i in range(n - 2):
        ax = x[i, 0] - x[i + 1, 0]
        ay = x[i, 1] - x[i + 1, 1]
        az = x[i, 2] - x[i + 1, 2]
        bx = x[i + 2, 0] - x[i + 1, 0]
        by = x[i + 2, 1] - x[i + 1, 1]
        bz = x[i + 2, 2] - x[i + 1, 2]
        aa = ax * ax + ay * ay + az * az
        bb = bx * bx + by * by + bz * bz
        inv_ab = 1.0 / math.sqrt(aa * bb)
        c = (ax * bx + ay * by + az * bz) * inv_ab
        c = min(1.0, max(-1.0, c))
        theta = math.acos(c)
        dth = theta - theta0[i]
        e += ktheta * dth * dth
        s = math.sqrt(max(1.0 - c * c, 1e-12))
        # dV/dc = dV/dtheta * dtheta/dc = 2 k dth * (-1/sin)
        g = 2.0 * ktheta * dth / s  # = -dV/dc
        fax = g * (bx * inv_ab - c * ax / aa)
        fay = g * (by * inv_ab - c * ay / aa)
        faz = g * (bz * inv_ab - c * az / aa)
        fbx = g * (ax * inv_ab - c * bx / bb)
        fby = g * (ay * inv_ab - c * by / bb)
        fbz = g * (az * inv_ab - c * bz / bb)
        f[i, 0] += fax
        f[i, 1] += fay
        f[i, 2] += faz
        f[i + 2, 0] += fbx
        f[i + 2, 1] += fby
        f[i + 2, 2] += fbz
        f[i + 1, 0] -= fax + fbx
        f[i + 1, 1] -= fay + fby
        f[i + 1, 2] -= faz + fbz

    # Dihedrals: k1 [1 - cos(phi - phi0)] + k3 [1 - cos 3(phi - phi0)], IUPAC sign convention.
    # Forces follow Bekker's formulation (as in GROMACS) with rij = xi - xj, rkj, rkl.
    for i in range(n - 3):
        j = i + 1
        k = i + 2
        m_ = i + 3
        rijx = x[i, 0] - x[j, 0]
        rijy = x[i, 1] - x[j, 1]
        rijz = x[i, 2] - x[j, 2]
        rkjx = x[k, 0] - x[j, 0]
        rkjy = x[k, 1] - x[j, 1]
        rkjz = x[k, 2] - x[j, 2]
        rklx = x[k, 0] - x[m_, 0]
        rkly = x[k, 1] - x[m_, 1]
        rklz = x[k, 2] - x[m_, 2]
        mx = rijy * rkjz - rijz * rkjy
        my = rijz * rkjx - rijx * rkjz
        mz = rijx * rkjy - rijy * rkjx
        nx = rkjy * rklz - rkjz * rkly
        ny = rkjz * rklx - rkjx * rklz
        nz = rkjx * rkly - rkjy * rklx
        mm = mx * mx + my * my + mz * mz
        nn = nx * nx + ny * ny + nz * nz
        kk = rkjx * rkjx + rkjy * rkjy + rkjz * rkjz
        lkj = math.sqrt(kk)
        inv_mn = 1.0 / math.sqrt(mm * nn)
        cphi = (mx * nx + my * ny + mz * nz) * inv_mn
        sphi = lkj * (rijx * nx + rijy * ny + rijz * nz) * inv_mn
        cd = cphi * cos_phi0[i] + sphi * sin_phi0[i]
        sd = sphi * cos_phi0[i] - cphi * sin_phi0[i]
        e += k1 * (1.0 - cd) + k3 * (1.0 - (4.0 * cd * cd * cd - 3.0 * cd))
        dvdphi = k1 * sd + 3.0 * k3 * (3.0 * sd - 4.0 * sd * sd * sd)
        gi = -dvdphi * lkj / mm
        gl = dvdphi * lkj / nn
        fix = gi * mx
        fiy = gi * my
        fiz = gi * mz
        flx = gl * nx
        fly = gl * ny
        flz = gl * nz
        p = (rijx * rkjx + rijy * rkjy + rijz * rkjz) / kk
        q = (rklx * rkjx + rkly * rkjy + rklz * rkjz) / kk
        sx = p * fix - q * flx
        sy = p * fiy - q * fly
        sz = p * fiz - q * flz
        f[i, 0] += fix
        f[i, 1] += fiy
        f[i, 2] += fiz
        f[j, 0] += sx - fix
        f[j, 1] += sy - fiy
        f[j, 2] += sz - fiz
        f[k, 0] += -sx - flx
        f[k, 1] += -sy - fly
        f[k, 2] += -sz - flz
        f[m_, 0] += flx
        f[m_, 1] += fly
        f[m_, 2] += flz

    # Pairs |i - j| >= 4: native 10-12 contacts, or non-native (C/r)^12 repulsion.
    for i in range(n - 4):
        xi = x[i, 0]
        yi = x[i, 1]
        zi = x[i, 2]
        fxi = 0.0
        fyi = 0.0
        fzi = 0.0
        for j in range(i + 4, n):
            dx = x[j, 0] - xi
            dy = x[j, 1] - yi
            dz = x[j, 2] - zi
            r2 = dx * dx + dy * dy + dz * dz
            inv_r2 = 1.0 / r2
            s2 = native_s2[i, j]
            if s2 > 0.0:
                t = s2 * inv_r2
                t2 = t * t
                t4 = t2 * t2
                t5 = t4 * t
                t6 = t4 * t2
                e += eps * (5.0 * t6 - 6.0 * t5)
                g = 60.0 * eps * (t6 - t5) * inv_r2  # = -dV/dr / r
            else:
                u = rep_c2 * inv_r2
                u2 = u * u
                u6 = u2 * u2 * u2
                e += eps * u6
                g = 12.0 * eps * u6 * inv_r2
            fx = g * dx
            fy = g * dy
            fz = g * dz
            f[j, 0] += fx
            f[j, 1] += fy
            f[j, 2] += fz
            fxi -= fx
            fyi -= fy
            fzi -= fz
        f[i, 0] += fxi
        f[i, 1] += fyi
        f[i, 2] += fzi
    return e


@njit(cache=True, error_model="numpy")
def baoab(
    x: np.ndarray,
    v: np.ndarray,
    f: np.ndarray,
    n_steps: int,
    step0: int,
    key0: np.uint64,
    key1: np.uint64,
    dt: float,
    c1: float,
    noise: float,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    native_s2: np.ndarray,
    kr: float,
    ktheta: float,
    k1: float,
    k3: float,
    eps: float,
    rep_c2: float,
) -> float:
    """Advance ``n_steps`` BAOAB Langevin steps in place (Leimkuhler and Matthews 2013).

    ``f`` must hold the forces of ``x`` on entry and holds those of the new ``x`` on exit.
    ``noise`` = sqrt(1 - c1^2) * sqrt(kT / m); the random kick of particle ``p`` at step
    ``s`` (counted within the segment) is Philox((s_lo, s_hi, p, 0), key), three of its
    four words mapped to a symmetric uniform variate of unit variance (as in HOOMD-blue:
    the O step then has exactly the right variance and needs no transcendental function).
    Returns the potential energy after the last step.
    """
    n = x.shape[0]
    half = 0.5 * dt
    e = 0.0
    for s in range(step0, step0 + n_steps):
        c_lo = np.uint64(s) & _MASK
        c_hi = np.uint64(s) >> _S32
        for p in range(n):
            for d in range(3):
                v[p, d] += half * f[p, d]
                x[p, d] += half * v[p, d]
            r0, r1, r2, _ = philox4x32_10(c_lo, c_hi, np.uint64(p), np.uint64(0), key0, key1)
            v[p, 0] = c1 * v[p, 0] + noise * (_SQRT3 * symmetric_uniform(r0))
            v[p, 1] = c1 * v[p, 1] + noise * (_SQRT3 * symmetric_uniform(r1))
            v[p, 2] = c1 * v[p, 2] + noise * (_SQRT3 * symmetric_uniform(r2))
            for d in range(3):
                x[p, d] += half * v[p, d]
        e = energy_forces(
            x, f, bond_r0, theta0, cos_phi0, sin_phi0, native_s2, kr, ktheta, k1, k3, eps, rep_c2
        )
        for p in range(n):
            for d in range(3):
                v[p, d] += half * f[p, d]
    return e
