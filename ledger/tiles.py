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
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.checkpoint import Checkpoint
from ledger.errors import FormatError, StorageError, TileFormatError
from ledger.files import atomic_write
from ledger.merkle import HASH_SIZE
from ledger.note import parse_note
from ledger.store import Store

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "ExportStats",
    "TileReader",
    "encode_index",
    "entries_path",
    "export_tiles",
    "tile_path",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
_U16 = struct.Struct(">H")


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
        raise StorageError(f"{store.path} has no checkpoint yet; publish one before exporting")
    size, note_text = rows[-1]
    note_text += "".join(store.cosignature_lines(size))
    if Checkpoint.from_body(parse_note(note_text).text).size != size:
        raise StorageError(f"{store.path}: checkpoint row {size} holds another size")
    out = _Writer(Path(directory))
    hash_tiles = bundles = 0
    # Entry bundles and level-0 tiles, 256 entries at a time.
    entries = store.iter_entries(0, size)
    for n, width in _tile_widths(size):
        chunk = [next(entries) for _ in range(width)]
        if [r[0] for r in chunk] != list(range(n * TILE_WIDTH, n * TILE_WIDTH + width)):
            raise StorageError(f"{store.path}: entries of bundle {n} are missing")
        bundle = b"".join(_U16.pack(len(d)) + d for _, _, d in chunk)
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
            nodes = [(tree_level, n * TILE_WIDTH + i) for i in range(width)]
            data = b"".join(store.read_nodes(nodes))
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


class TileReader:
    """Reads an exported tile folder: checkpoint, entries and any tree hash for a tree size."""

    __slots__ = ("_cache", "_root", "_size")

    def __init__(self, directory: str | os.PathLike[str], *, tree_size: int | None = None) -> None:
        self._root = Path(directory)
        if not (self._root / "checkpoint").is_file():
            raise TileFormatError(f"{self._root} has no 'checkpoint' file: not a tile export")
        self._cache: dict[tuple[int, int], bytes] = {}
        if tree_size is None:
            try:
                tree_size = Checkpoint.from_body(parse_note(self.checkpoint_text()).text).size
            except FormatError as e:
                raise TileFormatError(f"{self._root}/checkpoint: {e}") from e
        self._size = tree_size

    @property
    def tree_size(self) -> int:
        return self._size

    def checkpoint_text(self) -> str:
        try:
            return (self._root / "checkpoint").read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise TileFormatError(f"cannot read {self._root}/checkpoint: {e}") from e

    def log_vkey(self) -> str | None:
        p = self._root / "log.vkey"
        try:
            return p.read_text().strip() if p.is_file() else None
        except (OSError, UnicodeDecodeError):
            return None

    def _read(self, rel: str) -> bytes:
        try:
            return (self._root / rel).read_bytes()
        except OSError as e:
            raise TileFormatError(f"{self._root}: cannot read {rel}: {e.strerror or e}") from e

    def _width(self, count: int, n: int) -> int:
        full = count // TILE_WIDTH
        return TILE_WIDTH if n < full else count % TILE_WIDTH

    def tile(self, level: int, n: int) -> bytes:
        """Hash tile ``n`` of ``level`` as the tree size needs it (full or partial)."""
        key = (level, n)
        if key in self._cache:
            return self._cache[key]
        count = self._size >> (TILE_HEIGHT * level)
        width = self._width(count, n)
        if width == 0:
            raise TileFormatError(f"tile {level}/{n} is beyond a tree of size {self._size}")
        data = self._read(tile_path(level, n, width))
        if len(data) != width * HASH_SIZE:
            raise TileFormatError(
                f"{tile_path(level, n, width)} is {len(data)} bytes, expected {width * HASH_SIZE}"
            )
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

    def bundle(self, n: int) -> list[bytes]:
        """The entries of bundle ``n`` (as the tree size needs it)."""
        width = self._width(self._size, n)
        rel = entries_path(n, width)
        data = self._read(rel)
        out: list[bytes] = []
        pos = 0
        while pos < len(data):
            if pos + 2 > len(data):
                raise TileFormatError(f"{rel}: truncated entry length at byte {pos}")
            (length,) = _U16.unpack_from(data, pos)
            end = pos + 2 + length
            if end > len(data):
                raise TileFormatError(f"{rel}: entry {len(out)} is truncated")
            out.append(data[pos + 2 : end])
            pos = end
        return out

    def iter_entries(self) -> Iterator[tuple[int, bytes | None, bytes]]:
        """``(index, leaf hash from the level-0 tile, entry bytes)`` for the whole tree.

        A bundle with fewer or more entries than its width yields what it has; the caller
        (the auditor) reports the gap.
        """
        index = 0
        for n, width in _tile_widths(self._size):
            entries = self.bundle(n)
            try:
                tile = self.tile(0, n)
            except TileFormatError:
                tile = b""
            for i, data in enumerate(entries):
                h = tile[i * HASH_SIZE : (i + 1) * HASH_SIZE] if i < width else b""
                yield index + i, (h if len(h) == HASH_SIZE else None), data
            index += width
