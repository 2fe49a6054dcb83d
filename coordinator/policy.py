"""The operator's floor under every job's verification settings (docs/architecture.md §1, §6).

A lab may ask for more verification than the network's minimum (a larger quorum, a higher
audit rate), never less: credit is paid only for work somebody else computed or checked,
whatever a job says.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.errors import SubmissionError
from coordinator.jobs import JobSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPolicy:
    #: Every WU is computed by at least this many volunteers, or (for an established
    #: volunteer's unreplicated WU, BOINC's adaptive replication) spot-checked.
    min_quorum: int = 2
    #: Fraction of agreeing quorums a volunteer outside the quorum also checks, at least.
    min_audit_rate: float = 0.1
    #: Results a new key must have validated alongside an established volunteer before it
    #: is established itself (may vouch for a WU, check others, go unreplicated).
    probation_results: int = 5
    #: Determinism classes one key may ever compute in (a class is a server-accepted name
    #: of a platform; a key collecting many would only be fishing for empty classes).
    max_classes_per_volunteer: int = 4
    #: How long a drawn volunteer has to come and take what it was offered.
    offer_s: float = 30.0
    #: A dispute is settled when one answer leads every other answer together by this many
    #: results of fresh, established volunteers (a sequential vote: colluders who hold a
    #: fraction f < 1/2 of the established keys win it with probability about
    #: (f / (1 - f)) ** margin, and an honest voice drawn into the panel counts against
    #: them). ``None``: 2 x (the job's quorum + 1), an appeal's worth of voices before
    #: anybody is convicted. A small network (a test, a demo) may set less.
    dispute_margin: int | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.min_quorum <= 10:
            raise SubmissionError(
                f"min_quorum must be in [2, 10] (one result alone is never credited), "
                f"got {self.min_quorum}"
            )
        if not 0 <= self.min_audit_rate <= 1:
            raise SubmissionError(f"min_audit_rate must be in [0, 1], got {self.min_audit_rate}")
        if self.probation_results < 1:
            raise SubmissionError(f"probation_results must be >= 1, got {self.probation_results}")
        if self.max_classes_per_volunteer < 1:
            raise SubmissionError("max_classes_per_volunteer must be >= 1")
        if not self.offer_s > 0:
            raise SubmissionError(f"offer_s must be > 0 seconds, got {self.offer_s}")
        if self.dispute_margin is not None and not 2 <= self.dispute_margin <= 50:
            raise SubmissionError(
                f"dispute_margin must be in [2, 50] results, got {self.dispute_margin}"
            )

    def quorum(self, spec: JobSpec) -> int:
        return max(spec.min_quorum, self.min_quorum)

    def margin(self, quorum: int) -> int:
        """Results by which a dispute's verdict must lead (see :attr:`dispute_margin`)."""
        return self.dispute_margin if self.dispute_margin is not None else 2 * (quorum + 1)

    def audit_rate(self, spec: JobSpec) -> float:
        return max(float(spec.audit_rate), self.min_audit_rate)
