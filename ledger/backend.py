"""Where a ledger's tables live: a SQLite file (the default) or a PostgreSQL database.

:class:`ledger.store.Store` writes its SQL once, with ``?`` placeholders, and runs it through
this thin seam rather than through an ORM: the two databases differ in a handful of places
(placeholders, how a writer takes the log's one write lock, ``INSERT OR IGNORE``, column
types, append-only triggers, read-only connections, which tables exist), each a few lines
here. The SQLite side is the exact sqlite3 code the log always ran; the PostgreSQL side is
psycopg 3 on a connection in autocommit mode, so that the store's own ``BEGIN``/``COMMIT``
delimit every transaction on both.

One writer: SQLite's ``BEGIN IMMEDIATE`` takes the file's write lock; on PostgreSQL every
write transaction first takes a transaction-scoped advisory lock (:data:`WRITE_LOCK`, per
database), so two processes appending to one log queue behind each other exactly as they do
on SQLite, and each re-reads the log's size under the lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ledger.errors import ConfigError, FormatError, StorageError

__all__ = [
    "WRITE_LOCK",
    "Database",
    "PostgresDatabase",
    "SqliteDatabase",
    "connect",
    "is_postgres_url",
    "redact_url",
]

#: The advisory lock key that serialises the ledger's writers on PostgreSQL ("fnledger").
WRITE_LOCK = int.from_bytes(b"fnledger", "big") & ((1 << 63) - 1)

_POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")
TABLES = frozenset({"meta", "entries", "nodes", "checkpoints", "cosignatures"})
_APPEND_ONLY = ("entries", "nodes", "checkpoints", "cosignatures")


def is_postgres_url(location: str | os.PathLike[str]) -> bool:
    """True for ``postgresql://``, ``postgresql+psycopg://`` and ``postgres://`` URLs."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0].lower() in _POSTGRES_SCHEMES


def redact_url(url: str) -> str:
    """The URL without its password, for messages and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class Database(ABC):
    """One connection to a ledger's tables and the SQL dialect it speaks."""

    #: The database driver's own error class, which the store translates into its errors.
    errors: tuple[type[Exception], ...]
    #: ``INSERT OR IGNORE``'s spelling: ``{table}``, ``{columns}``, ``{marks}`` filled in.
    insert_or_ignore: str
    #: A column that orders the cosignatures of one checkpoint as they were added.
    insertion_order: str

    def __init__(self, *, target: Path | str, name: str) -> None:
        self.target = target  # what reopens it: a path or the full URL
        self.name = name  # what messages show: the path or the URL without its password

    @abstractmethod
    def query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def execute(self, sql: str, args: Sequence[object] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    @abstractmethod
    def begin_write(self) -> None:
        """Open a transaction holding the log's write lock (one writer at a time)."""

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    @abstractmethod
    def create_schema(self) -> None:
        """Create the tables and append-only triggers that are missing (in a write
        transaction)."""

    @abstractmethod
    def tables(self) -> set[str]: ...

    @abstractmethod
    def close(self) -> None: ...

    def usable(self) -> bool:
        """Whether the connection can still be used (a file's always can until closed)."""
        return True


class SqliteDatabase(Database):
    """A SQLite file: WAL, ``synchronous=FULL`` (a commit is on disk when it returns)."""

    errors = (sqlite3.DatabaseError,)
    insert_or_ignore = "INSERT OR IGNORE INTO {table}({columns}) VALUES({marks})"
    insertion_order = "rowid"

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS entries("
        "idx INTEGER PRIMARY KEY, leaf_hash BLOB NOT NULL, data BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS nodes(id INTEGER PRIMARY KEY, hash BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, note TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS cosignatures("
        "size INTEGER NOT NULL, name TEXT NOT NULL, key_id BLOB NOT NULL, line TEXT NOT NULL, "
        "PRIMARY KEY(size, name, key_id))",
    )

    def __init__(self, path: Path, *, readonly: bool) -> None:
        super().__init__(target=path, name=str(path))
        if readonly:
            self._db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                self._db.close()
                raise

    def query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, args).fetchall()

    def execute(self, sql: str, args: Sequence[object] = ()) -> int:
        return self._db.execute(sql, args).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._db.executemany(sql, rows)

    def begin_write(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def create_schema(self) -> None:
        for statement in self._SCHEMA:
            self._db.execute(statement)
        for table in _APPEND_ONLY:
            for op in ("UPDATE", "DELETE"):
                self._db.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} "
                    f"BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )

    def tables(self) -> set[str]:
        return {str(r[0]) for r in self._db.execute("SELECT name FROM sqlite_master")}

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


#: How the ledger's connections name themselves to PostgreSQL (``pg_stat_activity``).
WRITER_APP = "foldnet ledger"
READER_APP = "foldnet ledger reader"


class PostgresDatabase(Database):
    """A PostgreSQL database, through psycopg 3 in autocommit mode (the store delimits its
    transactions). Commits are synchronous (``synchronous_commit=on`` for this session, so a
    server configured otherwise cannot acknowledge an append it could lose); a read-only
    store's session refuses every write (``default_transaction_read_only``)."""

    insert_or_ignore = "INSERT INTO {table}({columns}) VALUES({marks}) ON CONFLICT DO NOTHING"
    insertion_order = "seq"

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS entries("
        "idx BIGINT PRIMARY KEY, leaf_hash BYTEA NOT NULL, data BYTEA NOT NULL)",
        "CREATE TABLE IF NOT EXISTS nodes(id BIGINT PRIMARY KEY, hash BYTEA NOT NULL)",
        "CREATE TABLE IF NOT EXISTS checkpoints(size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS cosignatures("
        "seq BIGINT GENERATED ALWAYS AS IDENTITY, "
        "size BIGINT NOT NULL, name TEXT NOT NULL, key_id BYTEA NOT NULL, line TEXT NOT NULL, "
        "PRIMARY KEY(size, name, key_id))",
        "CREATE OR REPLACE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$",
    )

    def __init__(self, url: str, *, readonly: bool) -> None:
        super().__init__(target=url, name=redact_url(url))
        import psycopg

        self.errors = (psycopg.Error,)
        scheme, rest = url.split("://", 1)
        del scheme  # libpq reads postgresql://; SQLAlchemy's +psycopg suffix is not for it
        options = "-c default_transaction_read_only=on" if readonly else ""
        self._db = psycopg.connect(
            f"postgresql://{rest}",
            autocommit=True,
            options=options,
            application_name=READER_APP if readonly else WRITER_APP,
        )
        if not readonly:
            self._db.execute("SET synchronous_commit TO on")

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cur = self._db.execute(self._sql(sql), list(args) if args else None)
        return cur.fetchall() if cur.description is not None else []

    def execute(self, sql: str, args: Sequence[object] = ()) -> int:
        cur = self._db.execute(self._sql(sql), list(args) if args else None)
        return int(cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            with self._db.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def begin_write(self) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK])
        except BaseException:
            with contextlib.suppress(Exception):
                self._db.execute("ROLLBACK")
            raise

    def create_schema(self) -> None:
        for statement in self._SCHEMA:
            self._db.execute(statement)
        have = {
            str(r[0])
            for r in self._db.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        }
        for table in _APPEND_ONLY:
            for op, each in (("update", "ROW"), ("delete", "ROW"), ("truncate", "STATEMENT")):
                name = f"{table}_no_{op}"
                if name not in have:
                    self._db.execute(
                        f"CREATE TRIGGER {name} BEFORE {op.upper()} ON {table} "
                        f"FOR EACH {each} EXECUTE FUNCTION ledger_append_only()"
                    )

    def tables(self) -> set[str]:
        rows = self._db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        return {str(r[0]) for r in rows}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()

    def usable(self) -> bool:
        return not (self._db.closed or self._db.broken)


def connect(location: str | os.PathLike[str], *, readonly: bool, create: bool) -> Database:
    """A connection to the ledger at ``location``: a PostgreSQL URL or a SQLite file's path.

    A reader gets a :class:`~ledger.errors.ConfigError` for a missing file (the caller named
    the wrong path) and a :class:`~ledger.errors.FormatError` for a database without the
    ledger's tables; a writer told not to create a log, and anyone whose server cannot be
    reached, a :class:`~ledger.errors.StorageError`.
    """
    if is_postgres_url(location):
        db: Database = _connect_postgres(str(location), readonly=readonly)
    else:
        db = _connect_sqlite(Path(location), readonly=readonly, create=create)
    if readonly or not create:
        try:
            missing = TABLES - db.tables()
        except db.errors as e:
            db.close()
            if isinstance(db, SqliteDatabase):
                raise FormatError(f"{db.name} is not a ledger database: {e}") from e
            raise StorageError(f"reading {db.name}: {_first_line(e)}") from e
        if missing:
            db.close()
            what = f"{db.name} is not a ledger database (no {', '.join(sorted(missing))})"
            raise FormatError(what) if readonly else StorageError(what)
    return db


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _connect_postgres(url: str, *, readonly: bool) -> Database:
    try:
        import psycopg  # only a PostgreSQL deployment needs the driver
    except ImportError as e:
        raise ConfigError(
            f"{redact_url(url)} is a PostgreSQL database, but the psycopg driver is not "
            "installed; install foldnet's dependencies (pip install 'psycopg[binary]')"
        ) from e
    try:
        return PostgresDatabase(url, readonly=readonly)
    except psycopg.Error as e:
        raise StorageError(
            f"cannot connect to ledger database {redact_url(url)}: {_first_line(e)}; expected "
            "a reachable PostgreSQL server and an existing database (CREATE DATABASE first)"
        ) from e


def _connect_sqlite(path: Path, *, readonly: bool, create: bool) -> Database:
    if readonly and not path.is_file():
        raise ConfigError(f"no ledger database at {path}")
    if not readonly and not create and not path.exists():
        raise StorageError(f"no ledger database at {path}")
    try:
        return SqliteDatabase(path, readonly=readonly)
    except sqlite3.DatabaseError as e:
        if readonly:
            raise FormatError(f"{path} is not a ledger database: {e}") from e
        raise StorageError(f"cannot open ledger database {path}: {e}") from e
