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
from sims.structure import Structure, parse_pdb, read_pdb
from worker.systems import SystemDefinition, particle_count, system_digest


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
    max_residues: int | None = None,
    max_atoms: int | None = None,
) -> PreparedJob:
    """Validate the plan, then prepare the system once and the start states; stores nothing.

    The plan is checked before the (possibly slow) preparation, so a bad plan costs nothing;
    so are ``max_residues`` and ``max_atoms`` (a service's limits; ``None``: none), on the
    parsed structure before any model is built, and on the prepared system after.
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
        _check_size(structure, max_residues, max_atoms)
        system = GoModel.from_structure(structure)
        eng: GoEngine | AllAtomEngine = GoEngine(system)
    elif sequence is not None:
        if max_residues is not None and len(sequence) > max_residues:
            raise SubmissionError(
                f"the sequence has {len(sequence):,} residues; the limit here is {max_residues:,}"
            )
        eng = AllAtomEngine.from_sequence(sequence)
        system = eng.prepared
    else:
        with tempfile.TemporaryDirectory(prefix="foldnet-pdb-") as d:
            path = pdb
            if path is None:
                path = Path(d) / "upload.pdb"
                path.write_text(pdb_text or "")
            if max_residues is not None or max_atoms is not None:  # before PDBFixer runs
                parsed = parse_pdb(path.read_text(), source="the uploaded PDB", chain=chain)
                _check_size(parsed, max_residues, max_atoms)
            try:
                eng = AllAtomEngine.from_pdb(path, chain=chain)
            except SimsError as e:
                if pdb is not None:
                    raise
                # the temporary file is the server's business: name the upload instead
                raise StructureError(str(e).replace(str(path), "the uploaded PDB")) from e
        system = eng.prepared
    n = particle_count(system)
    if max_atoms is not None and n > max_atoms:
        raise SubmissionError(
            f"the prepared system has {n:,} particles (with hydrogens); the limit here is "
            f"{max_atoms:,}"
        )
    spec = spec_for(system_digest(system))
    eng.check_temperature(temperature)
    starts = [eng.initial_state(temperature=temperature, seed=seed + r) for r in range(runs)]
    return PreparedJob(system, starts, spec)


def _check_size(structure: Structure, max_residues: int | None, max_atoms: int | None) -> None:
    """Refuse a structure over a service's limits before anything is built from it."""
    residues = structure.amino_acids
    if max_residues is not None and len(residues) > max_residues:
        raise SubmissionError(
            f"the structure has {len(residues):,} amino-acid residues; the limit here is "
            f"{max_residues:,}"
        )
    atoms = sum(len(r.atoms) for r in structure.residues)
    if max_atoms is not None and atoms > max_atoms:
        raise SubmissionError(f"the structure has {atoms:,} atoms; the limit here is {max_atoms:,}")
