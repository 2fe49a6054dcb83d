"""The PDB parser and sequence checks: real files parse, bad ones are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from sims.errors import StructureError, UnknownResidueError
from sims.structure import parse_pdb, parse_sequence, read_pdb

ALA = "ATOM      1  CA  ALA A   1      11.104   6.134  -6.504  1.00  0.00           C\n"


def test_reads_the_proteins_that_ship_with_pdbfixer(pdb_data):
    villin = read_pdb(pdb_data / "test.pdb")
    assert villin.sequence == "MLSDEDFKAVFGMTRSAFANLPLWKQQNLKKEKGLF"
    assert villin.ca_coordinates().shape == (36, 3)
    dipeptide = read_pdb(pdb_data / "alanine-dipeptide.pdb")
    assert [r.name for r in dipeptide.residues] == ["ACE", "ALA", "NME"]
    assert dipeptide.sequence == "A"
    assert len(read_pdb(pdb_data / "1BHL.pdb").amino_acids) == 133


def test_first_model_and_first_altloc_only():
    text = (
        "MODEL        1\n"
        + ALA
        + ALA.replace(" CA ", " CB ").replace("A   1", "A   1")
        + "ENDMDL\nMODEL        2\n"
        + ALA.replace("ALA A   1", "GLY A   2")
        + "ENDMDL\n"
    )
    s = parse_pdb(text)
    assert len(s.residues) == 1 and len(s.residues[0].atoms) == 2
    alt = ALA[:16] + "B" + ALA[17:]
    assert parse_pdb(ALA + alt.replace("ALA A   1", "ALA A   2")).sequence == "A"


def test_chain_selection_and_water_skipped():
    b = ALA.replace("ALA A", "GLY B")
    water = "HETATM    9  O   HOH A  99       1.000   1.000   1.000  1.00  0.00           O\n"
    assert parse_pdb(ALA + b + water, chain="B").sequence == "G"
    assert parse_pdb(ALA + b + water).chain == "A"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("hello, I am not a PDB\n", StructureError, "no ATOM records found"),
        ("", StructureError, "no ATOM records found"),
        (ALA.replace("ALA", "XYZ"), UnknownResidueError, "unknown residue 'XYZ' in chain A"),
        (ALA.replace("11.104", "11.1x4"), StructureError, "line 1: cannot read"),
        (ALA.replace("   1  ", "  ?1  "), StructureError, "line 1: cannot read residue number"),
        ("ATOM  \x00\x01\n", StructureError, "binary data"),
        (
            "HETATM    1  C1  LIG A   1       0.000   0.000   0.000  1.00  0.00           C\n",
            StructureError,
            "no protein chain",
        ),
    ],
)
def test_malformed_pdb_text(text, error, message):
    with pytest.raises(error, match=message):
        parse_pdb(text)


def test_empty_or_absent_chain_names_the_chains_present():
    with pytest.raises(StructureError, match="chain 'C' is empty or absent: chains present are A"):
        parse_pdb(ALA, chain="C")


def test_chain_of_caps_only_has_no_amino_acids():
    ace = ALA.replace("ALA", "ACE")
    with pytest.raises(StructureError, match="holds no amino-acid residues"):
        parse_pdb(ace)


def test_missing_ca_is_named():
    s = parse_pdb(ALA.replace(" CA ", " CB "))
    with pytest.raises(StructureError, match="residue ALA A1 has no CA atom"):
        s.ca_coordinates()


def test_file_errors(tmp_path):
    with pytest.raises(StructureError, match="no such file"):
        read_pdb(tmp_path / "missing.pdb")
    with pytest.raises(StructureError, match="is a directory"):
        read_pdb(tmp_path)
    binary = tmp_path / "image.pdb"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(StructureError, match="not a PDB file"):
        read_pdb(binary)


@pytest.mark.parametrize(
    ("sequence", "error", "message"),
    [
        ("", StructureError, "empty"),
        ("   ", StructureError, "empty"),
        ("Y", StructureError, "too short"),
        ("YYZ1", UnknownResidueError, "unknown residue code.*'1'.*'Z'"),
    ],
)
def test_bad_sequences(sequence, error, message):
    with pytest.raises(error, match=message):
        parse_sequence(sequence)


def test_sequence_is_normalised():
    assert parse_sequence(" yydp etgtwy\n") == "YYDPETGTWY"


def test_unknown_residue_in_another_chain_is_ignored():
    dna = ALA.replace("ALA A", " DA B")
    assert parse_pdb(ALA + dna).sequence == "A"
    with pytest.raises(UnknownResidueError, match="unknown residue 'DA' in chain B"):
        parse_pdb(ALA + dna, chain="B")


# -- native contacts: vectorised, the same pairs as the definition -----------------------------


def _brute_force_contacts(structure, cutoff=4.5, min_separation=4):
    """The definition, pair by pair (what native_contacts replaced: quadratic Python)."""
    residues = structure.amino_acids
    heavy = [np.array([a.xyz for a in r.atoms if a.is_heavy]) for r in residues]
    pairs = []
    for i in range(len(residues)):
        for j in range(i + min_separation, len(residues)):
            d = heavy[i][:, None, :] - heavy[j][None, :, :]
            if np.min(np.einsum("abk,abk->ab", d, d)) <= cutoff * cutoff:
                pairs.append((i, j))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _tiled(structure, copies: int, spacing: float = 30.0):
    """``copies`` of ``structure`` side by side as one chain (a large test protein)."""
    from sims.structure import Atom, Residue, Structure

    out, k = [], 0
    for c in range(copies):
        off = np.array([(c % 4) * spacing, (c // 4) * spacing, 0.0])
        for r in structure.residues:
            atoms = tuple(Atom(a.name, a.element, tuple(np.add(a.xyz, off))) for a in r.atoms)
            out.append(Residue(r.name, "A", k, "", atoms))
            k += 1
    return Structure(tuple(out), "tiled")


def test_native_contacts_match_the_definition(villin_pdb, bhl_pdb):
    from sims.observables import native_contacts

    for s in (read_pdb(villin_pdb), read_pdb(bhl_pdb), _tiled(read_pdb(bhl_pdb), 4, 12.0)):
        got = native_contacts(s)
        np.testing.assert_array_equal(got.pairs, _brute_force_contacts(s))
        ca = s.ca_coordinates()
        want = np.linalg.norm(ca[got.pairs[:, 0]] - ca[got.pairs[:, 1]], axis=1)
        np.testing.assert_allclose(got.distances, want)


def test_native_contacts_of_2000_residues_and_of_a_hostile_heap(bhl_pdb):
    from sims.observables import native_contacts
    from sims.structure import Atom, Residue, Structure

    big = _tiled(read_pdb(bhl_pdb), 16, 100.0)  # 2,128 residues, ~17,000 heavy atoms
    assert len(big.amino_acids) > 2000
    got = native_contacts(big)
    one = native_contacts(read_pdb(bhl_pdb))
    assert len(got.pairs) == 16 * len(one.pairs)  # copies 100 A apart do not touch
    # every atom at one point: every pair |i - j| >= 4 is a contact, and memory stays bounded
    n = 300
    names = ("N", "CA", "C", "O", "CB")
    heap = Structure(
        tuple(
            Residue("ALA", "A", i, "", tuple(Atom(a, a[0], (1.0, 2.0, 3.0)) for a in names))
            for i in range(n)
        ),
        "heap",
    )
    assert len(native_contacts(heap).pairs) == (n - 4) * (n - 3) // 2
