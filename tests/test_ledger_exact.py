"""The auditor reads exactly what a checkpoint commits to (docs/architecture.md §8.4).

Every entry bundle and hash tile must have exactly the width the tree size implies; anything
more or less is a named discrepancy and the audit fails, from an export folder, from a server
of the same files and on a ``--state`` re-audit, even when every extra byte is a genuine
entry. The tamper catalogue at the end runs each way of changing an export through both.
"""

from __future__ import annotations

import base64
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from ledger_helpers import (
    GHOST_CREDIT,
    build_ledger,
    digest,
    export,
    ghost_entries,
    serve_folder,
)

import ledger.audit as audit_module
import ledger.rules as rules_module
from ledger import JobSubmitted, Log, Store, run_audit
from ledger.tiles import TILE_HEIGHT, TILE_WIDTH, encode_bundle, entries_path, tile_path


def test_ghost_entries_appended_to_the_last_bundle(tmp_path: Path) -> None:
    """The attack: four unsigned, rule-abiding entries appended to the partial bundle."""
    built = build_ledger(tmp_path / "l.db", n_wus=100, checkpoint_every=200)
    out = tmp_path / "export"
    size = export(built, out)
    assert size % TILE_WIDTH
    state = tmp_path / "state.json"
    clean = run_audit(out, state_file=state, workers=1)
    assert clean.ok, clean.discrepancies
    ghost = ghost_entries()
    bundle = out / entries_path(size // TILE_WIDTH, size % TILE_WIDTH)
    bundle.write_bytes(bundle.read_bytes() + encode_bundle(ghost.entries))
    with serve_folder(out) as url:
        reports = {
            "folder": run_audit(out, workers=1),
            "server": run_audit(url, workers=1),
            "state": run_audit(out, state_file=state, workers=1),
        }
    for where, report in reports.items():
        assert not report.ok, where
        assert report.kinds() == {"beyond-checkpoint"}, (where, report.discrepancies)
        (found,) = report.discrepancies
        assert f"commits to {size % TILE_WIDTH}: 4 more (as entries {size:,} to {size + 3:,})" in (
            found.message
        ), found.message
        assert ghost.volunteer_key not in report.balances, where
        assert report.total_credit == clean.total_credit < GHOST_CREDIT, where
        assert report.entries == clean.entries == size, where


# --------------------------------------------------------------------------- tamper catalogue


@dataclass(frozen=True)
class Pristine:
    """One exported log, audited clean, and what the tampers need from around it."""

    folder: Path
    size: int
    log_key: str
    state: Path
    total_credit: int
    other_log_checkpoint: str  # same origin, another key
    other_origin_checkpoint: str  # another origin


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    root = tmp_path_factory.mktemp("catalogue")
    built = build_ledger(root / "l.db", n_wus=100, checkpoint_every=200)
    folder = root / "export"
    size = export(built, folder)
    assert size > TILE_WIDTH and size % TILE_WIDTH and size >> TILE_HEIGHT
    log_key = (folder / "log.vkey").read_text().strip()
    state = root / "state.json"
    clean = run_audit(folder, log_key=log_key, state_file=state, workers=1)
    assert clean.ok and clean.state_updated, clean.discrepancies
    other = build_ledger(root / "other.db", n_wus=1)
    with Store.open_readonly(other.path) as s:
        other_note = s.checkpoints()[-1][1]
    with Log.open(
        root / "elsewhere.db", origin="elsewhere.test/ledger", signing_key=built.log_key
    ) as log:
        log.append(JobSubmitted(job_id=digest("elsewhere")))
        elsewhere_note = log.publish_checkpoint().note.encode()
    return Pristine(
        folder=folder,
        size=size,
        log_key=log_key,
        state=state,
        total_credit=clean.total_credit,
        other_log_checkpoint=other_note,
        other_origin_checkpoint=elsewhere_note,
    )


def _frames(data: bytes) -> list[bytes]:
    """The entries of a well-formed bundle."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">H", data, pos)
        out.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    assert pos == len(data)
    return out


class Export:
    """A copy of the pristine export, to change as an attacker with write access would."""

    def __init__(self, folder: Path, p: Pristine) -> None:
        self.folder, self.p = folder, p

    @property
    def last(self) -> str:
        return entries_path(self.p.size // TILE_WIDTH, self.p.size % TILE_WIDTH)

    def last_tile(self, level: int) -> str:
        count = self.p.size >> (TILE_HEIGHT * level)
        return tile_path(level, count // TILE_WIDTH, count % TILE_WIDTH)

    def edit(self, rel: str, change: Callable[[bytes], bytes]) -> None:
        f = self.folder / rel
        f.write_bytes(change(f.read_bytes()))

    def edit_entries(self, rel: str, change: Callable[[list[bytes]], list[bytes]]) -> None:
        self.edit(rel, lambda data: encode_bundle(change(_frames(data))))


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        b = bytearray(data)
        b[offset] ^= 0x10
        return bytes(b)

    return change


def _flip_entry(i: int) -> Callable[[list[bytes]], list[bytes]]:
    def change(entries: list[bytes]) -> list[bytes]:
        e = bytearray(entries[i])
        e[len(e) // 2] ^= 0x10
        return [*entries[:i], bytes(e), *entries[i + 1 :]]

    return change


def _flip_checkpoint_signature(data: bytes) -> bytes:
    text = data.decode()
    line = text.rstrip("\n").split("\n")[-1]
    sig = line.split(" ")[2]
    raw = bytearray(base64.b64decode(sig))
    raw[20] ^= 0x80
    return text.replace(sig, base64.b64encode(bytes(raw)).decode()).encode()


def _swap(i: int, j: int) -> Callable[[list[bytes]], list[bytes]]:
    def change(entries: list[bytes]) -> list[bytes]:
        out = list(entries)
        out[i], out[j] = out[j], out[i]
        return out

    return change


def _random_frames(n: int) -> bytes:
    rng = random.Random(10)
    return encode_bundle(rng.randbytes(rng.randrange(20, 200)) for _ in range(n))


@dataclass(frozen=True)
class Tamper:
    """One way to change an export: what to do, the discrepancy it is ``caught_as``, and every
    kind the audit reports (``also`` more on a ``--state`` re-audit, which remembers more)."""

    name: str
    apply: Callable[[Export], None]
    caught_as: str
    kinds: frozenset[str]
    also: frozenset[str] = frozenset()


def _t(
    name: str, apply: Callable[[Export], None], caught_as: str, *more: str, also: str = ""
) -> Tamper:
    return Tamper(
        name, apply, caught_as, frozenset({caught_as, *more}), frozenset(also.split()) - {""}
    )


# Consequences that follow the named cause: a root or tile that no longer matches, a proof
# through a tile that is not exact, rules broken by entries out of place.
CATALOGUE = [
    _t(
        "flip a byte in an entry",
        lambda x: x.edit_entries(entries_path(0), _flip_entry(40)),
        "entry-modified",
        "root-mismatch",
        "tile-mismatch",
        "credit-without-result",
    ),
    _t(
        "flip a byte in an upper hash tile",
        lambda x: x.edit(x.last_tile(1), _flip(5)),
        "tile-mismatch",
        "inconsistent-checkpoints",
    ),
    _t(
        "flip a byte in the checkpoint's signature",
        lambda x: x.edit("checkpoint", _flip_checkpoint_signature),
        "bad-checkpoint-signature",
        "no-checkpoint",  # nothing read: it commits to nothing (test_attacks_ledger_view.py)
    ),
    _t(
        "remove an entry",
        lambda x: x.edit_entries(entries_path(0), lambda e: [*e[:100], *e[101:]]),
        "entry-deleted",
        "bundle-width",
        "log-truncated",
        "root-mismatch",
        "tile-mismatch",
    ),
    _t(
        "swap two entries",
        lambda x: x.edit_entries(entries_path(0), _swap(10, 20)),
        "entries-swapped",
        "root-mismatch",
        "tile-mismatch",
        "timestamp",
    ),
    _t(
        "duplicate an entry",
        lambda x: x.edit_entries(entries_path(0), lambda e: [*e[:31], e[30], *e[31:]]),
        "entry-duplicated",
        "bundle-width",
    ),
    _t(
        "insert a well-formed entry the log never recorded",
        lambda x: x.edit_entries(
            entries_path(0), lambda e: [*e[:50], ghost_entries().entries[1], *e[50:]]
        ),
        "entry-inserted",
        "bundle-width",
    ),
    _t(
        "append genuine entries to the last bundle",
        lambda x: x.edit(x.last, lambda d: d + encode_bundle(ghost_entries().entries)),
        "beyond-checkpoint",
    ),
    _t(
        "append random entries to the last bundle",
        lambda x: x.edit(x.last, lambda d: d + _random_frames(3)),
        "beyond-checkpoint",
    ),
    _t(
        "append a genuine entry to a full bundle",
        lambda x: x.edit_entries(entries_path(0), lambda e: [*e, ghost_entries().entries[0]]),
        "bundle-width",
    ),
    _t(
        "trailing bytes after the last entry",
        lambda x: x.edit(x.last, lambda d: d + b"\x00\x40\x01"),
        "trailing-bytes",
    ),
    _t(
        "a trailing byte in a full bundle",
        lambda x: x.edit(entries_path(0), lambda d: d + b"\x07"),
        "trailing-bytes",
    ),
    _t(
        "a full hash tile one hash short",
        lambda x: x.edit(tile_path(0, 0), lambda d: d[:-32]),
        "tile-width",
        "inconsistent-checkpoints",
    ),
    _t(
        "a partial hash tile one genuine hash long",
        lambda x: x.edit(x.last_tile(0), lambda d: d + d[-32:]),
        "tile-width",
        "inconsistent-checkpoints",
    ),
    _t(
        "an upper hash tile with trailing bytes",
        lambda x: x.edit(x.last_tile(1), lambda d: d + bytes(5)),
        "tile-width",
        "inconsistent-checkpoints",
    ),
    _t(
        "a checkpoint of another log under the same name",
        lambda x: (x.folder / "checkpoint").write_text(x.p.other_log_checkpoint),
        "foreign-checkpoint",
        "no-checkpoint",
    ),
    _t(
        "a checkpoint of another log by name",
        lambda x: (x.folder / "checkpoint").write_text(x.p.other_origin_checkpoint),
        "foreign-checkpoint",
        "no-checkpoint",
    ),
]


@pytest.mark.parametrize("where", ["folder", "http", "state"])
@pytest.mark.parametrize("tamper", CATALOGUE, ids=[t.name for t in CATALOGUE])
def test_tamper_catalogue(tamper: Tamper, where: str, pristine: Pristine, tmp_path: Path) -> None:
    """Each tampering is caught under its own name, from a folder, from a server of the
    same files, and on a re-audit with the state file of a clean audit (which stays as it
    was). No extra entry is ever counted, nor any credit it carries."""
    folder = tmp_path / "export"
    shutil.copytree(pristine.folder, folder)
    tamper.apply(Export(folder, pristine))
    state = tmp_path / "state.json"
    shutil.copy(pristine.state, state)
    if where == "http":
        with serve_folder(folder) as url:
            report = run_audit(url, log_key=pristine.log_key, workers=1)
    elif where == "folder":
        report = run_audit(folder, log_key=pristine.log_key, workers=1)
    else:
        report = run_audit(folder, state_file=state, workers=1)
        assert not report.state_updated
        assert state.read_bytes() == pristine.state.read_bytes()
    want = tamper.kinds | (tamper.also if where == "state" else frozenset())
    assert not report.ok
    assert tamper.caught_as in report.kinds(), report.discrepancies
    assert report.kinds() == want, report.discrepancies
    assert report.entries <= pristine.size
    assert max(report.balances.values(), default=0) < GHOST_CREDIT


def test_catalogue_names_are_the_auditors_vocabulary() -> None:
    """Each kind of tampering has its own name, and every name the catalogue meets is listed
    in the auditor's (or the rules') documentation."""
    categories = {
        "entry-modified", "tile-mismatch", "bad-checkpoint-signature", "entry-deleted",
        "entries-swapped", "entry-duplicated", "entry-inserted", "beyond-checkpoint",
        "bundle-width", "trailing-bytes", "tile-width", "foreign-checkpoint",
    }  # fmt: skip
    assert {t.caught_as for t in CATALOGUE} == categories
    documented = f"{audit_module.__doc__}{rules_module.__doc__}"
    for kind in set().union(*(t.kinds | t.also for t in CATALOGUE)):
        assert f"``{kind}``" in documented, kind
