"""Attacks on the ledger's public face and its audit: what an auditor reads of a live log must
be exactly what a signed checkpoint commits to, on both backends, while the log is written.

An audit of the operator's database (SQLite file or PostgreSQL URL, ``foldnet audit
postgresql://...``) reads the log while the coordinator appends to it; entries after the latest
checkpoint are signed by nothing, so an auditor that counted them would vouch for balances an
operator can still rewrite without any checkpoint showing it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ledger_helpers import (
    GHOST_CREDIT,
    ORIGIN,
    Built,
    NewDb,
    build_ledger,
    ghost_entries,
    make_result,
    serve_folder,
)

import ledger.audit as audit_module
from ledger import JobSubmitted, Log, Store, export_tiles, leaf_hash, run_audit
from ledger.checkpoint import Checkpoint
from ledger.merkle import MerkleTree
from ledger.note import Ed25519NoteSigner, Note
from ledger.tiles import TILE_WIDTH, FolderFetcher, encode_bundle, entries_path, tile_path

QUIET = {"checkpoint_every": 10**9, "checkpoint_interval_s": 1e13}


def _writer(built: Built) -> Log:
    """The operator's log, opened for appending (checkpoints only when the test says)."""
    return Log.open(built.path, origin=ORIGIN, signing_key=built.log_key, **QUIET)


def _credit_more(built: Built, log: Log, wus: range) -> None:
    """Validated results (two signers each) and their credits, appended to the log."""
    for wu in wus:
        now = time.time_ns() // 1_000_000
        log.record_validated_result(make_result(built, wu, [0, 1], issued_at_ms=now))


def test_a_database_audit_counts_only_what_the_latest_checkpoint_signs(
    new_db: NewDb, tmp_path: Path
) -> None:
    """Credits appended after the latest checkpoint are in no signed tree: the audit of the
    database recomputes exactly the balances the audit of the same log's tile export does
    (the export is the checkpoint's tree) and says the rest waits for a checkpoint."""
    built = build_ledger(new_db("tail"), n_wus=6)
    with _writer(built) as log:
        _credit_more(built, log, range(100, 104))  # 4 results, 8 credits, signed by nothing
        unsigned = log.size - log.checkpoint().checkpoint.size  # type: ignore[union-attr]
    with Store.open_readonly(built.path) as store:
        export_tiles(store, tmp_path / "export")
    exported = run_audit(tmp_path / "export", workers=1)
    database = run_audit(built.path, workers=1)
    assert exported.ok and database.ok, (exported.discrepancies, database.discrepancies)
    assert database.tree_size == exported.tree_size
    assert database.entries == database.tree_size == exported.entries
    assert database.balances == exported.balances
    assert database.entry_kinds == exported.entry_kinds
    (note,) = [n for n in database.notes if "not audited" in n]
    assert (
        f"{unsigned} entries after the latest valid checkpoint (size {database.tree_size:,})"
        in note
    )


def test_a_database_audit_is_one_view_while_the_log_is_appended_and_signed(
    new_db: NewDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator appends and signs a checkpoint just after the auditor's connection
    opened (each read is its own snapshot, on SQLite as on PostgreSQL): the audit must still
    see one consistent tree, never a checkpoint that signs more entries than it read."""
    built = build_ledger(new_db("race"), n_wus=6)
    opened = Store.open_readonly

    def open_then_the_log_grows(path: str | Path) -> Store:
        store = opened(path)
        with _writer(built) as log:
            log.append_batch([JobSubmitted(job_id=bytes([i]) * 32) for i in range(40)])
            log.publish_checkpoint()
        return store

    monkeypatch.setattr(audit_module.Store, "open_readonly", open_then_the_log_grows)
    report = run_audit(built.path, workers=1)
    monkeypatch.undo()
    assert report.ok, report.discrepancies
    with Store.open_readonly(built.path) as store:
        latest = store.latest_checkpoint()
    assert latest is not None and report.tree_size == latest[0] == report.entries


# -- a tile layout under a checkpoint that does not verify --------------------------------------


def _raise_the_checkpoint(folder: Path, size: int, root: bytes) -> None:
    """Rewrite the export's checkpoint to sign ``size`` and ``root`` with the log's old
    signature line kept (which no longer verifies: only the log's key could sign it)."""
    text = (folder / "checkpoint").read_text()
    _body, _, signatures = text.partition("\n\n")
    body = Checkpoint(ORIGIN, size, root).body()
    (folder / "checkpoint").write_text(body + "\n" + signatures)


def test_ghost_credits_under_an_unsigned_checkpoint_are_never_counted(tmp_path: Path) -> None:
    """Whoever can write an export or sit on the wire appends four rule-abiding entries (a
    volunteer, a job, its result, 2 x 10^12 credit) to the last bundle and its leaf hashes,
    and raises the checkpoint's size and root to match, keeping the log's (now invalid)
    signature: every width is exact, only the signature is wrong. Nothing of a tree no valid
    checkpoint commits to is read, nor any credit in it counted, from a folder or a server."""
    built = build_ledger(tmp_path / "l.db", n_wus=6)
    folder = tmp_path / "export"
    with Store.open_readonly(built.path) as store:
        size = export_tiles(store, folder).tree_size
        leaves = [h for _, h, _ in store.iter_entries(0, size)]
    assert size + 4 < TILE_WIDTH  # one partial bundle
    clean = run_audit(folder, workers=1)
    assert clean.ok, clean.discrepancies
    vkey = (folder / "log.vkey").read_text().strip()
    ghost = ghost_entries()
    bundle = folder / entries_path(0, size)
    tile = folder / tile_path(0, 0, size)
    added = [leaf_hash(e) for e in ghost.entries]
    (folder / entries_path(0, size + 4)).write_bytes(
        bundle.read_bytes() + encode_bundle(ghost.entries)
    )
    (folder / tile_path(0, 0, size + 4)).write_bytes(tile.read_bytes() + b"".join(added))
    bundle.unlink()
    tile.unlink()
    _raise_the_checkpoint(folder, size + 4, MerkleTree([*leaves, *added]).root())
    with serve_folder(folder) as url:
        reports = {
            "folder": run_audit(folder, log_key=vkey, workers=1),
            "server": run_audit(url, log_key=vkey, workers=1),
        }
    for where, report in reports.items():
        assert "bad-checkpoint-signature" in report.kinds(), (where, report.discrepancies)
        assert ghost.volunteer_key not in report.balances, where
        assert max(report.balances.values(), default=0) < GHOST_CREDIT, where
        assert report.entries <= size, where


def test_an_unsigned_checkpoint_of_a_huge_tree_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint file claiming 10^15 entries (no valid signature) over a three-entry
    export: the audit says so and ends, rather than asking for 4 x 10^12 missing bundles."""
    built = build_ledger(tmp_path / "l.db", n_wus=1)
    folder = tmp_path / "export"
    with Store.open_readonly(built.path) as store:
        export_tiles(store, folder)
    _raise_the_checkpoint(folder, 10**15, bytes(32))
    asked: list[str] = []
    get = FolderFetcher.get

    def counted(self: FolderFetcher, rel: str, *, limit: int) -> bytes | None:
        asked.append(rel)
        assert len(asked) < 1000, "the auditor keeps asking for tiles of a tree nobody signed"
        return get(self, rel, limit=limit)

    monkeypatch.setattr(FolderFetcher, "get", counted)
    report = run_audit(folder, workers=1)
    assert report.kinds() == {"bad-checkpoint-signature", "no-checkpoint"}, report.discrepancies
    assert report.entries == 0 and not report.balances


def test_a_signed_checkpoint_of_a_huge_tree_is_read_only_until_the_export_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log's own key signs a checkpoint of 10^15 entries over a three-entry export (an
    operator stalling its auditors): the audit fails it and ends after a run of missing
    bundles, rather than asking for the 4 x 10^12 bundles the size implies."""
    built = build_ledger(tmp_path / "l.db", n_wus=1)
    folder = tmp_path / "export"
    with Store.open_readonly(built.path) as store:
        export_tiles(store, folder)
    body = Checkpoint(ORIGIN, 10**15, bytes(32)).body()
    signed = Note(text=body, signatures=(Ed25519NoteSigner(ORIGIN, built.log_key).sign(body),))
    (folder / "checkpoint").write_text(signed.encode())
    asked: list[str] = []
    get = FolderFetcher.get

    def counted(self: FolderFetcher, rel: str, *, limit: int) -> bytes | None:
        asked.append(rel)
        assert len(asked) < 1000, "the auditor keeps asking for bundles the export never had"
        return get(self, rel, limit=limit)

    monkeypatch.setattr(FolderFetcher, "get", counted)
    report = run_audit(folder, workers=1)
    assert not report.ok
    assert "bad-checkpoint-signature" not in report.kinds()  # the log did sign it
    stopped = [d for d in report.discrepancies if "were not asked for" in d.message]
    assert len(stopped) == 1, report.discrepancies
    assert f"{10**15 // 256 - audit_module.MAX_UNREADABLE_RUN:,} bundles" in stopped[0].message
