"""Witnesses: cosign a log's checkpoints only along one append-only history; k-of-n policies.

A :class:`Witness` keeps, in its own SQLite file, the last checkpoint it cosigned for each log
it follows. It cosigns (``cosignature/v1``, :mod:`ledger.cosignature`) a new checkpoint only if
the log's signature verifies and a consistency proof from its last one verifies (RFC 9162
§2.1.4.2); the new state is committed before the cosignature is returned. So a witness never
cosigns two views that fork, and a client that requires cosignatures from k independent
witnesses (:class:`WitnessPolicy`) cannot be shown a forked view unless k witnesses collude.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.cosignature import CosignatureV1Signer, CosignatureV1Verifier
from ledger.errors import (
    ConsistencyProofError,
    InconsistentCheckpointError,
    KeyFileError,
    LedgerError,
    PolicyError,
    SignatureError,
    StorageError,
    UnknownKeyError,
)
from ledger.keys import parse_log_vkey, parse_vkey
from ledger.merkle import verify_consistency
from ledger.note import Note, NoteSignature, parse_note

__all__ = ["UnsafeNoWitnessPolicy", "Witness", "WitnessCheck", "WitnessPolicy", "WitnessView"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs(
    origin TEXT PRIMARY KEY,
    vkey TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    root BLOB,
    note TEXT,
    cosigned_at INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class WitnessView:
    """What a witness last cosigned for one log (size 0 and no root: nothing yet)."""

    origin: str
    log_vkey: str
    size: int
    root_hash: bytes | None
    cosigned_at: int


@dataclass(frozen=True, slots=True)
class WitnessCheck:
    """A checkpoint's cosignatures as :meth:`WitnessPolicy.check` sorts them: the one account
    that the audit (via :meth:`WitnessPolicy.verify`) and ``verify-results`` both read."""

    valid: tuple[CosignatureV1Verifier, ...]
    invalid: tuple[CosignatureV1Verifier, ...]  # named by the policy, a line not verifying
    unnamed: tuple[NoteSignature, ...]  # by keys the policy does not name: ignored
    threshold: int
    named: int

    @property
    def met(self) -> bool:
        return len(self.valid) >= self.threshold

    def shortfall(self) -> str:
        """Why the policy is not met, naming who cosigned validly and who did not verify."""
        got = ", ".join(w.name for w in self.valid) or "none"
        extra = (
            f"; invalid cosignatures from {', '.join(w.name for w in self.invalid)}"
            if self.invalid
            else ""
        )
        return (
            f"checkpoint has {len(self.valid)} valid witness cosignatures ({got}), "
            f"the policy requires {self.threshold} of {self.named}{extra}"
        )


class Witness:
    """A witness with its own state database. Use :meth:`open`."""

    __slots__ = ("_clock", "_db", "_path", "_signer")

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        signer: CosignatureV1Signer,
        clock: Callable[[], int],
    ) -> None:
        self._db = db
        self._path = path
        self._signer = signer
        self._clock = clock

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str,
        signing_key: Ed25519PrivateKey,
        clock: Callable[[], int] | None = None,
    ) -> Witness:
        """Open (creating if absent) the witness database at ``path`` for witness ``name``."""
        target = Path(path)
        signer = CosignatureV1Signer(name, signing_key)
        try:
            db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='vkey'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES('vkey', ?)", (signer.verifier.vkey,))
                db.execute("INSERT INTO meta VALUES('name', ?)", (name,))
            elif row[0] != signer.verifier.vkey:
                db.close()
                raise KeyFileError(
                    f"{target} belongs to witness {row[0]}, not {signer.verifier.vkey}"
                )
        except sqlite3.DatabaseError as e:
            raise StorageError(f"cannot open witness database {target}: {e}") from e
        return cls(db, target, signer, clock or (lambda: int(time.time())))

    @staticmethod
    def stored_name(path: str | os.PathLike[str]) -> str | None:
        """The witness name recorded in the database at ``path`` (``None`` if not recorded)."""
        try:
            uri = f"{Path(path).resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True)
            try:
                row = db.execute("SELECT value FROM meta WHERE key='name'").fetchone()
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{path} is not a witness database: {e}") from e
        return None if row is None else str(row[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> Witness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def verifier(self) -> CosignatureV1Verifier:
        """The key clients configure to check this witness's cosignatures."""
        return self._signer.verifier

    def add_log(self, log_vkey: str) -> None:
        """Follow the log whose checkpoints are signed by ``log_vkey`` (origin = key name)."""
        v = parse_log_vkey(log_vkey)
        try:
            row = self._db.execute("SELECT vkey FROM logs WHERE origin=?", (v.name,)).fetchone()
            if row is not None and row[0] != v.vkey:
                raise KeyFileError(f"witness already follows {v.name} with key {row[0]}")
            self._db.execute(
                "INSERT OR IGNORE INTO logs(origin, vkey) VALUES(?,?)", (v.name, v.vkey)
            )
        except sqlite3.DatabaseError as e:
            raise StorageError(f"writing {self._path}: {e}") from e

    def view(self, origin: str) -> WitnessView | None:
        row = self._db.execute(
            "SELECT vkey, size, root, cosigned_at FROM logs WHERE origin=?", (origin,)
        ).fetchone()
        if row is None:
            return None
        return WitnessView(origin, row[0], int(row[1]), row[2], int(row[3]))

    def cosign(self, checkpoint_note: str | bytes, *, proof: Sequence[bytes]) -> Note:
        """Cosign ``checkpoint_note`` if it extends the last checkpoint cosigned for its log.

        ``proof`` is the consistency proof from that last checkpoint (empty the first time, or
        when the size did not change). Returns the note with this witness's cosignature added.
        Raises :class:`~ledger.errors.InconsistentCheckpointError` for a checkpoint that is not
        an extension (smaller, a different root at the same size, or a proof that fails),
        :class:`~ledger.errors.UnknownKeyError` for a log it does not follow.
        """
        note = parse_note(checkpoint_note)
        origin = Checkpoint.from_body(note.text).origin
        view = self.view(origin)
        if view is None:
            raise UnknownKeyError(f"this witness does not follow a log named {origin!r}")
        log_key = parse_log_vkey(view.log_vkey)
        signed = open_checkpoint(note.encode(), log_verifier=log_key)
        cp = signed.checkpoint
        if view.size > 0 and view.root_hash is not None:
            if cp.size < view.size:
                raise InconsistentCheckpointError(
                    f"not an extension: checkpoint size {cp.size} is smaller than the size "
                    f"{view.size} this witness already cosigned for {origin}"
                )
            try:
                verify_consistency(view.size, cp.size, proof, view.root_hash, cp.root_hash)
            except ConsistencyProofError as e:
                raise InconsistentCheckpointError(
                    f"not an extension of the checkpoint cosigned before for {origin} "
                    f"(size {view.size}, root {view.root_hash.hex()}): {e}"
                ) from e
        now = max(self._clock(), view.cosigned_at)
        sig = self._signer.cosign(signed.note.text, now)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute(
                "UPDATE logs SET size=?, root=?, note=?, cosigned_at=? "
                "WHERE origin=? AND size=? AND (root IS ? OR root=?)",
                (
                    cp.size,
                    cp.root_hash,
                    signed.note.text,
                    now,
                    origin,
                    view.size,
                    view.root_hash,
                    view.root_hash,
                ),
            )
            if cur.rowcount != 1:
                self._db.execute("ROLLBACK")
                raise InconsistentCheckpointError(
                    f"the witness state for {origin} changed during cosigning; retry"
                )
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise StorageError(f"writing {self._path}: {e}") from e
        return note.with_signatures([sig])


class WitnessVerifier(Protocol):
    """A policy deciding whether a checkpoint note carries enough witness cosignatures."""

    def verify(self, note: Note) -> list[CosignatureV1Verifier]: ...


class WitnessPolicy:
    """Require valid cosignatures from at least ``threshold`` of the given witnesses."""

    __slots__ = ("_threshold", "_witnesses")

    def __init__(self, witnesses: Sequence[CosignatureV1Verifier], *, threshold: int) -> None:
        keys = {(w.name, w.key_id) for w in witnesses}
        if len(keys) != len(witnesses):
            raise PolicyError("the same witness key is listed twice")
        if not 1 <= threshold <= len(witnesses):
            raise PolicyError(
                f"threshold must be between 1 and the {len(witnesses)} witnesses, got {threshold}"
            )
        self._witnesses = tuple(witnesses)
        self._threshold = threshold

    @classmethod
    def from_vkeys(cls, vkeys: Sequence[str], *, threshold: int | None = None) -> WitnessPolicy:
        """The policy of witness verifier-key strings; ``threshold`` defaults to all of them.
        Raises :class:`KeyFileError` for a key that is not a witness's (type 0x04)."""
        verifiers: list[CosignatureV1Verifier] = []
        for text in vkeys:
            v = parse_vkey(text.strip())
            if not isinstance(v, CosignatureV1Verifier):
                raise KeyFileError(
                    f"{text.strip()!r} is a log key (type 0x01): expected a witness key "
                    "(cosignature/v1, type 0x04), as 'foldnet witness init' prints it"
                )
            verifiers.append(v)
        return cls(verifiers, threshold=len(verifiers) if threshold is None else threshold)

    @property
    def threshold(self) -> int:
        return self._threshold

    @property
    def witnesses(self) -> tuple[CosignatureV1Verifier, ...]:
        return self._witnesses

    def check(self, note: Note) -> WitnessCheck:
        """Sort the note's cosignatures by this policy's witnesses, raising nothing: which
        verified, which name a configured witness but do not verify over ``note.text`` (every
        line is checked, so a bad line is reported even beside a good one of that witness),
        and which are by keys the policy does not name (ignored, as signed-note prescribes;
        the log's own signature is among them). A witness counts once."""
        by_id = {(w.name, w.key_id): w for w in self._witnesses}
        ok: list[CosignatureV1Verifier] = []
        bad: list[CosignatureV1Verifier] = []
        unnamed: list[NoteSignature] = []
        for sig in note.signatures:
            w = by_id.get((sig.name, sig.key_id))
            if w is None:
                unnamed.append(sig)
                continue
            try:
                w.verify(note.text, sig.signature)
            except (SignatureError, LedgerError):
                if w not in bad:
                    bad.append(w)
                continue
            if w not in ok:
                ok.append(w)
        return WitnessCheck(
            valid=tuple(ok),
            invalid=tuple(bad),
            unnamed=tuple(unnamed),
            threshold=self._threshold,
            named=len(self._witnesses),
        )

    def verify(self, note: Note) -> list[CosignatureV1Verifier]:
        """Return the witnesses whose cosignature verified; raise :class:`PolicyError` if too few.

        A cosignature line that names a configured witness but does not verify does not count
        (and is named in the error), so a log cannot veto a view by attaching garbage.
        """
        check = self.check(note)
        if not check.met:
            raise PolicyError(check.shortfall())
        return list(check.valid)


class UnsafeNoWitnessPolicy:
    """Accept a checkpoint with no witness cosignature at all (a forked view goes unseen)."""

    __slots__ = ()

    @property
    def threshold(self) -> int:
        return 0

    def verify(self, note: Note) -> list[CosignatureV1Verifier]:
        return []
