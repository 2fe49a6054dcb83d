"""The auditor: check a whole ledger, and every credit in it, from public data only.

From a log database, an exported tile folder or a server of those tiles (HTTP), :func:`run_audit`:

1. verifies the log's signature on every checkpoint (the stored ones and those recorded in the
   log as ``checkpoint published`` entries) and the witness policy on the latest one;
2. reads every entry, recomputes its leaf hash and the whole RFC 6962 tree, and compares each
   checkpoint's root with the recomputed root at its size; between successive checkpoints it
   verifies a consistency proof served by the log; against the checkpoint it saw last time (a
   JSON state file) it verifies that the log only grew;
3. uses the hashes the log stored beside the entries to say *what* happened to a changed
   entry (modified in place, swapped with another, deleted, or the log truncated);
4. verifies every worker attestation signature, in parallel over ``workers`` processes (each
   entry carries at most a few; they are sent in batches of compact bytes), and every
   witness cosignature recorded in the log;
5. replays the ledger rules (:mod:`ledger.rules`): each credit is recomputed with the credit
   formula and must be backed by a validated result, and every balance is recomputed;
6. with a volunteer key, proves each of that volunteer's entries by an inclusion proof
   (built from the log's stored hashes, as a volunteer without the log would get it) against
   the latest checkpoint.

Everything found is returned as :class:`~ledger.rules.Discrepancy` items in an
:class:`AuditReport`; nothing is raised for a bad ledger (only for unreadable input).
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
from ledger.files import atomic_write
from ledger.keys import parse_vkey
from ledger.merkle import MerkleTree, consistency_proof, inclusion_proof, verify_consistency
from ledger.merkle import verify_inclusion as _verify_inclusion
from ledger.note import Ed25519NoteVerifier, parse_note
from ledger.rules import Discrepancy, LedgerState
from ledger.store import Store
from ledger.tiles import FolderFetcher, TileFetcher, TileReader
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


class _Source(Protocol):
    description: str

    def checkpoints(self) -> list[tuple[str, str]]: ...

    def vkey_hint(self) -> str | None: ...

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes]]: ...

    def read_nodes_for(
        self, tree_size: int
    ) -> Callable[[Sequence[tuple[int, int]]], list[bytes]]: ...

    def close(self) -> None: ...


class _DbSource:
    def __init__(self, path: Path) -> None:
        self.store = Store.open_readonly(path)
        self.description = f"database {path}"

    def checkpoints(self) -> list[tuple[str, str]]:
        return [
            (f"stored checkpoint {size}", note + "".join(self.store.cosignature_lines(size)))
            for size, note in self.store.checkpoints()
        ]

    def vkey_hint(self) -> str | None:
        return self.store.meta("log_vkey")

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes]]:
        return self.store.iter_entries()

    def read_nodes_for(self, tree_size: int) -> Callable[[Sequence[tuple[int, int]]], list[bytes]]:
        return self.store.read_nodes

    def close(self) -> None:
        self.store.close()


class _TileSource:
    """A tile layout, read through a fetcher: an export folder or a live server's tiles."""

    def __init__(self, fetcher: TileFetcher, description: str) -> None:
        self.fetcher = fetcher
        try:
            self.reader = TileReader(fetcher)
        except BaseException:
            fetcher.close()
            raise
        self.description = description

    def checkpoints(self) -> list[tuple[str, str]]:
        return [("checkpoint file", self.reader.checkpoint_text())]

    def vkey_hint(self) -> str | None:
        return self.reader.log_vkey()

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes]]:
        return self.reader.iter_entries()

    def read_nodes_for(self, tree_size: int) -> Callable[[Sequence[tuple[int, int]]], list[bytes]]:
        if tree_size == self.reader.tree_size:
            return self.reader.read_nodes  # its tiles are cached already
        return TileReader(self.fetcher, tree_size=tree_size).read_nodes

    def close(self) -> None:
        self.fetcher.close()


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
    except (OSError, ValueError) as e:
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
    if isinstance(location, str) and _URL.match(location):
        from ledger.remote import HttpFetcher  # httpx is imported only to audit a server

        fetcher = HttpFetcher(location)
        return _TileSource(fetcher, f"tile server {fetcher.name}")
    path = Path(location)
    if path.is_dir():
        return _TileSource(FolderFetcher(path), f"tile export {path}")
    if path.is_file():
        return _DbSource(path)
    raise StorageError(
        f"{path} is neither a ledger database nor a tile export folder (nor an http(s):// URL)"
    )


def _kind_name(entry: object) -> str:
    return str(getattr(entry, "KIND", type(entry).__name__))


def run_audit(
    location: str | os.PathLike[str],
    *,
    log_key: str | None = None,
    state_file: str | os.PathLike[str] | None = None,
    witness_policy: WitnessVerifier | None = None,
    volunteer: bytes | None = None,
    workers: int = 2,
) -> AuditReport:
    """Audit the ledger at ``location``: a database file, a tile export folder, or the URL of a
    server of the same tiles (``http://host:port/v1/ledger``, see :mod:`ledger.http`).

    A server is audited exactly as an export: its latest checkpoint, then its tiles and entry
    bundles for that checkpoint's size.

    ``log_key`` is the log's verifier key string; without it the key pinned in ``state_file``
    is used, else the one the log publishes (trust on first use, pinned afterwards).
    ``witness_policy`` defaults to :class:`~ledger.witness.UnsafeNoWitnessPolicy`.
    Raises :class:`~ledger.errors.LedgerError` only if the input cannot be read at all (for a
    server: :class:`~ledger.errors.RemoteError` if it cannot be reached or fails).
    """
    started = time.perf_counter()
    policy: WitnessVerifier = witness_policy or UnsafeNoWitnessPolicy()
    state_path = None if state_file is None else Path(state_file)
    saved = _load_state(state_path)
    source = _open_source(location)
    try:
        return _audit(source, log_key, state_path, saved, policy, volunteer, workers, started)
    finally:
        source.close()


def _audit(
    source: _Source,
    log_key: str | None,
    state_path: Path | None,
    saved: dict[str, object],
    policy: WitnessVerifier,
    volunteer: bytes | None,
    workers: int,
    started: float,
) -> AuditReport:
    problems: list[Discrepancy] = []
    notes: list[str] = []
    report = problems.append

    # ---------------------------------------------------------------- the log's key
    raw_cps = source.checkpoints()
    origin_hint: str | None = None
    for _, text in raw_cps:
        try:
            origin_hint = Checkpoint.from_body(parse_note(text).text).origin
            break
        except FormatError:
            continue
    logs_state = saved["logs"]
    assert isinstance(logs_state, dict)
    prev = logs_state.get(origin_hint) if origin_hint else None
    pinned = prev.get("vkey") if isinstance(prev, dict) else None
    hint = source.vkey_hint()
    if log_key is not None:
        key_source = "given"
        vkey = log_key
    elif isinstance(pinned, str):
        key_source = "pinned in the state file"
        vkey = pinned
        if hint is not None and hint != pinned:
            report(
                Discrepancy(
                    "log-key-changed",
                    f"the log now publishes key {hint}, not the pinned {pinned}",
                )
            )
    elif hint is not None:
        key_source = "published by the log (trust on first use)"
        vkey = hint
    else:
        raise KeyFileError("no log key: give one (--log-key) or audit a log that publishes it")
    try:
        verifier = parse_vkey(vkey)
    except LedgerError as e:
        raise KeyFileError(f"log key: {e}") from e
    if not isinstance(verifier, Ed25519NoteVerifier):
        raise KeyFileError(f"{vkey} is not an Ed25519 log key (signature type 0x01)")
    origin = verifier.name

    # ---------------------------------------------------------------- checkpoints
    signed: list[tuple[str, SignedCheckpoint]] = []
    n_checkpoint_sigs = 0

    def check_checkpoint(label: str, text: str, index: int | None) -> SignedCheckpoint | None:
        nonlocal n_checkpoint_sigs
        try:
            cp = open_checkpoint(text, log_verifier=verifier)
        except UnknownKeyError as e:
            report(
                Discrepancy(
                    "bad-checkpoint-signature",
                    f"{label} carries no signature by the log key (wrong name or key id): {e}",
                    index,
                )
            )
            return None
        except SignatureError:
            report(
                Discrepancy(
                    "bad-checkpoint-signature",
                    f"{label}: the log's signature on the checkpoint does not verify",
                    index,
                )
            )
            return None
        except FormatError as e:
            report(Discrepancy("bad-checkpoint", f"{label} is not a valid checkpoint: {e}", index))
            return None
        n_checkpoint_sigs += 1
        signed.append((label, cp))
        return cp

    for label, text in raw_cps:
        check_checkpoint(label, text, None)

    # ---------------------------------------------------------------- entries
    rules = LedgerState()
    sigs = _SignatureChecker(workers)
    leaves: list[bytes] = []
    mismatched: list[tuple[int, bytes, bytes]] = []
    kinds: Counter[str] = Counter()
    cosig_checks: list[tuple[int, WitnessCosigned]] = []
    mine: list[int] = []
    n_cosigs = 0
    expected = 0
    sha = hashlib.sha256
    try:
        for idx, stored_hash, data in source.entries():
            if idx != expected:
                if idx > expected:
                    what = (
                        f"entry {expected}"
                        if idx == expected + 1
                        else (f"entries {expected} to {idx - 1}")
                    )
                    report(
                        Discrepancy(
                            "entry-deleted",
                            f"{what} missing: the log jumps from entry {expected - 1} to {idx}; "
                            "entries were deleted",
                            expected,
                        )
                    )
                expected = idx
            position = len(leaves)
            lh = sha(b"\x00" + data).digest()
            leaves.append(lh)
            if stored_hash is not None and stored_hash != lh:
                mismatched.append((idx, lh, stored_hash))
            expected += 1
            try:
                record = decode_record(data)
            except EntryFormatError as e:
                kinds["malformed"] += 1
                report(Discrepancy("malformed-entry", f"cannot decode: {e}", idx))
                continue
            entry = record.entry
            kinds[entry.KIND] += 1
            for d in rules.apply(position, record):
                report(Discrepancy(d.kind, d.message, idx))
            if isinstance(entry, ResultValidated):
                for key, sig, msg in entry.signed_messages():
                    sigs.add(idx, key, sig, msg)
                if volunteer is not None and any(
                    a.volunteer_key == volunteer for a in entry.attestations
                ):
                    mine.append(idx)
            elif isinstance(entry, CreditGranted | CreditRevoked | VolunteerRegistered):
                if volunteer is not None and entry.volunteer_key == volunteer:
                    mine.append(idx)
            elif isinstance(entry, CheckpointPublished):
                cp = check_checkpoint(f"checkpoint recorded at entry {idx}", entry.note, idx)
                if cp is not None and cp.checkpoint.size > idx:
                    report(
                        Discrepancy(
                            "bad-checkpoint",
                            f"recorded checkpoint of size {cp.checkpoint.size} sits at entry "
                            f"{idx}, inside the tree it claims to sign",
                            idx,
                        )
                    )
            elif isinstance(entry, WitnessCosigned):
                witness = CosignatureV1Verifier(entry.witness_name, entry.witness_key)
                body = Checkpoint(origin, entry.tree_size, entry.root_hash).body()
                try:
                    witness.verify(body, struct.pack(">Q", entry.timestamp) + entry.signature)
                    n_cosigs += 1
                except (SignatureError, LedgerError):
                    report(
                        Discrepancy(
                            "bad-cosignature",
                            f"the recorded cosignature of witness {entry.witness_name} does "
                            f"not verify",
                            idx,
                        )
                    )
                cosig_checks.append((idx, entry))
        bad_sigs = sigs.finish()
    except TileFormatError as e:
        sigs.abort()
        bad_sigs = []
        report(Discrepancy("bad-tile", f"the tile export is damaged: {e}"))
    except BaseException:
        sigs.abort()
        raise
    for idx in sorted(set(bad_sigs)):
        report(
            Discrepancy(
                "bad-signature",
                "a worker attestation signature in this validated result does not verify",
                idx,
            )
        )

    # ---------------------------------------------------------------- what changed
    tree = MerkleTree(leaves)
    present = tree.size
    by_stored = {stored: idx for idx, _, stored in mismatched}
    by_index = {idx: (computed, stored) for idx, computed, stored in mismatched}
    seen_swaps: set[int] = set()
    for idx, computed, stored in mismatched:
        if idx in seen_swaps:
            continue
        other = by_stored.get(computed)
        if other is not None and other != idx and by_index[other][0] == stored:
            seen_swaps.update((idx, other))
            report(
                Discrepancy(
                    "entries-swapped",
                    f"entries {min(idx, other)} and {max(idx, other)} were swapped: each holds "
                    "the bytes the log recorded for the other",
                    min(idx, other),
                )
            )
        else:
            report(
                Discrepancy(
                    "entry-modified",
                    f"entry bytes were changed after it was logged: they hash to "
                    f"{computed.hex()[:16]}…, the log recorded {stored.hex()[:16]}…",
                    idx,
                )
            )

    # ---------------------------------------------------------------- checkpoints vs tree
    latest: SignedCheckpoint | None = None
    by_size: dict[int, tuple[str, bytes]] = {}
    truncated_reported = False
    for label, cp in sorted(signed, key=lambda t: t[1].checkpoint.size):
        c = cp.checkpoint
        if latest is None or c.size > latest.checkpoint.size:
            latest = cp  # of equal sizes the published one (with cosignatures) comes first
        seen = by_size.get(c.size)
        if seen is not None and seen[1] != c.root_hash:
            report(
                Discrepancy(
                    "fork",
                    f"the log signed two different roots for size {c.size}: "
                    f"{seen[1].hex()[:16]}… ({seen[0]}) and {c.root_hash.hex()[:16]}… ({label})",
                )
            )
        by_size.setdefault(c.size, (label, c.root_hash))
    for size, (label, root) in sorted(by_size.items()):
        if size > present:
            if not truncated_reported and size == max(by_size):
                truncated_reported = True
                report(
                    Discrepancy(
                        "log-truncated",
                        f"the log was truncated: {label} signs {size} entries, but only "
                        f"{present} are present",
                    )
                )
            continue
        got = tree.root(size)
        if got != root:
            report(
                Discrepancy(
                    "root-mismatch",
                    f"{label} signs root {root.hex()[:16]}… for size {size}, but the entries "
                    f"hash to {got.hex()[:16]}…",
                )
            )
    consistency_checks = 0
    sizes = sorted(s for s in by_size if s > 0)
    if latest is not None:
        read = source.read_nodes_for(latest.checkpoint.size)
        for s1, s2 in itertools.pairwise(sizes):
            try:
                proof = consistency_proof(s1, s2, read)
                verify_consistency(s1, s2, proof, by_size[s1][1], by_size[s2][1])
            except (ProofError, StorageError, FormatError) as e:
                report(
                    Discrepancy(
                        "inconsistent-checkpoints",
                        f"no valid consistency proof from size {s1} to {s2}: {e}",
                    )
                )
            consistency_checks += 1
    else:
        report(Discrepancy("no-checkpoint", "no checkpoint with a valid log signature"))

    for idx, w in cosig_checks:
        if w.tree_size <= present and tree.root(w.tree_size) != w.root_hash:
            report(
                Discrepancy(
                    "bad-cosignature",
                    f"witness {w.witness_name} cosigned root {w.root_hash.hex()[:16]}… for size "
                    f"{w.tree_size}, which is not the log's root at that size",
                    idx,
                )
            )

    # ---------------------------------------------------------------- witnesses
    witnesses: list[CosignatureV1Verifier] = []
    if latest is not None:
        try:
            witnesses = policy.verify(latest.note)
            n_cosigs += len(witnesses)
        except PolicyError as e:
            report(Discrepancy("witness-quorum", str(e)))

    # ---------------------------------------------------------------- last audit's view
    prev_size: int | None = None
    prev = logs_state.get(origin)
    if isinstance(prev, dict) and latest is not None:
        try:
            prev_size = int(prev["size"])
            prev_root = base64.b64decode(str(prev["root"]), validate=True)
        except (KeyError, ValueError, TypeError, binascii.Error) as e:
            raise StorageError(f"auditor state file: bad entry for {origin}: {e}") from e
        cur = latest.checkpoint
        if cur.size < prev_size:
            report(
                Discrepancy(
                    "rollback",
                    f"the log went backwards: its latest checkpoint has size {cur.size}, but the "
                    f"last audit saw size {prev_size}",
                )
            )
        elif cur.size == prev_size and cur.root_hash != prev_root:
            report(
                Discrepancy(
                    "fork",
                    f"fork: the checkpoint at size {cur.size} has root "
                    f"{cur.root_hash.hex()[:16]}…, but the last audit saw root "
                    f"{prev_root.hex()[:16]}… at that size",
                )
            )
        elif prev_size > 0 and cur.size > prev_size:
            try:
                read = source.read_nodes_for(cur.size)
                proof = consistency_proof(prev_size, cur.size, read)
                verify_consistency(prev_size, cur.size, proof, prev_root, cur.root_hash)
                consistency_checks += 1
            except (ProofError, StorageError, FormatError) as e:
                report(
                    Discrepancy(
                        "fork",
                        f"fork: the log is not an extension of the checkpoint the last audit saw "
                        f"(size {prev_size}, root {prev_root.hex()[:16]}…): {e}",
                    )
                )

    # ---------------------------------------------------------------- the volunteer
    vol_report: VolunteerReport | None = None
    if volunteer is not None:
        proven, unproven = 0, []
        if latest is not None:
            size = latest.checkpoint.size
            read = source.read_nodes_for(size)
            for idx in mine:
                if idx >= size or idx >= present:
                    unproven.append(idx)
                    continue
                try:
                    proof = inclusion_proof(idx, size, read)
                    _verify_inclusion(leaves[idx], idx, size, proof, latest.checkpoint.root_hash)
                    proven += 1
                except (ProofError, StorageError, FormatError) as e:
                    report(
                        Discrepancy(
                            "inclusion-proof",
                            f"volunteer entry has no valid inclusion proof in the checkpoint of "
                            f"size {size}: {e}",
                            idx,
                        )
                    )
        else:
            unproven = list(mine)
        vol_report = VolunteerReport(
            volunteer_key=volunteer,
            entries=tuple(mine),
            proven=proven,
            unproven=tuple(unproven),
            balance=rules.balances.get(volunteer, 0),
            registered=volunteer in rules.volunteers,
        )

    # ---------------------------------------------------------------- remember this view
    updated = False
    if state_path is not None and latest is not None and not problems:
        logs_state[origin] = {
            "size": latest.checkpoint.size,
            "root": base64.b64encode(latest.checkpoint.root_hash).decode(),
            "vkey": verifier.vkey,
            "checkpoint": latest.note.encode(),
        }
        _save_state(state_path, saved)
        updated = True
    elif state_path is not None and problems:
        notes.append("state file not updated: the audit found discrepancies")

    return AuditReport(
        source=source.description,
        origin=origin,
        log_key=verifier.vkey,
        log_key_source=key_source,
        tree_size=0 if latest is None else latest.checkpoint.size,
        entries=present,
        entry_kinds=dict(kinds),
        signatures=sigs.total,
        checkpoints=n_checkpoint_sigs,
        cosignatures=n_cosigs,
        consistency_checks=consistency_checks,
        witnesses=tuple(w.name for w in witnesses),
        witness_threshold=getattr(policy, "threshold", 0),
        balances=dict(rules.balances),
        previous_size=prev_size,
        volunteer=vol_report,
        discrepancies=tuple(problems),
        seconds=time.perf_counter() - started,
        state_updated=updated,
        notes=tuple(notes),
    )
