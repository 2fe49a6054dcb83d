"""A coordinator killed with SIGKILL mid-job and restarted: the job completes, the ledger
stays consistent with every checkpoint published before the crash, and nothing is credited
twice. On SQLite and on PostgreSQL (the folder remembers its database: the driver's
``Coordinator.local`` finds it there)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ledger_helpers import NewDb

from coordinator.databases import Databases
from ledger import entries as le
from ledger import run_audit, verify_consistency
from ledger.checkpoint import Checkpoint
from ledger.log import Log
from ledger.note import parse_note

DRIVER = Path(__file__).with_name("crash_driver.py")


def _start(workdir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(DRIVER.parent.parent)}
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _checkpoints(db: Path | str) -> list[Checkpoint]:
    log = Log.open_readonly(db)
    try:
        out = []
        for _i, _leaf, data in log.store.iter_entries():
            e = le.decode_record(data).entry
            if isinstance(e, le.CheckpointPublished):
                out.append(Checkpoint.from_body(parse_note(e.note).text))
        return out
    finally:
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_mid_job_then_restart(tmp_path: Path, backend: str, new_db: NewDb) -> None:
    workdir = tmp_path / "coord"
    workdir.mkdir()
    if backend == "postgres":
        Databases.of_folder(workdir, db=str(new_db("crash")))
    ledger_db = Databases.of_folder(workdir).ledger
    assert ("://" in ledger_db) == (backend == "postgres")
    first = _start(workdir)
    assert first.stdout is not None
    seen = 0
    for line in first.stdout:
        if line.startswith("validated"):
            seen += 1
        if seen == 5:  # 5 of 12 WUs validated: kill it in the middle of whatever it does
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    first.stdout.close()
    assert first.stderr is not None
    first.stderr.close()
    assert first.returncode == -signal.SIGKILL
    before = _checkpoints(ledger_db)
    assert before, "expected checkpoints before the crash"

    second = _start(workdir)
    out, err = second.communicate(timeout=500)
    assert second.returncode == 0, err[-3000:]
    assert out.strip().endswith("done")

    after = _checkpoints(ledger_db)
    log = Log.open_readonly(ledger_db)
    try:
        final_size = log.size
        for cp in before:  # the history before the crash is a prefix of the final log
            proof = log.consistency_proof(cp.size, final_size)
            verify_consistency(cp.size, final_size, proof, cp.root_hash, log.root(final_size))
        credits: list[tuple[bytes, bytes]] = []
        validated: set[bytes] = set()
        for _i, _leaf, data in log.store.iter_entries():
            e = le.decode_record(data).entry
            if isinstance(e, le.CreditGranted):
                credits.append((e.volunteer_key, e.wu_id))
            elif isinstance(e, le.ResultValidated):
                assert e.wu_id not in validated, "a WU recorded twice"
                validated.add(e.wu_id)
    finally:
        log.close()
    assert len(validated) == 12
    assert len(credits) == len(set(credits)) == 24  # two replicas each, credited once
    assert len(after) > len(before)
    report = run_audit(ledger_db, workers=1)
    assert report.ok, report.discrepancies
