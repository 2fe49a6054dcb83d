"""A lab's job made ready for a coordinator: the plan checked, the system prepared once, the
start states drawn. Shared by ``foldnet submit`` and the HTTP service; stores nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from coordinator.errors import SubmissionError
from coordinator.jobs import JobSpec
from sims.allatom import AllAtomEngine
from sims.errors import SimsError, StructureError
from sims.go import GoEngine, GoModel
from sims.state import State
from sims.structure import parse_pdb, read_pdb
from worker.systems import SystemDefinition, system_digest


class PreparedJob(NamedTuple):
    system: SystemDefinition
    starts: list[State]
    spec: JobSpec


def prepare_job(
    *,
    engine: str,
    pdb: Path | None = None,
    pdb_text: str | None = None,
    sequence: str | None = None,
    chain: str | None,
    runs: int,
    clones: int,
    gens: int,
    steps_per_wu: int,
    segment_steps: int,
    report_steps: int,
    temperature: float,
    min_quorum: int = 2,
    deadline_s: float = 600.0,
    audit_rate: float | None = None,
    seed: int = 1,
) -> PreparedJob:
    """Validate the plan, then prepare the system once and the start states; stores nothing.

    The plan is checked before the (possibly slow) preparation, so a bad plan costs nothing.
    """
    given = sum(x is not None for x in (pdb, pdb_text, sequence))
    if given != 1:
        raise SubmissionError("give exactly one of a PDB file or a sequence")
    if engine not in ("go", "openmm"):
        raise SubmissionError(f"unknown engine {engine!r}: expected go or openmm")

    extra: dict[str, Any] = {} if audit_rate is None else {"audit_rate": audit_rate}

    def spec_for(digest: bytes) -> JobSpec:
        return JobSpec(
            engine=engine,
            system_digest=digest,
            runs=runs,
            clones=clones,
            gens=gens,
            steps_per_wu=steps_per_wu,
            segment_steps=segment_steps,
            report_steps=report_steps,
            temperature=temperature,
            min_quorum=min_quorum,
            deadline_s=deadline_s,
            **extra,
        )

    spec_for(b"\0" * 32)  # the plan alone, before any preparation
    system: SystemDefinition
    if engine == "go":
        if pdb is None and pdb_text is None:
            raise SubmissionError("the go engine needs a native structure: give a PDB file")
        structure = (
            read_pdb(pdb, chain=chain)
            if pdb is not None
            else parse_pdb(pdb_text or "", source="upload", chain=chain)
        )
        system = GoModel.from_structure(structure)
        eng: GoEngine | AllAtomEngine = GoEngine(system)
    elif sequence is not None:
        eng = AllAtomEngine.from_sequence(sequence)
        system = eng.prepared
    else:
        with tempfile.TemporaryDirectory(prefix="foldnet-pdb-") as d:
            path = pdb
            if path is None:
                path = Path(d) / "upload.pdb"
                path.write_text(pdb_text or "")
            try:
                eng = AllAtomEngine.from_pdb(path, chain=chain)
            except SimsError as e:
                if pdb is not None:
                    raise
                # the temporary file is the server's business: name the upload instead
                raise StructureError(str(e).replace(str(path), "the uploaded PDB")) from e
        system = eng.prepared
    spec = spec_for(system_digest(system))
    eng.check_temperature(temperature)
    starts = [eng.initial_state(temperature=temperature, seed=seed + r) for r in range(runs)]
    return PreparedJob(system, starts, spec)
