"""Small real proteins that ship inside the pdbfixer wheel, so demos and tests run offline."""

from __future__ import annotations

import os
from pathlib import Path

import pdbfixer

_DATA = Path(os.path.dirname(pdbfixer.__file__)) / "tests" / "data"

#: Villin headpiece subdomain HP36 (36 residues).
VILLIN_PDB = _DATA / "test.pdb"
#: 1BHL chain A (133 residues, three chain breaks).
BHL_PDB = _DATA / "1BHL.pdb"
#: Alanine dipeptide (ACE-ALA-NME).
ALANINE_DIPEPTIDE_PDB = _DATA / "alanine-dipeptide.pdb"
