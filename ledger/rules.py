"""The ledger's rules: which sequences of records are a valid credit history, and balances.

:class:`LedgerState` replays records in log order and reports every rule a record breaks as a
:class:`Discrepancy`. The same code serves the log (which refuses to append a record that
breaks a rule) and the auditor (which lists every break), so the two cannot disagree.

Rules (discrepancy kind in brackets):

* ledger time never decreases [``timestamp``];
* a volunteer registers once [``duplicate-volunteer``]; a job is submitted once
  [``duplicate-job``];
* a validated result names a submitted job [``unknown-job``], is the first for its WU
  [``duplicate-result``], is attested by registered volunteers [``unregistered-worker``],
  each once [``duplicate-worker``], issued after the job was submitted and not after it was
  validated [``issue-time``]; its price inputs (engine, particles, steps, deadline, issue
  time) are the ones each of its workers signed [``unsigned-price``: the entry differs from
  a signature, or is a v1 entry that no worker's signature prices], and it names the spec
  digest its job was submitted with [``spec-mismatch``];
* a credit is backed by a validated result attested by that volunteer
  [``credit-without-result``], is granted once per (volunteer, WU) [``duplicate-credit``],
  and its amount is the formula's applied to the inputs that volunteer signed
  [``credit-mismatch``, ``unknown-formula``];
* a revocation withdraws an existing, unrevoked grant of that exact amount
  [``revocation-without-credit``, ``revocation-mismatch``], and a revocation that cites
  evidence (a convicted key's clawback: JSON with ``evidence_wu``) cites a WU whose validated
  result is earlier in the log [``revocation-without-evidence``].

Signatures are not checked here (the auditor verifies them in parallel; the log checks them
before appending): these rules are pure bookkeeping.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from ledger.credit import credit_for
from ledger.entries import (
    Attestation,
    CreditGranted,
    CreditRevoked,
    GenerationSeeded,
    JobSubmitted,
    PriceInputs,
    Record,
    ResultValidated,
    VolunteerRegistered,
)
from ledger.errors import CreditError

__all__ = ["Discrepancy", "LedgerState", "price_attestation", "price_with", "signed_price"]


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One thing wrong with a ledger: a short ``kind``, the entry index if any, a message."""

    kind: str
    message: str
    index: int | None = None

    def __str__(self) -> str:
        where = f"entry {self.index}: " if self.index is not None else ""
        return f"[{self.kind}] {where}{self.message}"


@dataclass(slots=True)
class _Result:
    validated_at_ms: int
    #: Per attester, the price inputs it signed (for a v1 entry: the entry's, unsigned).
    prices: dict[bytes, PriceInputs]


def signed_price(result: ResultValidated, attestation: Attestation) -> PriceInputs:
    """The price inputs ``attestation``'s worker signed; for a v1 entry (nobody signed any)
    the ones the entry states."""
    if attestation.price is not None:
        return attestation.price
    return result.stated_price(attestation.issued_at_ms)


def price_with(version: int, price: PriceInputs, *, validated_at_ms: int) -> int:
    """The credit formula ``version`` applied to ``price`` (validated at ``validated_at_ms``)."""
    return credit_for(
        version,
        engine=price.engine,
        n_particles=price.n_particles,
        steps=price.steps,
        deadline_s=price.deadline_s,
        issued_at_ms=price.issued_at_ms,
        validated_at_ms=validated_at_ms,
    )


def price_attestation(
    result: ResultValidated, attestation: Attestation, *, validated_at_ms: int, version: int
) -> int:
    """The credit formula ``version`` applied to one attester's share in ``result``, with the
    inputs that attester signed."""
    return price_with(version, signed_price(result, attestation), validated_at_ms=validated_at_ms)


def revocation_evidence(reason: str) -> bytes | None:
    """The WU a revocation cites as evidence (its reason is then JSON with ``evidence_wu``):
    the validated outcome that contradicts the revoked key. ``None`` for a free-text reason."""
    if not reason.startswith("{"):
        return None
    try:
        doc = json.loads(reason)
        wu = bytes.fromhex(doc["evidence_wu"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return b""  # claims to cite evidence, but names none a reader can find
    return wu if len(wu) == 32 else b""


def _short(key: bytes) -> str:
    return key.hex()[:16]


class LedgerState:
    """Balances and the facts the rules need, built by replaying records in order.

    ``balances`` sums the amounts the ledger records; ``formula_balances`` sums what the
    credit formula gives for the same grants (and nothing for unbacked ones). In a sound
    ledger the two are equal.
    """

    __slots__ = (
        "_keys",
        "balances",
        "formula_balances",
        "grants",
        "job_specs",
        "jobs",
        "last_timestamp_ms",
        "results",
        "revoked",
        "volunteers",
    )

    def __init__(self) -> None:
        self.volunteers: dict[bytes, int] = {}
        self.jobs: dict[bytes, int] = {}
        self.job_specs: dict[bytes, bytes | None] = {}
        self.results: dict[bytes, _Result] = {}
        self.grants: dict[tuple[bytes, bytes], int] = {}
        self.revoked: set[tuple[bytes, bytes]] = set()
        self.balances: dict[bytes, int] = {}
        self.formula_balances: dict[bytes, int] = {}
        self.last_timestamp_ms = 0
        self._keys: dict[bytes, bytes] = {}

    def _key(self, key: bytes) -> bytes:
        return self._keys.setdefault(key, key)

    def apply(self, index: int, record: Record) -> list[Discrepancy]:
        """Apply one record; return the rules it breaks (it is applied as far as it can be)."""
        out: list[Discrepancy] = []
        ts = record.timestamp_ms
        if ts < self.last_timestamp_ms:
            out.append(
                Discrepancy(
                    "timestamp",
                    f"ledger time goes backwards: {ts} ms after {self.last_timestamp_ms} ms",
                    index,
                )
            )
        else:
            self.last_timestamp_ms = ts
        e = record.entry
        if isinstance(e, ResultValidated):
            self._result(index, ts, e, out)
        elif isinstance(e, CreditGranted):
            self._grant(index, e, out)
        elif isinstance(e, CreditRevoked):
            self._revoke(index, e, out)
        elif isinstance(e, VolunteerRegistered):
            key = self._key(e.volunteer_key)
            if key in self.volunteers:
                out.append(
                    Discrepancy(
                        "duplicate-volunteer",
                        f"volunteer {_short(key)} registered again "
                        f"(first at entry {self.volunteers[key]})",
                        index,
                    )
                )
            else:
                self.volunteers[key] = index
        elif isinstance(e, GenerationSeeded):
            if e.job_id not in self.jobs:
                out.append(
                    Discrepancy(
                        "seed-unknown-job",
                        f"a generation of job {_short(e.job_id)} was seeded before the job was "
                        "submitted",
                        index,
                    )
                )
            if e.parent_wu not in self.results:
                out.append(
                    Discrepancy(
                        "seed-unvalidated-parent",
                        f"WU {_short(e.wu_id)} was seeded from WU {_short(e.parent_wu)}, which "
                        "has no validated result earlier in the log",
                        index,
                    )
                )
        elif isinstance(e, JobSubmitted):
            if e.job_id in self.jobs:
                out.append(
                    Discrepancy("duplicate-job", f"job {_short(e.job_id)} submitted again", index)
                )
            else:
                self.jobs[e.job_id] = ts
                self.job_specs[e.job_id] = e.spec_digest
        return out

    def _result(self, index: int, ts: int, e: ResultValidated, out: list[Discrepancy]) -> None:
        wu = _short(e.wu_id)
        if e.wu_id in self.results:
            out.append(Discrepancy("duplicate-result", f"WU {wu} validated a second time", index))
            return
        job_ts = self.jobs.get(e.job_id)
        if job_ts is None:
            out.append(
                Discrepancy(
                    "unknown-job",
                    f"WU {wu} belongs to job {_short(e.job_id)}, which was never submitted",
                    index,
                )
            )
        self._spec(index, e, out)
        prices: dict[bytes, PriceInputs] = {}
        unsigned: list[str] = []
        if e.spec_digest is None:
            unsigned.append("a v1 entry: no worker signed its price inputs")
        stated: PriceInputs | None = None
        for a in e.attestations:
            key = self._key(a.volunteer_key)
            if key in prices:
                out.append(
                    Discrepancy(
                        "duplicate-worker",
                        f"WU {wu}: volunteer {_short(key)} attests twice",
                        index,
                    )
                )
                continue
            if key not in self.volunteers:
                out.append(
                    Discrepancy(
                        "unregistered-worker",
                        f"WU {wu}: attested by {_short(key)}, who never registered",
                        index,
                    )
                )
            if a.issued_at_ms > ts or (job_ts is not None and a.issued_at_ms < job_ts):
                out.append(
                    Discrepancy(
                        "issue-time",
                        f"WU {wu}: issued to {_short(key)} at {a.issued_at_ms} ms, outside "
                        f"[job submitted {job_ts} ms, validated {ts} ms]",
                        index,
                    )
                )
            if stated is None or stated.issued_at_ms != a.issued_at_ms:
                stated = PriceInputs(
                    sys.intern(e.engine), e.n_particles, e.steps, e.deadline_s, a.issued_at_ms
                )
            price = a.price or stated
            if price != stated:
                unsigned.extend(
                    f"{name} is {getattr(stated, name)!r} in the entry, but {_short(key)} "
                    f"signed {getattr(price, name)!r}"
                    for name in PriceInputs.FIELDS
                    if getattr(stated, name) != getattr(price, name)
                )
            else:
                price = stated  # one object for the attesters who agree with the entry
            prices[key] = price
        if unsigned:
            out.append(
                Discrepancy(
                    "unsigned-price",
                    f"WU {wu}: the credit inputs are not what its workers signed: "
                    + "; ".join(unsigned[:8])
                    + (f"; and {len(unsigned) - 8} more" if len(unsigned) > 8 else ""),
                    index,
                )
            )
        self.results[e.wu_id] = _Result(validated_at_ms=ts, prices=prices)

    def _spec(self, index: int, e: ResultValidated, out: list[Discrepancy]) -> None:
        """The result names the spec digest its job was submitted with."""
        if e.spec_digest is None or e.job_id not in self.job_specs:
            return  # v1 (reported as unsigned-price) or an unknown job (unknown-job)
        want = self.job_specs[e.job_id]
        if want != e.spec_digest:
            said = "no spec digest (a v1 job entry)" if want is None else _short(want)
            out.append(
                Discrepancy(
                    "spec-mismatch",
                    f"WU {_short(e.wu_id)} names job spec {_short(e.spec_digest)}, but job "
                    f"{_short(e.job_id)} was submitted with {said}",
                    index,
                )
            )

    def expected_credit(self, wu_id: bytes, volunteer_key: bytes, version: int) -> int:
        """The formula's credit for ``volunteer_key``'s share in ``wu_id``, priced with the
        inputs that volunteer signed.

        Raises :class:`KeyError` if there is no such attested result, and
        :class:`~ledger.errors.CreditError` if the formula cannot price it.
        """
        r = self.results[wu_id]
        return price_with(version, r.prices[volunteer_key], validated_at_ms=r.validated_at_ms)

    def _grant(self, index: int, e: CreditGranted, out: list[Discrepancy]) -> None:
        key = self._key(e.volunteer_key)
        wu = _short(e.wu_id)
        r = self.results.get(e.wu_id)
        if r is None or key not in r.prices:
            why = "no validated result for that WU" if r is None else "not among its attesters"
            out.append(
                Discrepancy(
                    "credit-without-result",
                    f"{e.amount} credit granted to {_short(key)} for WU {wu} with no validated "
                    f"result behind it ({why})",
                    index,
                )
            )
            return
        pair = (key, e.wu_id)
        if pair in self.grants:
            out.append(
                Discrepancy(
                    "duplicate-credit",
                    f"credit for WU {wu} granted to {_short(key)} a second time",
                    index,
                )
            )
            return
        try:
            want = self.expected_credit(e.wu_id, key, e.formula_version)
        except CreditError as err:
            out.append(Discrepancy("unknown-formula", f"WU {wu}: {err}", index))
            return
        if want != e.amount:
            out.append(
                Discrepancy(
                    "credit-mismatch",
                    f"credit for WU {wu} to {_short(key)} is {e.amount}, but formula "
                    f"v{e.formula_version} gives {want}",
                    index,
                )
            )
        self.grants[pair] = e.amount
        self.balances[key] = self.balances.get(key, 0) + e.amount
        self.formula_balances[key] = self.formula_balances.get(key, 0) + want

    def _revoke(self, index: int, e: CreditRevoked, out: list[Discrepancy]) -> None:
        key = self._key(e.volunteer_key)
        pair = (key, e.wu_id)
        granted = self.grants.get(pair)
        if granted is None or pair in self.revoked:
            why = "never granted" if granted is None else "already revoked"
            out.append(
                Discrepancy(
                    "revocation-without-credit",
                    f"revokes credit for WU {_short(e.wu_id)} from {_short(key)}: {why}",
                    index,
                )
            )
            return
        evidence = revocation_evidence(e.reason)
        if evidence is not None and evidence not in self.results:
            out.append(
                Discrepancy(
                    "revocation-without-evidence",
                    f"revokes credit from {_short(key)} citing WU {_short(evidence)}, which has "
                    "no validated result before it in the log",
                    index,
                )
            )
        if granted != e.amount:
            out.append(
                Discrepancy(
                    "revocation-mismatch",
                    f"revokes {e.amount} for WU {_short(e.wu_id)} from {_short(key)}, "
                    f"but {granted} was granted",
                    index,
                )
            )
        self.revoked.add(pair)
        self.balances[key] = self.balances.get(key, 0) - e.amount
        self.formula_balances[key] = self.formula_balances.get(key, 0) - granted
