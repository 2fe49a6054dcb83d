"""What the dashboard shows of the ledger: each volunteer's credit over time, a leaderboard,
validated results per minute, and entries decoded into readable JSON.

Everything here is computed from the ledger's entries alone (the numbers an auditor
recomputes), read through a private read-only SQLite connection, like :mod:`ledger.http`,
so the coordinator's writer thread is never disturbed. The index is incremental: each
update reads only the entries appended since the last one.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger import entries as le
from ledger.checkpoint import Checkpoint
from ledger.errors import LedgerError
from ledger.note import parse_note
from ledger.store import Store

__all__ = ["LedgerView", "VolunteerCredit", "checkpoint_json", "record_json"]

#: Points of a volunteer's credit series sent to a page (older points are thinned).
MAX_SERIES = 500
#: Minutes of validated-per-minute history kept and shown.
MINUTES = 30


@dataclass(slots=True)
class VolunteerCredit:
    """One key's ledger numbers."""

    name: str = ""
    registered_at_ms: int | None = None
    balance: int = 0
    granted: int = 0
    revoked: int = 0
    validated: int = 0
    entries: list[int] = field(default_factory=list)  # ledger indices naming this key
    series: list[tuple[int, int, int]] = field(default_factory=list)  # (index, ms, balance)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def checkpoint_json(note_text: str) -> dict[str, Any]:
    """Origin, size and base64 root hash of a checkpoint note (its signatures unchecked)."""
    note = parse_note(note_text)
    cp = Checkpoint.from_body(note.text)
    return {
        "origin": cp.origin,
        "size": cp.size,
        "root_hash": base64.b64encode(cp.root_hash).decode(),
        "signatures": [{"name": s.name, "key_id": s.key_id.hex()} for s in note.signatures],
        "note": note_text,
    }


def record_json(index: int, leaf: bytes, data: bytes) -> dict[str, Any]:
    """A ledger entry decoded into readable fields (hashes and keys as hex), with its raw
    bytes in base64 so a browser can hash them itself."""
    out: dict[str, Any] = {
        "index": index,
        "leaf_hash": base64.b64encode(leaf).decode(),
        "data": base64.b64encode(data).decode(),
    }
    try:
        rec = le.decode_record(data)
    except LedgerError as e:
        return out | {"kind": "undecodable", "error": str(e)}
    entry = rec.entry
    fields = _jsonable(entry)
    if isinstance(entry, le.CheckpointPublished):
        with contextlib.suppress(LedgerError):
            fields["checkpoint"] = {
                k: v for k, v in checkpoint_json(entry.note).items() if k != "note"
            }
    return out | {
        "kind": entry.KIND,
        "type": entry.TYPE,
        "version": entry.version,
        "timestamp_ms": rec.timestamp_ms,
        "fields": fields,
    }


class LedgerView:
    """The ledger's numbers, indexed incrementally; thread-safe (one update at a time)."""

    def __init__(self, locate: Callable[[], str | os.PathLike[str]]) -> None:
        self._locate = locate  # the ledger's SQLite file or PostgreSQL URL
        self._lock = threading.Lock()
        self.scanned = 0
        self.by_key: dict[bytes, VolunteerCredit] = {}
        self.validated_ms: list[int] = []  # ledger time of every validated result, ascending
        self.kinds: dict[str, int] = {}
        self.credit_total = 0
        self.checkpoint: tuple[int, str] | None = None  # latest (size, note + cosignatures)
        self._ranked: list[tuple[int, bytes]] | None = None

    def open(self) -> Store:
        return Store.open_readonly(self._locate())

    def _of(self, key: bytes) -> VolunteerCredit:
        v = self.by_key.get(key)
        if v is None:
            v = self.by_key[key] = VolunteerCredit()
        return v

    def update(self) -> int:
        """Read the entries appended since the last update; returns the log size."""
        with self._lock, self.open() as store:
            size = store.size
            latest = store.latest_checkpoint()
            if latest is not None:
                lines = "".join(store.cosignature_lines(latest[0]))
                self.checkpoint = (latest[0], latest[1] + lines)
            if size <= self.scanned:
                return size
            for idx, _leaf, data in store.iter_entries(self.scanned, size):
                self._index(idx, le.decode_record(data))
            self.scanned = size
            self._ranked = None
            return size

    def _index(self, idx: int, rec: le.Record) -> None:
        e, ms = rec.entry, rec.timestamp_ms
        self.kinds[e.KIND] = self.kinds.get(e.KIND, 0) + 1
        if isinstance(e, le.CreditGranted | le.CreditRevoked):
            v = self._of(e.volunteer_key)
            sign = 1 if isinstance(e, le.CreditGranted) else -1
            v.balance += sign * e.amount
            self.credit_total += sign * e.amount
            if sign > 0:
                v.granted += 1
            else:
                v.revoked += 1
            v.entries.append(idx)
            v.series.append((idx, ms, v.balance))
        elif isinstance(e, le.ResultValidated):
            self.validated_ms.append(ms)
            for a in e.attestations:
                v = self._of(a.volunteer_key)
                v.validated += 1
                v.entries.append(idx)
        elif isinstance(e, le.VolunteerRegistered):
            v = self._of(e.volunteer_key)
            v.name = e.name
            v.registered_at_ms = ms
            v.entries.append(idx)

    # -- reading (after update) ----------------------------------------------------------

    def per_minute(self, now_ms: int, minutes: int = MINUTES) -> list[dict[str, int]]:
        """Validated results per minute of ledger time, oldest first, the last ``minutes``
        minutes up to ``now_ms`` (the last bucket is the current, partial minute)."""
        with self._lock:
            end = now_ms - now_ms % 60_000 + 60_000
            start = end - minutes * 60_000
            times = self.validated_ms
            out = []
            for m in range(minutes):
                a, b = start + m * 60_000, start + (m + 1) * 60_000
                n = bisect.bisect_left(times, b) - bisect.bisect_left(times, a)
                out.append({"minute_ms": a, "validated": n})
            return out

    def count_since(self, ms: int) -> int:
        """Validated results with a ledger time after ``ms``."""
        with self._lock:
            return len(self.validated_ms) - bisect.bisect_right(self.validated_ms, ms)

    def ranked(self) -> list[tuple[int, bytes]]:
        """``(balance, key)`` of every key, highest balance first (ties by key)."""
        with self._lock:
            if self._ranked is None:
                self._ranked = sorted(
                    ((v.balance, k) for k, v in self.by_key.items()), key=lambda t: (-t[0], t[1])
                )
            return self._ranked

    def volunteer(self, key: bytes) -> VolunteerCredit | None:
        with self._lock:
            v = self.by_key.get(key)
            if v is None:
                return None
            return dataclasses.replace(v, entries=list(v.entries), series=list(v.series))


def thin(series: list[tuple[int, int, int]], most: int = MAX_SERIES) -> list[tuple[int, int, int]]:
    """At most ``most`` points of a series, evenly spaced, always with its last point."""
    if len(series) <= most:
        return series
    step = len(series) / (most - 1)
    picked = [series[int(i * step)] for i in range(most - 1)]
    return [*picked, series[-1]]
