"""SQLite (WAL) storage of a Merkle log: entries, stored subtree hashes, checkpoints.

Schema (``schema`` = 1 in ``meta``)::

    meta(key TEXT PRIMARY KEY, value TEXT)              origin, log verifier key, schema
    entries(idx INTEGER PRIMARY KEY, leaf_hash BLOB, data BLOB)
    nodes(id INTEGER PRIMARY KEY, hash BLOB)            perfect subtrees, level >= 1,
                                                        id = level << 56 | index
    checkpoints(size INTEGER PRIMARY KEY, note TEXT)    every checkpoint the log signed
    cosignatures(size, name, key_id, line)              witness cosignature lines

Every perfect subtree ``MTH(D[i*2**l : (i+1)*2**l])`` is stored once, when its last leaf
arrives, so an append computes and writes O(log n) hashes (amortised: one) and any inclusion or
consistency proof is read with two indexed queries (:mod:`ledger.merkle` turns the proof's
ranges into at most ``2 log2 n`` perfect subtrees).

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``, so a transaction is on disk when
``COMMIT`` returns; an append is acknowledged only after its commit. Batches are one
transaction. Append-only: triggers abort any ``UPDATE`` or ``DELETE`` on these tables (an
operator with file access can still drop them, which is what the auditor is for).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from ledger.errors import ConfigError, FormatError, StorageError
from ledger.merkle import EMPTY_ROOT, node_hash, perfect_subtrees
from ledger.merkle import root_hash as _root_hash

__all__ = ["SCHEMA_VERSION", "Store"]

SCHEMA_VERSION = 1
_LEVEL_SHIFT = 56

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(
    idx INTEGER PRIMARY KEY, leaf_hash BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes(id INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cosignatures(
    size INTEGER NOT NULL, name TEXT NOT NULL, key_id BLOB NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY(size, name, key_id));
"""
_APPEND_ONLY = ("entries", "nodes", "checkpoints", "cosignatures")


def _node_id(level: int, index: int) -> int:
    return (level << _LEVEL_SHIFT) | index


class Store:
    """One SQLite file holding one Merkle log. Not thread-safe; one writer at a time."""

    __slots__ = ("_db", "_frontier", "_frontier_ok", "_path", "_readonly", "_size")

    def __init__(self, db: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self._db = db
        self._path = path
        self._readonly = readonly
        self._size = 0
        self._frontier: list[tuple[int, int, bytes]] = []
        self._frontier_ok = False
        self._reload()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Store:
        """Open (and with ``create``, initialise) a log database for reading and appending."""
        target = Path(path)
        if not create and not target.exists():
            raise StorageError(f"no ledger database at {target}")
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                for table in _APPEND_ONLY:
                    for op in ("UPDATE", "DELETE"):
                        db.execute(
                            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} "
                            f"BEFORE {op} ON {table} "
                            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                        )
                row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
                elif row[0] != str(SCHEMA_VERSION):
                    raise StorageError(
                        f"{target} has ledger schema {row[0]}, this code reads {SCHEMA_VERSION}"
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException as e:
            if db is not None:
                db.close()
            if isinstance(e, sqlite3.DatabaseError):
                raise StorageError(f"cannot open ledger database {target}: {e}") from e
            raise
        return cls(db, target, readonly=False)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing log database without writing to it (what an auditor uses)."""
        target = Path(path)
        if not target.is_file():  # the caller named the wrong path: its mistake, exit 2
            raise ConfigError(f"no ledger database at {target}")
        try:
            db = sqlite3.connect(
                f"{target.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as e:
            raise FormatError(f"{target} is not a ledger database: {e}") from e
        missing = {"meta", "entries", "nodes", "checkpoints", "cosignatures"} - tables
        if missing:
            db.close()
            raise FormatError(f"{target} is not a ledger database (no {', '.join(missing)})")
        return cls(db, target, readonly=True)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def readonly(self) -> bool:
        return self._readonly

    # ------------------------------------------------------------------ reading

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"reading {self._path}: {e}") from e

    def _reload(self) -> None:
        rows = self._query("SELECT max(idx) FROM entries")
        top = rows[0][0]
        self._size = 0 if top is None else int(top) + 1  # type: ignore[call-overload]
        nodes = perfect_subtrees(0, self._size)
        try:
            hashes = self.read_nodes(nodes)
        except StorageError:
            if not self._readonly:
                raise
            # A damaged log can still be read entry by entry (that is what an auditor does).
            self._frontier, self._frontier_ok = [], False
            return
        self._frontier = [(lv, ix, h) for (lv, ix), h in zip(nodes, hashes, strict=True)]
        self._frontier_ok = True

    @property
    def size(self) -> int:
        """Number of entries (the index of the next one)."""
        return self._size

    def refresh(self) -> None:
        """Re-read the size and right frontier (after another process appended)."""
        self._reload()

    def read_nodes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """Perfect-subtree hashes by ``(level, index)``: a :data:`~ledger.merkle.NodeReader`."""
        leaves = [ix for lv, ix in nodes if lv == 0]
        inner = [_node_id(lv, ix) for lv, ix in nodes if lv > 0]
        got: dict[tuple[int, int], bytes] = {}
        for chunk in _chunks(leaves, 500):
            marks = ",".join("?" * len(chunk))
            for idx, h in self._query(
                f"SELECT idx, leaf_hash FROM entries WHERE idx IN ({marks})", chunk
            ):
                got[(0, idx)] = h  # type: ignore[index,assignment]
        for chunk in _chunks(inner, 500):
            marks = ",".join("?" * len(chunk))
            for nid, h in self._query(f"SELECT id, hash FROM nodes WHERE id IN ({marks})", chunk):
                n = int(nid)  # type: ignore[call-overload]
                got[(n >> _LEVEL_SHIFT, n & ((1 << _LEVEL_SHIFT) - 1))] = h  # type: ignore[assignment]
        try:
            return [got[n] for n in nodes]
        except KeyError as e:
            raise StorageError(
                f"{self._path}: tree node (level, index) {e.args[0]} is missing; the database is "
                "damaged or was tampered with"
            ) from e

    def root(self, tree_size: int | None = None) -> bytes:
        """``MTH(D[0:tree_size])``; the current root from the in-memory frontier in O(log n)."""
        if self._frontier_ok and (tree_size is None or tree_size == self._size):
            if not self._frontier:
                return EMPTY_ROOT
            acc = self._frontier[-1][2]
            for _, _, h in reversed(self._frontier[:-1]):
                acc = node_hash(h, acc)
            return acc
        size = self._size if tree_size is None else tree_size
        if not 0 <= size <= self._size:
            raise StorageError(f"tree size {size} is beyond the log's {self._size} entries")
        return _root_hash(size, self.read_nodes)

    def entry(self, index: int) -> bytes:
        rows = self._query("SELECT data FROM entries WHERE idx=?", (index,))
        if not rows:
            raise StorageError(f"no entry {index} in {self._path} (size {self._size})")
        return rows[0][0]  # type: ignore[return-value]

    def iter_entries(
        self, start: int = 0, end: int | None = None, *, chunk: int = 20_000
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """``(index, leaf_hash, data)`` in index order, as stored (gaps are not filled)."""
        stop = self._size if end is None else end
        pos = start
        while pos < stop:
            rows = self._query(
                "SELECT idx, leaf_hash, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (pos, min(stop, pos + chunk)),
            )
            yield from rows  # type: ignore[misc]
            pos += chunk

    def meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return None if not rows else str(rows[0][0])

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every stored checkpoint note ``(size, note)``, by size (without cosignatures)."""
        return [
            (int(s), str(n))  # type: ignore[call-overload]
            for s, n in self._query("SELECT size, note FROM checkpoints ORDER BY size")
        ]

    def checkpoint_sizes(self, after: int = -1, limit: int = -1) -> list[int]:
        """The size of every stored checkpoint above ``after``, ascending, at most ``limit``
        of them (``-1``: all), without reading the notes."""
        rows = self._query(
            "SELECT size FROM checkpoints WHERE size > ? ORDER BY size LIMIT ?", (after, limit)
        )
        return [int(s) for (s,) in rows]  # type: ignore[call-overload]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The stored checkpoint ``(size, note)`` of the largest size, or ``None``.

        One indexed row, so a server can ask for it on every request.
        """
        rows = self._query("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return None if not rows else (int(rows[0][0]), str(rows[0][1]))  # type: ignore[call-overload]

    def checkpoint_note(self, size: int) -> str | None:
        """The stored checkpoint note of ``size`` (without cosignatures), or ``None``."""
        rows = self._query("SELECT note FROM checkpoints WHERE size=?", (size,))
        return None if not rows else str(rows[0][0])

    def cosignature_lines(self, size: int) -> list[str]:
        return [
            str(r[0])
            for r in self._query(
                "SELECT line FROM cosignatures WHERE size=? ORDER BY rowid", (size,)
            )
        ]

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One durable write transaction; the in-memory frontier rolls back with it."""
        if self._readonly:
            raise StorageError(f"{self._path} is open read-only")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise StorageError(f"cannot write {self._path}: {e}") from e
        saved = (self._size, list(self._frontier))
        try:
            top = self._db.execute("SELECT max(idx) FROM entries").fetchone()[0]
            if (0 if top is None else top + 1) != self._size:
                self._reload()  # another writer appended since we last looked
                saved = (self._size, list(self._frontier))
            yield
            self._db.execute("COMMIT")
        except BaseException as e:
            self._size, self._frontier = saved
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.DatabaseError):
                raise StorageError(f"writing {self._path}: {e}") from e
            raise

    def append_leaves(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Append ``(data, leaf_hash)`` pairs; must run inside :meth:`transaction`.

        Returns the index of the first. Computes and stores every perfect subtree the new
        leaves complete (O(log n) per leaf, amortised O(1)).
        """
        first = self._size
        frontier = self._frontier
        entry_rows: list[tuple[int, bytes, bytes]] = []
        node_rows: list[tuple[int, bytes]] = []
        idx = first
        for data, lh in items:
            entry_rows.append((idx, lh, data))
            level, index, h = 0, idx, lh
            while index & 1:
                _, _, left = frontier.pop()
                h = node_hash(left, h)
                level += 1
                index >>= 1
                node_rows.append(((level << _LEVEL_SHIFT) | index, h))
            frontier.append((level, index, h))
            idx += 1
        self._db.executemany("INSERT INTO entries VALUES(?,?,?)", entry_rows)
        self._db.executemany("INSERT INTO nodes VALUES(?,?)", node_rows)
        self._size = idx
        return first

    def put_meta(self, key: str, value: str) -> None:
        """Set a meta value once (inside :meth:`transaction`); changing one is refused."""
        old = self.meta(key)
        if old is None:
            self._db.execute("INSERT INTO meta VALUES(?,?)", (key, value))
        elif old != value:
            raise StorageError(f"{self._path}: {key} is {old!r}, not {value!r}")

    def add_checkpoint(self, size: int, note: str) -> None:
        self._db.execute("INSERT INTO checkpoints VALUES(?,?)", (size, note))

    def add_cosignature(self, size: int, name: str, key_id: bytes, line: str) -> bool:
        """Store a cosignature line; ``False`` if that witness key already cosigned ``size``."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO cosignatures VALUES(?,?,?,?)", (size, name, key_id, line)
        )
        return cur.rowcount == 1


def _chunks(items: list[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
