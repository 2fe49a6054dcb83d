"""Shared fixtures: the small real proteins that ship inside pdbfixer (usable offline), and
the databases (SQLite, and a throwaway PostgreSQL server) the storage tests run on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pg_server import Cluster, running_cluster

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


# --------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the whole session (started on first use); fails,
    never skips, where the server binaries are missing (CI installs them)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The database a test runs on: each test that asks for it runs once per backend."""
    return str(request.param)


@pytest.fixture
def new_db(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Path | str]]:
    """Makes empty databases of the test's backend, by label: a SQLite file in the test's
    folder, or a fresh PostgreSQL database (dropped after the test) named by its URL."""
    if backend == "sqlite":
        yield lambda label: tmp_path / f"{label}.db"
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    yield cluster.new_database
    cluster.drop_databases()
