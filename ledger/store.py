"""Storage of a Merkle log: entries, stored subtree hashes, checkpoints, in a SQLite file
(WAL; the default) or a PostgreSQL database named by URL (:mod:`ledger.backend`).

Schema (``schema`` = 1 in ``meta``)::

    meta(key TEXT PRIMARY KEY, value TEXT)              origin, log verifier key, schema
    entries(idx INTEGER PRIMARY KEY, leaf_hash BLOB, data BLOB)
    nodes(id INTEGER PRIMARY KEY, hash BLOB)            perfect subtrees, level >= 1,
                                                        id = level << 56 | index
    checkpoints(size INTEGER PRIMARY KEY, note TEXT)    every checkpoint the log signed
    cosignatures(size, name, key_id, line)              witness cosignature lines

(PostgreSQL: ``BIGINT`` and ``BYTEA``, and ``cosignatures`` has an identity column ``seq``
for the order SQLite keeps in its ``rowid``.)

Every perfect subtree ``MTH(D[i*2**l : (i+1)*2**l])`` is stored once, when its last leaf
arrives, so an append computes and writes O(log n) hashes (amortised: one) and any inclusion or
consistency proof is read with two indexed queries (:mod:`ledger.merkle` turns the proof's
ranges into at most ``2 log2 n`` perfect subtrees).

Durability: a transaction is on disk when ``COMMIT`` returns (SQLite: ``journal_mode=WAL``
with ``synchronous=FULL``; PostgreSQL: ``synchronous_commit=on``); an append is acknowledged
only after its commit. Batches are one transaction. One writer at a time: each write
transaction takes the log's write lock and re-reads the size under it. Append-only: triggers
abort any ``UPDATE`` or ``DELETE`` (PostgreSQL: and ``TRUNCATE``) on these tables (an operator
with database access can still drop them, which is what the auditor is for).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ledger.backend import Database, connect
from ledger.errors import StorageError
from ledger.merkle import EMPTY_ROOT, node_hash, perfect_subtrees
from ledger.merkle import root_hash as _root_hash

__all__ = ["SCHEMA_VERSION", "Store"]

SCHEMA_VERSION = 1
_LEVEL_SHIFT = 56


def _node_id(level: int, index: int) -> int:
    return (level << _LEVEL_SHIFT) | index


class Store:
    """One database holding one Merkle log. Not thread-safe; one writer at a time."""

    __slots__ = ("_db", "_frontier", "_frontier_ok", "_readonly", "_size")

    def __init__(self, db: Database, *, readonly: bool) -> None:
        self._db = db
        self._readonly = readonly
        self._size = 0
        self._frontier: list[tuple[int, int, bytes]] = []
        self._frontier_ok = False
        self._reload()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Store:
        """Open (and with ``create``, initialise) a log database for reading and appending:
        a SQLite file's path or a PostgreSQL URL (``postgresql://user@host/db``)."""
        db = connect(path, readonly=False, create=create)
        try:
            db.begin_write()
            try:
                db.create_schema()
                row = db.query("SELECT value FROM meta WHERE key='schema'")
                if not row:
                    db.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
                elif row[0][0] != str(SCHEMA_VERSION):
                    raise StorageError(
                        f"{db.name} has ledger schema {row[0][0]}, this code reads "
                        f"{SCHEMA_VERSION}; open it with the foldnet version that wrote it"
                    )
                db.commit()
            except BaseException:
                with contextlib.suppress(*db.errors):
                    db.rollback()
                raise
        except BaseException as e:
            db.close()
            if isinstance(e, db.errors):
                raise StorageError(f"cannot open ledger database {db.name}: {e}") from e
            raise
        return cls(db, readonly=False)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing log database without writing to it (what an auditor uses)."""
        return cls(connect(path, readonly=True, create=False), readonly=True)

    def close(self) -> None:
        self._db.close()

    def usable(self) -> bool:
        """Whether the connection is still open (a server may close an idle one)."""
        return self._db.usable()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path | str:
        """What reopens this log: the SQLite file's path or the PostgreSQL URL."""
        return self._db.target

    @property
    def name(self) -> str:
        """The log's location for messages (a URL without its password)."""
        return self._db.name

    @property
    def readonly(self) -> bool:
        return self._readonly

    # ------------------------------------------------------------------ reading

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self._db.query(sql, args)
        except self._db.errors as e:
            raise StorageError(f"reading {self._db.name}: {e}") from e

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
                f"{self._db.name}: tree node (level, index) {e.args[0]} is missing; the "
                "database is damaged or was tampered with"
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
            raise StorageError(f"no entry {index} in {self._db.name} (size {self._size})")
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
        sql = "SELECT size FROM checkpoints WHERE size > ? ORDER BY size"
        if limit < 0:  # PostgreSQL has no LIMIT -1
            rows = self._query(sql, (after,))
        else:
            rows = self._query(f"{sql} LIMIT ?", (after, limit))
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
                f"SELECT line FROM cosignatures WHERE size=? ORDER BY {self._db.insertion_order}",
                (size,),
            )
        ]

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One durable write transaction; the in-memory frontier rolls back with it."""
        if self._readonly:
            raise StorageError(f"{self._db.name} is open read-only")
        db = self._db
        try:
            db.begin_write()
        except db.errors as e:
            raise StorageError(f"cannot write {db.name}: {e}") from e
        saved = (self._size, list(self._frontier))
        try:
            top = db.query("SELECT max(idx) FROM entries")[0][0]
            if (0 if top is None else top + 1) != self._size:
                self._reload()  # another writer appended since we last looked
                saved = (self._size, list(self._frontier))
            yield
            db.commit()
        except BaseException as e:
            self._size, self._frontier = saved
            with contextlib.suppress(*db.errors):
                db.rollback()
            if isinstance(e, db.errors):
                raise StorageError(f"writing {db.name}: {e}") from e
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
        self._db.executemany("INSERT INTO entries(idx, leaf_hash, data) VALUES(?,?,?)", entry_rows)
        self._db.executemany("INSERT INTO nodes(id, hash) VALUES(?,?)", node_rows)
        self._size = idx
        return first

    def put_meta(self, key: str, value: str) -> None:
        """Set a meta value once (inside :meth:`transaction`); changing one is refused."""
        old = self.meta(key)
        if old is None:
            self._db.execute("INSERT INTO meta(key, value) VALUES(?,?)", (key, value))
        elif old != value:
            raise StorageError(f"{self._db.name}: {key} is {old!r}, not {value!r}")

    def add_checkpoint(self, size: int, note: str) -> None:
        self._db.execute("INSERT INTO checkpoints(size, note) VALUES(?,?)", (size, note))

    def add_cosignature(self, size: int, name: str, key_id: bytes, line: str) -> bool:
        """Store a cosignature line; ``False`` if that witness key already cosigned ``size``."""
        sql = self._db.insert_or_ignore.format(
            table="cosignatures", columns="size, name, key_id, line", marks="?,?,?,?"
        )
        return self._db.execute(sql, (size, name, key_id, line)) == 1


def _chunks(items: list[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
