"""numba kernels of the C-alpha Go model: energy, forces, neighbour list and BAOAB steps.

Reproducibility rules, kept on purpose:
- fastmath off and a fixed summation order: every term is visited in the same order on every
  run, so the result does not depend on how a run is chunked or restarted;
- the forces are a pure function of the positions, whatever neighbour list is in use: the
  non-native repulsion is cut off at ``r_cut`` (a pair at r >= r_cut adds nothing, not even
  a zero), its pairs are visited in (i, j) order from a list that holds every pair within
  ``r_cut + skin`` (so every pair within ``r_cut``), and a pair in the list but beyond the
  cutoff is skipped before it touches any sum. Which step the list was rebuilt at, or how
  large the skin is, therefore cannot change a bit;
- single-threaded per work unit (parallelism comes from running WUs side by side), so the
  thread count cannot change the bits; element-wise loops may be vectorised by LLVM, which
  is exact (IEEE operations lane by lane, no reassociation, no fused multiply-add);
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
#: The list is rebuilt once a bead has moved this fraction of half the skin (a margin far
#: above rounding, so "every pair within the cutoff is listed" holds exactly).
_SKIN_SAFETY = 1.0 - 1e-6
#: Cells of the list builder: at most this many per bead (an extended chain is long and thin).
_CELLS_PER_BEAD = 4


@njit(cache=True, error_model="numpy")
def bonded_energy_forces(
    x: np.ndarray,
    f: np.ndarray,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    kr: float,
    ktheta: float,
    k1: float,
    k3: float,
) -> float:
    """Set ``f`` to the bonded forces (bonds, angles, dihedrals); return their energy."""
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

    return e


@njit(cache=True, error_model="numpy")
def native_energy_forces(
    x: np.ndarray,
    f: np.ndarray,
    nat_i: np.ndarray,
    nat_j: np.ndarray,
    nat_s2: np.ndarray,
    eps: float,
) -> float:
    """Add the native 10-12 contacts (a fixed list in (i, j) order, no cutoff) to ``f``."""
    e = 0.0
    for c in range(nat_i.shape[0]):
        i = nat_i[c]
        j = nat_j[c]
        dx = x[j, 0] - x[i, 0]
        dy = x[j, 1] - x[i, 1]
        dz = x[j, 2] - x[i, 2]
        r2 = dx * dx + dy * dy + dz * dz
        inv_r2 = 1.0 / r2
        t = nat_s2[c] * inv_r2
        t2 = t * t
        t4 = t2 * t2
        t5 = t4 * t
        t6 = t4 * t2
        e += eps * (5.0 * t6 - 6.0 * t5)
        g = 60.0 * eps * (t6 - t5) * inv_r2  # = -dV/dr / r
        fx = g * dx
        fy = g * dy
        fz = g * dz
        f[j, 0] += fx
        f[j, 1] += fy
        f[j, 2] += fz
        f[i, 0] -= fx
        f[i, 1] -= fy
        f[i, 2] -= fz
    return e


@njit(cache=True, error_model="numpy")
def repulsion_energy_forces(
    x: np.ndarray,
    f: np.ndarray,
    nl_start: np.ndarray,
    nl_j: np.ndarray,
    eps: float,
    rep_c2: float,
    r_switch: float,
    r_cut: float,
) -> float:
    """Add the non-native repulsion eps (C/r)^12 S(r) of the listed pairs to ``f``.

    S is OpenMM's switching function: 1 below ``r_switch``, 1 - 10 t^3 + 15 t^4 - 6 t^5 with
    t = (r - r_switch) / (r_cut - r_switch) up to ``r_cut``, 0 beyond, so energy, force and
    the force's derivative are continuous. Pairs at r >= r_cut are skipped outright.
    """
    n = x.shape[0]
    rc2 = r_cut * r_cut
    rs2 = r_switch * r_switch
    width = r_cut - r_switch
    e = 0.0
    for i in range(n):
        xi = x[i, 0]
        yi = x[i, 1]
        zi = x[i, 2]
        fxi = 0.0
        fyi = 0.0
        fzi = 0.0
        for k in range(nl_start[i], nl_start[i + 1]):
            j = nl_j[k]
            dx = x[j, 0] - xi
            dy = x[j, 1] - yi
            dz = x[j, 2] - zi
            r2 = dx * dx + dy * dy + dz * dz
            if r2 < rc2:
                inv_r2 = 1.0 / r2
                u = rep_c2 * inv_r2
                u2 = u * u
                u6 = u2 * u2 * u2
                ep = eps * u6
                g = 12.0 * ep * inv_r2  # = -dV/dr / r
                if r2 > rs2:
                    r = math.sqrt(r2)
                    t = (r - r_switch) / width
                    s = 1.0 + t * t * t * (-10.0 + t * (15.0 - 6.0 * t))
                    ds = t * t * (-30.0 + t * (60.0 - 30.0 * t)) / width  # dS/dr
                    g = g * s - ep * ds / r
                    ep = ep * s
                e += ep
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
def energy_forces(
    x: np.ndarray,
    f: np.ndarray,
    nl_start: np.ndarray,
    nl_j: np.ndarray,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    nat_i: np.ndarray,
    nat_j: np.ndarray,
    nat_s2: np.ndarray,
    kr: float,
    ktheta: float,
    k1: float,
    k3: float,
    eps: float,
    rep_c2: float,
    r_switch: float,
    r_cut: float,
) -> float:
    """Fill ``f`` with forces (epsilon/A) and return the potential energy (epsilon).

    ``nl_start``/``nl_j`` must list (at least) every non-native pair with |i - j| >= 4 within
    ``r_cut``, each row sorted by j (see :func:`build_neighbours`).
    """
    e = bonded_energy_forces(x, f, bond_r0, theta0, cos_phi0, sin_phi0, kr, ktheta, k1, k3)
    e += native_energy_forces(x, f, nat_i, nat_j, nat_s2, eps)
    e += repulsion_energy_forces(x, f, nl_start, nl_j, eps, rep_c2, r_switch, r_cut)
    return e


@njit(cache=True, error_model="numpy")
def build_neighbours(
    x: np.ndarray,
    native_s2: np.ndarray,
    r_list: float,
    nl_start: np.ndarray,
    nl_j: np.ndarray,
    x_ref: np.ndarray,
) -> np.ndarray:
    """List every non-native pair (|i - j| >= 4, native_s2[i, j] == 0) within ``r_list``.

    Row i of the list is ``nl_j[nl_start[i]:nl_start[i + 1]]``, sorted ascending; the
    positions are copied to ``x_ref``. Built with a cell list (cells at least ``r_list``
    wide, at most a few per bead), so the work grows with N. Returns ``nl_j``, or a larger
    array if it did not fit. Non-finite positions leave the list as it was (the run is lost
    anyway and is reported as a blow-up).
    """
    n = x.shape[0]
    lo = np.empty(3)
    hi = np.empty(3)
    for d in range(3):
        lo[d] = x[0, d]
        hi[d] = x[0, d]
    for i in range(n):
        for d in range(3):
            v = x[i, d]
            if not math.isfinite(v):
                return nl_j
            lo[d] = min(lo[d], v)
            hi[d] = max(hi[d], v)
    for i in range(n):
        for d in range(3):
            x_ref[i, d] = x[i, d]
    cell = r_list
    cap = float(_CELLS_PER_BEAD * n + 27)
    while True:
        m0 = math.floor((hi[0] - lo[0]) / cell) + 1.0
        m1 = math.floor((hi[1] - lo[1]) / cell) + 1.0
        m2 = math.floor((hi[2] - lo[2]) / cell) + 1.0
        if m0 * m1 * m2 <= cap:
            break
        cell *= 2.0
    n0 = int(m0)
    n1 = int(m1)
    n2 = int(m2)
    owner = np.empty(n, dtype=np.int64)
    count = np.zeros(n0 * n1 * n2 + 1, dtype=np.int64)
    for i in range(n):
        c0 = min(n0 - 1, int((x[i, 0] - lo[0]) / cell))
        c1 = min(n1 - 1, int((x[i, 1] - lo[1]) / cell))
        c2 = min(n2 - 1, int((x[i, 2] - lo[2]) / cell))
        c = (c0 * n1 + c1) * n2 + c2
        owner[i] = c
        count[c + 1] += 1
    for c in range(n0 * n1 * n2):
        count[c + 1] += count[c]
    fill = count[:-1].copy()
    beads = np.empty(n, dtype=np.int64)
    for i in range(n):  # ascending within each cell
        beads[fill[owner[i]]] = i
        fill[owner[i]] += 1
    rl2 = r_list * r_list
    row = np.empty(n, dtype=np.int64)
    used = 0
    for i in range(n):
        nl_start[i] = used
        c = owner[i]
        c0 = c // (n1 * n2)
        c1 = (c // n2) % n1
        c2 = c % n2
        m = 0
        for a in range(max(0, c0 - 1), min(n0, c0 + 2)):
            for b in range(max(0, c1 - 1), min(n1, c1 + 2)):
                for cc in range(max(0, c2 - 1), min(n2, c2 + 2)):
                    nb = (a * n1 + b) * n2 + cc
                    for k in range(count[nb], count[nb + 1]):
                        j = beads[k]
                        if j < i + 4 or native_s2[i, j] > 0.0:
                            continue
                        dx = x[j, 0] - x[i, 0]
                        dy = x[j, 1] - x[i, 1]
                        dz = x[j, 2] - x[i, 2]
                        if dx * dx + dy * dy + dz * dz < rl2:
                            # insertion keeps the row sorted by j
                            p = m
                            while p > 0 and row[p - 1] > j:
                                row[p] = row[p - 1]
                                p -= 1
                            row[p] = j
                            m += 1
        if used + m > nl_j.shape[0]:
            grown = np.empty(max(2 * nl_j.shape[0], used + m + n), dtype=nl_j.dtype)
            grown[:used] = nl_j[:used]
            nl_j = grown
        for p in range(m):
            nl_j[used + p] = row[p]
        used += m
    nl_start[n] = used
    return nl_j


@njit(cache=True, error_model="numpy")
def needs_rebuild(x: np.ndarray, x_ref: np.ndarray, skin: float) -> bool:
    """True once a bead has moved (almost) half the skin since the list was built."""
    h = 0.5 * skin * _SKIN_SAFETY
    h2 = h * h
    for i in range(x.shape[0]):
        dx = x[i, 0] - x_ref[i, 0]
        dy = x[i, 1] - x_ref[i, 1]
        dz = x[i, 2] - x_ref[i, 2]
        if dx * dx + dy * dy + dz * dz > h2:
            return True
    return False


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
    nl_start: np.ndarray,
    nl_j: np.ndarray,
    x_ref: np.ndarray,
    native_s2: np.ndarray,
    skin: float,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    nat_i: np.ndarray,
    nat_j: np.ndarray,
    nat_s2: np.ndarray,
    kr: float,
    ktheta: float,
    k1: float,
    k3: float,
    eps: float,
    rep_c2: float,
    r_switch: float,
    r_cut: float,
) -> tuple[float, np.ndarray, int]:
    """Advance ``n_steps`` BAOAB Langevin steps in place (Leimkuhler and Matthews 2013).

    ``f`` must hold the forces of ``x`` on entry and holds those of the new ``x`` on exit;
    the neighbour list (``nl_start``, ``nl_j``, built at ``x_ref`` with radius
    ``r_cut + skin``) is rebuilt whenever a bead has moved half the skin.
    ``noise`` = sqrt(1 - c1^2) * sqrt(kT / m); the random kick of particle ``p`` at step
    ``s`` (counted within the segment) is Philox((s_lo, s_hi, p, 0), key), three of its
    four words mapped to a symmetric uniform variate of unit variance (as in HOOMD-blue:
    the O step then has exactly the right variance and needs no transcendental function).
    Returns the potential energy after the last step, the list's ``nl_j`` (reallocated if
    it grew) and the number of rebuilds.
    """
    n = x.shape[0]
    m = 3 * n
    xf = x.reshape(m)
    vf = v.reshape(m)
    ff = f.reshape(m)
    half = 0.5 * dt
    r_list = r_cut + skin
    e = 0.0
    builds = 0
    for s in range(step0, step0 + n_steps):
        c_lo = np.uint64(s) & _MASK
        c_hi = np.uint64(s) >> _S32
        for k in range(m):  # B, A
            vf[k] += half * ff[k]
            xf[k] += half * vf[k]
        for p in range(n):  # O
            r0, r1, r2, _ = philox4x32_10(c_lo, c_hi, np.uint64(p), np.uint64(0), key0, key1)
            v[p, 0] = c1 * v[p, 0] + noise * (_SQRT3 * symmetric_uniform(r0))
            v[p, 1] = c1 * v[p, 1] + noise * (_SQRT3 * symmetric_uniform(r1))
            v[p, 2] = c1 * v[p, 2] + noise * (_SQRT3 * symmetric_uniform(r2))
        for k in range(m):  # A
            xf[k] += half * vf[k]
        if needs_rebuild(x, x_ref, skin):
            nl_j = build_neighbours(x, native_s2, r_list, nl_start, nl_j, x_ref)
            builds += 1
        e = energy_forces(
            x,
            f,
            nl_start,
            nl_j,
            bond_r0,
            theta0,
            cos_phi0,
            sin_phi0,
            nat_i,
            nat_j,
            nat_s2,
            kr,
            ktheta,
            k1,
            k3,
            eps,
            rep_c2,
            r_switch,
            r_cut,
        )
        for k in range(m):  # B
            vf[k] += half * ff[k]
    return e, nl_j, builds


class NeighbourList:
    """The non-native pair list of one conformation: every pair within ``r_cut + skin``.

    A plain holder of the arrays :func:`baoab` maintains; any list that holds every pair
    within the cutoff gives bit-identical forces, so when it was built does not matter.
    """

    __slots__ = ("j", "start", "x_ref")

    def __init__(self, x: np.ndarray, native_s2: np.ndarray, r_list: float) -> None:
        n = x.shape[0]
        self.start = np.zeros(n + 1, dtype=np.int64)
        self.j = np.zeros(8 * n + 64, dtype=np.int64)
        self.x_ref = np.array(x, dtype=np.float64)
        self.j = build_neighbours(x, native_s2, r_list, self.start, self.j, self.x_ref)

    @property
    def n_pairs(self) -> int:
        return int(self.start[-1])
