"""The PDB parser and sequence checks: real files parse, bad ones are clear errors."""

from __future__ import annotations

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
