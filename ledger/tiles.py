"""Static export of a log in the C2SP tlog-tiles layout (c2sp.org/tlog-tiles), and reading it.

Layout under the export folder (servable by any static web server)::

    checkpoint                          the latest signed checkpoint (with cosignatures)
    tile/<L>/<N>[.p/<W>]                hash tiles: 256 hashes of level 8L (W < 256 if partial)
    tile/entries/<N>[.p/<W>]            entry bundles: each entry is uint16 length || bytes
    log.vkey                            the log's verifier key (a hint; pin it out of band)

``<N>`` is written in 3-digit groups, all but the last prefixed with ``x`` (1234067 ->
``x001/x234/067``). Tile ``N`` at level ``L`` holds ``MTH(D[(N*256+i) * 256**L : (N*256+i+1)
* 256**L])`` for ``i`` in ``0..W-1``. Full tiles are immutable: an export never overwrites one
with different bytes. Every file is written atomically.

:class:`TileReader` reads such a layout through a :class:`TileFetcher`: a local folder
(:class:`FolderFetcher`) or an HTTP server (:class:`ledger.remote.HttpFetcher`), so an auditor
checks a static export and a live service with the same code. It reads exactly what a tree
size commits to: every bundle and tile must have the width that size implies (256, or
``size mod 256`` for the last), with nothing after it; :meth:`TileReader.read_bundle` and
:meth:`TileReader.read_tile` return what was served so that the auditor can name a mismatch.
The server side (:mod:`ledger.http`) builds each tile with :func:`read_hash_tile` and
:func:`read_entry_bundle`, the same functions :func:`export_tiles` writes with, so both are
byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from foldnet.files import atomic_write
from ledger.checkpoint import Checkpoint
from ledger.errors import FormatError, StorageError, TileFormatError
from ledger.merkle import HASH_SIZE
from ledger.note import parse_note
from ledger.store import Store

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MAX_CHECKPOINT_BYTES",
    "MAX_TILE_BYTES",
    "MAX_VKEY_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "BundleRead",
    "ExportStats",
    "FolderFetcher",
    "TileFetcher",
    "TileRead",
    "TileReader",
    "TileRef",
    "encode_bundle",
    "encode_index",
    "entries_path",
    "export_tiles",
    "parse_tile_path",
    "read_entry_bundle",
    "read_hash_tile",
    "tile_path",
    "tile_width",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
_U16 = struct.Struct(">H")

# Upper bounds on what a reader accepts, so a hostile server cannot exhaust its memory.
MAX_TILE_BYTES = TILE_WIDTH * HASH_SIZE
MAX_BUNDLE_BYTES = TILE_WIDTH * (_U16.size + 0xFFFF)  # 256 entries of the largest size
MAX_CHECKPOINT_BYTES = 1 << 20  # a note with hundreds of cosignatures is a few tens of KiB
MAX_VKEY_BYTES = 4096
_MAX_INDEX_GROUPS = 8  # 10**24 tiles: beyond any log


def encode_index(n: int) -> str:
    """Tile index as path elements: 1234067 -> ``x001/x234/067``, 5 -> ``005``."""
    if n < 0:
        raise TileFormatError(f"tile index must be >= 0, got {n}")
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def _suffix(width: int | None) -> str:
    if width is None or width == TILE_WIDTH:
        return ""
    if not 1 <= width < TILE_WIDTH:
        raise TileFormatError(f"partial tile width must be 1..255, got {width}")
    return f".p/{width}"


def tile_path(level: int, n: int, width: int | None = None) -> str:
    """``tile/<L>/<N>[.p/<W>]``."""
    if not 0 <= level <= 63:
        raise TileFormatError(f"tile level must be 0..63, got {level}")
    return f"tile/{level}/{encode_index(n)}{_suffix(width)}"


def entries_path(n: int, width: int | None = None) -> str:
    """``tile/entries/<N>[.p/<W>]``."""
    return f"tile/entries/{encode_index(n)}{_suffix(width)}"


@dataclass(frozen=True, slots=True)
class TileRef:
    """One resource of the layout: a hash tile (``level`` >= 0) or an entry bundle (``None``)."""

    level: int | None
    index: int
    width: int

    @property
    def path(self) -> str:
        if self.level is None:
            return entries_path(self.index, self.width)
        return tile_path(self.level, self.index, self.width)


_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP_LAST = re.compile(r"[0-9]{3}")
_GROUP_X = re.compile(r"x[0-9]{3}")


def parse_tile_path(rel: str) -> TileRef:
    """The inverse of :func:`tile_path` and :func:`entries_path`, for a server.

    Only the canonical spelling is accepted (C2SP: no leading zeroes in ``<L>`` and ``<W>``,
    3-digit groups, all but the last with ``x``, no leading ``x000``), so each resource has
    exactly one URL and a cache never holds two copies. Raises :class:`TileFormatError`.
    """
    parts = rel.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileFormatError(
            f"{rel!r} is not a tile path: expected tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]"
        )
    level: int | None = None
    if parts[1] != "entries":
        if not _LEVEL.fullmatch(parts[1]) or int(parts[1]) > 63:
            raise TileFormatError(
                f"tile level must be a decimal 0..63 without leading zeroes, got {parts[1]!r}"
            )
        level = int(parts[1])
    groups = parts[2:]
    width = TILE_WIDTH
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        if not _WIDTH.fullmatch(groups[-1]) or int(groups[-1]) >= TILE_WIDTH:
            raise TileFormatError(
                f"partial tile width must be a decimal 1..255 without leading zeroes, "
                f"got {groups[-1]!r}"
            )
        width = int(groups[-1])
        groups = [*groups[:-2], groups[-2][:-2]]
    if not 1 <= len(groups) <= _MAX_INDEX_GROUPS:
        raise TileFormatError(f"tile index {'/'.join(groups)!r} has no or too many groups")
    if not _GROUP_LAST.fullmatch(groups[-1]) or not all(_GROUP_X.fullmatch(g) for g in groups[:-1]):
        raise TileFormatError(
            f"tile index {'/'.join(groups)!r} must be 3-digit groups, all but the last "
            "prefixed with 'x' (1234067 -> x001/x234/067)"
        )
    index = int("".join(g.removeprefix("x") for g in groups))
    if encode_index(index) != "/".join(groups):
        raise TileFormatError(
            f"tile index {'/'.join(groups)!r} is not canonical; write {encode_index(index)!r}"
        )
    return TileRef(level=level, index=index, width=width)


def tile_width(count: int, n: int) -> int:
    """Width of tile ``n`` of a level holding ``count`` hashes (or entries); 0 if beyond."""
    full, rest = divmod(count, TILE_WIDTH)
    if n < full:
        return TILE_WIDTH
    return rest if n == full else 0


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as big-endian uint16 length || bytes."""
    return b"".join(_U16.pack(len(d)) + d for d in entries)


def read_entry_bundle(store: Store, n: int, width: int) -> bytes:
    """Entry bundle ``n`` of ``width`` entries, from the store (what :func:`export_tiles` writes).

    Raises :class:`StorageError` if one of its entries is missing.
    """
    first = n * TILE_WIDTH
    rows = list(store.iter_entries(first, first + width))
    if [r[0] for r in rows] != list(range(first, first + width)):
        raise StorageError(f"{store.name}: entries of bundle {n} are missing")
    return encode_bundle(d for _, _, d in rows)


def read_hash_tile(store: Store, level: int, n: int, width: int) -> bytes:
    """Hash tile ``n`` of ``level``, ``width`` hashes wide, from the store's stored hashes.

    Tile level ``L`` holds tree level ``8L``: leaf hashes at level 0, the stored perfect
    subtree hashes above. Raises :class:`StorageError` if a hash is missing.
    """
    tree_level = TILE_HEIGHT * level
    first = n * TILE_WIDTH
    return b"".join(store.read_nodes([(tree_level, first + i) for i in range(width)]))


@dataclass(frozen=True, slots=True)
class ExportStats:
    tree_size: int
    files: int
    bytes: int
    hash_tiles: int
    entry_bundles: int


def _tile_widths(count: int) -> Iterator[tuple[int, int]]:
    """``(tile index, width)`` for ``count`` hashes (or entries) at one level."""
    full, rest = divmod(count, TILE_WIDTH)
    for n in range(full):
        yield n, TILE_WIDTH
    if rest:
        yield full, rest


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = 0
        self.bytes = 0

    def write(self, rel: str, data: bytes, *, immutable: bool) -> None:
        target = self.root / rel
        if immutable and target.is_file():
            try:
                same = target.read_bytes() == data
            except OSError as e:
                raise StorageError(f"cannot read {target}: {e.strerror or e}") from e
            if not same:
                raise StorageError(
                    f"{target} exists with different contents; refusing to rewrite an immutable "
                    "tile (was this folder exported from another log?)"
                )
        else:
            atomic_write(target, data)
        self.files += 1
        self.bytes += len(data)


def export_tiles(store: Store, directory: str | os.PathLike[str]) -> ExportStats:
    """Export the log in ``store`` up to its latest checkpoint into ``directory``."""
    rows = store.checkpoints()
    if not rows:
        raise StorageError(f"{store.name} has no checkpoint yet; publish one before exporting")
    size, note_text = rows[-1]
    note_text += "".join(store.cosignature_lines(size))
    if Checkpoint.from_body(parse_note(note_text).text).size != size:
        raise StorageError(f"{store.name}: checkpoint row {size} holds another size")
    out = _Writer(Path(directory))
    hash_tiles = bundles = 0
    # Entry bundles and level-0 tiles, 256 entries at a time.
    entries = store.iter_entries(0, size)
    for n, width in _tile_widths(size):
        chunk = [next(entries) for _ in range(width)]
        if [r[0] for r in chunk] != list(range(n * TILE_WIDTH, n * TILE_WIDTH + width)):
            raise StorageError(f"{store.name}: entries of bundle {n} are missing")
        bundle = encode_bundle(d for _, _, d in chunk)
        full = width == TILE_WIDTH
        out.write(entries_path(n, width), bundle, immutable=full)
        out.write(tile_path(0, n, width), b"".join(h for _, h, _ in chunk), immutable=full)
        hash_tiles += 1
        bundles += 1
    # Higher levels: tile level L holds tree level 8L hashes, read from the node table.
    level = 1
    while size >> (TILE_HEIGHT * level):
        tree_level = TILE_HEIGHT * level
        count = size >> tree_level
        for n, width in _tile_widths(count):
            data = read_hash_tile(store, level, n, width)
            out.write(tile_path(level, n, width), data, immutable=width == TILE_WIDTH)
            hash_tiles += 1
        level += 1
    vkey = store.meta("log_vkey")
    if vkey is not None:
        out.write("log.vkey", (vkey + "\n").encode(), immutable=False)
    out.write("checkpoint", note_text.encode(), immutable=False)  # last: it points to the rest
    return ExportStats(
        tree_size=size,
        files=out.files,
        bytes=out.bytes,
        hash_tiles=hash_tiles,
        entry_bundles=bundles,
    )


class TileFetcher(Protocol):
    """Where a :class:`TileReader` gets its bytes from: a folder, or an HTTP server.

    ``get`` returns the resource at ``rel`` (``checkpoint``, ``tile/0/000`` ...), ``None`` if
    there is none (no file, HTTP 404), and raises :class:`TileFormatError` if it is larger than
    ``limit`` bytes; it may raise any other :class:`~ledger.errors.LedgerError` (a network
    failure is a :class:`~ledger.errors.RemoteError`).
    """

    @property
    def name(self) -> str: ...

    def get(self, rel: str, *, limit: int) -> bytes | None: ...

    def close(self) -> None: ...


class FolderFetcher:
    """A :class:`TileFetcher` over a local export folder."""

    __slots__ = ("_root",)

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._root = Path(directory)

    @property
    def name(self) -> str:
        return str(self._root)

    def get(self, rel: str, *, limit: int) -> bytes | None:
        try:
            with (self._root / rel).open("rb") as f:
                data = f.read(limit + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise TileFormatError(f"{self._root}: cannot read {rel}: {e.strerror or e}") from e
        if len(data) > limit:
            raise TileFormatError(f"{self._root}/{rel} is larger than {limit:,} bytes")
        return data

    def close(self) -> None:
        return None


class TileReader:
    """Reads a tile layout: checkpoint, entries and any tree hash for a tree size.

    ``source`` is an export folder or a :class:`TileFetcher`. Without ``tree_size`` the reader
    reads the checkpoint once and keeps its text: a live server may publish a newer checkpoint
    meanwhile, and the tiles read must be those of the checkpoint that is audited.
    """

    __slots__ = ("_cache", "_checkpoint", "_fetcher", "_size")

    def __init__(
        self,
        source: str | os.PathLike[str] | TileFetcher,
        *,
        tree_size: int | None = None,
    ) -> None:
        self._fetcher: TileFetcher = (
            FolderFetcher(source) if isinstance(source, str | os.PathLike) else source
        )
        self._cache: dict[tuple[int, int], bytes] = {}
        self._checkpoint: str | None = None
        if tree_size is None:
            text = self.checkpoint_text()
            try:
                tree_size = Checkpoint.from_body(parse_note(text).text).size
            except FormatError as e:
                raise TileFormatError(f"{self._fetcher.name}/checkpoint: {e}") from e
        if tree_size < 0:
            raise TileFormatError(f"tree size must be >= 0, got {tree_size}")
        self._size = tree_size

    @property
    def tree_size(self) -> int:
        return self._size

    @property
    def fetcher(self) -> TileFetcher:
        return self._fetcher

    def checkpoint_text(self) -> str:
        """The checkpoint note (with cosignatures), read once and then kept."""
        if self._checkpoint is None:
            data = self._fetcher.get("checkpoint", limit=MAX_CHECKPOINT_BYTES)
            if data is None:
                raise TileFormatError(
                    f"{self._fetcher.name} has no 'checkpoint' file: not a tile export"
                )
            try:
                self._checkpoint = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TileFormatError(f"{self._fetcher.name}/checkpoint is not UTF-8: {e}") from e
        return self._checkpoint

    def log_vkey(self) -> str | None:
        """The published log key (a hint), or ``None`` if absent or unreadable."""
        try:
            data = self._fetcher.get("log.vkey", limit=MAX_VKEY_BYTES)
            return None if data is None else data.decode("utf-8").strip()
        except (TileFormatError, UnicodeDecodeError):
            return None

    def _get(self, rel: str, full_rel: str | None, limit: int) -> tuple[str, bytes]:
        """``(path read, data)``; a missing partial falls back to the full resource.

        C2SP tlog-tiles lets a log delete a partial tile once the full tile exists; the full
        tile starts with the partial one's hashes (or entries), so its prefix serves.
        """
        data = self._fetcher.get(rel, limit=limit)
        if data is not None:
            return rel, data
        if full_rel is not None:
            data = self._fetcher.get(full_rel, limit=limit)
            if data is not None:
                return full_rel, data
        raise TileFormatError(f"{self._fetcher.name}: {rel} is missing")

    def read_tile(self, level: int, n: int) -> TileRead:
        """Hash tile ``n`` of ``level`` exactly as served, widths not yet checked.

        Reads up to twice the largest tile, so that an auditor can say by how much a tile is
        too wide. Raises :class:`TileFormatError` if it is missing, beyond the tree, or larger.
        """
        count = self._size >> (TILE_HEIGHT * level)
        width = tile_width(count, n)
        if width == 0:
            raise TileFormatError(f"tile {level}/{n} is beyond a tree of size {self._size}")
        full = None if width == TILE_WIDTH else tile_path(level, n)
        rel, data = self._get(tile_path(level, n, width), full, 2 * MAX_TILE_BYTES)
        return TileRead(
            path=rel, width=width, resource_width=TILE_WIDTH if rel == full else width, data=data
        )

    def tile(self, level: int, n: int) -> bytes:
        """Hash tile ``n`` of ``level`` as the tree size needs it (full or partial).

        Raises :class:`TileFormatError` unless the resource read has exactly its width.
        """
        key = (level, n)
        if key in self._cache:
            return self._cache[key]
        read = self.read_tile(level, n)
        problem = read.problem(self._size)
        if problem is not None:
            raise TileFormatError(problem)
        data = read.hashes
        self._cache[key] = data
        return data

    def read_nodes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """Perfect-subtree hashes from tiles: a :data:`~ledger.merkle.NodeReader`."""
        out = []
        for level, index in nodes:
            tl, r = divmod(level, TILE_HEIGHT)
            first = index << r  # index of the first hash at tree level 8*tl
            n, off = divmod(first, TILE_WIDTH)
            tile = self.tile(tl, n)
            hashes = [tile[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(off, off + (1 << r))]
            if len(hashes) != 1 << r or any(len(h) != HASH_SIZE for h in hashes):
                raise TileFormatError(f"tile {tl}/{n} is too short for node ({level}, {index})")
            while len(hashes) > 1:
                hashes = [
                    hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
                    for i in range(0, len(hashes), 2)
                ]
            out.append(hashes[0])
        return out

    def read_bundle(self, n: int) -> BundleRead:
        """Entry bundle ``n`` exactly as served: every whole entry in it and any bytes after.

        Widths are not checked here (see :meth:`BundleRead.problem`). Raises
        :class:`TileFormatError` if it is missing, beyond the tree, or larger than any bundle.
        """
        width = tile_width(self._size, n)
        if width == 0:
            raise TileFormatError(f"entry bundle {n} is beyond a tree of size {self._size}")
        full = None if width == TILE_WIDTH else entries_path(n)
        rel, data = self._get(entries_path(n, width), full, MAX_BUNDLE_BYTES)
        entries: list[bytes] = []
        pos = 0
        while pos + _U16.size <= len(data):
            (length,) = _U16.unpack_from(data, pos)
            end = pos + _U16.size + length
            if end > len(data):
                break
            entries.append(data[pos + _U16.size : end])
            pos = end
        return BundleRead(
            path=rel,
            width=width,
            resource_width=TILE_WIDTH if rel == full else width,
            entries=tuple(entries),
            trailing=len(data) - pos,
        )

    def bundle(self, n: int) -> list[bytes]:
        """The entries of bundle ``n`` the tree size needs.

        Raises :class:`TileFormatError` unless the resource read has exactly its width.
        """
        read = self.read_bundle(n)
        problem = read.problem(self._size)
        if problem is not None:
            raise TileFormatError(problem)
        return list(read.entries[: read.width])

    def iter_entries(self) -> Iterator[tuple[int, bytes, bytes]]:
        """``(index, leaf hash from the level-0 tile, entry bytes)`` for the whole tree.

        Every bundle and level-0 tile must have exactly its width, else
        :class:`TileFormatError`; the auditor reads with :meth:`read_bundle` and
        :meth:`read_tile` instead, to name each mismatch.
        """
        index = 0
        for n, width in _tile_widths(self._size):
            entries = self.bundle(n)
            tile = self.tile(0, n)
            for i, data in enumerate(entries):
                yield index + i, tile[i * HASH_SIZE : (i + 1) * HASH_SIZE], data
            index += width


@dataclass(frozen=True, slots=True)
class TileRead:
    """A hash tile as served: ``path`` read, hashes the tree needs (``width``), the width of
    the resource read (``width``, or 256 where a partial tile fell back to the full one)."""

    path: str
    width: int
    resource_width: int
    data: bytes

    @property
    def hashes(self) -> bytes:
        """The ``width`` hashes the tree size needs (a prefix of a full fallback)."""
        return self.data[: self.width * HASH_SIZE]

    def problem(self, tree_size: int) -> str | None:
        """Why the resource is not exactly as wide as it must be, or ``None``."""
        want = self.resource_width * HASH_SIZE
        if len(self.data) == want:
            return None
        got = len(self.data)
        return (
            f"{self.path} is {got:,} bytes ({got // HASH_SIZE} hashes"
            f"{f' + {got % HASH_SIZE} bytes' if got % HASH_SIZE else ''}), expected exactly "
            f"{want:,} ({self.resource_width} hashes) for a tree of size {tree_size:,}"
        )


@dataclass(frozen=True, slots=True)
class BundleRead:
    """An entry bundle as served: every whole entry in it and the count of bytes after them.

    ``width`` entries belong to the tree; the resource read must hold exactly
    ``resource_width`` (``width``, or 256 where a partial bundle fell back to the full one)
    and nothing after them.
    """

    path: str
    width: int
    resource_width: int
    entries: tuple[bytes, ...]
    trailing: int

    def problem(self, tree_size: int) -> str | None:
        """Why the resource does not hold exactly its width in entries, or ``None``."""
        why = []
        if len(self.entries) != self.resource_width:
            why.append(f"holds {len(self.entries)} entries, expected exactly {self.resource_width}")
        if self.trailing:
            why.append(f"has {self.trailing} bytes after its last whole entry")
        if not why:
            return None
        return f"{self.path} {' and '.join(why)} for a tree of size {tree_size:,}"
