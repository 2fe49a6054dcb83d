"""The log: storage, ledger rules, ledger time and signed checkpoints, tied together.

>>> log = Log.open("ledger.db", origin="foldnet.example/ledger", signing_key=key)  # doctest: +SKIP
>>> log.append(VolunteerRegistered(volunteer_key=pk, name="alice"))           # doctest: +SKIP
>>> log.publish_checkpoint()                                                   # doctest: +SKIP

Every append is one SQLite transaction, committed (``synchronous=FULL``) before the call
returns. The log stamps each record with the ledger time (never decreasing), checks it against
the ledger rules (:mod:`ledger.rules`) and, by default, verifies the workers' attestation
signatures; a batch with one bad record appends nothing.

Checkpoints are published every ``checkpoint_every`` entries or ``checkpoint_interval_s``
seconds (checked on each append; call :meth:`Log.publish_checkpoint` from a timer for a quiet
log). Each checkpoint is signed only after a consistency proof from the previous one verifies
(:class:`~ledger.checkpoint.CheckpointSigner`), is stored, and is itself recorded as a
``checkpoint published`` entry, so the log carries its own signed history.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.checkpoint import Checkpoint, CheckpointSigner, SignedCheckpoint, open_checkpoint
from ledger.cosignature import CosignatureV1Verifier
from ledger.credit import CURRENT_FORMULA_VERSION
from ledger.entries import (
    CheckpointPublished,
    CreditGranted,
    Entry,
    Record,
    ResultValidated,
    WitnessCosigned,
    decode_record,
    encode_record,
)
from ledger.errors import (
    ConfigError,
    EntryRejectedError,
    KeyFileError,
    NoteFormatError,
    NotInLogError,
    SignatureError,
    StorageError,
)
from ledger.keys import parse_log_vkey
from ledger.merkle import consistency_proof, inclusion_proof, leaf_hash
from ledger.note import Ed25519NoteSigner, Ed25519NoteVerifier, NoteSignature, parse_note
from ledger.rules import LedgerState, price_attestation
from ledger.signatures import VerifiedSignatures, verify_signature
from ledger.store import Store

__all__ = ["Admission", "Appended", "CheckRules", "Log", "UnsafeAdmitAll"]


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append acknowledges: where the record is, its ledger time, its leaf hash."""

    index: int
    timestamp_ms: int
    leaf_hash: bytes


class Admission(Protocol):
    """Decides whether records may be appended (raise :class:`EntryRejectedError` if not)."""

    @property
    def uses_state(self) -> bool: ...

    def check(self, state: LedgerState | None, index: int, record: Record) -> None: ...


@dataclass(frozen=True, slots=True)
class CheckRules:
    """The default admission: every ledger rule, and (by default) attestation signatures.

    ``verified``: the signatures this process has verified already (the coordinator's, which
    verified each attestation when its result was uploaded); one found there is not verified
    again (:class:`~ledger.signatures.VerifiedSignatures` says why that is sound)."""

    verify_signatures: bool = True
    verified: VerifiedSignatures | None = None

    @property
    def uses_state(self) -> bool:
        return True

    def check(self, state: LedgerState | None, index: int, record: Record) -> None:
        entry = record.entry
        if isinstance(entry, ResultValidated) and self.verify_signatures:
            verify = verify_signature if self.verified is None else self.verified.verify
            for key, sig, msg in entry.signed_messages():
                try:
                    verify(key, sig, msg)
                except SignatureError as e:
                    raise EntryRejectedError(
                        f"WU {entry.wu_id.hex()[:16]}: the attestation of {key.hex()[:16]} does "
                        "not verify"
                    ) from e
        if state is not None:
            problems = state.apply(index, record)
            if problems:
                raise EntryRejectedError("; ".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class UnsafeAdmitAll:
    """Append any well-formed record, breaking rules included.

    Only for tests and demonstrations of the auditor: a log opened with this can record
    credits the auditor will flag, and nothing can remove them afterwards.
    """

    @property
    def uses_state(self) -> bool:
        return False

    def check(self, state: LedgerState | None, index: int, record: Record) -> None:
        return None


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Log:
    """An append-only, signed Merkle log of ledger records. Use :meth:`open`."""

    __slots__ = (
        "_admission",
        "_clock",
        "_every",
        "_interval_ms",
        "_last_cp_ms",
        "_last_ts",
        "_origin",
        "_signer",
        "_state",
        "_store",
        "_verifier",
    )

    def __init__(
        self,
        *,
        store: Store,
        origin: str,
        verifier: Ed25519NoteVerifier | None,
        signer: CheckpointSigner | None,
        admission: Admission,
        clock: Callable[[], int],
        checkpoint_every: int,
        checkpoint_interval_s: float,
    ) -> None:
        self._store = store
        self._origin = origin
        self._verifier = verifier
        self._signer = signer
        self._admission = admission
        self._clock = clock
        self._every = checkpoint_every
        self._interval_ms = int(checkpoint_interval_s * 1000)
        self._state: LedgerState | None = None
        self._last_ts = 0
        if store.size:
            self._last_ts = decode_record(store.entry(store.size - 1)).timestamp_ms
        self._last_cp_ms = self._last_ts

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        origin: str,
        signing_key: Ed25519PrivateKey | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        admission: Admission | None = None,
        clock: Callable[[], int] | None = None,
    ) -> Log:
        """Open the log at ``path``, creating it if absent.

        ``origin`` names the log (the checkpoint origin line and the key name; a schema-less
        URL such as ``foldnet.example/ledger``); it must match the one the log was created
        with. Without ``signing_key`` the log appends but cannot publish checkpoints.
        """
        if checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        store = Store.open(path)
        try:
            signer: CheckpointSigner | None = None
            verifier: Ed25519NoteVerifier | None = None
            with store.transaction():
                store.put_meta("origin", origin)
                if signing_key is not None:
                    note_signer = Ed25519NoteSigner(origin, signing_key)
                    verifier = note_signer.verifier
                    stored = store.meta("log_vkey")
                    if stored is not None and stored != verifier.vkey:
                        raise KeyFileError(
                            f"{store.name} is signed by {stored}, not by the given key "
                            f"{verifier.vkey}"
                        )
                    store.put_meta("log_vkey", verifier.vkey)
                    latest = _latest_checkpoint(store, verifier)
                    signer = CheckpointSigner(
                        note_signer, latest=None if latest is None else latest.checkpoint
                    )
                else:
                    vkey = store.meta("log_vkey")
                    verifier = None if vkey is None else parse_log_vkey(vkey)
            return cls(
                store=store,
                origin=origin,
                verifier=verifier,
                signer=signer,
                admission=CheckRules() if admission is None else admission,
                clock=_wall_clock_ms if clock is None else clock,
                checkpoint_every=checkpoint_every,
                checkpoint_interval_s=checkpoint_interval_s,
            )
        except BaseException:
            store.close()
            raise

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> Log:
        """Open an existing log to read entries, checkpoints and proofs; appends are refused."""
        store = Store.open_readonly(path)
        try:
            origin = store.meta("origin")
            if origin is None:
                raise StorageError(f"{store.name} has no origin: not a ledger created by Log.open")
            vkey = store.meta("log_vkey")
            return cls(
                store=store,
                origin=origin,
                verifier=None if vkey is None else parse_log_vkey(vkey),
                signer=None,
                admission=CheckRules(),
                clock=_wall_clock_ms,
                checkpoint_every=1 << 62,
                checkpoint_interval_s=float(1 << 40),
            )
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ properties

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def size(self) -> int:
        return self._store.size

    @property
    def store(self) -> Store:
        return self._store

    @property
    def verifier(self) -> Ed25519NoteVerifier | None:
        """The log's checkpoint verifier key (``None`` before a signing key was ever given)."""
        return self._verifier

    def root(self, tree_size: int | None = None) -> bytes:
        return self._store.root(tree_size)

    # ------------------------------------------------------------------ appending

    def _ledger_state(self) -> LedgerState:
        if self._state is None:
            state = LedgerState()
            for idx, _, data in self._store.iter_entries():
                state.apply(idx, decode_record(data))
            self._state = state
        return self._state

    def _next_timestamp(self) -> int:
        return max(self._clock(), self._last_ts)

    def append(self, entry: Entry) -> Appended:
        """Append one entry durably; see :meth:`append_batch`."""
        return self.append_batch([entry])[0]

    def append_batch(self, entries: Sequence[Entry]) -> list[Appended]:
        """Append entries in one transaction: all are durable when this returns, or none is.

        ``checkpoint published`` and ``witness cosignature recorded`` entries are written by
        the log itself (:meth:`publish_checkpoint`, :meth:`add_cosignature`) and refused here.
        """
        for e in entries:
            if isinstance(e, CheckpointPublished | WitnessCosigned):
                raise EntryRejectedError(
                    f"{e.KIND} entries are written by the log itself, not appended"
                )
        ts = self._next_timestamp()
        out = self._append_records([Record(timestamp_ms=ts, entry=e) for e in entries])
        self._maybe_publish()
        return out

    def record_validated_result(
        self, result: ResultValidated, *, formula_version: int = CURRENT_FORMULA_VERSION
    ) -> list[Appended]:
        """Append a validated result and the credit of each attester, in one transaction.

        The credit is priced with the ledger time the result is recorded at. Raises
        :class:`~ledger.errors.CreditError` (nothing appended) if the formula cannot price it.
        """
        return self.record_validated_results([result], formula_version=formula_version)

    def record_validated_results(
        self, results: Sequence[ResultValidated], *, formula_version: int = CURRENT_FORMULA_VERSION
    ) -> list[Appended]:
        """:meth:`record_validated_result` for many results in one transaction (a group
        commit): all are durable when this returns, or none is."""
        ts = self._next_timestamp()
        records = []
        for result in results:
            records.append(Record(timestamp_ms=ts, entry=result))
            for a in result.attestations:
                grant = CreditGranted(
                    volunteer_key=a.volunteer_key,
                    wu_id=result.wu_id,
                    formula_version=formula_version,
                    amount=price_attestation(
                        result, a, validated_at_ms=ts, version=formula_version
                    ),
                )
                records.append(Record(timestamp_ms=ts, entry=grant))
        if not records:
            return []
        out = self._append_records(records)
        self._maybe_publish()
        return out

    def _append_records(self, records: Sequence[Record]) -> list[Appended]:
        if self._store.readonly:
            raise StorageError(f"{self._store.name} is open read-only")
        encoded = [encode_record(r) for r in records]  # size limits, before anything else
        hashed = [(data, leaf_hash(data)) for data in encoded]
        admission = self._admission
        try:
            with self._store.transaction():
                first = self._store.size
                state = self._ledger_state() if admission.uses_state else None
                for i, r in enumerate(records):
                    admission.check(state, first + i, r)
                self._store.append_leaves(hashed)
        except BaseException:
            self._state = None  # rebuilt from the committed log when next needed
            raise
        self._last_ts = max(self._last_ts, *(r.timestamp_ms for r in records))
        return [
            Appended(index=first + i, timestamp_ms=r.timestamp_ms, leaf_hash=hashed[i][1])
            for i, r in enumerate(records)
        ]

    # ------------------------------------------------------------------ checkpoints

    def _maybe_publish(self) -> None:
        if self._signer is None:
            return
        latest = self._signer.latest
        done = 0 if latest is None else latest.size
        if self.size - done >= self._every or (
            self.size > done + 1 and self._clock() - self._last_cp_ms >= self._interval_ms
        ):
            self.publish_checkpoint()

    def publish_checkpoint(self) -> SignedCheckpoint:
        """Sign, store and record a checkpoint of the current tree; return it.

        Refuses (:class:`~ledger.errors.InconsistentCheckpointError`) when the tree is not an
        append-only extension of the last checkpoint this log signed.
        """
        if self._signer is None:
            raise KeyFileError("this log was opened without its signing key; cannot sign")
        size = self.size
        root = self._store.root()
        latest = self._signer.latest
        proof: list[bytes] = []
        if latest is not None and 0 < latest.size < size:
            proof = self.consistency_proof(latest.size, size)
        signed = self._signer.sign(Checkpoint(self._origin, size, root), proof=proof)
        note = signed.encode()
        record = Record(timestamp_ms=self._next_timestamp(), entry=CheckpointPublished(note))
        data = encode_record(record)
        with self._store.transaction():
            if self._store.size != size:
                raise StorageError("another writer appended while the checkpoint was signed")
            self._store.add_checkpoint(size, note)
            self._store.append_leaves([(data, leaf_hash(data))])
        if self._state is not None:
            self._state.apply(size, record)
        self._last_ts = record.timestamp_ms
        self._last_cp_ms = self._clock()
        return signed

    def checkpoint(self, tree_size: int | None = None) -> SignedCheckpoint | None:
        """The stored checkpoint at ``tree_size`` (default: the latest) with its cosignatures."""
        rows = self._store.checkpoints()
        if tree_size is not None:
            rows = [r for r in rows if r[0] == tree_size]
        if not rows:
            return None
        size, text = rows[-1]
        note = parse_note(text + "".join(self._store.cosignature_lines(size)))
        return SignedCheckpoint(checkpoint=Checkpoint.from_body(note.text), note=note)

    def add_cosignature(
        self, signature: NoteSignature, *, witness: CosignatureV1Verifier, tree_size: int
    ) -> bool:
        """Verify a witness cosignature of the checkpoint at ``tree_size`` and record it.

        The line is attached to the stored checkpoint (so exports carry it) and a ``witness
        cosignature recorded`` entry is appended. Returns ``False`` if that witness already
        cosigned that checkpoint.
        """
        cp = self.checkpoint(tree_size)
        if cp is None:
            raise NotInLogError(f"this log has no checkpoint at size {tree_size}")
        if (signature.name, signature.key_id) != (witness.name, witness.key_id):
            raise SignatureError(
                f"cosignature is by {signature.name} ({signature.key_id.hex()}), not by "
                f"witness {witness.name} ({witness.key_id.hex()})"
            )
        witness.verify(cp.note.text, signature.signature)
        entry = WitnessCosigned(
            witness_name=witness.name,
            witness_key=witness.public_key,
            tree_size=tree_size,
            root_hash=cp.checkpoint.root_hash,
            timestamp=int.from_bytes(signature.signature[:8], "big"),
            signature=signature.signature[8:],
        )
        record = Record(timestamp_ms=self._next_timestamp(), entry=entry)
        data = encode_record(record)
        with self._store.transaction():
            if not self._store.add_cosignature(
                tree_size, witness.name, witness.key_id, signature.line()
            ):
                return False
            self._store.append_leaves([(data, leaf_hash(data))])
        self._last_ts = record.timestamp_ms
        if self._state is not None:
            self._state.apply(self.size - 1, record)
        return True

    # ------------------------------------------------------------------ reading and proofs

    def entry(self, index: int) -> bytes:
        """The canonical bytes of entry ``index``."""
        return self._store.entry(index)

    def record(self, index: int) -> Record:
        return decode_record(self._store.entry(index))

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """``PATH(index, D[tree_size])`` (RFC 9162 §2.1.3.1), default the current size."""
        size = self.size if tree_size is None else tree_size
        if size > self.size:
            raise StorageError(f"tree size {size} is beyond the log's {self.size} entries")
        return inclusion_proof(index, size, self._store.read_nodes)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """``PROOF(size1, D[size2])`` (RFC 9162 §2.1.4.1), default to the current size."""
        size = self.size if size2 is None else size2
        if size > self.size:
            raise StorageError(f"tree size {size} is beyond the log's {self.size} entries")
        return consistency_proof(size1, size, self._store.read_nodes)


def _latest_checkpoint(store: Store, verifier: Ed25519NoteVerifier) -> SignedCheckpoint | None:
    rows = store.checkpoints()
    if not rows:
        return None
    try:
        return open_checkpoint(rows[-1][1], log_verifier=verifier)
    except (NoteFormatError, SignatureError) as e:
        raise StorageError(
            f"{store.name}: the latest stored checkpoint does not verify under this log's key: {e}"
        ) from e
