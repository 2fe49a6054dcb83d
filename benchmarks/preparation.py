"""How long a job's preparation takes, per system and engine (what a lab waits while its job
is ``preparing``).

``python -m benchmarks.preparation [--quick]``: :func:`coordinator.prepare.prepare_job` on
villin HP36 (Go and all-atom), chignolin (from its sequence), alanine dipeptide, mTOR chain A
(``4JSV.pdb``, about 1,100 residues: the Go model takes it, the all-atom engine refuses it at
once) and, without ``--quick``, 1BHL chain A all-atom (2,333 atoms, over the GB cutoff
threshold ``sims.allatom.prepare.GB_CUTOFF_ATOMS``). The PDB files ship with pdbfixer. The
all-atom minimisation is two passes (``minimising``: native OBC2; ``polishing in GBn2``: the
production system), timed apart (wall clock); ``cpu_s`` is the process's CPU time, what the
wall time would be on an idle core. One process, one thread, as the service's preparer runs.
``--only TEXT`` keeps the systems whose name contains TEXT; ``--compare`` instead times
villin's minimisation alone before (one GBn2 pass) and after (OBC2, then a GBn2 polish),
side by side, with each result's GBn2 energy and C-alpha RMSD. Prints a row as each finishes
and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from benchmarks.common import print_table
from coordinator.errors import SubmissionError
from coordinator.plan import JobPlan
from coordinator.prepare import prepare_job
from sims.allatom.engine import (
    DEFAULT_MINIMIZE_ITERATIONS,
    MINIMIZE_TOLERANCE,
    POLISH_MINIMIZE_ITERATIONS,
)
from sims.allatom.prepare import complete_pdb, create_relax_system, create_system
from sims.examples import ALANINE_DIPEPTIDE_PDB, BHL_PDB, VILLIN_PDB
from sims.observables import kabsch_rmsd
from worker.systems import particle_count

MTOR_PDB = VILLIN_PDB.parent / "4JSV.pdb"
CHIGNOLIN = "GYDPETGTWG"


def _measure(label: str, engine: str, source: Path | str, chain: str | None) -> dict[str, object]:
    given: dict[str, object] = (
        {"pdb": source.read_text(), "source": str(source), "chain": chain}
        if isinstance(source, Path)
        else {"sequence": source}
    )
    plan = JobPlan.create(engine=engine, runs=1, **given)
    stages: list[tuple[str, float]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        prepared = prepare_job(plan, progress=lambda s: stages.append((s, time.perf_counter())))
    except SubmissionError as e:
        return {"system": label, "engine": engine, "particles": None,
                "seconds": round(time.perf_counter() - t0, 2),
                "cpu_s": round(time.process_time() - c0, 2), "minimising_s": None,
                "polishing_s": None, "refused": str(e)}  # fmt: skip
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    marks = [*stages, ("end", t0 + total)]
    per_stage = {s: marks[i + 1][1] - t for i, (s, t) in enumerate(stages)}
    minimising = per_stage.get("minimising")
    polishing = per_stage.get("polishing in GBn2")
    return {
        "system": label,
        "engine": engine,
        "particles": int(particle_count(prepared.system)),
        "seconds": round(total, 2),
        "cpu_s": round(cpu, 2),
        "minimising_s": None if minimising is None else round(minimising, 2),
        "polishing_s": None if polishing is None else round(polishing, 2),
        "refused": None,
    }


def _minimised(
    system: openmm.System, positions: np.ndarray, iterations: int
) -> tuple[np.ndarray, openmm.Context]:
    ctx = openmm.Context(
        system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("CPU"),
        {"Threads": "1"},
    )
    ctx.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, MINIMIZE_TOLERANCE, iterations)
    pos = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return np.asarray(pos, dtype=np.float64), ctx


def _compare(label: str, source: Path, chain: str | None) -> list[dict[str, object]]:
    """The minimisation alone, before and after, side by side on one completed model: one
    pass of DEFAULT_MINIMIZE_ITERATIONS in GBn2 (preparation until this change) against
    the two passes (native OBC2, then POLISH_MINIMIZE_ITERATIONS in GBn2). Each result is
    measured in GBn2: energy, and C-alpha RMSD from the completed input."""
    model = complete_pdb(source, chain=chain)
    system = create_system(model.topology, model.source)
    relax = create_relax_system(system, model.topology)
    ca = [a.index for a in model.topology.atoms() if a.name == "CA"]
    plans = {
        f"GBn2 {DEFAULT_MINIMIZE_ITERATIONS}": [(system, DEFAULT_MINIMIZE_ITERATIONS)],
        f"OBC2 {DEFAULT_MINIMIZE_ITERATIONS} + GBn2 {POLISH_MINIMIZE_ITERATIONS}": [
            (relax, DEFAULT_MINIMIZE_ITERATIONS),
            (system, POLISH_MINIMIZE_ITERATIONS),
        ],
    }
    rows = []
    for name, passes in plans.items():
        t0, c0 = time.perf_counter(), time.process_time()
        pos = model.positions
        for sys_, iterations in passes:  # each plan ends in GBn2: ctx is its context
            pos, ctx = _minimised(sys_, pos, iterations)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        energy = ctx.getState(getEnergy=True).getPotentialEnergy()
        rows.append(
            {
                "system": label,
                "minimisation": name,
                "seconds": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "gbn2_kj_mol": round(energy.value_in_unit(unit.kilojoule_per_mole), 1),
                "rmsd_ca_a": round(kabsch_rmsd(pos[ca], model.positions[ca]) * 10, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip 1BHL chain A all-atom")
    parser.add_argument(
        "--only", metavar="TEXT", help="only the systems whose name contains TEXT (e.g. 1BHL)"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="instead: villin's minimisation alone, one GBn2 pass against OBC2 + GBn2 polish",
    )
    args = parser.parse_args()
    if args.compare:
        rows = _compare("villin HP36", VILLIN_PDB, None)
        cols = ("system", "minimisation", "seconds", "cpu_s", "gbn2_kj_mol", "rmsd_ca_a")
        print_table(
            "Minimisation before and after (one thread, side by side)",
            ["system", "minimisation", "seconds", "CPU s", "GBn2 kJ/mol", "C-alpha RMSD (A)"],
            [[str(r[k]) for k in cols] for r in rows],
        )
        ratio = float(rows[0]["seconds"]) / float(rows[1]["seconds"])  # type: ignore[arg-type]
        print(json.dumps({"minimisation": rows, "speedup": round(ratio, 2)}))
        return
    cases: list[tuple[str, str, Path | str, str | None]] = [
        ("villin HP36", "go", VILLIN_PDB, None),
        ("villin HP36", "openmm", VILLIN_PDB, None),
        ("chignolin (sequence)", "openmm", CHIGNOLIN, None),
        ("alanine dipeptide", "openmm", ALANINE_DIPEPTIDE_PDB, None),
        ("mTOR chain A (4JSV)", "go", MTOR_PDB, "A"),
        ("mTOR chain A (4JSV)", "openmm", MTOR_PDB, "A"),
    ]
    if not args.quick:
        cases.append(("1BHL chain A", "openmm", BHL_PDB, "A"))
    if args.only:
        cases = [c for c in cases if args.only.lower() in c[0].lower()]
    rows = []
    for c in cases:
        rows.append(_measure(*c))
        print(json.dumps(rows[-1]), flush=True)
    keys = ("system", "engine", "particles", "seconds", "cpu_s", "minimising_s", "polishing_s")
    print_table(
        "Preparation (one process, one thread)",
        [
            "system",
            "engine",
            "particles",
            "seconds",
            "CPU s",
            "minimise OBC2 (s)",
            "polish GBn2 (s)",
        ],
        [[str(r[k]) for k in keys] for r in rows],
    )
    print(json.dumps({"preparation": rows}))


if __name__ == "__main__":
    main()
