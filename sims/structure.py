"""Protein structures read from PDB files: a small, strict parser with clear errors.

Only what the engines need: the first model, ATOM records (and HETATM records of modified
amino acids such as MSE), the first alternate location, one chain. Anything malformed is a
:class:`~sims.errors.StructureError` naming the line, never a library traceback.
Coordinates are in Angstrom, as in the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims.errors import StructureError, UnknownResidueError

#: One-letter codes of the 20 standard amino acids.
ONE_LETTER = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E",
    "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
    "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
}  # fmt: skip
THREE_LETTER = {v: k for k, v in ONE_LETTER.items()}

#: Protonation and modification variants mapped to the standard residue they stand for.
VARIANTS = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",
    "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS", "MSE": "MET",
}  # fmt: skip

#: Terminal caps: part of a chain for all-atom engines, ignored by residue-level models.
CAPS = frozenset({"ACE", "NME", "NH2"})

_SKIPPED_HETERO = frozenset({"HOH", "WAT", "DOD", "SOL"})
MAX_PDB_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Atom:
    name: str
    element: str
    xyz: tuple[float, float, float]

    @property
    def is_heavy(self) -> bool:
        return self.element not in ("H", "D")


@dataclass(frozen=True, slots=True)
class Residue:
    name: str
    chain: str
    number: int
    insertion: str
    atoms: tuple[Atom, ...]

    @property
    def standard_name(self) -> str:
        return VARIANTS.get(self.name, self.name)

    @property
    def is_amino_acid(self) -> bool:
        return self.standard_name in ONE_LETTER

    def atom(self, name: str) -> Atom | None:
        return next((a for a in self.atoms if a.name == name), None)

    def label(self) -> str:
        return f"{self.name} {self.chain}{self.number}{self.insertion}".rstrip()


@dataclass(frozen=True, slots=True)
class Structure:
    """One chain of one model: residues in file order."""

    residues: tuple[Residue, ...]
    source: str

    @property
    def chain(self) -> str:
        return self.residues[0].chain

    @property
    def amino_acids(self) -> tuple[Residue, ...]:
        return tuple(r for r in self.residues if r.is_amino_acid)

    @property
    def sequence(self) -> str:
        return "".join(ONE_LETTER[r.standard_name] for r in self.amino_acids)

    def ca_coordinates(self) -> np.ndarray:
        """(N, 3) C-alpha positions in Angstrom, one per amino-acid residue."""
        coords = []
        for r in self.amino_acids:
            ca = r.atom("CA")
            if ca is None:
                raise StructureError(
                    f"{self.source}: residue {r.label()} has no CA atom: every amino acid needs one"
                )
            coords.append(ca.xyz)
        return np.array(coords, dtype=np.float64)


def _element(line: str, atom_name: str) -> str:
    el = line[76:78].strip().upper() if len(line) >= 78 else ""
    if el:
        return el
    stripped = atom_name.strip().lstrip("0123456789")
    return stripped[:1].upper() if stripped else ""


def parse_pdb(text: str, *, source: str = "<string>", chain: str | None = None) -> Structure:
    """Parse PDB text; return the first model's chain ``chain`` (default: the first one)."""
    if "\x00" in text:
        raise StructureError(f"{source}: binary data, not a PDB file")
    residues: dict[tuple[str, int, str], tuple[str, list[Atom]]] = {}
    order: list[tuple[str, int, str]] = []
    chains_seen: list[str] = []
    unknown: dict[str, tuple[int, str]] = {}
    seen_record = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        record = raw[:6].strip()
        if record in ("ENDMDL", "END") and seen_record:
            break
        if record not in ("ATOM", "HETATM"):
            continue
        seen_record = True
        line = raw.ljust(80)
        resname = line[17:20].strip().upper()
        if record == "HETATM" and (
            resname in _SKIPPED_HETERO
            or (resname not in VARIANTS and resname not in ONE_LETTER and resname not in CAPS)
        ):
            continue  # ligands, ions and water: not part of the protein chain
        altloc = line[16]
        if altloc not in (" ", "A", "1"):
            continue
        try:
            x, y, z = float(line[30:38]), float(line[38:46]), float(line[46:54])
            number = int(line[22:26])
        except ValueError as e:
            raise StructureError(
                f"{source}, line {lineno}: cannot read residue number or coordinates from "
                f"{raw.rstrip()!r}: expected PDB fixed columns (number 23-26, x/y/z 31-54)"
            ) from e
        if not all(np.isfinite((x, y, z))):
            raise StructureError(f"{source}, line {lineno}: non-finite coordinate")
        chain_id = line[21].strip() or "_"
        if chain_id not in chains_seen:
            chains_seen.append(chain_id)
        if resname not in ONE_LETTER and resname not in VARIANTS and resname not in CAPS:
            # Only an error if it is in the chain asked for (a protein-DNA file is fine).
            unknown.setdefault(chain_id, (lineno, resname))
            continue
        atom_name = line[12:16].strip()
        key = (chain_id, number, line[26].strip())
        if key not in residues:
            residues[key] = (resname, [])
            order.append(key)
        residues[key][1].append(Atom(atom_name, _element(line, line[12:16]), (x, y, z)))
    if not seen_record:
        raise StructureError(
            f"{source}: no ATOM records found: this is not a PDB file, or it holds no atoms"
        )
    if chain is None:
        if not chains_seen:
            raise StructureError(f"{source}: the file holds no protein chain")
        chain = chains_seen[0]
    if chain in unknown:
        lineno, resname = unknown[chain]
        raise UnknownResidueError(
            f"{source}, line {lineno}: unknown residue {resname!r} in chain {chain}: "
            f"expected one of the 20 standard amino acids, a variant "
            f"({', '.join(sorted(VARIANTS))}) or a cap ({', '.join(sorted(CAPS))})"
        )
    picked = [k for k in order if k[0] == chain]
    if not picked:
        raise StructureError(
            f"{source}: chain {chain!r} is empty or absent: chains present are "
            f"{', '.join(chains_seen) or 'none'}"
        )
    out = tuple(
        Residue(
            name=residues[k][0],
            chain=k[0],
            number=k[1],
            insertion=k[2],
            atoms=tuple(residues[k][1]),
        )
        for k in picked
    )
    structure = Structure(residues=out, source=source)
    if not structure.amino_acids:
        raise StructureError(f"{source}: chain {chain!r} holds no amino-acid residues")
    return structure


def read_pdb(path: str | os.PathLike[str], *, chain: str | None = None) -> Structure:
    """Read a PDB file; errors name the file and what was wrong with it."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_PDB_BYTES:
            raise StructureError(
                f"{p}: {size:,} bytes is larger than the {MAX_PDB_BYTES:,}-byte limit for a PDB"
            )
        data = p.read_bytes()
    except FileNotFoundError as e:
        raise StructureError(f"{p}: no such file") from e
    except IsADirectoryError as e:
        raise StructureError(f"{p}: is a directory, expected a PDB file") from e
    except OSError as e:
        raise StructureError(f"{p}: cannot read: {e.strerror}") from e
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise StructureError(f"{p}: not a PDB file (PDB files are ASCII text)") from e
    return parse_pdb(text, source=str(p), chain=chain)


def parse_sequence(sequence: str) -> str:
    """Validate a one-letter amino-acid sequence; return it upper-cased."""
    seq = "".join(sequence.split()).upper()
    if not seq:
        raise StructureError("the sequence is empty: expected one-letter amino-acid codes")
    bad = sorted({c for c in seq if c not in THREE_LETTER})
    if bad:
        raise UnknownResidueError(
            f"sequence contains unknown residue code(s) {', '.join(map(repr, bad))}: "
            f"expected the 20 standard one-letter codes {''.join(sorted(THREE_LETTER))}"
        )
    if len(seq) < 2:
        raise StructureError(f"the sequence {seq!r} is too short: expected at least 2 residues")
    return seq


def ca_pdb_text(sequence: str, positions: np.ndarray, *, chain: str = "A", title: str = "") -> str:
    """A C-alpha-only PDB of ``positions`` (Angstrom), e.g. a Go-model snapshot."""
    if len(sequence) != len(positions):
        raise StructureError(
            f"sequence has {len(sequence)} residues but there are {len(positions)} positions"
        )
    lines = [f"REMARK   1 {title}"[:80]] if title else []
    for i, (aa, (x, y, z)) in enumerate(zip(sequence, positions, strict=True), start=1):
        lines.append(
            f"ATOM  {i:5d}  CA  {THREE_LETTER[aa]} {chain}{i:4d}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           C"
        )
    lines += ["TER", "END", ""]
    return "\n".join(lines)
