"""Adaptive sampling: where each new generation of a job starts (DESIGN section 12).

Folding@home and HTMD restart trajectories from under-explored states of everything
returned so far instead of extending each one blindly. Here the choice is a **pure,
deterministic function of validated data and the beacon**, so the lab or an auditor can
recompute why every trajectory started where it did:

* The data: every validated WU of the job (not retracted, not waiting for a re-check), its
  frames' Q and RMSD (the validated observables), and its boundary states (the full-precision
  states at segment ends, bound by the agreed claim's digests). A boundary whose step is also
  a frame's has that frame's Q and RMSD and is a *candidate* seed; the final state always is.
  Nothing unvalidated is ever a candidate.
* The clustering: a fixed grid on (Q, RMSD), cells :data:`Q_BIN` wide in Q and
  :data:`RMSD_BIN_A` Angstrom in RMSD; a cell's count is its validated frames, plus
  :data:`START_WEIGHT` frames for every generation already started from it (so concurrent
  choices spread out instead of piling onto one cell).
* ``least-counts``: the candidate cell with the fewest counts.
  ``fast`` (after Zimmerman and Bowman's FAST, J. Chem. Theory Comput. 11, 5747, 2015): the
  cell with the highest ``directed + under-sampling`` score, each term scaled to [0, 1] over
  the candidate cells: directed = the highest Q among the cell's candidate states (FAST ranks
  states by how native they are; a cell's best state says how far sampling has got there,
  where its mean Q is dragged down by the frames on the way), under-sampling =
  1 / sqrt(count). The under-sampling term keeps weight :data:`FAST_ALPHA` = 1: on villin at
  T = 0.95 (WUs of 5,000 steps, 2 seeds) a greedier 0.25 needed 3.6 x 10^6 steps in one seed
  and had not folded after 8 x 10^6 in the other (stuck at high Q), where 1.0 folded within
  1.8 x 10^6 in both.
* Ties, and the state within the chosen cell, are broken by SHA-256 of the beacon and the
  generation's identity, never by arrival order.

The restart state is the chosen boundary's positions with velocities redrawn from
Maxwell-Boltzmann at the job's temperature, seeded from the new generation's identity
(:func:`restart_seed`) by the engine (``Engine.thermalized``), so it is exact and verifiable.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from coordinator.errors import UsageError
from coordinator.jobs import ADAPTIVE_POLICIES

__all__ = [
    "ADAPTIVE_POLICIES",
    "Candidate",
    "Decision",
    "Explored",
    "WUData",
    "cell_of",
    "choose",
    "explore",
    "restart_seed",
]

#: Grid of the clustering: Q in bins of 0.05 (20 cells), RMSD in bins of 1 Angstrom.
Q_BIN = 0.05
RMSD_BIN_A = 1.0
#: RMSD cells beyond this many Angstrom are one cell (an unfolded chain is unfolded).
RMSD_MAX_A = 30.0
#: Frames a started generation counts for in its cell, before its own frames return.
START_WEIGHT = 50
#: FAST's balance of the under-sampling term against the directed one.
FAST_ALPHA = 1.0

Cell = tuple[int, int]


def cell_of(q: float, rmsd: float) -> Cell:
    """The grid cell of a state (NaN Q, a reference without contacts, counts as 0)."""
    qi = 0 if not math.isfinite(q) else min(int(q / Q_BIN), round(1 / Q_BIN) - 1)
    r = min(max(rmsd, 0.0), RMSD_MAX_A) if math.isfinite(rmsd) else RMSD_MAX_A
    return (max(qi, 0), int(r / RMSD_BIN_A))


@dataclass(frozen=True, slots=True)
class WUData:
    """What the policy reads of one validated WU: its agreed boundary digests (index 0 is
    its input), the steps of its frames and their Q and RMSD, and where its boundaries are
    (step of boundary k = ``first_step + k * segment_steps``)."""

    wu: bytes
    boundary_digests: tuple[bytes, ...]
    first_step: int
    segment_steps: int
    frame_steps: np.ndarray
    q: np.ndarray
    rmsd: np.ndarray

    def at_boundary(self, k: int) -> tuple[float, float] | None:
        """Q and RMSD of boundary ``k`` when a frame was taken there."""
        hits = np.flatnonzero(self.frame_steps == self.first_step + k * self.segment_steps)
        if len(hits) == 0:
            return None
        i = int(hits[0])
        return float(self.q[i]), float(self.rmsd[i])


@dataclass(frozen=True, slots=True)
class Candidate:
    wu: bytes
    boundary: int
    state: bytes
    q: float
    rmsd: float

    @property
    def cell(self) -> Cell:
        return cell_of(self.q, self.rmsd)


@dataclass(frozen=True, slots=True, eq=False)
class Explored:
    """Everything validated so far, as the policy sees it."""

    basis: tuple[bytes, ...]  # the validated WUs read, sorted
    counts: Mapping[Cell, int]  # validated frames per cell
    candidates: tuple[Candidate, ...]

    def basis_digest(self) -> bytes:
        h = hashlib.sha256(b"foldnet/adaptive-basis/v1\n")
        for wu in self.basis:
            h.update(wu)
        return h.digest()


def explore(data: Iterable[WUData]) -> Explored:
    """Cluster every validated frame and list every validated boundary with a frame."""
    counts: Counter[Cell] = Counter()
    candidates: list[Candidate] = []
    basis = []
    for d in sorted(data, key=lambda d: d.wu):
        basis.append(d.wu)
        q = np.nan_to_num(np.asarray(d.q, dtype=np.float64), nan=0.0)
        for qv, rv in zip(q.tolist(), np.asarray(d.rmsd, dtype=np.float64).tolist(), strict=True):
            counts[cell_of(qv, rv)] += 1
        at = {int(s): i for i, s in enumerate(np.asarray(d.frame_steps).tolist())}
        for k in range(1, len(d.boundary_digests)):
            i = at.get(d.first_step + k * d.segment_steps)
            if i is not None:
                candidates.append(
                    Candidate(d.wu, k, d.boundary_digests[k], float(q[i]), float(d.rmsd[i]))
                )
    return Explored(tuple(basis), dict(counts), tuple(candidates))


@dataclass(frozen=True, slots=True)
class Decision:
    """One choice, with everything needed to recompute it."""

    policy: str
    job: str
    run: int
    clone: int
    gen: int
    beacon: bytes
    basis: bytes  # Explored.basis_digest()
    basis_size: int
    cell: Cell
    cell_count: int
    parent_wu: bytes
    boundary: int
    parent_state: bytes
    q: float
    rmsd: float

    def canonical(self) -> bytes:
        doc = {
            "policy": self.policy,
            "job": self.job,
            "run": self.run,
            "clone": self.clone,
            "gen": self.gen,
            "beacon": self.beacon.hex(),
            "basis": self.basis.hex(),
            "basis_size": self.basis_size,
            "cell": list(self.cell),
            "cell_count": self.cell_count,
            "parent_wu": self.parent_wu.hex(),
            "boundary": self.boundary,
            "parent_state": self.parent_state.hex(),
            "q": round(self.q, 6),
            "rmsd": round(self.rmsd, 6),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(b"foldnet/adaptive-decision/v1\n" + self.canonical()).digest()


def _tiebreak(beacon: bytes, job: str, run: int, clone: int, gen: int, item: bytes) -> bytes:
    h = hashlib.sha256(b"foldnet/adaptive-tiebreak/v1\n")
    for part in (beacon, job.encode(), b"%d/%d/%d" % (run, clone, gen), item):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.digest()


def choose(
    policy: str,
    explored: Explored,
    *,
    starts: Mapping[Cell, int],
    beacon: bytes,
    job: str,
    run: int,
    clone: int,
    gen: int,
) -> Decision:
    """The start of generation ``gen`` of trajectory (``run``, ``clone``): see the module
    docstring. ``starts`` counts the generations already started from each cell."""
    if policy not in ("least-counts", "fast"):
        raise UsageError(f"no adaptive policy {policy!r}: expected least-counts or fast")
    if not explored.candidates:
        raise UsageError("no validated boundary state to start from yet")
    by_cell: dict[Cell, list[Candidate]] = {}
    for c in explored.candidates:
        by_cell.setdefault(c.cell, []).append(c)

    def count(cell: Cell) -> int:
        return explored.counts.get(cell, 0) + START_WEIGHT * starts.get(cell, 0)

    def tie(cell: Cell) -> bytes:
        return _tiebreak(beacon, job, run, clone, gen, b"%d,%d" % cell)

    cells = sorted(by_cell)
    if policy == "least-counts":
        best = min(cells, key=lambda c: (count(c), tie(c)))
    else:
        directed = {c: max(x.q for x in by_cell[c]) for c in cells}
        under = {c: 1.0 / math.sqrt(max(1, count(c))) for c in cells}
        d_lo, d_hi = min(directed.values()), max(directed.values())
        u_lo, u_hi = min(under.values()), max(under.values())

        def scaled(v: float, lo: float, hi: float) -> float:
            return 0.0 if hi <= lo else (v - lo) / (hi - lo)

        def score(c: Cell) -> float:
            return scaled(directed[c], d_lo, d_hi) + FAST_ALPHA * scaled(under[c], u_lo, u_hi)

        best = min(cells, key=lambda c: (-score(c), tie(c)))
    pick = min(
        by_cell[best],
        key=lambda c: _tiebreak(beacon, job, run, clone, gen, c.state + c.wu),
    )
    return Decision(
        policy=policy,
        job=job,
        run=run,
        clone=clone,
        gen=gen,
        beacon=beacon,
        basis=explored.basis_digest(),
        basis_size=len(explored.basis),
        cell=best,
        cell_count=count(best),
        parent_wu=pick.wu,
        boundary=pick.boundary,
        parent_state=pick.state,
        q=pick.q,
        rmsd=pick.rmsd,
    )


def restart_seed(wu_job: str, run: int, clone: int, gen: int, parent_state: bytes) -> int:
    """The velocity seed of a restart: a function of the new generation and its parent."""
    h = hashlib.sha256(b"foldnet/adaptive-restart/v1\n")
    h.update(wu_job.encode() + b"/%d/%d/%d/" % (run, clone, gen) + parent_state)
    return int.from_bytes(h.digest()[:4], "big") & 0x7FFFFFFF
