"""The auditor: check a whole ledger, and every credit in it, from public data only.

From a log database, an exported tile folder or a server of those tiles (HTTP), :func:`run_audit`
runs these phases, each a method of :class:`_Audit` with the rule it checks in its docstring:

1. **key**: the log key is the one given, pinned by the last audit, or published by the log;
2. **checkpoints**: each checkpoint is this log's and its signature verifies;
3. **entries**: reads exactly what the latest checkpoint commits to (from tiles: every entry
   bundle and hash tile has exactly the width the tree size implies, 256 or size mod 256, and
   nothing before, after or beyond; an extra entry is never counted, even a genuine one; from
   a database: the entries its latest stored checkpoint signs, read after the checkpoints so
   a log written meanwhile is still seen as one tree, and later entries only counted, in a
   note),
   decodes and replays every entry under the ledger rules (:mod:`ledger.rules`: each credit
   is recomputed with the credit formula and must be backed by a validated result), and
   verifies every worker attestation signature, in parallel over ``workers`` processes (in
   batches of compact bytes);
4. **tree**: recomputes the RFC 6962 tree; says what happened to an entry whose hash is not
   the one the log stored (modified, swapped), checks every hash tile against it, each
   checkpoint's root at its size, a consistency proof between successive checkpoints, and
   every witness cosignature recorded in the log;
5. **witnesses**: the witness policy on the latest checkpoint;
6. **previous view**: against the checkpoint the last audit saw (a JSON state file), the log
   only grew;
7. **volunteer**: with a volunteer key, proves each of that volunteer's entries by an
   inclusion proof (built from the log's stored hashes, as a volunteer without the log would
   get it) against the latest checkpoint.

Everything found is returned as :class:`~ledger.rules.Discrepancy` items in an
:class:`AuditReport`; nothing is raised for a bad ledger (only for unreadable input). Besides
the rule kinds of :mod:`ledger.rules`, the auditor's discrepancy kinds are:

=========================== =================================================================
``log-key-changed``          the log publishes another key than the one pinned
``foreign-checkpoint``       a checkpoint of another log (other origin, or not signed by the
                             log's key)
``bad-checkpoint-signature`` the log's signature on a checkpoint does not verify
``bad-checkpoint``           a checkpoint that does not parse, or is recorded inside its tree
``no-checkpoint``            no checkpoint with a valid signature at all
``bad-tile``                 a tile or bundle that is missing or larger than any can be
``bundle-width``             an entry bundle with more or fewer entries than its width
``beyond-checkpoint``        whole entries after the last one the checkpoint commits to
``trailing-bytes``           bytes after a bundle's last whole entry
``tile-width``               a hash tile of another length than 32 x its width
``tile-mismatch``            a hash tile whose hashes are not those of the entries
``entry-deleted``            an index skipped
``entry-duplicated``         a copy of an entry inserted in a bundle
``entry-inserted``           an entry the log never recorded inserted in a bundle
``entry-modified``           an entry that does not hash to the leaf hash stored for it
``entries-swapped``          two entries each holding the other's bytes
``malformed-entry``          an entry that does not decode
``bad-signature``            a worker attestation signature that does not verify
``bad-cosignature``          a recorded witness cosignature that does not verify
``root-mismatch``            a checkpoint whose root is not the recomputed one
``log-truncated``            fewer entries than the latest checkpoint signs
``fork``                     two roots for one size (now, or against the last audit's)
``inconsistent-checkpoints`` no valid consistency proof between two checkpoints
``witness-quorum``           too few valid witness cosignatures
``rollback``                 a smaller tree than the last audit saw
``inclusion-proof``          a volunteer entry without a valid inclusion proof
=========================== =================================================================
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from foldnet.files import atomic_write
from ledger.backend import is_postgres_url
from ledger.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint
from ledger.cosignature import CosignatureV1Verifier
from ledger.entries import (
    CheckpointPublished,
    CreditGranted,
    CreditRevoked,
    EntryFormatError,
    ResultValidated,
    VolunteerRegistered,
    WitnessCosigned,
    decode_record,
)
from ledger.errors import (
    ConfigError,
    FormatError,
    KeyFileError,
    LedgerError,
    PolicyError,
    ProofError,
    SignatureError,
    StorageError,
    TileFormatError,
    UnknownKeyError,
)
from ledger.keys import parse_log_vkey
from ledger.merkle import (
    HASH_SIZE,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
)
from ledger.merkle import verify_inclusion as _verify_inclusion
from ledger.note import Ed25519NoteVerifier, parse_note
from ledger.rules import Discrepancy, LedgerState
from ledger.store import Store
from ledger.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    BundleRead,
    FolderFetcher,
    TileFetcher,
    TileReader,
)
from ledger.witness import UnsafeNoWitnessPolicy, WitnessVerifier

__all__ = ["AuditReport", "VolunteerReport", "run_audit"]

_SIG_BATCH = 4096
_SIG_RECORD = struct.Struct(">Q32s64sH")
_STATE_VERSION = 1


# ------------------------------------------------------------------ parallel signatures

_KEY_CACHE: dict[bytes, Ed25519PublicKey] = {}


def _verify_blob(blob: bytes) -> list[int]:
    """Verify a batch of ``(index, key, signature, message)`` records; return failing indices.

    Runs in a worker process. The batch is plain bytes (``_SIG_RECORD`` + message), so the
    only thing crossing the process boundary is data this module encoded itself.
    """
    bad: list[int] = []
    pos, n = 0, len(blob)
    unpack = _SIG_RECORD.unpack_from
    size = _SIG_RECORD.size
    cache = _KEY_CACHE
    while pos < n:
        idx, key, sig, mlen = unpack(blob, pos)
        pos += size
        msg = blob[pos : pos + mlen]
        pos += mlen
        pub = cache.get(key)
        try:
            if pub is None:
                if len(cache) > 100_000:
                    cache.clear()
                pub = cache[key] = Ed25519PublicKey.from_public_bytes(key)
            pub.verify(sig, msg)
        except (InvalidSignature, ValueError):
            bad.append(idx)
    return bad


class _SignatureChecker:
    """Collects signatures and verifies them inline or, past one batch, in a process pool."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._buf: list[bytes] = []
        self._count = 0
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[Future[list[int]]] = []
        self._bad: list[int] = []
        self.total = 0

    def add(self, index: int, key: bytes, sig: bytes, msg: bytes) -> None:
        self._buf.append(_SIG_RECORD.pack(index, key, sig, len(msg)) + msg)
        self._count += 1
        self.total += 1
        if self._count >= _SIG_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        blob = b"".join(self._buf)
        self._buf, self._count = [], 0
        if self._workers <= 1:
            self._bad.extend(_verify_blob(blob))
            return
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=self._workers, mp_context=ctx)
        while len(self._pending) >= 4 * self._workers:
            self._bad.extend(self._pending.pop(0).result())
        self._pending.append(self._pool.submit(_verify_blob, blob))

    def finish(self) -> list[int]:
        if self._pool is None:
            blob = b"".join(self._buf)
            self._buf = []
            self._bad.extend(_verify_blob(blob))
        else:
            self._flush()
            try:
                for f in self._pending:
                    self._bad.extend(f.result())
            finally:
                self._pool.shutdown()
        return sorted(self._bad)

    def abort(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


# ------------------------------------------------------------------ sources


#: Entry bundles unreadable in a row after which an audit of tiles stops asking: a checkpoint
#: signed for a size far beyond what is served would otherwise be read, and reported, a
#: bundle at a time for ever (each still counts as a discrepancy: the audit fails either way).
MAX_UNREADABLE_RUN = 16


class _Source(Protocol):
    description: str

    def checkpoints(self) -> list[tuple[str, str]]: ...

    def vkey_hint(self) -> str | None: ...

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes]]: ...

    def layout_problems(self) -> list[Discrepancy]: ...

    def notes(self) -> list[str]:
        """What the source left unread, and why (not a discrepancy)."""
        ...

    def commit(self, size: int) -> None:
        """Read only the tree of ``size`` entries, the largest a checkpoint whose signature
        verified commits to (0: none did, and nothing is read)."""
        ...

    def check_hash_tiles(self, tree: MerkleTree) -> list[Discrepancy]: ...

    def read_nodes_for(
        self, tree_size: int
    ) -> Callable[[Sequence[tuple[int, int]]], list[bytes]]: ...

    def close(self) -> None: ...


class _DbSource:
    """The operator's own database: the entries its latest stored checkpoint signs, with the
    leaf hash stored beside each.

    The log may be appended while it is read (each query is its own snapshot, on SQLite as
    on PostgreSQL), so the checkpoints are read first and the log's size after them: a
    checkpoint is committed with or after the entries it signs, so every checkpoint read is
    covered, and the audit sees one tree. Entries after the latest checkpoint that verifies
    (:meth:`commit`) are signed by nothing (the operator could still rewrite them unseen):
    they are not read, only counted (:meth:`notes`), as a tile export of the same log leaves
    them out.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.store = Store.open_readonly(path)
        try:
            self._checkpoints = [
                (
                    size,
                    f"stored checkpoint {size}",
                    note + "".join(self.store.cosignature_lines(size)),
                )
                for size, note in self.store.checkpoints()
            ]
            self.store.refresh()
        except BaseException:
            self.store.close()
            raise
        self.description = f"database {self.store.name}"
        self.tree_size = 0
        self.commit(self._checkpoints[-1][0] if self._checkpoints else 0)

    def commit(self, size: int) -> None:
        self.tree_size = min(size, self.store.size)  # fewer entries: log-truncated
        self.unsigned = self.store.size - self.tree_size

    def checkpoints(self) -> list[tuple[str, str]]:
        return [(label, text) for _, label, text in self._checkpoints]

    def notes(self) -> list[str]:
        n = self.unsigned
        if not n:
            return []
        return [
            f"{n:,} entr{'ies' if n != 1 else 'y'} after the latest valid checkpoint (size "
            f"{self.tree_size:,}) {'are' if n != 1 else 'is'} signed by no valid checkpoint "
            "yet: not audited (audit again once the log has signed a newer checkpoint)"
        ]

    def vkey_hint(self) -> str | None:
        return self.store.meta("log_vkey")

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes]]:
        return self.store.iter_entries(0, self.tree_size)

    def layout_problems(self) -> list[Discrepancy]:
        return []

    def check_hash_tiles(self, tree: MerkleTree) -> list[Discrepancy]:
        return []

    def read_nodes_for(self, tree_size: int) -> Callable[[Sequence[tuple[int, int]]], list[bytes]]:
        return self.store.read_nodes

    def close(self) -> None:
        self.store.close()


class _TileSource:
    """A tile layout, read through a fetcher: an export folder or a live server's tiles.

    Reads exactly what its checkpoint commits to: each entry bundle and hash tile must have
    the width the tree size implies (:func:`~ledger.tiles.tile_width`), and every mismatch is
    kept as a discrepancy (:meth:`layout_problems`). Only the entries a bundle's width admits
    are yielded, each at the index its stored leaf hash says it has: nothing beyond the
    checkpoint is ever counted.
    """

    def __init__(self, fetcher: TileFetcher, description: str) -> None:
        self.fetcher = fetcher
        try:
            self.reader = TileReader(fetcher)
        except BaseException:
            fetcher.close()
            raise
        self.description = description
        self._problems: list[Discrepancy] = []
        self._committed = True

    def checkpoints(self) -> list[tuple[str, str]]:
        return [("checkpoint file", self.reader.checkpoint_text())]

    def vkey_hint(self) -> str | None:
        return self.reader.log_vkey()

    def layout_problems(self) -> list[Discrepancy]:
        out, self._problems = self._problems, []
        return out

    def notes(self) -> list[str]:
        if self._committed:
            return []  # it holds its checkpoint's tree: anything more is a discrepancy
        return [
            f"nothing of the {self.reader.tree_size:,} entries the served checkpoint claims was "
            "read: its signature does not verify, so it commits to nothing"
        ]

    def commit(self, size: int) -> None:
        """The tiles are laid out for the served checkpoint's size: read all of them if that
        checkpoint verified, else none (it is the only checkpoint a tile layout serves)."""
        self._committed = size == self.reader.tree_size

    def _flag(self, kind: str, message: str, index: int | None = None) -> None:
        self._problems.append(Discrepancy(kind, message, index))

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes]]:
        size = self.reader.tree_size if self._committed else 0
        total = (size + TILE_WIDTH - 1) // TILE_WIDTH  # the last one may be partial
        run = 0  # unreadable bundles in a row
        for n in range(total):
            try:
                bundle = self.reader.read_bundle(n)
            except TileFormatError as e:
                self._flag("bad-tile", f"the tile export is damaged: {e}")
                run += 1
                if run >= MAX_UNREADABLE_RUN and n + 1 < total:
                    self._flag(
                        "bad-tile",
                        f"entry bundles {n + 1 - run:,}-{n:,} could not be read, so the "
                        f"other {total - n - 1:,} bundles the checkpoint's size implies were "
                        "not asked for: the export does not hold the tree its checkpoint signs",
                    )
                    return
                continue
            run = 0
            yield from self._place(bundle, self._leaf_hashes(n), n * TILE_WIDTH)

    def _leaf_hashes(self, n: int) -> list[bytes] | None:
        """The leaf hashes of level-0 tile ``n``; ``None`` (and a discrepancy) unless exact."""
        try:
            tile = self.reader.read_tile(0, n)
        except TileFormatError as e:
            self._flag("bad-tile", f"the tile export is damaged: {e}")
            return None
        problem = tile.problem(self.reader.tree_size)
        if problem is not None:
            self._flag("tile-width", problem)
            return None
        data = tile.hashes
        return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    def _place(
        self, bundle: BundleRead, stored: list[bytes] | None, first: int
    ) -> Iterator[tuple[int, bytes | None, bytes]]:
        """Yield the bundle's entries at their indices; flag every one that is not the tree's.

        With as many entries as the width, entry ``i`` is ``first + i``. Otherwise the stored
        leaf hashes say which entries are missing (the index jumps: the auditor reports them
        deleted), which are copies or strangers inserted among them, and which come after
        the width; none of those is yielded.
        """
        size = self.reader.tree_size
        width = bundle.width
        if bundle.trailing:
            self._flag(
                "trailing-bytes",
                f"{bundle.path} has {bundle.trailing} bytes after its last whole entry (a "
                "truncated length or entry); a bundle holds whole entries and nothing after",
            )
        if bundle.resource_width != width:  # the full bundle read for a partial one
            if len(bundle.entries) != bundle.resource_width:
                self._flag(
                    "bundle-width",
                    f"{bundle.path} holds {len(bundle.entries)} entries, expected exactly "
                    f"{bundle.resource_width} in a full bundle",
                )
            entries: Sequence[bytes] = bundle.entries[:width]
        else:
            entries = bundle.entries
        if len(entries) == width:
            for i, data in enumerate(entries):
                yield first + i, None if stored is None else stored[i], data
            return
        placed, extra = _align(entries, stored, width)
        beyond = sum(1 for kind, _, _ in extra if kind == "beyond")
        if beyond == len(extra) and len(placed) == width and first + width == size:
            self._flag(
                "beyond-checkpoint",
                f"{bundle.path} holds {len(entries)} entries, but the checkpoint of size "
                f"{size:,} commits to {width}: {beyond} more (as entries {size:,} to "
                f"{size + beyond - 1:,}) are signed by no checkpoint and were not counted",
            )
        else:
            self._flag(
                "bundle-width",
                f"{bundle.path} holds {len(entries)} entries, expected exactly {width} for a "
                f"tree of size {size:,}",
            )
        for kind, offset, copied in extra:
            if kind == "entry-duplicated":
                what = f"a second copy of entry {first + copied}"
            elif kind == "entry-inserted":
                what = "an entry the log never recorded"
            else:
                continue
            self._flag(
                kind,
                f"{bundle.path} holds {what} before this one; it was not counted",
                first + offset,
            )
        for offset, data in placed:
            yield first + offset, None if stored is None else stored[offset], data

    def check_hash_tiles(self, tree: MerkleTree) -> list[Discrepancy]:
        """Every hash tile above level 0 has exactly its width and the recomputed hashes."""
        out: list[Discrepancy] = []
        size = self.reader.tree_size if self._committed else 0
        level = 1
        while size >> (TILE_HEIGHT * level):
            tree_level = TILE_HEIGHT * level
            count = size >> tree_level
            for n in range((count + TILE_WIDTH - 1) // TILE_WIDTH):
                if (n * TILE_WIDTH) << tree_level >= tree.size:
                    break  # it would cover only entries that were not read (reported already)
                try:
                    tile = self.reader.read_tile(level, n)
                except TileFormatError as e:
                    out.append(Discrepancy("bad-tile", f"the tile export is damaged: {e}"))
                    continue
                problem = tile.problem(size)
                if problem is not None:
                    out.append(Discrepancy("tile-width", problem))
                    continue
                data = tile.hashes
                for i in range(tile.width):
                    index = n * TILE_WIDTH + i
                    if (index + 1) << tree_level > tree.size:
                        break  # the entries that hash covers are missing (reported already)
                    want = tree.read([(tree_level, index)])[0]
                    if data[i * HASH_SIZE : (i + 1) * HASH_SIZE] != want:
                        out.append(
                            Discrepancy(
                                "tile-mismatch",
                                f"{tile.path}: hash {i} (tree level {tree_level}, index "
                                f"{index}) is not the hash of the entries it covers",
                            )
                        )
            level += 1
        return out

    def read_nodes_for(self, tree_size: int) -> Callable[[Sequence[tuple[int, int]]], list[bytes]]:
        if tree_size == self.reader.tree_size:
            return self.reader.read_nodes  # its tiles are cached already
        return TileReader(self.fetcher, tree_size=tree_size).read_nodes

    def close(self) -> None:
        self.fetcher.close()


def _align(
    entries: Sequence[bytes], stored: list[bytes] | None, width: int
) -> tuple[list[tuple[int, bytes]], list[tuple[str, int, int]]]:
    """Match a bundle's entries to the leaf hashes stored for it, when the counts differ.

    Returns ``(placed, extra)``. ``placed`` is ``(offset, entry)`` for the entries that take a
    place in the tree, in order (a skipped offset is a deleted entry; a hash that differs from
    the one stored at its offset, a modified one). ``extra`` is ``(kind, offset, copied)`` for
    the others, none of which is counted: ``entry-duplicated`` (a copy of the entry at offset
    ``copied``), ``entry-inserted`` (a stranger, put before the entry the next stored hash
    names) or ``beyond`` (after the width). Without stored hashes, the first ``width``
    entries take their places in order and the rest are ``beyond``.
    """
    if stored is None:
        return list(enumerate(entries[:width])), [("beyond", width, width)] * (len(entries) - width)
    placed: list[tuple[int, bytes]] = []
    extra: list[tuple[str, int, int]] = []
    computed = [hashlib.sha256(b"\x00" + d).digest() for d in entries]
    where: dict[bytes, int] = {}
    for offset, h in enumerate(stored):
        where.setdefault(h, offset)
    j = 0
    for i, (h, data) in enumerate(zip(computed, entries, strict=True)):
        p = where.get(h)
        if j >= width:
            extra.append(("beyond", j, j))
        elif h == stored[j]:
            placed.append((j, data))
            j += 1
        elif p is not None and p > j:
            placed.append((p, data))  # the entries between were deleted
            j = p + 1
        elif p is not None:
            extra.append(("entry-duplicated", j, p))
        elif i + 1 < len(entries) and computed[i + 1] == stored[j]:
            extra.append(("entry-inserted", j, j))
        else:
            placed.append((j, data))  # modified in place
            j += 1
    return placed, extra


# ------------------------------------------------------------------ report


@dataclass(frozen=True, slots=True)
class VolunteerReport:
    """What the auditor proved about one volunteer."""

    volunteer_key: bytes
    entries: tuple[int, ...]
    proven: int
    unproven: tuple[int, ...]
    balance: int
    registered: bool


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Everything one audit checked, and every discrepancy it found."""

    source: str
    origin: str | None
    log_key: str | None
    log_key_source: str
    tree_size: int
    entries: int
    entry_kinds: dict[str, int]
    signatures: int
    checkpoints: int
    cosignatures: int
    consistency_checks: int
    witnesses: tuple[str, ...]
    witness_threshold: int
    balances: dict[bytes, int]
    previous_size: int | None
    volunteer: VolunteerReport | None
    discrepancies: tuple[Discrepancy, ...]
    seconds: float
    state_updated: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    @property
    def total_credit(self) -> int:
        return sum(self.balances.values())

    def kinds(self) -> set[str]:
        return {d.kind for d in self.discrepancies}


# ------------------------------------------------------------------ state file


def _load_state(path: Path | None) -> dict[str, object]:
    if path is None or not path.exists():
        return {"version": _STATE_VERSION, "logs": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise StorageError(f"cannot read auditor state file {path}: {e}") from e
    if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
        raise StorageError(f"{path} is not an auditor state file (version {_STATE_VERSION})")
    if not isinstance(data.get("logs"), dict):
        raise StorageError(f"{path}: 'logs' must be an object")
    return data


def _save_state(path: Path, data: dict[str, object]) -> None:
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode=0o644)


# ------------------------------------------------------------------ the audit


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _open_source(location: str | os.PathLike[str]) -> _Source:
    if is_postgres_url(location):  # the operator's own database, on a PostgreSQL server
        return _DbSource(location)
    if isinstance(location, str) and _URL.match(location):
        from ledger.remote import HttpFetcher  # httpx is imported only to audit a server

        fetcher = HttpFetcher(location)
        return _TileSource(fetcher, f"tile server {fetcher.name}")
    path = Path(location)
    if path.is_dir():
        return _TileSource(FolderFetcher(path), f"tile export {path}")
    if path.is_file():
        return _DbSource(path)
    raise ConfigError(
        f"{path} is neither a ledger database nor a tile export folder (nor an http(s):// URL)"
    )


def run_audit(
    location: str | os.PathLike[str],
    *,
    log_key: str | None = None,
    state_file: str | os.PathLike[str] | None = None,
    witness_policy: WitnessVerifier | None = None,
    volunteer: bytes | None = None,
    workers: int = 2,
) -> AuditReport:
    """Audit the ledger at ``location``: a database file or PostgreSQL URL, a tile export
    folder, or the URL of a server of the same tiles (``http://host:port/v1/ledger``, see
    :mod:`ledger.http`).

    A server is audited exactly as an export: its latest checkpoint, then its tiles and entry
    bundles for that checkpoint's size, each of exactly the width that size implies.

    ``log_key`` is the log's verifier key string; without it the key pinned in ``state_file``
    is used, else the one the log publishes (trust on first use, pinned afterwards).
    ``witness_policy`` defaults to :class:`~ledger.witness.UnsafeNoWitnessPolicy`.
    Raises :class:`~ledger.errors.LedgerError` only if the input cannot be read at all (for a
    server: :class:`~ledger.errors.RemoteError` if it cannot be reached or fails).
    """
    started = time.perf_counter()
    state_path = None if state_file is None else Path(state_file)
    saved = _load_state(state_path)
    source = _open_source(location)
    try:
        audit = _Audit(
            source,
            saved=saved,
            policy=witness_policy or UnsafeNoWitnessPolicy(),
            volunteer=volunteer,
        )
        audit.check_key(log_key)
        audit.check_checkpoints()
        audit.check_entries(workers)
        audit.check_tree()
        audit.check_witnesses()
        audit.check_previous_view()
        audit.check_volunteer()
        updated = audit.remember(state_path)
        return audit.report(started, updated)
    finally:
        source.close()


class _Audit:
    """One audit's working state. Each ``check_*`` phase checks one group of rules, in order,
    and adds what it finds to :attr:`problems`; later phases read what earlier ones found."""

    def __init__(
        self,
        source: _Source,
        *,
        saved: dict[str, object],
        policy: WitnessVerifier,
        volunteer: bytes | None,
    ) -> None:
        self.source = source
        self.saved = saved
        logs = saved["logs"]
        assert isinstance(logs, dict)
        self.logs_state: dict[str, object] = logs
        self.policy = policy
        self.volunteer = volunteer
        self.problems: list[Discrepancy] = []
        self.notes: list[str] = []
        self.raw_checkpoints = source.checkpoints()
        # filled in by the phases
        self.verifier: Ed25519NoteVerifier | None = None
        self.key_source = ""
        self.signed: list[tuple[str, SignedCheckpoint]] = []
        self.n_checkpoint_sigs = 0
        self.rules = LedgerState()
        self.leaves: list[bytes] = []
        self.mismatched: list[tuple[int, bytes, bytes]] = []
        self.kinds: Counter[str] = Counter()
        self.cosig_checks: list[tuple[int, WitnessCosigned]] = []
        self.mine: list[int] = []
        self.n_signatures = 0
        self.n_cosigs = 0
        self.tree = MerkleTree()
        self.latest: SignedCheckpoint | None = None
        self.consistency_checks = 0
        self.witnesses: list[CosignatureV1Verifier] = []
        self.prev_size: int | None = None
        self.vol_report: VolunteerReport | None = None

    def found(self, kind: str, message: str, index: int | None = None) -> None:
        self.problems.append(Discrepancy(kind, message, index))

    @property
    def origin(self) -> str:
        assert self.verifier is not None, "check_key runs first"
        return self.verifier.name

    # ------------------------------------------------------------ key

    def check_key(self, log_key: str | None) -> None:
        """The log key is the one given, else the one pinned by the last audit (the log must
        still publish it: ``log-key-changed``), else the one the log publishes (trust on
        first use). It must be an Ed25519 note key."""
        origin_hint: str | None = None
        for _, text in self.raw_checkpoints:
            try:
                origin_hint = Checkpoint.from_body(parse_note(text).text).origin
                break
            except FormatError:
                continue
        prev = self.logs_state.get(origin_hint) if origin_hint else None
        pinned = prev.get("vkey") if isinstance(prev, dict) else None
        hint = self.source.vkey_hint()
        if log_key is not None:
            self.key_source = "given"
            vkey = log_key
        elif isinstance(pinned, str):
            self.key_source = "pinned in the state file"
            vkey = pinned
            if hint is not None and hint != pinned:
                self.found(
                    "log-key-changed", f"the log now publishes key {hint}, not the pinned {pinned}"
                )
        elif hint is not None:
            self.key_source = "published by the log (trust on first use)"
            vkey = hint
        else:
            raise KeyFileError("no log key: give one (--log-key) or audit a log that publishes it")
        try:
            self.verifier = parse_log_vkey(vkey)
        except LedgerError as e:
            raise KeyFileError(f"log key: {e}") from e

    # ------------------------------------------------------------ checkpoints

    def check_checkpoints(self) -> None:
        """Every checkpoint the source serves is a checkpoint of this log (its origin, a line
        signed with its key: ``foreign-checkpoint``) whose signature verifies
        (``bad-checkpoint-signature``) and which parses (``bad-checkpoint``). The entries read
        next are those of the largest one that verifies, and none if none does."""
        for label, text in self.raw_checkpoints:
            self._open_checkpoint(label, text, None)
        # Only a tree a valid signature commits to is read: an unsigned size (a huge one, or
        # one stretched over appended entries) is no promise of the log's.
        self.source.commit(max((cp.checkpoint.size for _, cp in self.signed), default=0))

    def _open_checkpoint(self, label: str, text: str, index: int | None) -> SignedCheckpoint | None:
        assert self.verifier is not None
        try:
            claimed = Checkpoint.from_body(parse_note(text).text).origin
        except FormatError as e:
            self.found("bad-checkpoint", f"{label} is not a valid checkpoint: {e}", index)
            return None
        if claimed != self.origin:
            self.found(
                "foreign-checkpoint",
                f"{label} is a checkpoint of log {claimed!r}, expected one of {self.origin!r}",
                index,
            )
            return None
        try:
            cp = open_checkpoint(text, log_verifier=self.verifier)
        except UnknownKeyError as e:
            self.found(
                "foreign-checkpoint",
                f"{label} names log {claimed!r} but carries no signature by its key "
                f"{self.verifier.vkey} (another key signed it): {e}",
                index,
            )
            return None
        except SignatureError:
            self.found(
                "bad-checkpoint-signature",
                f"{label}: the log's signature on the checkpoint does not verify",
                index,
            )
            return None
        except FormatError as e:
            self.found("bad-checkpoint", f"{label} is not a valid checkpoint: {e}", index)
            return None
        self.n_checkpoint_sigs += 1
        self.signed.append((label, cp))
        return cp

    # ------------------------------------------------------------ entries

    def check_entries(self, workers: int) -> None:
        """Every entry the checkpoint commits to is read, exactly: no index is skipped
        (``entry-deleted``), each bundle and tile has its width (the source's layout
        discrepancies), each entry decodes (``malformed-entry``), obeys the ledger rules
        (:mod:`ledger.rules`), and every worker attestation signature verifies
        (``bad-signature``, checked in parallel over ``workers`` processes)."""
        sigs = _SignatureChecker(workers)
        try:
            expected = 0
            for idx, stored_hash, data in self.source.entries():
                if idx > expected:
                    gap = f"{expected} to {idx - 1}" if idx > expected + 1 else f"{expected}"
                    what = f"entr{'ies' if idx > expected + 1 else 'y'} {gap}"
                    self.found(
                        "entry-deleted",
                        f"{what} missing: the log jumps from entry {expected - 1} to {idx}; "
                        "entries were deleted",
                        expected,
                    )
                expected = idx + 1
                self._entry(idx, stored_hash, data, sigs)
            bad_sigs = sigs.finish()
        except TileFormatError as e:
            sigs.abort()
            bad_sigs = []
            self.found("bad-tile", f"the tile export is damaged: {e}")
        except BaseException:
            sigs.abort()
            raise
        self.n_signatures = sigs.total
        self.problems.extend(self.source.layout_problems())
        self.notes.extend(self.source.notes())
        for idx in sorted(set(bad_sigs)):
            self.found(
                "bad-signature",
                "a worker attestation signature in this validated result does not verify",
                idx,
            )
        self.tree = MerkleTree(self.leaves)

    def _entry(
        self, idx: int, stored_hash: bytes | None, data: bytes, sigs: _SignatureChecker
    ) -> None:
        """Hash, decode and replay one entry; queue its signatures."""
        position = len(self.leaves)
        lh = hashlib.sha256(b"\x00" + data).digest()
        self.leaves.append(lh)
        if stored_hash is not None and stored_hash != lh:
            self.mismatched.append((idx, lh, stored_hash))
        try:
            record = decode_record(data)
        except EntryFormatError as e:
            self.kinds["malformed"] += 1
            self.found("malformed-entry", f"cannot decode: {e}", idx)
            return
        entry = record.entry
        self.kinds[entry.KIND] += 1
        for d in self.rules.apply(position, record):
            self.found(d.kind, d.message, idx)
        volunteer = self.volunteer
        if isinstance(entry, ResultValidated):
            for key, sig, msg in entry.signed_messages():
                sigs.add(idx, key, sig, msg)
            if volunteer is not None and any(
                a.volunteer_key == volunteer for a in entry.attestations
            ):
                self.mine.append(idx)
        elif isinstance(entry, CreditGranted | CreditRevoked | VolunteerRegistered):
            if volunteer is not None and entry.volunteer_key == volunteer:
                self.mine.append(idx)
        elif isinstance(entry, CheckpointPublished):
            cp = self._open_checkpoint(f"checkpoint recorded at entry {idx}", entry.note, idx)
            if cp is not None and cp.checkpoint.size > idx:
                self.found(
                    "bad-checkpoint",
                    f"recorded checkpoint of size {cp.checkpoint.size} sits at entry {idx}, "
                    "inside the tree it claims to sign",
                    idx,
                )
        elif isinstance(entry, WitnessCosigned):
            self._recorded_cosignature(idx, entry)

    def _recorded_cosignature(self, idx: int, entry: WitnessCosigned) -> None:
        witness = CosignatureV1Verifier(entry.witness_name, entry.witness_key)
        body = Checkpoint(self.origin, entry.tree_size, entry.root_hash).body()
        try:
            witness.verify(body, struct.pack(">Q", entry.timestamp) + entry.signature)
            self.n_cosigs += 1
        except (SignatureError, LedgerError):
            self.found(
                "bad-cosignature",
                f"the recorded cosignature of witness {entry.witness_name} does not verify",
                idx,
            )
        self.cosig_checks.append((idx, entry))

    # ------------------------------------------------------------ tree

    def check_tree(self) -> None:
        """The recomputed tree is the one the log signed: each entry hashes to the leaf hash
        stored beside it (else ``entry-modified`` or ``entries-swapped``), every hash tile
        holds the recomputed hashes (``tile-width``, ``tile-mismatch``), one root per size
        (``fork``), each checkpoint's root is the tree's at its size (``root-mismatch``,
        ``log-truncated``), successive checkpoints are consistent
        (``inconsistent-checkpoints``) and recorded cosignatures sign the tree's roots
        (``bad-cosignature``)."""
        self._changed_entries()
        self.problems.extend(self.source.check_hash_tiles(self.tree))
        by_size = self._roots_by_size()
        self._roots_match(by_size)
        self._successive_consistency(by_size)
        present = self.tree.size
        for idx, w in self.cosig_checks:
            if w.tree_size <= present and self.tree.root(w.tree_size) != w.root_hash:
                self.found(
                    "bad-cosignature",
                    f"witness {w.witness_name} cosigned root {w.root_hash.hex()[:16]}… for size "
                    f"{w.tree_size}, which is not the log's root at that size",
                    idx,
                )

    def _changed_entries(self) -> None:
        """Say what happened to each entry whose hash is not the stored one."""
        by_stored = {stored: idx for idx, _, stored in self.mismatched}
        by_index = {idx: (computed, stored) for idx, computed, stored in self.mismatched}
        seen_swaps: set[int] = set()
        for idx, computed, stored in self.mismatched:
            if idx in seen_swaps:
                continue
            other = by_stored.get(computed)
            if other is not None and other != idx and by_index[other][0] == stored:
                seen_swaps.update((idx, other))
                self.found(
                    "entries-swapped",
                    f"entries {min(idx, other)} and {max(idx, other)} were swapped: each holds "
                    "the bytes the log recorded for the other",
                    min(idx, other),
                )
            else:
                self.found(
                    "entry-modified",
                    f"entry bytes were changed after it was logged: they hash to "
                    f"{computed.hex()[:16]}…, the log recorded {stored.hex()[:16]}…",
                    idx,
                )

    def _roots_by_size(self) -> dict[int, tuple[str, bytes]]:
        """One signed root per size (else ``fork``); sets :attr:`latest`."""
        by_size: dict[int, tuple[str, bytes]] = {}
        for label, cp in sorted(self.signed, key=lambda t: t[1].checkpoint.size):
            c = cp.checkpoint
            if self.latest is None or c.size > self.latest.checkpoint.size:
                self.latest = cp  # of equal sizes the published one (with cosignatures) first
            seen = by_size.get(c.size)
            if seen is not None and seen[1] != c.root_hash:
                self.found(
                    "fork",
                    f"the log signed two different roots for size {c.size}: "
                    f"{seen[1].hex()[:16]}… ({seen[0]}) and {c.root_hash.hex()[:16]}… ({label})",
                )
            by_size.setdefault(c.size, (label, c.root_hash))
        return by_size

    def _roots_match(self, by_size: dict[int, tuple[str, bytes]]) -> None:
        present = self.tree.size
        truncated_reported = False
        for size, (label, root) in sorted(by_size.items()):
            if size > present:
                if not truncated_reported and size == max(by_size):
                    truncated_reported = True
                    self.found(
                        "log-truncated",
                        f"the log was truncated: {label} signs {size} entries, but only "
                        f"{present} are present",
                    )
                continue
            got = self.tree.root(size)
            if got != root:
                self.found(
                    "root-mismatch",
                    f"{label} signs root {root.hex()[:16]}… for size {size}, but the entries "
                    f"hash to {got.hex()[:16]}…",
                )

    def _successive_consistency(self, by_size: dict[int, tuple[str, bytes]]) -> None:
        if self.latest is None:
            self.found("no-checkpoint", "no checkpoint with a valid log signature")
            return
        read = self.source.read_nodes_for(self.latest.checkpoint.size)
        for s1, s2 in itertools.pairwise(sorted(s for s in by_size if s > 0)):
            try:
                proof = consistency_proof(s1, s2, read)
                verify_consistency(s1, s2, proof, by_size[s1][1], by_size[s2][1])
            except (ProofError, StorageError, FormatError) as e:
                self.found(
                    "inconsistent-checkpoints",
                    f"no valid consistency proof from size {s1} to {s2}: {e}",
                )
            self.consistency_checks += 1

    # ------------------------------------------------------------ witnesses

    def check_witnesses(self) -> None:
        """The latest checkpoint carries the cosignatures the witness policy requires
        (``witness-quorum``)."""
        if self.latest is None:
            return
        try:
            self.witnesses = self.policy.verify(self.latest.note)
            self.n_cosigs += len(self.witnesses)
        except PolicyError as e:
            self.found("witness-quorum", str(e))

    # ------------------------------------------------------------ previous view

    def check_previous_view(self) -> None:
        """The log only grew since the last audit's checkpoint: not smaller (``rollback``),
        not another root at the same size, and an extension of it by a consistency proof
        (else ``fork``)."""
        prev = self.logs_state.get(self.origin)
        if not isinstance(prev, dict) or self.latest is None:
            return
        try:
            prev_size = int(prev["size"])
            prev_root = base64.b64decode(str(prev["root"]), validate=True)
        except (KeyError, ValueError, TypeError, binascii.Error) as e:
            raise StorageError(f"auditor state file: bad entry for {self.origin}: {e}") from e
        self.prev_size = prev_size
        cur = self.latest.checkpoint
        if cur.size < prev_size:
            self.found(
                "rollback",
                f"the log went backwards: its latest checkpoint has size {cur.size}, but the "
                f"last audit saw size {prev_size}",
            )
        elif cur.size == prev_size and cur.root_hash != prev_root:
            self.found(
                "fork",
                f"fork: the checkpoint at size {cur.size} has root {cur.root_hash.hex()[:16]}…, "
                f"but the last audit saw root {prev_root.hex()[:16]}… at that size",
            )
        elif prev_size > 0 and cur.size > prev_size:
            try:
                read = self.source.read_nodes_for(cur.size)
                proof = consistency_proof(prev_size, cur.size, read)
                verify_consistency(prev_size, cur.size, proof, prev_root, cur.root_hash)
                self.consistency_checks += 1
            except (ProofError, StorageError, FormatError) as e:
                self.found(
                    "fork",
                    f"fork: the log is not an extension of the checkpoint the last audit saw "
                    f"(size {prev_size}, root {prev_root.hex()[:16]}…): {e}",
                )

    # ------------------------------------------------------------ volunteer

    def check_volunteer(self) -> None:
        """Each of the volunteer's entries has an inclusion proof, built from the log's stored
        hashes, that verifies against the latest checkpoint (``inclusion-proof``)."""
        volunteer = self.volunteer
        if volunteer is None:
            return
        proven, unproven = 0, []
        if self.latest is not None:
            size = self.latest.checkpoint.size
            root = self.latest.checkpoint.root_hash
            read = self.source.read_nodes_for(size)
            for idx in self.mine:
                if idx >= size or idx >= self.tree.size:
                    unproven.append(idx)
                    continue
                try:
                    proof = inclusion_proof(idx, size, read)
                    _verify_inclusion(self.leaves[idx], idx, size, proof, root)
                    proven += 1
                except (ProofError, StorageError, FormatError) as e:
                    self.found(
                        "inclusion-proof",
                        f"volunteer entry has no valid inclusion proof in the checkpoint of "
                        f"size {size}: {e}",
                        idx,
                    )
        else:
            unproven = list(self.mine)
        self.vol_report = VolunteerReport(
            volunteer_key=volunteer,
            entries=tuple(self.mine),
            proven=proven,
            unproven=tuple(unproven),
            balance=self.rules.balances.get(volunteer, 0),
            registered=volunteer in self.rules.volunteers,
        )

    # ------------------------------------------------------------ result

    def remember(self, state_path: Path | None) -> bool:
        """Save the latest checkpoint in the state file, only after an audit that found
        nothing (so the evidence of a bad one is kept for the next audit too)."""
        if state_path is None:
            return False
        if self.problems:
            self.notes.append("state file not updated: the audit found discrepancies")
            return False
        if self.latest is None:
            return False
        assert self.verifier is not None
        self.logs_state[self.origin] = {
            "size": self.latest.checkpoint.size,
            "root": base64.b64encode(self.latest.checkpoint.root_hash).decode(),
            "vkey": self.verifier.vkey,
            "checkpoint": self.latest.note.encode(),
        }
        _save_state(state_path, self.saved)
        return True

    def report(self, started: float, state_updated: bool) -> AuditReport:
        assert self.verifier is not None
        return AuditReport(
            source=self.source.description,
            origin=self.origin,
            log_key=self.verifier.vkey,
            log_key_source=self.key_source,
            tree_size=0 if self.latest is None else self.latest.checkpoint.size,
            entries=self.tree.size,
            entry_kinds=dict(self.kinds),
            signatures=self.n_signatures,
            checkpoints=self.n_checkpoint_sigs,
            cosignatures=self.n_cosigs,
            consistency_checks=self.consistency_checks,
            witnesses=tuple(w.name for w in self.witnesses),
            witness_threshold=getattr(self.policy, "threshold", 0),
            balances=dict(self.rules.balances),
            previous_size=self.prev_size,
            volunteer=self.vol_report,
            discrepancies=tuple(self.problems),
            seconds=time.perf_counter() - started,
            state_updated=state_updated,
            notes=tuple(self.notes),
        )
