"""The coordinator's store and accounts on SQLite and on PostgreSQL: what is written comes
back byte for byte after a reopen, a failed batch leaves nothing, one coordinator per
database, and a folder remembers the database it was served from."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from ledger_helpers import NewDb
from pg_server import Cluster
from typer.testing import CliRunner

from coordinator.accounts import Accounts
from coordinator.cli import app
from coordinator.databases import FILE, Databases
from coordinator.errors import (
    CoordinatorUnavailableError,
    MissingError,
    ProtocolError,
    UsageError,
)
from coordinator.messages import Tick, VolunteerTrusted
from coordinator.service import Coordinator
from coordinator.store import Store
from ledger import Log, StorageError
from ledger.entries import PriceInputs
from sims.state import State
from worker.result import ResultHeader, WorkerResult


class AbandonedBatchError(Exception):
    """Raised inside a batch to abandon it."""


def test_store_round_trip(new_db: NewDb) -> None:
    rng = np.random.default_rng(3)
    state = State(positions=rng.normal(size=(5, 3)), velocities=rng.normal(size=(5, 3)), step=7)
    location = new_db("store")
    store = Store.open(location)
    try:
        digest = store.put_state(state)
        assert store.put_state(state) == digest  # content-addressed: stored once, no error
        store.put_system(b"\x01" * 32, b"\x00system\xff")
        store.put_job("job1", "lab-a", {"description": "two runs"})
        store.put_plan("job1", '{"engine": "go"}')
        store.append_events([VolunteerTrusted(volunteer="ab" * 32, now=1.5), Tick(now=2.0)])
        with pytest.raises(AbandonedBatchError), store.batch():
            store.put_job("job2", "lab-a", {})
            store.append_events([Tick(now=3.0)])
            assert store.job("job2") == {"lab": "lab-a"}  # the batch sees its own writes
            raise AbandonedBatchError
    finally:
        store.close()
    again = Store.open(location)
    try:
        back = again.state(digest)
        assert back.step == 7
        assert back.positions.tobytes() == state.positions.tobytes()
        assert back.velocities.tobytes() == state.velocities.tobytes()
        assert again.system(b"\x01" * 32) == b"\x00system\xff"
        assert again.job("job1") == {"lab": "lab-a", "description": "two runs"}
        assert again.plan("job1") == '{"engine": "go"}'
        assert again.job("job2") is None  # the failed batch kept nothing
        assert list(again.events()) == [VolunteerTrusted(volunteer="ab" * 32, now=1.5), Tick(2.0)]
    finally:
        again.close()


def _result(seed: int) -> WorkerResult:
    """A result as the store keeps it (the store checks nothing of it: the coordinator did)."""
    rng = np.random.default_rng(seed)
    d = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(8)]
    header = ResultHeader(
        wu_id=d[0],
        worker_key=d[1],
        determinism='{"engine":"go","note":"quotes \\" and \u00e9"}',
        boundary_digests=(d[2], d[3]),
        segment_root=d[4],
        final_digest=d[3],
        frames_digest=d[5],
        observables_digest=d[6],
        n_atoms=4,
        wall_time_s=0.25,
        price=PriceInputs(
            engine="go", n_particles=4, steps=10, deadline_s=600, issued_at_ms=1_700_000_000_000
        ),
        segment_data=(d[7],),
    )
    return WorkerResult(
        header,
        bytes(rng.integers(0, 256, 64, dtype=np.uint8)),
        positions=rng.normal(size=(2, 4, 3)),
        velocities=rng.normal(size=(2, 4, 3)),
        frames=rng.normal(size=(1, 4, 3)).astype(np.float32),
        frame_steps=np.array([10], dtype=np.int64),
        observables={"q": np.array([0.5]), "rg": np.array([7.25])},
    )


def test_results_round_trip_and_a_refused_insert_keeps_nothing(new_db: NewDb) -> None:
    """Results go through the driver's own executemany (the hot path): what is stored comes
    back byte for byte, and a row the database refuses (a replica stored twice) is a fault
    that names the database, with nothing of its batch kept."""
    location = new_db("store")
    first, other = _result(1), _result(2)
    store = Store.open(location)
    try:
        store.put_result(7, first)
        with pytest.raises(CoordinatorUnavailableError, match="database failed"), store.batch():
            store.put_job("job2", "lab-a", {})
            store.put_result(8, other)
            store.append_events([Tick(now=3.0)])
            store.put_result(7, other)  # replica 7 is stored already
            store.job("job2")  # a read flushes the batch's rows: the refusal comes here
        assert store.job("job2") is None
    finally:
        store.close()
    again = Store.open(location)
    try:
        header, signature = again.signed_header(7)
        assert (header, signature) == (first.header, first.signature)
        back = again.result(7)
        for name in ("positions", "velocities", "frames", "frame_steps"):
            assert getattr(back, name).tobytes() == getattr(first, name).tobytes()
        assert {k: v.tolist() for k, v in back.observables.items()} == {
            "q": [0.5],
            "rg": [7.25],
        }
        with pytest.raises(MissingError):
            again.signed_header(8)  # the refused batch's other result was not kept
        assert list(again.events()) == []
    finally:
        again.close()


def test_accounts_round_trip(new_db: NewDb) -> None:
    location = new_db("accounts")
    with Accounts(location) as accounts:
        key = accounts.add_lab("lab-a")
        with pytest.raises(ProtocolError, match="already exists"):
            accounts.add_lab("lab-a")
        accounts.add_job("job1", "lab-a", "first", 10.0)
        assert accounts.add_volunteer(b"\x02" * 32, "alice") is True
        assert accounts.add_volunteer(b"\x02" * 32, "alice") is False
    with Accounts(location) as accounts:
        assert accounts.lab_for_key(key) == "lab-a"
        assert accounts.lab_for_key(key + "x") is None
        assert [(j.job, j.lab, j.name) for j in accounts.jobs()] == [("job1", "lab-a", "first")]
        assert accounts.volunteer_keys() == {b"\x02" * 32}
        accounts.revoke_lab("lab-a")
        assert accounts.lab_for_key(key) is None
        assert accounts.lab_names() == ["lab-a"]


@pytest.mark.postgres
def test_one_coordinator_per_postgres_database(tmp_path: Path, pg_cluster: Cluster) -> None:
    url = pg_cluster.new_database("exclusive")
    try:
        for name in ("a", "b"):
            Databases.of_folder(tmp_path / name, db=url)
        first = Coordinator.local(tmp_path / "a")
        try:
            with pytest.raises(UsageError, match="a coordinator is running on"):
                Coordinator.local(tmp_path / "b")  # another folder, the same database
        finally:
            first.close()
        # the lock went with the first; the ledger takes only its own signing key
        (tmp_path / "b" / "ledger.key").write_bytes((tmp_path / "a" / "ledger.key").read_bytes())
        second = Coordinator.local(tmp_path / "b")
        second.close()
        # `foldnet lab add` finds the folder's database by itself
        res = CliRunner().invoke(app, ["lab", "add", "lab-x", "--workdir", str(tmp_path / "a")])
        assert res.exit_code == 0, res.output
        with Accounts(url) as accounts:
            assert accounts.lab_names() == ["lab-x"]
    finally:
        pg_cluster.drop_databases()


def test_a_folder_remembers_its_database(tmp_path: Path) -> None:
    d = tmp_path / "c"
    plain = Databases.of_folder(d)
    assert plain.sqlite and plain.ledger == str(d / "ledger.db") and not (d / FILE).exists()
    pg = Databases.of_folder(d, db="postgres://u@127.0.0.1/foldnet")
    assert pg.coordinator == pg.accounts == pg.ledger == "postgresql+psycopg://u@127.0.0.1/foldnet"
    assert stat.S_IMODE(os.stat(d / FILE).st_mode) == 0o600  # a URL may carry a password
    assert Databases.of_folder(d) == pg  # later commands need not be told
    with pytest.raises(UsageError, match=r"already keeps its state in .*u@127.0.0.1/foldnet"):
        Databases.of_folder(d, db="postgresql://u:secret@127.0.0.1/other")
    with pytest.raises(UsageError, match="PostgreSQL URL"):
        Databases.of_folder(tmp_path / "x", db="mysql://u@host/db")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "coordinator.db").write_bytes(b"")
    with pytest.raises(UsageError, match="already holds a SQLite coordinator"):
        Databases.of_folder(tmp_path / "old", db="postgresql://u@127.0.0.1/foldnet")
    split = Databases.of_folder(
        tmp_path / "s", db="postgresql://u@h/a", ledger_db="postgresql://u@h/l"
    )
    assert (split.coordinator, split.ledger) == (
        "postgresql+psycopg://u@h/a",
        "postgresql+psycopg://u@h/l",
    )


def test_an_unreachable_server_is_a_fault_that_names_it(tmp_path: Path) -> None:
    url = "postgresql://fold:hunter2@127.0.0.1:1/foldnet"  # nothing listens on port 1
    with pytest.raises(CoordinatorUnavailableError, match=r"127\.0\.0\.1:1") as e:
        Store.open(url)
    assert "hunter2" not in str(e.value)
    with pytest.raises(StorageError, match="cannot connect to ledger database") as f:
        Log.open(url, origin="foldnet.test/ledger")
    assert "hunter2" not in str(f.value) and "CREATE DATABASE" in str(f.value)


@pytest.mark.postgres
def test_results_of_a_folder_on_postgres_carry_proofs_and_verify(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    from results_helpers import compute_in_folder

    from coordinator.lab import CoordinatorView
    from coordinator.plan import JobPlan
    from coordinator.provenance import verify_results
    from sims.examples import VILLIN_PDB

    url = pg_cluster.new_database("results")
    try:
        Databases.of_folder(tmp_path / "c", db=url)
        plan = JobPlan.create(
            engine="go", pdb=VILLIN_PDB.read_text(), runs=1, clones=1, gens=2,
            steps_per_wu=2000, segment_steps=500, report_steps=500, temperature=0.8,
        )  # fmt: skip
        job = compute_in_folder(tmp_path / "c", plan)
        assert not (tmp_path / "c" / "ledger.db").exists()  # the ledger is on the server
        view = CoordinatorView(tmp_path / "c")
        try:
            view.write_results(job, tmp_path / "out")
        finally:
            view.close()
        report = verify_results(tmp_path / "out")
        assert any("2 WUs" in line for line in report.checked), report.checked
    finally:
        pg_cluster.drop_databases()
