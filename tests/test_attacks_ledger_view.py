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
from ledger_helpers import ORIGIN, Built, NewDb, build_ledger, make_result

import ledger.audit as audit_module
from ledger import JobSubmitted, Log, Store, export_tiles, run_audit

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
    assert f"{unsigned} entries after the latest checkpoint (size {database.tree_size:,})" in note


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
