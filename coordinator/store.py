"""The coordinator's durable state, through SQLAlchemy Core: SQLite (WAL) by default, the
same code on PostgreSQL by URL (psycopg 3; see :mod:`coordinator.databases`).

Event sourcing: the coordinator applies each event to its in-memory scheduler, appends
the events that changed it to ``events``, and acts on them (ledger records, tasks handed
out) only after they are committed here. A coordinator killed at any point replays the log
on restart and reaches the same state: what it had applied but not committed was never
acted on. Content-addressed blobs (states, systems) and returned results sit beside it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from coordinator.codec import decode_event, encode_event
from coordinator.errors import (
    CoordinatorUnavailableError,
    CorruptionError,
    MissingError,
    UsageError,
)
from coordinator.scheduler import Event
from ledger.backend import is_postgres_url, redact_url
from ledger.entries import PriceInputs
from ledger.errors import EntryFormatError
from sims.state import State
from worker.arrays import pack_arrays, unpack_arrays
from worker.errors import WireError
from worker.result import ResultHeader, WorkerResult

#: 64-bit keys on PostgreSQL; SQLite's INTEGER PRIMARY KEY (its rowid) is 64-bit already.
_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: The advisory lock a coordinator holds on its PostgreSQL database while it runs ("fncoord").
COORDINATOR_LOCK = int.from_bytes(b"fncoord", "big")

metadata = sa.MetaData()
events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", _BIGINT, primary_key=True, autoincrement=True),
    sa.Column("body", sa.Text, nullable=False),
)
states = sa.Table(
    "states",
    metadata,
    sa.Column("digest", sa.LargeBinary(32), primary_key=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("n_atoms", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # positions then velocities, <f8
)
systems = sa.Table(
    "systems",
    metadata,
    sa.Column("digest", sa.LargeBinary(32), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job", sa.String(64), primary_key=True),
    sa.Column("lab", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
)
#: A lab's job plan (:class:`coordinator.plan.JobPlan` as JSON, its input included), kept
#: from acceptance on: what a restarted coordinator prepares again.
plans = sa.Table(
    "plans",
    metadata,
    sa.Column("job", sa.String(64), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
)
results = sa.Table(
    "results",
    metadata,
    sa.Column("replica", _BIGINT, primary_key=True, autoincrement=False),
    sa.Column("wu_id", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("header", sa.Text, nullable=False),
    sa.Column("signature", sa.LargeBinary(64), nullable=False),
    sa.Column("arrays", sa.LargeBinary, nullable=False),  # .npz, loaded without pickle
)


def open_engine(url_or_path: str | Path, *, busy_timeout_ms: int | None = None) -> Engine:
    """A database URL (``postgresql://...``) or a path to a SQLite file; SQLite gets WAL and
    FULL synchronous commits (durable before acknowledged), and a busy timeout if asked;
    PostgreSQL gets psycopg 3 and ``synchronous_commit=on`` whatever the server's default
    (a commit is durable before it is acknowledged), and waits ``busy_timeout_ms`` at most
    for a lock."""
    text = str(url_or_path)
    if is_postgres_url(text):
        url = "postgresql+psycopg://" + text.split("://", 1)[1]
        options = "-c synchronous_commit=on"
        if busy_timeout_ms is not None:
            options += f" -c lock_timeout={int(busy_timeout_ms)}"
        try:
            return sa.create_engine(url, connect_args={"options": options}, pool_pre_ping=True)
        except (SQLAlchemyError, ValueError) as e:  # a malformed URL
            raise UsageError(f"cannot use the database URL {redact_url(text)}: {e}") from e
    url = text if "://" in text else f"sqlite:///{Path(text).resolve()}"
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        def pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            if busy_timeout_ms is not None:
                cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.close()

        sa_event.listen(engine, "connect", pragmas)
    return engine


def _encode_header(h: ResultHeader) -> str:
    return h.canonical().decode()


def _decode_header(text: str) -> ResultHeader:
    """A stored header; :class:`CorruptionError` for anything this module did not write."""
    try:
        return _header_of(json.loads(text))
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OverflowError,
        RecursionError,
        EntryFormatError,
    ) as e:
        raise CorruptionError(f"a stored result header does not decode: {e}") from e


def _header_of(d: dict[str, Any]) -> ResultHeader:
    return ResultHeader(
        wu_id=bytes.fromhex(d["wu_id"]),
        worker_key=bytes.fromhex(d["worker_key"]),
        determinism=d["determinism"],
        boundary_digests=tuple(bytes.fromhex(x) for x in d["boundary_digests"]),
        segment_root=bytes.fromhex(d["segment_root"]),
        final_digest=bytes.fromhex(d["final_digest"]),
        frames_digest=bytes.fromhex(d["frames_digest"]),
        observables_digest=bytes.fromhex(d["observables_digest"]),
        n_atoms=int(d["n_atoms"]),
        wall_time_s=float(d["wall_time_s"]),
        price=PriceInputs(**d["price"]),
        version=int(d["version"]),
        segment_data=tuple(bytes.fromhex(x) for x in d.get("segment_data", ())),
    )


@contextlib.contextmanager
def database_errors(doing: str) -> Iterator[None]:
    """Translate the database driver's errors where they enter: a fault, exit 3 / 503.

    A context manager, or a decorator of a method whose own handling (an ``IntegrityError``
    that means "already there") comes first."""
    try:
        yield
    except SQLAlchemyError as e:
        cause = str(getattr(e, "orig", None) or e).splitlines()[0][:200]
        raise CoordinatorUnavailableError(
            f"the coordinator database failed while {doing}: {type(e).__name__}: {cause}"
        ) from e


#: The hot path's INSERTs (rows for nearly every request a volunteer makes), run by the
#: driver's own ``executemany``: SQLAlchemy's per-row parameter processing cost about as
#: much as SQLite's insert itself (28.7 against 13.8 us a row here). Column lists and
#: ``ON CONFLICT`` both backends accept; the placeholder is the driver's.
_HOT: dict[str, tuple[str, int]] = {
    "events": ("INSERT INTO events (body) VALUES ({})", 1),
    "results": (
        "INSERT INTO results (replica, wu_id, header, signature, arrays) VALUES ({})",
        5,
    ),
    # content-addressed: an existing row (same digest, same bytes) is left alone
    "states": (
        "INSERT INTO states (digest, step, n_atoms, data) VALUES ({}) "
        "ON CONFLICT (digest) DO NOTHING",
        4,
    ),
}


class Store:
    """Durable coordinator state. Every write method commits before it returns, except inside
    :meth:`batch`, whose writes commit together when it exits (a group commit)."""

    def __init__(self, engine: Engine, *, exclusive: bool = False) -> None:
        self._engine = engine
        if engine.dialect.name not in ("sqlite", "postgresql"):
            engine.dispose()
            raise UsageError(
                f"database {engine.dialect.name!r} is not supported: use SQLite or PostgreSQL"
            )
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._hot = {name: sql.format(", ".join([mark] * n)) for name, (sql, n) in _HOT.items()}
        self._local = threading.local()  # the open batch, per thread: readers elsewhere
        # (an HTTP handler reading a lab's results) never see uncommitted writes
        self._lock: Connection | None = None
        try:
            if exclusive and engine.dialect.name == "postgresql":
                self._lock = self._claim(engine)
            metadata.create_all(engine)
        except SQLAlchemyError as e:
            self.close()
            raise CoordinatorUnavailableError(
                f"cannot open the coordinator database {redact_url(str(engine.url))}: "
                f"{str(getattr(e, 'orig', None) or e).splitlines()[0][:300]}"
            ) from e
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _claim(engine: Engine) -> Connection:
        """Hold the database's coordinator lock for as long as this store is open: one
        coordinator per database (SQLite has the folder's lock file). The server releases
        it when the connection ends, a killed coordinator's included."""
        conn = engine.connect()
        got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(COORDINATOR_LOCK))).scalar()
        conn.commit()  # the lock is the session's, not the transaction's
        if not got:
            conn.close()
            raise UsageError(
                f"a coordinator is running on {redact_url(str(engine.url))}: stop it first "
                "(or submit over HTTP); one database serves one coordinator"
            )
        return conn

    @classmethod
    def open(cls, url_or_path: str | Path, *, exclusive: bool = False) -> Store:
        """A database URL (``postgresql://...``) or a path to a SQLite file. ``exclusive``
        (the coordinator itself): refuse a PostgreSQL database another coordinator holds."""
        return cls(open_engine(url_or_path), exclusive=exclusive)

    def close(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._lock.close()
            self._lock = None
        self._engine.dispose()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for every write inside: all are committed when the block exits
        normally, none if it raises. Rows are buffered and inserted with one ``executemany``
        per table; one fsync for many events is what lets the coordinator keep up with
        thousands of small results a second. Nested blocks join the outer one."""
        if self._conn is not None:
            yield
            return
        with database_errors("committing a batch"), self._engine.begin() as conn:
            self._local.conn = conn
            self._local.pending = {}
            try:
                yield
                self._flush()
            finally:
                self._local.conn = None
                self._local.pending = {}

    @property
    def _conn(self) -> Connection | None:
        conn: Connection | None = getattr(self._local, "conn", None)
        return conn

    def _put(self, name: str, stmt: Any, rows: list[Any]) -> None:
        """Insert ``rows``: now in a transaction of their own, or buffered in the batch.
        ``stmt`` is a SQLAlchemy statement (rows are dicts), or the driver SQL of a hot
        table (rows are tuples in its column order)."""
        if self._conn is not None:
            pending: dict[str, tuple[Any, list[Any]]] = self._local.pending
            pending.setdefault(name, (stmt, []))[1].extend(rows)
        else:
            with database_errors(f"writing {name}"), self._engine.begin() as conn:
                self._execute(conn, stmt, rows)

    def _flush(self) -> None:
        conn = self._conn
        if conn is None:
            return
        pending, self._local.pending = self._local.pending, {}
        for stmt, rows in pending.values():
            self._execute(conn, stmt, rows)

    def _execute(self, conn: Connection, stmt: Any, rows: list[Any]) -> None:
        if not isinstance(stmt, str):
            conn.execute(stmt, rows)
            return
        # the hot tables' driver SQL, on the connection's own driver connection: the same
        # transaction, committed (or rolled back) with the rest of the batch
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.executemany(stmt, rows)
        except self._engine.dialect.dbapi.Error as e:  # type: ignore[union-attr]
            raise CoordinatorUnavailableError(
                f"the coordinator database failed while writing: {type(e).__name__}: "
                f"{(str(e).splitlines() or [''])[0][:200]}"
            ) from e
        finally:
            cur.close()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        conn = self._conn
        if conn is not None:  # sees the batch's own uncommitted writes
            with database_errors("reading"):
                self._flush()
            yield conn
        else:
            with database_errors("reading"), self._engine.connect() as conn:
                yield conn

    # -- events ----------------------------------------------------------------------------

    def append_events(self, evs: list[Event]) -> None:
        if not evs:
            return
        self._put("events", self._hot["events"], [(encode_event(e),) for e in evs])

    def events(self) -> Iterator[Event]:
        with self._read() as conn:
            for (body,) in conn.execute(sa.select(events.c.body).order_by(events.c.seq)):
                yield decode_event(body)

    # -- content-addressed blobs -----------------------------------------------------------

    def put_state(self, state: State) -> bytes:
        digest = state.digest()
        data = state.positions.astype("<f8").tobytes() + state.velocities.astype("<f8").tobytes()
        self._put("states", self._hot["states"], [(digest, state.step, state.n_atoms, data)])
        return digest

    def _insert_new(self, table: sa.Table, key: str) -> Any:
        """INSERT that leaves an existing row alone (content-addressed: same key, same bytes)."""
        if self._engine.dialect.name == "sqlite":
            return sqlite_insert(table).on_conflict_do_nothing(index_elements=[key])
        if self._engine.dialect.name == "postgresql":
            return pg_insert(table).on_conflict_do_nothing(index_elements=[key])
        raise UsageError(
            f"database {self._engine.dialect.name!r} is not supported: use SQLite or PostgreSQL"
        )

    def state(self, digest: bytes) -> State:
        with self._read() as conn:
            row = conn.execute(sa.select(states).where(states.c.digest == digest)).first()
        if row is None:
            raise MissingError(f"no stored state {digest.hex()[:16]}")
        arr = np.frombuffer(row.data, dtype="<f8").reshape(2, row.n_atoms, 3)
        st = State(positions=arr[0], velocities=arr[1], step=row.step)
        if st.digest() != digest:
            raise CorruptionError(f"stored state {digest.hex()[:16]} is corrupt")
        return st

    def put_system(self, digest: bytes, data: bytes) -> None:
        self._put(
            "systems", self._insert_new(systems, "digest"), [{"digest": digest, "data": data}]
        )

    def system(self, digest: bytes) -> bytes:
        with self._read() as conn:
            row = conn.execute(sa.select(systems.c.data).where(systems.c.digest == digest)).first()
        if row is None:
            raise MissingError(f"no stored system {digest.hex()[:16]}")
        return bytes(row.data)

    # -- jobs and results ------------------------------------------------------------------

    def put_job(self, job: str, lab: str, description: dict[str, Any]) -> None:
        row = {"job": job, "lab": lab, "description": json.dumps(description)}
        self._put("jobs", jobs.insert(), [row])

    def put_plan(self, job: str, body: str) -> None:
        self._put("plans", plans.insert(), [{"job": job, "body": body}])

    def plan(self, job: str) -> str | None:
        with self._read() as conn:
            row = conn.execute(sa.select(plans.c.body).where(plans.c.job == job)).first()
        return None if row is None else str(row.body)

    def job(self, job: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.job == job)).first()
        if row is None:
            return None
        try:
            description = json.loads(row.description)
            return {"lab": row.lab, **description}
        except (ValueError, TypeError, RecursionError) as e:
            raise CorruptionError(f"the stored description of job {job} does not decode") from e

    def put_result(self, replica: int, result: WorkerResult) -> None:
        arrays: dict[str, np.ndarray] = {
            "positions": result.positions,
            "velocities": result.velocities,
            "frames": result.frames,
            "frame_steps": result.frame_steps,
        }
        arrays |= {f"obs_{k}": np.asarray(v) for k, v in result.observables.items()}
        row = (
            replica,
            result.header.wu_id,
            _encode_header(result.header),
            result.signature,
            pack_arrays(arrays),
        )
        self._put("results", self._hot["results"], [row])

    def signed_header(self, replica: int) -> tuple[ResultHeader, bytes]:
        """A stored result's header and signature, without loading its arrays."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(results.c.header, results.c.signature).where(results.c.replica == replica)
            ).first()
        if row is None:
            raise MissingError(f"no stored result for replica {replica}")
        return _decode_header(row.header), bytes(row.signature)

    def _arrays(self, replica: int, names: list[str] | None = None) -> dict[str, np.ndarray]:
        with self._read() as conn:
            row = conn.execute(
                sa.select(results.c.arrays).where(results.c.replica == replica)
            ).first()
        if row is None:
            raise MissingError(f"no stored result for replica {replica}")
        try:
            return unpack_arrays(bytes(row.arrays), names)
        except WireError as e:
            raise CorruptionError(f"stored result of replica {replica} is corrupt: {e}") from e

    def result_arrays(self, replica: int) -> dict[str, np.ndarray]:
        """A stored result's arrays (``positions``, ``velocities``, ``frames``,
        ``frame_steps``, ``obs_*``) as read-only views, copied by the caller what it keeps."""
        return self._arrays(replica)

    def boundary_states(self, replica: int, segments: Sequence[int]) -> tuple[State, ...]:
        """The claimed states at the start of ``segments`` (for a spot-check), read without
        the result's frames."""
        a = self._arrays(replica, ["positions", "velocities"])
        return tuple(
            State(positions=a["positions"][k], velocities=a["velocities"][k]) for k in segments
        )

    def frame_observables(self, replica: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        """A stored result's ``frame_steps`` and the observables ``names``, without its frames
        or states (what adaptive sampling reads of every validated WU)."""
        a = self._arrays(replica, ["frame_steps", *(f"obs_{n}" for n in names)])
        missing = [n for n in names if f"obs_{n}" not in a]
        if missing:
            raise MissingError(f"the result of replica {replica} has no observable {missing[0]}")
        return {"frame_steps": a["frame_steps"]} | {n: a[f"obs_{n}"] for n in names}

    def result(self, replica: int) -> WorkerResult:
        header, signature = self.signed_header(replica)
        arrays = {k: np.array(v) for k, v in self._arrays(replica).items()}
        obs = {k[4:]: v for k, v in arrays.items() if k.startswith("obs_")}
        return WorkerResult(
            header,
            signature,
            arrays["positions"],
            arrays["velocities"],
            arrays["frames"],
            arrays["frame_steps"],
            obs,
        )
