"""A lab's job made ready for a coordinator: the system prepared once from its plan, the start
states drawn. Stores nothing; runs in a preparation process (:mod:`coordinator.preparer`),
never in a service's own interpreter, because preparing an all-atom system can take minutes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import NamedTuple

from coordinator.errors import SubmissionError
from coordinator.jobs import JobSpec
from coordinator.plan import RULES, JobPlan, PlanLimits
from sims.allatom import AllAtomEngine
from sims.allatom.prepare import Progress
from sims.errors import SimsError, StructureError
from sims.go import GoEngine, GoModel
from sims.state import State
from sims.structure import Structure, parse_pdb
from worker.systems import SystemDefinition, particle_count, system_digest

#: The steps a preparation reports, in order (a job's ``preparation.stage``).
STAGES = (
    "reading the structure",
    "building the extended chain",
    "completing atoms",
    "adding hydrogens",
    "building the force field system",
    "minimising",
    "polishing in GBn2",
    "building the Go model",
    "drawing start states",
)


class PreparedJob(NamedTuple):
    system: SystemDefinition
    starts: list[State]
    spec: JobSpec


def prepare_job(
    plan: JobPlan, *, limits: PlanLimits | None = None, progress: Progress | None = None
) -> PreparedJob:
    """Prepare the system of ``plan`` once, and its start states; stores nothing.

    ``limits.max_residues`` and ``limits.max_atoms`` (a service's; ``None``: none) are checked
    on the parsed structure before any model is built, and on the prepared system after.
    ``progress`` is told each step (one of :data:`STAGES`) as it starts.
    """
    lim = limits or PlanLimits()
    plan.check(lim)

    def say(stage: str) -> None:
        if progress is not None:
            progress(stage)

    system: SystemDefinition
    eng: GoEngine | AllAtomEngine
    if plan.engine == "go":
        say("reading the structure")
        structure = parse_pdb(plan.pdb or "", source=plan.source, chain=plan.chain)
        _check_size(structure, lim)
        say("building the Go model")
        system = GoModel.from_structure(structure)
        eng = GoEngine(system)
    else:  # complete_pdb says "reading the structure"
        if plan.pdb is not None:
            parsed = parse_pdb(plan.pdb, source=plan.source, chain=plan.chain)
            _check_size(parsed, lim)
            _check_engine_size(plan.engine, len(parsed.amino_acids), None)
        with tempfile.TemporaryDirectory(prefix="foldnet-pdb-") as d:
            path = Path(d) / "input.pdb"
            ref_path = Path(d) / "reference.pdb"
            names = {str(path): plan.source, str(ref_path): "the reference PDB"}
            if plan.reference is not None:
                parse_pdb(plan.reference, source="the reference PDB", chain=plan.chain)
                ref_path.write_text(plan.reference)
            reference = ref_path if plan.reference is not None else None
            try:
                if plan.sequence is not None:
                    eng = AllAtomEngine.from_sequence(
                        plan.sequence, reference=reference, chain=plan.chain, progress=progress
                    )
                else:
                    path.write_text(plan.pdb or "")
                    eng = AllAtomEngine.from_pdb(
                        path, chain=plan.chain, reference=reference, progress=progress
                    )
            except SimsError as e:
                # the temporary files are the preparation's business: name the lab's inputs
                message = str(e)
                for tmp, name in names.items():
                    message = message.replace(tmp, name)
                raise StructureError(message) from e
        system = eng.prepared
    n = particle_count(system)
    if plan.engine == "openmm":
        _check_engine_size(plan.engine, 0, n)
    if lim.max_atoms is not None and n > lim.max_atoms:
        raise SubmissionError(
            f"the prepared system has {n:,} particles (with hydrogens); the limit here is "
            f"{lim.max_atoms:,}"
        )
    spec = plan.spec(system_digest(system))
    eng.check_temperature(plan.temperature)
    say("drawing start states")
    starts = [
        eng.initial_state(temperature=plan.temperature, seed=plan.seed + r)
        for r in range(plan.runs)
    ]
    return PreparedJob(system, starts, spec)


def _check_engine_size(engine: str, residues: int, atoms: int | None) -> None:
    """Refuse a system larger than its engine prepares and runs in reasonable time."""
    rules = RULES[engine]
    why = (
        "(beyond it a preparation takes hours and each work unit days on a CPU); run it with "
        "the go engine, or simulate a domain of it"
    )
    if rules.max_residues is not None and residues > rules.max_residues:
        raise SubmissionError(
            f"the structure has {residues:,} amino-acid residues; the {engine} engine takes at "
            f"most {rules.max_residues:,} {why}"
        )
    if rules.max_atoms is not None and atoms is not None and atoms > rules.max_atoms:
        raise SubmissionError(
            f"the prepared system has {atoms:,} atoms (with hydrogens); the {engine} engine "
            f"takes at most {rules.max_atoms:,} {why}"
        )


def _check_size(structure: Structure, limits: PlanLimits) -> None:
    """Refuse a structure over a service's limits before anything is built from it."""
    residues = structure.amino_acids
    if limits.max_residues is not None and len(residues) > limits.max_residues:
        raise SubmissionError(
            f"the structure has {len(residues):,} amino-acid residues; the limit here is "
            f"{limits.max_residues:,}"
        )
    atoms = sum(len(r.atoms) for r in structure.residues)
    if limits.max_atoms is not None and atoms > limits.max_atoms:
        raise SubmissionError(
            f"the structure has {atoms:,} atoms; the limit here is {limits.max_atoms:,}"
        )
