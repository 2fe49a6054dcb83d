"""Shared fixtures: the small real proteins that ship inside pdbfixer (usable offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sims.examples import BHL_PDB, VILLIN_PDB

PDB_DATA = VILLIN_PDB.parent


@pytest.fixture(scope="session")
def pdb_data() -> Path:
    return PDB_DATA


@pytest.fixture(scope="session")
def villin_pdb() -> Path:
    """Villin headpiece subdomain HP36 (36 residues)."""
    return VILLIN_PDB


@pytest.fixture(scope="session")
def bhl_pdb() -> Path:
    """1BHL, 133 residues in chain A (with three chain breaks)."""
    return BHL_PDB
