"""From a PDB file or a sequence to a complete all-atom model and its OpenMM System.

Inputs are validated with :mod:`sims.structure` *before* PDBFixer sees them, so a bad file
gives our :class:`~sims.errors.StructureError` naming the problem; whatever PDBFixer or
OpenMM still raise is translated here (``raise X(...) from e``), never passed through.

The prepared system is immutable (:class:`PreparedSystem`: topology, serialized System,
minimized start, reference); an engine keeps the changing part, its Context, separately.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import itertools
import os
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openmm
from openmm import app, unit
from openmm.app.internal.customgbforces import GBSAOBC2Force
from pdbfixer import PDBFixer

from sims.allatom.build import extended_chain_pdb
from sims.allatom.systemxml import check_system_xml
from sims.errors import PreparedSystemError, StructureError, UnknownResidueError
from sims.observables import NativeContacts, native_contacts
from sims.structure import (
    CAPS,
    ONE_LETTER,
    VARIANTS,
    Atom,
    Residue,
    Structure,
    parse_sequence,
    read_pdb,
)

#: Force field files (OpenMM's names); part of the determinism class.
FORCEFIELD_FILES = ("amber14-all.xml", "implicit/gbn2.xml")
#: Hydrogen-mass repartitioning: OpenMM's recommendation for 4 fs with LangevinMiddle.
HYDROGEN_MASS_AMU = 1.5
PH = 7.0
#: PDBFixer relaxes atoms it adds with Langevin dynamics; a fixed seed keeps that repeatable.
PDBFIXER_SEED = 20240601
#: A peptide C-N farther apart than this (nm) is a chain break, not a bond.
MAX_PEPTIDE_BOND_NM = 0.25
#: Heavy atoms more than three bonds apart closer than this (nm) are a clash.
CLASH_DISTANCE_NM = 0.2
#: Longest chain accepted from a sequence: an extended chain of it is ~170 nm long.
MAX_SEQUENCE_LENGTH = 500
#: Systems of more atoms than this get a nonbonded (and GBn2) cutoff: with no cutoff every
#: force evaluation costs O(N^2). Measured on one loaded CPU thread: villin (596 atoms) 0.12 s
#: per force evaluation with or without the cutoff; 1BHL chain A (2,333 atoms) 3.9 s without
#: it, 1.2 s with it. Up to this size (about 120 residues) the exact no-cutoff model is kept.
GB_CUTOFF_ATOMS = 2000
#: The cutoff above :data:`GB_CUTOFF_ATOMS` (OpenMM's CutoffNonPeriodic, reaction field
#: beyond it); 2 nm is well beyond the 1-1.2 nm usual in explicit solvent, as implicit
#: solvent's long-range screening needs.
GB_CUTOFF_NM = 2.0

#: Told which step of a preparation starts ("completing atoms", "adding hydrogens", ...).
Progress = Callable[[str], None]


def _say(progress: Progress | None, stage: str) -> None:
    if progress is not None:
        progress(stage)


@functools.cache
def forcefield() -> app.ForceField:
    """The one ForceField object (loading the XML takes about a second; it is not mutated)."""
    return app.ForceField(*FORCEFIELD_FILES)


_NM = unit.nanometer


def _cpu_platform() -> openmm.Platform:
    # PDBFixer would otherwise pick the fastest platform, so results would depend on the GPU.
    return openmm.Platform.getPlatformByName("CPU")


_PDBFIXER_LOCK = threading.Lock()


@contextlib.contextmanager
def _repeatable() -> Iterator[None]:
    """Make PDBFixer's output a function of its input alone.

    Modeller places new hydrogens with Python's global ``random`` and then minimizes them on
    a CPU context with the default thread count, whose force sums are not reproducible with
    more than one thread. Both are pinned here and restored after; the lock keeps two
    preparations from interleaving. (Other code creating CPU contexts without an explicit
    ``Threads`` meanwhile gets one thread: slower, never wrong.)
    """
    cpu = _cpu_platform()
    with _PDBFIXER_LOCK:
        threads = cpu.getPropertyDefaultValue("Threads")
        state = random.getstate()
        cpu.setPropertyDefaultValue("Threads", "1")
        random.seed(PDBFIXER_SEED)
        try:
            yield
        finally:
            cpu.setPropertyDefaultValue("Threads", threads)
            random.setstate(state)


@dataclass(frozen=True, slots=True, eq=False)
class Model:
    """A completed structure before minimization: every atom, hydrogens included."""

    topology: app.Topology
    positions: np.ndarray  # (N, 3) nm
    source: str
    from_structure: bool  # True for a PDB input: its completed coordinates are the reference
    #: A reference given apart from the input (:func:`with_reference`): per atom of this
    #: model, nm; NaN where the reference has no such heavy atom (a hydrogen, a terminal OXT).
    reference: np.ndarray | None = None


def _as_array_nm(positions: Any) -> np.ndarray:
    arr = np.array(positions.value_in_unit(unit.nanometer), dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _is_amino_acid(residue: app.topology.Residue) -> bool:
    return residue.name in ONE_LETTER or residue.name in VARIANTS


def _chain_key(chain_id: str) -> str:
    return chain_id.strip() or "_"  # read_pdb calls a blank chain id "_"


def complete_pdb(
    path: str | os.PathLike[str], *, chain: str | None = None, progress: Progress | None = None
) -> Model:
    """Validate ``path``, keep one chain, and let PDBFixer add missing atoms and hydrogens.

    Internal gaps that SEQRES describes are filled by PDBFixer; missing terminal residues are
    not (modelling a floppy tail from nothing helps nobody). Ligands and water are dropped.
    """
    _say(progress, "reading the structure")
    structure = read_pdb(path, chain=chain)
    source = str(Path(path))
    want = structure.chain
    try:
        with _repeatable():
            fixer = _fix_pdb(source, want, progress)
    except Exception as e:
        raise StructureError(
            f"{source}: PDBFixer could not complete chain {want!r}: {type(e).__name__}: {e}"
        ) from e
    positions = _as_array_nm(fixer.positions)
    _check_chain_breaks(fixer.topology, positions, source)
    return Model(fixer.topology, positions, source, from_structure=True)


def _fix_pdb(source: str, chain: str, progress: Progress | None = None) -> PDBFixer:
    fixer = PDBFixer(filename=source, platform=_cpu_platform())
    others = sorted({c.id for c in fixer.topology.chains() if _chain_key(c.id) != chain})
    if others:
        fixer.removeChains(chainIds=others)
    fixer.findMissingResidues()
    chains = list(fixer.topology.chains())
    fixer.missingResidues = {
        key: residues
        for key, residues in fixer.missingResidues.items()
        if 0 < key[1] < len(list(chains[key[0]].residues()))
    }
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    _keep_only_chain_residues(fixer)
    return _complete(fixer, progress)


def _fix_built(pdb_text: str, progress: Progress | None = None) -> PDBFixer:
    fixer = PDBFixer(pdbfile=io.StringIO(pdb_text), platform=_cpu_platform())
    fixer.missingResidues = {}
    return _complete(fixer, progress)


def _complete(fixer: PDBFixer, progress: Progress | None) -> PDBFixer:
    """Missing heavy atoms (seeded: the same input gives the same atoms), then hydrogens at
    the model's pH: the last steps of every preparation, from a PDB or a built chain."""
    _say(progress, "completing atoms")
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=PDBFIXER_SEED)
    _say(progress, "adding hydrogens")
    fixer.addMissingHydrogens(PH, forcefield=forcefield())
    return fixer


def _keep_only_chain_residues(fixer: PDBFixer) -> None:
    """Drop water, ions and ligands but keep caps (PDBFixer's removeHeterogens drops ACE/NME)."""
    keep = set(ONE_LETTER) | set(VARIANTS) | CAPS
    drop = [r for r in fixer.topology.residues() if r.name not in keep]
    if drop:
        modeller = app.Modeller(fixer.topology, fixer.positions)
        modeller.delete(drop)
        fixer.topology, fixer.positions = modeller.topology, modeller.positions


def complete_sequence(sequence: str, *, progress: Progress | None = None) -> Model:
    """Build ``sequence`` as an extended chain; PDBFixer adds side chains and hydrogens."""
    _say(progress, "building the extended chain")
    seq = parse_sequence(sequence)
    if len(seq) > MAX_SEQUENCE_LENGTH:
        raise StructureError(
            f"the sequence has {len(seq)} residues: at most {MAX_SEQUENCE_LENGTH} can be built "
            "as an extended chain"
        )
    source = f"sequence {seq}"
    try:
        with _repeatable():
            fixer = _fix_built(extended_chain_pdb(seq), progress)
    except Exception as e:  # our own PDB text: a failure here is a bug, reported plainly
        raise StructureError(f"{source}: PDBFixer could not complete the built chain: {e}") from e
    positions = _as_array_nm(fixer.positions)
    clashes = find_clashes(fixer.topology, positions)
    if clashes:
        i, j, d = clashes[0]
        atoms = list(fixer.topology.atoms())
        raise StructureError(
            f"{source}: the built chain has {len(clashes)} clash(es), e.g. {_label(atoms[i])} "
            f"and {_label(atoms[j])} at {d * 10:.2f} A: expected none in an extended chain"
        )
    return Model(fixer.topology, positions, source, from_structure=False)


def with_reference(model: Model, reference: Model) -> Model:
    """``model`` measured against ``reference`` (another completed structure of the same
    protein, e.g. the folded state for a job started from its sequence).

    Atoms are matched by residue (in chain order) and atom name, so the two may come from
    different files, builders and numbering; the residues must be the same amino acids. The
    C-alpha of every residue must match; other heavy atoms the reference lacks (a terminal
    OXT that one builder adds and the other does not) are left out of the heavy-atom RMSD and
    the native contacts. Hydrogens are never compared.
    """
    mine, theirs = list(model.topology.residues()), list(reference.topology.residues())
    if len(mine) != len(theirs):
        raise StructureError(
            f"the reference {reference.source} has {len(theirs)} residues once completed, the "
            f"system {len(mine)}: expected the same protein (the same sequence and termini)"
        )
    ref = np.full(model.positions.shape, np.nan)
    for a, b in zip(mine, theirs, strict=True):
        if VARIANTS.get(a.name, a.name) != VARIANTS.get(b.name, b.name):
            raise StructureError(
                f"residue {a.index + 1} is {a.name} in the system and {b.name} in the reference "
                f"{reference.source}: expected the same sequence"
            )
        by_name = {x.name: x.index for x in b.atoms()}
        for atom in a.atoms():
            if atom.element is None or atom.element.symbol == "H":
                continue
            j = by_name.get(atom.name)
            if j is not None:
                ref[atom.index] = reference.positions[j]
            elif atom.name == "CA":
                raise StructureError(
                    f"the reference {reference.source} has no CA in residue {b.name} {b.id}"
                )
    ref.setflags(write=False)
    return dataclasses.replace(model, reference=ref)


def _label(atom: app.topology.Atom) -> str:
    return f"{atom.residue.name}{atom.residue.id}:{atom.name}"


def _check_chain_breaks(topology: app.Topology, positions: np.ndarray, source: str) -> None:
    """Reject a chain whose consecutive residues are not peptide-bonded in space.

    OpenMM bonds consecutive residues by template regardless of distance, so a gap without
    SEQRES would be silently "closed" by the minimizer, dragging the protein apart.
    """
    for chain in topology.chains():
        residues = list(chain.residues())
        for a, b in itertools.pairwise(residues):
            c = next((x for x in a.atoms() if x.name == "C"), None)
            n = next((x for x in b.atoms() if x.name == "N"), None)
            if c is None or n is None:
                continue
            d = float(np.linalg.norm(positions[c.index] - positions[n.index]))
            if d > MAX_PEPTIDE_BOND_NM:
                raise StructureError(
                    f"{source}: chain break between {a.name} {a.id} and {b.name} {b.id} "
                    f"(C-N distance {d * 10:.1f} A): residues are missing and PDBFixer could not "
                    "rebuild them (no SEQRES records?); expected a continuous chain"
                )


def find_clashes(
    topology: app.Topology, positions: np.ndarray, *, cutoff_nm: float = CLASH_DISTANCE_NM
) -> list[tuple[int, int, float]]:
    """Heavy-atom pairs more than three bonds apart that are closer than ``cutoff_nm``."""
    atoms = list(topology.atoms())
    heavy = [a.index for a in atoms if a.element is not None and a.element.symbol != "H"]
    neighbours: dict[int, set[int]] = {a.index: set() for a in atoms}
    for a1, a2 in topology.bonds():
        neighbours[a1.index].add(a2.index)
        neighbours[a2.index].add(a1.index)

    def within3(i: int) -> set[int]:
        seen = {i: 0}
        queue = deque([i])
        while queue:
            k = queue.popleft()
            if seen[k] == 3:
                continue
            for m in neighbours[k]:
                if m not in seen:
                    seen[m] = seen[k] + 1
                    queue.append(m)
        return set(seen)

    xyz = positions[heavy]
    out: list[tuple[int, int, float]] = []
    for row, i in enumerate(heavy):
        d = np.linalg.norm(xyz[row + 1 :] - xyz[row], axis=1)
        close = np.nonzero(d < cutoff_nm)[0]
        if len(close):
            near = within3(i)
            out.extend(
                (i, heavy[row + 1 + k], float(d[k]))
                for k in close
                if heavy[row + 1 + k] not in near
            )
    return out


def create_system(topology: app.Topology, source: str) -> openmm.System:
    """Amber ff14SB + GBn2, H-bond constraints, HMR to 1.5 amu; no cutoff up to
    :data:`GB_CUTOFF_ATOMS` atoms, a :data:`GB_CUTOFF_NM` cutoff (CutoffNonPeriodic) above."""
    cutoff: dict[str, Any] = (
        {"nonbondedMethod": app.NoCutoff}
        if topology.getNumAtoms() <= GB_CUTOFF_ATOMS
        else {"nonbondedMethod": app.CutoffNonPeriodic, "nonbondedCutoff": GB_CUTOFF_NM * _NM}
    )
    try:
        return forcefield().createSystem(
            topology,
            constraints=app.HBonds,
            hydrogenMass=HYDROGEN_MASS_AMU * unit.amu,
            **cutoff,
        )
    except ValueError as e:  # ForceField reports missing templates as ValueError
        raise UnknownResidueError(
            f"{source}: amber14 has no parameters for part of this structure: {e}"
        ) from e
    except openmm.OpenMMException as e:
        raise StructureError(f"{source}: OpenMM could not build the system: {e}") from e


def create_relax_system(system: openmm.System, topology: app.Topology) -> openmm.System:
    """A copy of the production ``system`` (:func:`create_system`) with OpenMM's native
    ``GBSAOBCForce`` (OBC2, Amber igb=5, mbondi2 radii: what ``implicit/obc2.xml`` sets up) in
    place of GBn2's ``CustomGBForce``, for the first minimisation pass only; it is never
    simulated. Every other term (bonds, angles, torsions, charges, Lennard-Jones, constraints,
    masses, cutoff) is the production system's own. Why: a custom GB force is evaluated by
    OpenMM's expression interpreter; the native OBC2 kernel is vectorised, about 10-17x
    cheaper per force evaluation on one CPU thread (measured: villin 0.017 s against 0.29 s;
    1BHL chain A 0.31 s against 3.0 s), and its solvent is close enough to GBn2's that a
    short GBn2 polish finishes the job."""
    relax = openmm.XmlSerializer.clone(system)
    nonbonded = next((f for f in relax.getForces() if isinstance(f, openmm.NonbondedForce)), None)
    custom = [i for i, f in enumerate(relax.getForces()) if isinstance(f, openmm.CustomGBForce)]
    if nonbonded is None or len(custom) != 1:
        raise StructureError(
            f"the production system has {len(custom)} CustomGBForce(s) and "
            f"{'a' if nonbonded else 'no'} NonbondedForce: expected one of each "
            f"({' + '.join(FORCEFIELD_FILES)})"
        )
    relax.removeForce(custom[0])
    obc = openmm.GBSAOBCForce()
    if nonbonded.getNonbondedMethod() == openmm.NonbondedForce.NoCutoff:
        obc.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    else:
        obc.setNonbondedMethod(openmm.GBSAOBCForce.CutoffNonPeriodic)
        obc.setCutoffDistance(nonbonded.getCutoffDistance())
    for i, (radius, scale) in enumerate(GBSAOBC2Force.getStandardParameters(topology)):
        charge = nonbonded.getParticleParameters(i)[0]
        obc.addParticle(charge, float(radius), float(scale))
    relax.addForce(obc)
    return relax


def reference_structure(
    topology: app.Topology,
    positions_nm: np.ndarray,
    source: str,
    keep: set[int] | None = None,
) -> Structure:
    """The model as a :class:`Structure` (Angstrom), for native contacts shared with Go;
    with ``keep``, only those heavy atoms (and every hydrogen)."""
    residues = []
    for r in topology.residues():
        atoms = tuple(
            Atom(
                a.name,
                a.element.symbol.upper() if a.element is not None else "",
                tuple(float(v) for v in positions_nm[a.index] * 10.0),  # type: ignore[arg-type]
            )
            for a in r.atoms()
            if keep is None or a.index in keep or a.element is None or a.element.symbol == "H"
        )
        try:
            number = int(r.id)
        except ValueError:
            number = r.index + 1
        residues.append(
            Residue(r.name, _chain_key(r.chain.id), number, r.insertionCode.strip(), atoms)
        )
    return Structure(residues=tuple(residues), source=source)


@dataclass(frozen=True, slots=True, eq=False)
class PreparedSystem:
    """Everything an engine needs that never changes: topology, System, start, reference.

    ``system_xml`` is OpenMM's serialization (a System object is mutable; text is not, and
    it pickles). ``positions`` is the minimized start (nm); ``reference`` the PDBFixer-
    completed input (nm), or None for a chain built from a sequence.
    """

    topology: app.Topology
    system_xml: str
    positions: np.ndarray
    reference: np.ndarray | None
    source: str
    sequence: str
    minimized_energy: float  # kJ/mol
    ca_indices: np.ndarray
    heavy_indices: np.ndarray
    contacts: NativeContacts | None

    def __post_init__(self) -> None:
        """Refuse parts of the wrong kinds (:class:`PreparedSystemError`): a prepared system
        also arrives as data (a volunteer reads its coordinator's)."""
        pos = self.positions
        n = pos.shape[0] if isinstance(pos, np.ndarray) and pos.ndim == 2 else 0
        if not (n and pos.shape == (n, 3) and pos.dtype == np.float64 and np.isfinite(pos).all()):
            raise PreparedSystemError(
                "a prepared system needs finite float64 positions of shape (N, 3), got "
                f"{getattr(pos, 'shape', type(pos).__name__)}"
            )
        ref = self.reference
        if ref is not None and not (
            isinstance(ref, np.ndarray) and ref.shape == (n, 3) and ref.dtype == np.float64
        ):
            raise PreparedSystemError(f"a prepared system's reference must be float64 ({n}, 3)")
        for name in ("ca_indices", "heavy_indices"):
            idx = getattr(self, name)
            if not (
                isinstance(idx, np.ndarray)
                and idx.ndim == 1
                and idx.dtype == np.int64
                and (idx.size == 0 or (idx.min() >= 0 and idx.max() < n))
            ):
                raise PreparedSystemError(f"a prepared system's {name} must be atoms in [0, {n})")
        if not all(isinstance(t, str) for t in (self.system_xml, self.source, self.sequence)):
            raise PreparedSystemError("a prepared system's XML, source and sequence must be text")
        if type(self.minimized_energy) not in (int, float):
            raise PreparedSystemError("a prepared system's minimized energy must be a number")

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    def system(self) -> openmm.System:
        """A fresh System object (each Context gets its own), from XML that holds nothing but
        the forces foldnet makes (:func:`~sims.allatom.systemxml.check_system_xml`: OpenMM's
        reader would build whatever the XML names, a PythonForce by unpickling its code)."""
        check_system_xml(self.system_xml)
        return openmm.XmlSerializer.deserialize(self.system_xml)


def prepared_system(
    model: Model, system: openmm.System, minimized_nm: np.ndarray, energy: float
) -> PreparedSystem:
    """Assemble the immutable :class:`PreparedSystem` from a model and its minimized start."""
    atoms = list(model.topology.atoms())
    ca = [
        next((a.index for a in r.atoms() if a.name == "CA"), -1)
        for r in model.topology.residues()
        if _is_amino_acid(r)
    ]
    if not ca or min(ca) < 0:
        raise StructureError(f"{model.source}: an amino acid has no CA atom after completion")
    heavy = [a.index for a in atoms if a.element is not None and a.element.symbol != "H"]
    seq = "".join(
        ONE_LETTER[VARIANTS.get(r.name, r.name)]
        for r in model.topology.residues()
        if _is_amino_acid(r)
    )
    reference: np.ndarray | None
    keep: set[int] | None
    if model.reference is not None:
        matched = np.isfinite(model.reference).all(axis=1)
        heavy = [i for i in heavy if matched[i]]
        # Atoms the reference lacks sit at the start's positions: only matched heavy atoms
        # are ever compared (C-alpha and heavy-atom RMSD, native contacts).
        reference = np.where(matched[:, None], model.reference, model.positions)
        keep = {int(i) for i in heavy}
    else:
        reference = model.positions if model.from_structure else None
        keep = None
    contacts = (
        native_contacts(reference_structure(model.topology, reference, model.source, keep))
        if reference is not None
        else None
    )
    pos = np.array(minimized_nm, dtype=np.float64)
    pos.setflags(write=False)
    ca_arr = np.array(ca, dtype=np.int64)
    heavy_arr = np.array(heavy, dtype=np.int64)
    ca_arr.setflags(write=False)
    heavy_arr.setflags(write=False)
    return PreparedSystem(
        topology=model.topology,
        system_xml=openmm.XmlSerializer.serialize(system),
        positions=pos,
        reference=reference,
        source=model.source,
        sequence=seq,
        minimized_energy=float(energy),
        ca_indices=ca_arr,
        heavy_indices=heavy_arr,
        contacts=contacts,
    )
