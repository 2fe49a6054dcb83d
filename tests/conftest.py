"""Shared fixtures: the small real proteins that ship inside pdbfixer (usable offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pdbfixer
import pytest

PDB_DATA = Path(os.path.dirname(pdbfixer.__file__)) / "tests" / "data"


@pytest.fixture(scope="session")
def pdb_data() -> Path:
    return PDB_DATA


@pytest.fixture(scope="session")
def villin_pdb() -> Path:
    """Villin headpiece subdomain HP36 (36 residues)."""
    return PDB_DATA / "test.pdb"


@pytest.fixture(scope="session")
def bhl_pdb() -> Path:
    """1BHL, 133 residues in chain A (with three chain breaks)."""
    return PDB_DATA / "1BHL.pdb"
