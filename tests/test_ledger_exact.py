"""The auditor reads exactly what a checkpoint commits to (DESIGN.md section 8).

Every entry bundle and hash tile must have exactly the width the tree size implies; anything
more or less is a named discrepancy and the audit fails, from an export folder, from a server
of the same files and on a ``--state`` re-audit, even when every extra byte is a genuine
entry. The tamper catalogue at the end runs each way of changing an export through both.
"""

from __future__ import annotations

from pathlib import Path

from ledger_helpers import GHOST_CREDIT, build_ledger, export, ghost_entries, serve_folder

from ledger import run_audit
from ledger.tiles import TILE_WIDTH, encode_bundle, entries_path


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
