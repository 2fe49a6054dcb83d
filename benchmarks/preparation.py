"""How long a job's preparation takes, per system and engine (what a lab waits while its job
is ``preparing``).

``python -m benchmarks.preparation [--quick]``: :func:`coordinator.prepare.prepare_job` on
villin HP36 (Go and all-atom), chignolin (from its sequence), alanine dipeptide, mTOR chain A
(``4JSV.pdb``, about 1,100 residues: the Go model takes it, the all-atom engine refuses it at
once) and, without ``--quick``, 1BHL chain A all-atom (2,333 atoms, over the GB cutoff
threshold ``sims.allatom.prepare.GB_CUTOFF_ATOMS``). The PDB files ship with pdbfixer. The
all-atom minimisation is two passes (``minimising``: native OBC2; ``polishing in GBn2``: the
production system), timed apart. One process, one thread, as the service's preparer runs.
``--only TEXT`` keeps the systems whose name contains TEXT. Prints a row as each finishes
and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import print_table
from coordinator.errors import SubmissionError
from coordinator.plan import JobPlan
from coordinator.prepare import prepare_job
from sims.examples import ALANINE_DIPEPTIDE_PDB, BHL_PDB, VILLIN_PDB
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
    t0 = time.perf_counter()
    try:
        prepared = prepare_job(plan, progress=lambda s: stages.append((s, time.perf_counter())))
    except SubmissionError as e:
        return {"system": label, "engine": engine, "particles": None,
                "seconds": round(time.perf_counter() - t0, 2), "minimising_s": None,
                "polishing_s": None, "refused": str(e)}  # fmt: skip
    total = time.perf_counter() - t0
    marks = [*stages, ("end", t0 + total)]
    per_stage = {s: marks[i + 1][1] - t for i, (s, t) in enumerate(stages)}
    minimising = per_stage.get("minimising")
    polishing = per_stage.get("polishing in GBn2")
    return {
        "system": label,
        "engine": engine,
        "particles": int(particle_count(prepared.system)),
        "seconds": round(total, 2),
        "minimising_s": None if minimising is None else round(minimising, 2),
        "polishing_s": None if polishing is None else round(polishing, 2),
        "refused": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip 1BHL chain A all-atom")
    parser.add_argument(
        "--only", metavar="TEXT", help="only the systems whose name contains TEXT (e.g. 1BHL)"
    )
    args = parser.parse_args()
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
    keys = ("system", "engine", "particles", "seconds", "minimising_s", "polishing_s")
    print_table(
        "Preparation (one process, one thread)",
        ["system", "engine", "particles", "seconds", "minimising OBC2 (s)", "polish GBn2 (s)"],
        [[str(r[k]) for k in keys] for r in rows],
    )
    print(json.dumps({"preparation": rows}))


if __name__ == "__main__":
    main()
