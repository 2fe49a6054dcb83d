"""Each volunteer's ledger entries and balance, and where each WU's validated result is,
indexed incrementally from the log.

``Coordinator.credits()`` rescans the whole ledger; a volunteer asking for its credit over
HTTP must not cost that. The index reads only the entries appended since it last looked.
It runs on the coordinator's thread (the ledger's connection lives there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger import entries as le
from ledger.log import Log


@dataclass(slots=True)
class VolunteerLedger:
    balance: int = 0
    granted: int = 0
    revoked: int = 0
    validated: int = 0
    entries: list[int] = field(default_factory=list)  # ledger indices naming this key


class LedgerIndex:
    def __init__(self) -> None:
        self.scanned = 0
        self.by_key: dict[bytes, VolunteerLedger] = {}
        self.results: dict[bytes, int] = {}  # WU id -> index of its "result validated"

    def _of(self, key: bytes) -> VolunteerLedger:
        v = self.by_key.get(key)
        if v is None:
            v = self.by_key[key] = VolunteerLedger()
        return v

    def update(self, log: Log) -> None:
        size = log.size
        if size <= self.scanned:
            return
        for idx, _leaf, data in log.store.iter_entries(self.scanned, size):
            e = le.decode_record(data).entry
            if isinstance(e, le.CreditGranted):
                v = self._of(e.volunteer_key)
                v.balance += e.amount
                v.granted += 1
                v.entries.append(idx)
            elif isinstance(e, le.CreditRevoked):
                v = self._of(e.volunteer_key)
                v.balance -= e.amount
                v.revoked += 1
                v.entries.append(idx)
            elif isinstance(e, le.ResultValidated):
                self.results[e.wu_id] = idx
                for a in e.attestations:
                    v = self._of(a.volunteer_key)
                    v.validated += 1
                    v.entries.append(idx)
            elif isinstance(e, le.VolunteerRegistered):
                self._of(e.volunteer_key).entries.append(idx)
        self.scanned = size

    def get(self, key: bytes) -> VolunteerLedger:
        return self.by_key.get(key) or VolunteerLedger()
