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
- only + - * / and sqrt in the hot loops (the bond angle's arccos is fdlibm's rational
  approximation written out, :func:`acos_inv`), and the noise is
  Philox4x32-10 keyed by (segment seed) with counter (step, particle): a pure function.

Units: Angstrom, epsilon (the native-contact energy), bead mass 1, reduced time
tau = sqrt(m A^2 / epsilon), temperature in epsilon / k_B.
"""

from __future__ import annotations

import math

import llvmlite.binding as llvm
import numpy as np
from numba import njit

from sims.errors import ParameterError
from sims.go.philox import TWO_M31, philox4x32_10

# The bonded loops read positions and write a dozen scratch rows; LLVM vectorises a loop only
# after proving at run time that no two of those arrays overlap, and by default gives up when
# that takes more than 128 comparisons (the dihedral loop needs about 150). Raising the limit
# changes which loops are vectorised, never a result: vector lanes do the same IEEE operations
# as the scalar code (tests/test_go_engine.py compares the two bit for bit).
llvm.set_option("", "-vectorize-memory-check-threshold=1024")

_SQRT3 = math.sqrt(3.0)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
#: The exponent bits of 2^52: or-ed with a 32-bit word w they make the double 2^52 + w.
_EXP52_BITS = np.uint64(0x4330000000000000)
_TWO52 = 4503599627370496.0
#: The list is rebuilt once a bead has moved this fraction of half the skin (a margin far
#: above rounding, so "every pair within the cutoff is listed" holds exactly).
_SKIN_SAFETY = 1.0 - 1e-6
#: Cells of the list builder: at most this many per bead (an extended chain is long and thin).
_CELLS_PER_BEAD = 4


#: Rows of the scratch array of :func:`energy_forces`: per-term force contributions (three
#: components each) of bonds (1 row group), angles (first atom, third atom, vertex) and
#: dihedrals (atoms 1-4), the energies of bonds, angles and dihedrals, then the geometry
#: the three kinds share: bond vectors and lengths, and the normals of consecutive bonds.
_W_BOND = 0
_W_ANG_A = 3
_W_ANG_B = 6
_W_ANG_V = 9
_W_DIH_1 = 12
_W_DIH_2 = 15
_W_DIH_3 = 18
_W_DIH_4 = 21
_W_E_BOND = 24
_W_E_ANG = 25
_W_E_DIH = 26
#: Rows of the terms (the rest is geometry, computed afresh in each block).
_W_TERMS = 27
#: bond i: b = x[i + 1] - x[i] (3 rows), |b|, 1/|b|, 1/|b|^2
_G_B = 27
_G_R = 30
_G_IR = 31
_G_IR2 = 32
#: angle i: c = (x[i] - x[i + 1]) x (x[i + 2] - x[i + 1]) (3 rows), |c|, 1/|c|, 1/|c|^2
_G_C = 33
_G_SC = 36
_G_ISC = 37
_G_ICC = 38
SCRATCH_ROWS = 39
#: Term k of a kind is stored at column k - (block start) + _PAD; columns outside the terms
#: hold 0.0, so the per-bead sums read every neighbour's term without a branch. A block
#: also computes the geometry of the 2 bonds and 1 normal after it (the last terms need it).
_PAD = 3
_AHEAD = 2

# fdlibm's (Sun, 1993) rational approximation of asin on [0, 0.5], for :func:`acos`.
_PS0 = 1.66666666666666657415e-01
_PS1 = -3.25565818622400915405e-01
_PS2 = 2.01212532134862925881e-01
_PS3 = -4.00555345006794114027e-02
_PS4 = 7.91534994289814532176e-04
_PS5 = 3.47933107596021167570e-05
_QS1 = -2.40339491173441421878e00
_QS2 = 2.02094576023350569471e00
_QS3 = -6.88283971605453293030e-01
_QS4 = 7.70381505559019352791e-02
_PIO2_HI = 1.57079632679489655800e00
_PIO2_LO = 6.12323399573676603587e-17
_PI = 3.14159265358979311600e00


#: Beads per block of the bonded terms (the scratch of one block stays in the L1 cache).
BLOCK = 128


def scratch(n: int) -> np.ndarray:
    """The scratch array of :func:`energy_forces` (the size does not depend on ``n``)."""
    return np.zeros((SCRATCH_ROWS, BLOCK + _PAD + _AHEAD), dtype=np.float64)


@njit(cache=True, error_model="numpy", inline="always")
def acos_inv(c: float, y: float) -> tuple[float, float]:
    """arccos of ``c`` in [-1, 1] and 1/``y``, with one division for both (a division costs
    as much as a dozen multiplications), branch-free so the angle loop vectorises.

    fdlibm's algorithm without its high-word split, its rational p/q taken as
    p * (y / (q y)): within 2 ulp of libm. Only + - * / and sqrt: the same bits on every
    IEEE machine, whatever libm.
    """
    a = abs(c)
    small = a <= 0.5
    z = c * c if small else (1.0 - a) * 0.5
    p = z * (_PS0 + z * (_PS1 + z * (_PS2 + z * (_PS3 + z * (_PS4 + z * _PS5)))))
    q = 1.0 + z * (_QS1 + z * (_QS2 + z * (_QS3 + z * _QS4)))
    t = 1.0 / (q * y)
    r = p * (y * t)
    s = math.sqrt(z)
    near_zero = _PIO2_HI - (c - (_PIO2_LO - c * r))
    far = 2.0 * (s + r * s) if c > 0.0 else _PI - 2.0 * (s + (r * s - _PIO2_LO))
    return (near_zero if small else far), q * t


@njit(cache=True, error_model="numpy")
def acos(c: float) -> float:
    """arccos of ``c`` in [-1, 1], as the angle terms compute it (:func:`acos_inv`)."""
    return acos_inv(c, 1.0)[0]


@njit(cache=True, error_model="numpy")
def bonded_terms(
    x: np.ndarray,
    w: np.ndarray,
    lo: int,
    hi: int,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    kr: float,
    ktheta: float,
    k1: float,
    k3: float,
) -> None:
    """Write the force contributions and energy of bonded terms ``lo <= i < hi`` (term i
    starts at bead i) into column ``i - lo + _PAD`` of the scratch ``w``.

    Positions are ``x[d, i]`` (component-major). The geometry comes first, once per bond and
    per pair of consecutive bonds (a bond is shared by a bond term, two angles and three
    dihedrals): three divisions and three square roots per bead in all. Every loop is
    element-wise over terms (no sum across terms), so LLVM may vectorise it without
    changing a bit.
    """
    n = x.shape[1]
    xs = x[0]
    ys = x[1]
    zs = x[2]
    bx_ = w[_G_B]
    by_ = w[_G_B + 1]
    bz_ = w[_G_B + 2]
    r_ = w[_G_R]
    ir_ = w[_G_IR]
    ir2_ = w[_G_IR2]
    cx_ = w[_G_C]
    cy_ = w[_G_C + 1]
    cz_ = w[_G_C + 2]
    sc_ = w[_G_SC]
    isc_ = w[_G_ISC]
    icc_ = w[_G_ICC]
    # Bonds: kr (r - r0)^2 with b = x[i + 1] - x[i]; the contribution is the force on atom
    # i (atom i + 1 gets minus it). The 2 bonds after the block are the geometry of its
    # last angles and dihedrals (their force columns are rewritten by the next block).
    for i in range(lo, min(hi + _AHEAD, n - 1)):
        k = i - lo + _PAD
        bx = xs[i + 1] - xs[i]
        by = ys[i + 1] - ys[i]
        bz = zs[i + 1] - zs[i]
        r2 = bx * bx + by * by + bz * bz
        ir2 = 1.0 / r2
        r = math.sqrt(r2)
        ir = r * ir2
        bx_[k] = bx
        by_[k] = by
        bz_[k] = bz
        r_[k] = r
        ir_[k] = ir
        ir2_[k] = ir2
        dr = r - bond_r0[i]
        g = 2.0 * kr * dr * ir
        w[_W_BOND, k] = g * bx
        w[_W_BOND + 1, k] = g * by
        w[_W_BOND + 2, k] = g * bz
        w[_W_E_BOND, k] = kr * dr * dr

    # Normals of consecutive bonds: c = a x b with a = -b_i = x[i] - x[i + 1], b = b_(i+1)
    for i in range(lo, min(hi + _AHEAD - 1, n - 2)):
        k = i - lo + _PAD
        ax = -bx_[k]
        ay = -by_[k]
        az = -bz_[k]
        bx = bx_[k + 1]
        by = by_[k + 1]
        bz = bz_[k + 1]
        cx = ay * bz - az * by
        cy = az * bx - ax * bz
        cz = ax * by - ay * bx
        cc = cx * cx + cy * cy + cz * cz
        icc = 1.0 / cc
        sc = math.sqrt(cc)
        cx_[k] = cx
        cy_[k] = cy
        cz_[k] = cz
        sc_[k] = sc
        isc_[k] = sc * icc
        icc_[k] = icc

    # Angles: ktheta (theta - theta0)^2, vertex at i + 1, a = x[i] - x[i + 1], b = b_(i+1);
    # sin(theta) = |a x b| / (|a| |b|), floored at 1e-6 (a straight angle has no direction).
    for i in range(lo, min(hi, n - 2)):
        k = i - lo + _PAD
        ax = -bx_[k]
        ay = -by_[k]
        az = -bz_[k]
        bx = bx_[k + 1]
        by = by_[k + 1]
        bz = bz_[k + 1]
        inv_ab = ir_[k] * ir_[k + 1]
        c = (ax * bx + ay * by + az * bz) * inv_ab
        c = min(1.0, max(-1.0, c))
        sn = max(sc_[k] * inv_ab, 1e-6)
        theta, inv_sn = acos_inv(c, sn)
        dth = theta - theta0[i]
        # dV/dc = dV/dtheta * dtheta/dc = 2 k dth * (-1/sin)
        g = 2.0 * ktheta * dth * inv_sn  # = -dV/dc
        ga = g * inv_ab
        gca = g * c * ir2_[k]
        gcb = g * c * ir2_[k + 1]
        fax = ga * bx - gca * ax
        fay = ga * by - gca * ay
        faz = ga * bz - gca * az
        fbx = ga * ax - gcb * bx
        fby = ga * ay - gcb * by
        fbz = ga * az - gcb * bz
        w[_W_ANG_A, k] = fax
        w[_W_ANG_A + 1, k] = fay
        w[_W_ANG_A + 2, k] = faz
        w[_W_ANG_B, k] = fbx
        w[_W_ANG_B + 1, k] = fby
        w[_W_ANG_B + 2, k] = fbz
        w[_W_ANG_V, k] = -(fax + fbx)
        w[_W_ANG_V + 1, k] = -(fay + fby)
        w[_W_ANG_V + 2, k] = -(faz + fbz)
        w[_W_E_ANG, k] = ktheta * dth * dth

    # Dihedrals: k1 [1 - cos(phi - phi0)] + k3 [1 - cos 3(phi - phi0)], IUPAC sign convention.
    # Forces follow Bekker's formulation (as in GROMACS) with rij = xi - xj = -b_i,
    # rkj = b_(i+1), rkl = -b_(i+2): m = rij x rkj is the normal of angle i, n = rkj x rkl
    # that of angle i + 1, |rkj| and 1/|rkj|^2 those of bond i + 1.
    for i in range(lo, min(hi, n - 3)):
        k = i - lo + _PAD
        rijx = -bx_[k]
        rijy = -by_[k]
        rijz = -bz_[k]
        rkjx = bx_[k + 1]
        rkjy = by_[k + 1]
        rkjz = bz_[k + 1]
        rklx = -bx_[k + 2]
        rkly = -by_[k + 2]
        rklz = -bz_[k + 2]
        mx = cx_[k]
        my = cy_[k]
        mz = cz_[k]
        nx = cx_[k + 1]
        ny = cy_[k + 1]
        nz = cz_[k + 1]
        lkj = r_[k + 1]
        inv_mn = isc_[k] * isc_[k + 1]
        cphi = (mx * nx + my * ny + mz * nz) * inv_mn
        sphi = lkj * (rijx * nx + rijy * ny + rijz * nz) * inv_mn
        cd = cphi * cos_phi0[i] + sphi * sin_phi0[i]
        sd = sphi * cos_phi0[i] - cphi * sin_phi0[i]
        dvdphi = k1 * sd + 3.0 * k3 * (3.0 * sd - 4.0 * sd * sd * sd)
        gi = -dvdphi * lkj * icc_[k]
        gl = dvdphi * lkj * icc_[k + 1]
        fix = gi * mx
        fiy = gi * my
        fiz = gi * mz
        flx = gl * nx
        fly = gl * ny
        flz = gl * nz
        inv_kk = ir2_[k + 1]
        p = (rijx * rkjx + rijy * rkjy + rijz * rkjz) * inv_kk
        q = (rklx * rkjx + rkly * rkjy + rklz * rkjz) * inv_kk
        sx = p * fix - q * flx
        sy = p * fiy - q * fly
        sz = p * fiz - q * flz
        w[_W_DIH_1, k] = fix
        w[_W_DIH_1 + 1, k] = fiy
        w[_W_DIH_1 + 2, k] = fiz
        w[_W_DIH_2, k] = sx - fix
        w[_W_DIH_2 + 1, k] = sy - fiy
        w[_W_DIH_2 + 2, k] = sz - fiz
        w[_W_DIH_3, k] = -sx - flx
        w[_W_DIH_3 + 1, k] = -sy - fly
        w[_W_DIH_3 + 2, k] = -sz - flz
        w[_W_DIH_4, k] = flx
        w[_W_DIH_4 + 1, k] = fly
        w[_W_DIH_4 + 2, k] = flz
        w[_W_E_DIH, k] = k1 * (1.0 - cd) + k3 * (1.0 - (4.0 * cd * cd * cd - 3.0 * cd))


@njit(cache=True, error_model="numpy")
def bonded_forces(w: np.ndarray, f: np.ndarray, lo: int, hi: int) -> None:
    """Set ``f`` of beads ``lo <= p < hi`` to the sum of their bonded contributions, in a
    fixed order: bonds (own, previous), angles (as first atom, vertex, third atom),
    dihedrals (as atom 1, 2, 3, 4). Terms that do not exist are 0.0 in ``w``, so the ends
    of the chain need no branch."""
    for d in range(3):
        fd = f[d]
        bond = w[_W_BOND + d]
        ang_a = w[_W_ANG_A + d]
        ang_v = w[_W_ANG_V + d]
        ang_b = w[_W_ANG_B + d]
        d1 = w[_W_DIH_1 + d]
        d2 = w[_W_DIH_2 + d]
        d3 = w[_W_DIH_3 + d]
        d4 = w[_W_DIH_4 + d]
        for p in range(lo, hi):
            k = p - lo + _PAD
            t = bond[k] - bond[k - 1]
            t += ang_a[k]
            t += ang_v[k - 1]
            t += ang_b[k - 2]
            t += d1[k]
            t += d2[k - 1]
            t += d3[k - 2]
            t += d4[k - 3]
            fd[p] = t


@njit(cache=True, error_model="numpy")
def bonded_block_energy(w: np.ndarray, lo: int, hi: int, n: int) -> float:
    """Energy of the bonded terms ``lo <= i < hi`` in ``w``: bonds, angles, dihedrals."""
    e = 0.0
    for i in range(lo, min(hi, n - 1)):
        e += w[_W_E_BOND, i - lo + _PAD]
    for i in range(lo, min(hi, n - 2)):
        e += w[_W_E_ANG, i - lo + _PAD]
    for i in range(lo, min(hi, n - 3)):
        e += w[_W_E_DIH, i - lo + _PAD]
    return e


@njit(cache=True, error_model="numpy")
def bonded(
    x: np.ndarray,
    f: np.ndarray,
    w: np.ndarray,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    kr: float,
    ktheta: float,
    k1: float,
    k3: float,
    with_energy: bool,
) -> float:
    """Set ``f`` to the bonded forces, block by block of ``BLOCK`` beads so the scratch stays
    in cache: the terms starting in a block, then the forces on its beads (a bead's terms
    start at most 3 beads before it: the last 3 columns of a block are carried over).
    Returns the bonded energy (blocks in order) if ``with_energy``, else 0.0."""
    n = x.shape[1]
    e = 0.0
    for row in range(_W_TERMS):
        for k in range(_PAD):
            w[row, k] = 0.0
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        if hi > n - 3:  # the last block: terms past the chain's end must read 0.0
            for row in range(_W_TERMS):
                for k in range(max(0, n - 3 - lo) + _PAD, hi - lo + _PAD):
                    w[row, k] = 0.0
        bonded_terms(x, w, lo, hi, bond_r0, theta0, cos_phi0, sin_phi0, kr, ktheta, k1, k3)
        bonded_forces(w, f, lo, hi)
        if with_energy:
            e += bonded_block_energy(w, lo, hi, n)
        # element by element: a slice assignment within one array copies through a temporary
        for row in range(_W_TERMS):
            for k in range(_PAD):
                w[row, k] = w[row, hi - lo + k]
    return e


@njit(cache=True, error_model="numpy")
def native_terms(
    x: np.ndarray,
    nw: np.ndarray,
    nat_i: np.ndarray,
    nat_j: np.ndarray,
    nat_s2: np.ndarray,
    eps: float,
) -> None:
    """Native 10-12 contacts (fixed list, no cutoff; contact c joins beads ``nat_i[c]`` <
    ``nat_j[c]``): force on j (rows 0-2) and energy (row 3) of each contact into ``nw``,
    element-wise. The gather walks the contacts in one flat loop (LLVM vectorises it with
    gathers; bead by bead, rows of about two contacts, it took 40% longer)."""
    xs = x[0]
    ys = x[1]
    zs = x[2]
    m = nat_j.shape[0]
    for c in range(m):  # gather, then the arithmetic on rows
        i = nat_i[c]
        j = nat_j[c]
        nw[0, c] = xs[j] - xs[i]
        nw[1, c] = ys[j] - ys[i]
        nw[2, c] = zs[j] - zs[i]
    dxs = nw[0]
    dys = nw[1]
    dzs = nw[2]
    es = nw[3]
    for c in range(m):
        dx = dxs[c]
        dy = dys[c]
        dz = dzs[c]
        r2 = dx * dx + dy * dy + dz * dz
        inv_r2 = 1.0 / r2
        t = nat_s2[c] * inv_r2
        t2 = t * t
        t4 = t2 * t2
        t5 = t4 * t
        t6 = t4 * t2
        g = 60.0 * eps * (t6 - t5) * inv_r2  # = -dV/dr / r
        dxs[c] = g * dx
        dys[c] = g * dy
        dzs[c] = g * dz
        es[c] = eps * (5.0 * t6 - 6.0 * t5)


@njit(cache=True, error_model="numpy")
def repulsion_terms(
    x: np.ndarray,
    pw: np.ndarray,
    nl_start: np.ndarray,
    pairs: np.ndarray,
    near: np.ndarray,
    eps: float,
    rep_c2: float,
    r_switch: float,
    r_cut: float,
) -> int:
    """Non-native repulsion eps (C/r)^12 S(r) of the listed pairs within ``r_cut``.

    Element-wise passes: x_j - x_i of every listed pair (rows 0-2 of ``pw``) and r^2
    (row 3); then the indices of those at r < r_cut, in list order, into ``near`` (without
    a branch: every index is written, the count advances only for those kept). Much of a
    list is its skin (native contacts take most pairs within 8 A, not those just beyond),
    so the arithmetic then runs only on the kept pairs: force on j (rows 4-6) and energy
    (row 7), at the kept pair's rank. A pair beyond the cutoff never reaches a sum.
    Returns the number kept.

    S is OpenMM's switching function: 1 below ``r_switch``, 1 - 10 t^3 + 15 t^4 - 6 t^5 with
    t = (r - r_switch) / (r_cut - r_switch) up to ``r_cut``, 0 beyond, so energy, force and
    the force's derivative are continuous.
    """
    xs = x[0]
    ys = x[1]
    zs = x[2]
    n_pairs = nl_start[x.shape[1]]
    dxs = pw[0]
    dys = pw[1]
    dzs = pw[2]
    r2s = pw[3]
    for k in range(n_pairs):  # gather (scalar loads), then arithmetic on contiguous rows
        i = pairs[0, k]
        j = pairs[1, k]
        dxs[k] = xs[j] - xs[i]
        dys[k] = ys[j] - ys[i]
        dzs[k] = zs[j] - zs[i]
    for k in range(n_pairs):
        r2s[k] = dxs[k] * dxs[k] + dys[k] * dys[k] + dzs[k] * dzs[k]
    rc2 = r_cut * r_cut
    m = 0
    for k in range(n_pairs):
        near[m] = k
        m += r2s[k] < rc2
    rs2 = r_switch * r_switch
    inv_width = 1.0 / (r_cut - r_switch)
    fxs = pw[4]
    fys = pw[5]
    fzs = pw[6]
    es = pw[7]
    for c in range(m):
        k = near[c]
        dx = dxs[k]
        dy = dys[k]
        dz = dzs[k]
        r2 = r2s[k]
        inv_r2 = 1.0 / r2
        u = rep_c2 * inv_r2
        u2 = u * u
        u6 = u2 * u2 * u2
        ep = eps * u6
        g = 12.0 * ep * inv_r2  # = -dV/dr / r
        r = math.sqrt(r2)
        t = (r - r_switch) * inv_width
        sw = 1.0 + t * t * t * (-10.0 + t * (15.0 - 6.0 * t))
        dsw = t * t * (-30.0 + t * (60.0 - 30.0 * t)) * inv_width  # dS/dr
        switched = r2 > rs2
        g = g * sw - ep * dsw * (r * inv_r2) if switched else g
        ep = ep * sw if switched else ep
        fxs[c] = g * dx
        fys[c] = g * dy
        fzs[c] = g * dz
        es[c] = ep
    return m


@njit(cache=True, error_model="numpy")
def pair_forces(
    f: np.ndarray,
    nw: np.ndarray,
    nat_start: np.ndarray,
    nat_j: np.ndarray,
    pw: np.ndarray,
    near: np.ndarray,
    n_near: int,
    pairs: np.ndarray,
) -> None:
    """Add the native contacts (:func:`native_terms`) and the repulsion of the ``n_near``
    pairs within the cutoff (:func:`repulsion_terms`) to ``f``, in a fixed order: the
    native contacts bead by bead (each added to bead j and subtracted from a running sum
    that is added to bead i after its row), then the repulsive pairs in (i, j) order."""
    fx_ = f[0]
    fy_ = f[1]
    fz_ = f[2]
    for i in range(f.shape[1]):
        fxi = 0.0
        fyi = 0.0
        fzi = 0.0
        for c in range(nat_start[i], nat_start[i + 1]):
            j = nat_j[c]
            fx = nw[0, c]
            fy = nw[1, c]
            fz = nw[2, c]
            fx_[j] += fx
            fy_[j] += fy
            fz_[j] += fz
            fxi -= fx
            fyi -= fy
            fzi -= fz
        fx_[i] += fxi
        fy_[i] += fyi
        fz_[i] += fzi
    for c in range(n_near):
        k = near[c]
        i = pairs[0, k]
        j = pairs[1, k]
        fx = pw[4, c]
        fy = pw[5, c]
        fz = pw[6, c]
        fx_[j] += fx
        fy_[j] += fy
        fz_[j] += fz
        fx_[i] -= fx
        fy_[i] -= fy
        fz_[i] -= fz


def pair_scratch(n_pairs: int) -> np.ndarray:
    """Scratch for :func:`repulsion_terms` (or, with 4 rows used, :func:`native_terms`)."""
    return np.zeros((8, max(1, n_pairs)), dtype=np.float64)


def near_scratch(n_pairs: int) -> np.ndarray:
    """Integer scratch of :func:`repulsion_terms`: the pairs within the cutoff."""
    return np.zeros(max(1, n_pairs), dtype=np.int64)


@njit(cache=True, error_model="numpy")
def energy_forces(
    x: np.ndarray,
    f: np.ndarray,
    w: np.ndarray,
    nw: np.ndarray,
    pw: np.ndarray,
    near: np.ndarray,
    nl_start: np.ndarray,
    pairs: np.ndarray,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    nat_start: np.ndarray,
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
    nat_i: np.ndarray,
    with_energy: bool,
) -> float:
    """Fill ``f`` with forces (epsilon/A) and return the potential energy (epsilon), or
    0.0 if not ``with_energy`` (the forces are the same bits either way).

    ``x`` and ``f`` are component-major, shape (3, N); ``w`` is :func:`scratch`, ``nw``
    :func:`pair_scratch` (number of native contacts), ``pw`` :func:`pair_scratch` and
    ``near`` :func:`near_scratch` (at least the number of listed pairs). ``nl_start``/``pairs``
    must list (at least) every non-native
    pair with |i - j| >= 4 within ``r_cut``, in (i, j) order (see :func:`build_neighbours`).
    The forces on each bead are summed in a fixed order: bonded terms, native contacts in
    (i, j) order, repulsion in (i, j) order. The energy is the sum of the bonded terms
    (block by block), native contacts and repulsion, each in order.
    """
    e = bonded(x, f, w, bond_r0, theta0, cos_phi0, sin_phi0, kr, ktheta, k1, k3, with_energy)
    native_terms(x, nw, nat_i, nat_j, nat_s2, eps)
    m = repulsion_terms(x, pw, nl_start, pairs, near, eps, rep_c2, r_switch, r_cut)
    pair_forces(f, nw, nat_start, nat_j, pw, near, m, pairs)
    if not with_energy:
        return 0.0
    for c in range(nat_j.shape[0]):
        e += nw[3, c]
    for c in range(m):
        e += pw[7, c]
    return e


@njit(cache=True, error_model="numpy")
def potential_energy(
    x: np.ndarray,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    nat_start: np.ndarray,
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
    nat_i: np.ndarray,
    r_list: float,
) -> float:
    """The potential energy :func:`energy_forces` returns for ``x`` (component-major), in
    one call: the pair list (every pair within ``r_list`` >= ``r_cut``, built once, no
    outer list) and the scratch are made here. Any list holding every pair within the
    cutoff gives the same bits (:class:`NeighbourList`), so this is the energy of
    :meth:`GoModel.energy_forces`, for checks of one state (a result's sanity) that would
    otherwise pay for a list object, a second pass and the allocations from Python."""
    n = x.shape[1]
    nl_start = np.zeros(n + 1, dtype=np.int64)
    pairs = build_neighbours(
        x,
        nat_start,
        nat_j,
        r_list,
        nl_start,
        np.zeros((2, 8 * n + 64), dtype=np.int64),
        np.empty((3, n)),
    )
    m = max(1, int(nl_start[n]))
    return energy_forces(
        x,
        np.zeros((3, n)),
        np.zeros((SCRATCH_ROWS, BLOCK + _PAD + _AHEAD)),
        np.zeros((8, max(1, nat_j.shape[0]))),
        np.zeros((8, m)),
        np.zeros(m, dtype=np.int64),
        nl_start,
        pairs,
        bond_r0,
        theta0,
        cos_phi0,
        sin_phi0,
        nat_start,
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
        nat_i,
        True,
    )


@njit(cache=True, error_model="numpy")
def build_neighbours(
    x: np.ndarray,
    nat_start: np.ndarray,
    nat_j: np.ndarray,
    r_list: float,
    nl_start: np.ndarray,
    pairs: np.ndarray,
    x_ref: np.ndarray,
) -> np.ndarray:
    """List every non-native pair (|i - j| >= 4, not a native contact) within ``r_list``.

    The native partners of bead i are ``nat_j[nat_start[i]:nat_start[i + 1]]``, ascending.

    ``x`` is component-major (3, N). The pairs are ``pairs[:, k]`` = (i, j), sorted by
    (i, j); those of bead i are ``k`` in ``nl_start[i]:nl_start[i + 1]``. The positions are
    copied to ``x_ref``. Built with a cell list (cells at least ``r_list`` wide, at most a
    few per bead), so the work grows with N. Returns ``pairs``, or a larger array if the
    list did not fit.
    Non-finite positions leave the list as it was (the run is lost anyway and is reported
    as a blow-up).
    """
    n = x.shape[1]
    lo = np.empty(3)
    hi = np.empty(3)
    for d in range(3):
        lo[d] = x[d, 0]
        hi[d] = x[d, 0]
        for i in range(n):
            v = x[d, i]
            if not math.isfinite(v):
                return pairs
            lo[d] = min(lo[d], v)
            hi[d] = max(hi[d], v)
    for d in range(3):
        for i in range(n):
            x_ref[d, i] = x[d, i]
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
        c0 = min(n0 - 1, int((x[0, i] - lo[0]) / cell))
        c1 = min(n1 - 1, int((x[1, i] - lo[1]) / cell))
        c2 = min(n2 - 1, int((x[2, i] - lo[2]) / cell))
        c = (c0 * n1 + c1) * n2 + c2
        owner[i] = c
        count[c + 1] += 1
    for c in range(n0 * n1 * n2):
        count[c + 1] += count[c]
    fill = count[:-1].copy()
    beads = np.empty(n, dtype=np.int64)
    cx = np.empty((3, n))  # positions in cell order: the scans below read them in runs
    for i in range(n):  # ascending within each cell
        k = fill[owner[i]]
        beads[k] = i
        cx[0, k] = x[0, i]
        cx[1, k] = x[1, i]
        cx[2, k] = x[2, i]
        fill[owner[i]] += 1
    xc = cx[0]
    yc = cx[1]
    zc = cx[2]
    rl2 = r_list * r_list
    row = np.empty(n, dtype=np.int64)
    used = 0
    for i in range(n):
        nl_start[i] = used
        c = owner[i]
        c0 = c // (n1 * n2)
        c1 = (c // n2) % n1
        c2 = c % n2
        xi = x[0, i]
        yi = x[1, i]
        zi = x[2, i]
        m = 0
        for a in range(max(0, c0 - 1), min(n0, c0 + 2)):
            for b in range(max(0, c1 - 1), min(n1, c1 + 2)):
                # cells (a, b, c2 - 1 .. c2 + 1) are consecutive: one run of beads, scanned
                # without a branch (every bead is written, the count advances for a hit)
                nb = (a * n1 + b) * n2
                for k in range(count[nb + max(0, c2 - 1)], count[nb + min(n2, c2 + 2)]):
                    j = beads[k]
                    dx = xc[k] - xi
                    dy = yc[k] - yi
                    dz = zc[k] - zi
                    row[m] = j
                    m += (j >= i + 4) & (dx * dx + dy * dy + dz * dz < rl2)
        for a in range(1, m):  # insertion sort: rows are short
            j = row[a]
            b = a
            while b > 0 and row[b - 1] > j:
                row[b] = row[b - 1]
                b -= 1
            row[b] = j
        if used + m > pairs.shape[1]:
            grown = np.empty((2, max(2 * pairs.shape[1], used + m + n)), dtype=pairs.dtype)
            grown[:, :used] = pairs[:, :used]
            pairs = grown
        q = nat_start[i]
        q_end = nat_start[i + 1]
        for p in range(m):  # both ascending: drop the native partners in one pass
            j = row[p]
            while q < q_end and nat_j[q] < j:
                q += 1
            if q < q_end and nat_j[q] == j:
                continue
            pairs[0, used] = i
            pairs[1, used] = j
            used += 1
    nl_start[n] = used
    return pairs


@njit(cache=True, error_model="numpy")
def needs_rebuild(x: np.ndarray, x_ref: np.ndarray, skin: float) -> bool:
    """True once a bead has moved (almost) half the skin since the list was built."""
    h = 0.5 * skin * _SKIN_SAFETY
    h2 = h * h
    xs = x[0]
    ys = x[1]
    zs = x[2]
    xr = x_ref[0]
    yr = x_ref[1]
    zr = x_ref[2]
    moved = 0
    for i in range(x.shape[1]):  # an integer count, not an early exit: it vectorises
        dx = xs[i] - xr[i]
        dy = ys[i] - yr[i]
        dz = zs[i] - zr[i]
        moved += dx * dx + dy * dy + dz * dz > h2
    return moved > 0


@njit(cache=True, error_model="numpy")
def filter_neighbours(
    x: np.ndarray,
    out_start: np.ndarray,
    out_pairs: np.ndarray,
    r_list: float,
    nl_start: np.ndarray,
    pairs: np.ndarray,
    x_ref: np.ndarray,
) -> np.ndarray:
    """The pairs of an outer list (``out_start``, ``out_pairs``, as built by
    :func:`build_neighbours`) now within ``r_list``, in the outer list's (i, j) order, into
    ``nl_start``/``pairs``; the positions are copied to ``x_ref``. Every pair within
    ``r_list`` is kept as long as the outer list holds them all (its radius exceeds
    ``r_list`` by twice the largest move since it was built). One pass without a branch
    (each pair is written, the count advances for a kept one): about 3 ns a pair
    (30 a bead at 1,058 beads), against about 600 ns a bead for the cell search. Returns
    ``pairs``, or a larger array if the outer list did not fit.
    """
    n = x.shape[1]
    for d in range(3):
        for i in range(n):
            x_ref[d, i] = x[d, i]
    n_out = out_start[n]
    if pairs.shape[1] < n_out:
        pairs = np.empty((2, n_out + n), dtype=pairs.dtype)
    xs = x[0]
    ys = x[1]
    zs = x[2]
    rl2 = r_list * r_list
    used = 0
    for i in range(n):
        nl_start[i] = used
        xi = xs[i]
        yi = ys[i]
        zi = zs[i]
        for k in range(out_start[i], out_start[i + 1]):
            j = out_pairs[1, k]
            dx = xs[j] - xi
            dy = ys[j] - yi
            dz = zs[j] - zi
            pairs[0, used] = i
            pairs[1, used] = j
            used += dx * dx + dy * dy + dz * dz < rl2
    nl_start[n] = used
    return pairs


@njit(cache=True, error_model="numpy")
def philox_noise(
    out: np.ndarray, c_lo: np.uint64, c_hi: np.uint64, key0: np.uint64, key1: np.uint64
) -> None:
    """``out[d, p]``: word d of Philox((c_lo, c_hi, p, 0), key) as a symmetric uniform
    variate of unit variance: ``sqrt(3) * symmetric_uniform(word)``, the same bits.

    Two element-wise passes, both vectorised: the Philox rounds write each 32-bit word w
    into the bits of the double 2^52 + w (exponent bits or-ed in; AVX2 has no vector
    conversion of 64-bit integers, and converting lane by lane cost half of the time);
    then 2^52 + w - 2^52 = float(w) exactly, and the arithmetic of
    :func:`~sims.go.philox.symmetric_uniform` follows.
    """
    n = out.shape[1]
    b0 = out[0].view(np.uint64)
    b1 = out[1].view(np.uint64)
    b2 = out[2].view(np.uint64)
    for p in range(n):
        r0, r1, r2, _ = philox4x32_10(c_lo, c_hi, np.uint64(p), np.uint64(0), key0, key1)
        b0[p] = r0 | _EXP52_BITS
        b1[p] = r1 | _EXP52_BITS
        b2[p] = r2 | _EXP52_BITS
    of = out.reshape(3 * n)
    for k in range(3 * n):
        of[k] = _SQRT3 * (((of[k] - _TWO52) + 0.5) * TWO_M31 - 1.0)


@njit(cache=True, error_model="numpy")
def baoab(
    x: np.ndarray,
    v: np.ndarray,
    f: np.ndarray,
    w: np.ndarray,
    nw: np.ndarray,
    pw: np.ndarray,
    near: np.ndarray,
    n_steps: int,
    step0: int,
    key0: np.uint64,
    key1: np.uint64,
    dt: float,
    c1: float,
    noise: float,
    nl_start: np.ndarray,
    pairs: np.ndarray,
    x_ref: np.ndarray,
    skin: float,
    out_start: np.ndarray,
    out_pairs: np.ndarray,
    x_out: np.ndarray,
    outer_skin: float,
    bond_r0: np.ndarray,
    theta0: np.ndarray,
    cos_phi0: np.ndarray,
    sin_phi0: np.ndarray,
    nat_start: np.ndarray,
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
    nat_i: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Advance ``n_steps`` BAOAB Langevin steps in place (Leimkuhler and Matthews 2013).

    ``x``, ``v``, ``f`` are component-major (3, N); ``f`` must hold the forces of ``x`` on
    entry and holds those of the new ``x`` on exit; ``w``, ``nw``, ``pw``, ``near`` are the scratch
    arrays of :func:`energy_forces`. The neighbour list (``nl_start``, ``pairs``, built at
    ``x_ref`` with radius ``r_cut + skin``) is rebuilt whenever a bead has moved half the
    skin, by filtering an outer list (``out_start``, ``out_pairs``, built at ``x_out`` with
    radius ``r_cut + outer_skin`` > ``r_cut + skin`` by a cell search), itself rebuilt first
    once a bead has moved half of ``outer_skin - skin`` since it was built. A thin list
    keeps the work of every step small, the outer list keeps the search rare; neither
    changes a bit (the forces do not depend on the list).
    ``noise`` = sqrt(1 - c1^2) * sqrt(kT / m); the random kick of particle ``p`` at step
    ``s`` (counted within the segment) is Philox((s_lo, s_hi, p, 0), key), three of its
    four words mapped to a symmetric uniform variate of unit variance (as in HOOMD-blue:
    the O step then has exactly the right variance and needs no transcendental function).
    Returns the potential energy after the last step, ``pairs``, ``pw``, ``near`` and
    ``out_pairs`` (reallocated if a list grew) and the number of rebuilds of the thin list
    and of the outer list.
    """
    n = x.shape[1]
    m = 3 * n
    xf = x.reshape(m)
    vf = v.reshape(m)
    ff = f.reshape(m)
    kick = np.empty((3, n))
    kf = kick.reshape(m)
    half = 0.5 * dt
    r_list = r_cut + skin
    e = 0.0
    builds = 0
    outer_builds = 0
    for s in range(step0, step0 + n_steps):
        philox_noise(kick, np.uint64(s) & _MASK, np.uint64(s) >> _S32, key0, key1)
        for k in range(m):  # B, A, O, A
            vk = vf[k] + half * ff[k]
            xk = xf[k] + half * vk
            vk = c1 * vk + noise * kf[k]
            vf[k] = vk
            xf[k] = xk + half * vk
        if needs_rebuild(x, x_ref, skin):
            if needs_rebuild(x, x_out, outer_skin - skin):
                out_pairs = build_neighbours(
                    x, nat_start, nat_j, r_cut + outer_skin, out_start, out_pairs, x_out
                )
                outer_builds += 1
            pairs = filter_neighbours(x, out_start, out_pairs, r_list, nl_start, pairs, x_ref)
            if pw.shape[1] < pairs.shape[1]:
                pw = np.zeros((8, pairs.shape[1]))
                near = np.zeros(pairs.shape[1], dtype=np.int64)
            builds += 1
        e = energy_forces(
            x,
            f,
            w,
            nw,
            pw,
            near,
            nl_start,
            pairs,
            bond_r0,
            theta0,
            cos_phi0,
            sin_phi0,
            nat_start,
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
            nat_i,
            s == step0 + n_steps - 1,
        )
        for k in range(m):  # B
            vf[k] += half * ff[k]
    return e, pairs, pw, near, out_pairs, builds, outer_builds


def native_start(nat_i: np.ndarray, n: int) -> np.ndarray:
    """Row starts of the native contacts (sorted by i) per bead: a CSR index of ``nat_i``."""
    return np.searchsorted(nat_i, np.arange(n + 1)).astype(np.int64)


class NeighbourList:
    """The non-native pair list of one conformation (component-major ``x``, shape (3, N)):
    every pair within ``r_list``, filtered from an outer list of every pair within
    ``r_outer`` (default ``r_list``), and the scratch its forces need. A plain holder of
    the arrays :func:`baoab` maintains; any list that holds every pair within the cutoff
    gives bit-identical forces, so when it was built does not matter.
    """

    __slots__ = ("near", "out_pairs", "out_start", "pairs", "pw", "start", "x_out", "x_ref")

    def __init__(
        self,
        x: np.ndarray,
        nat_start: np.ndarray,
        nat_j: np.ndarray,
        r_list: float,
        r_outer: float | None = None,
    ) -> None:
        n = x.shape[1]
        r_outer = r_list if r_outer is None else r_outer
        if not r_outer >= r_list:
            raise ParameterError(
                f"the outer list's radius must be at least the list's ({r_list} A), "
                f"got {r_outer} A: give a larger r_outer"
            )
        self.out_start = np.zeros(n + 1, dtype=np.int64)
        self.x_out = np.array(x, dtype=np.float64)
        self.out_pairs = build_neighbours(
            x,
            nat_start,
            nat_j,
            r_outer,
            self.out_start,
            np.zeros((2, 8 * n + 64), dtype=np.int64),
            self.x_out,
        )
        self.start = np.zeros(n + 1, dtype=np.int64)
        self.x_ref = np.array(x, dtype=np.float64)
        self.pairs = filter_neighbours(
            x,
            self.out_start,
            self.out_pairs,
            r_list,
            self.start,
            np.zeros((2, int(self.out_start[-1]) + 64), dtype=np.int64),
            self.x_ref,
        )
        self.pw = pair_scratch(self.pairs.shape[1])
        self.near = near_scratch(self.pairs.shape[1])

    @property
    def n_pairs(self) -> int:
        return int(self.start[-1])
