"""The scheduler and validator as a sans-I/O state machine (the dask ``worker_state_machine``
pattern): events in, instructions out, no clocks, no randomness, no I/O.

Ray, HTTP and the database only feed :meth:`Scheduler.handle` events and carry out the
instructions it returns, so every scheduling and validation decision is a pure function of
the event history: replayable after a crash and testable without Ray or a database.

States
------
WU:       unsent -> in_progress -> validated | failed
          (``in_progress`` while replicas are out or more are needed; ``awaiting_beacon`` and
          ``spot_checking`` for an unreplicated result on its way to validation)
Replica:  assigned -> returned | errored | timed_out | lost
          returned replicas end valid or invalid once their WU is decided

Validation (DESIGN section 6)
-----------------------------
* Quorum replication: ``min_quorum`` replicas on distinct volunteers, one per volunteer per
  WU, all in the WU's determinism class (homogeneous redundancy: the class is fixed by the
  first dispatch); ``min_quorum`` bit-identical results (same final digest and segment root)
  validate the WU, disagreement adds a replica up to ``max_total_results``, errors up to
  ``max_error_results``, a missed deadline reissues.
* Adaptive replication (BOINC): a volunteer whose streak of consecutive valid results is
  N >= 10 gets a WU unreplicated with probability 1 - 1/N. The coin is SHA-256 of the WU id
  and the volunteer, so an auditor can re-derive it. One invalid result resets the streak
  and halves the volunteer's quota.
* Spot-checks: an unreplicated result is validated only after ``spot_check_segments``
  segments, chosen from SHA-256(segment root || beacon) with a beacon published *after* the
  worker committed (the next ledger checkpoint), are recomputed by another volunteer and match.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from coordinator.errors import ProtocolError, SubmissionError
from coordinator.jobs import JobSpec, TrajectoryKey, wu_id

ADAPTIVE_MIN_STREAK = 10
DEFAULT_QUOTA = 4
#: Engines whose spot-checks may be recomputed in another determinism class and compared
#: with a tolerance (see ``sims.engine.Engine.cross_class_tolerance``).
CROSS_CLASS_ENGINES = frozenset({"go"})
#: How finely the scheduler tracks when a volunteer was last online (seconds).
SEEN_GRAIN_S = 60.0
MIN_QUOTA = 1
MAX_QUOTA = 64


# -- immutable messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """What a worker needs to compute one WU (the prepared system is looked up by digest)."""

    id: bytes
    job: str
    run: int
    clone: int
    gen: int
    input_digest: bytes
    seed: int
    spec: JobSpec


@dataclass(frozen=True, slots=True)
class Claim:
    """The checkable part of a returned result; signatures are verified before this point."""

    final_digest: bytes
    segment_root: bytes
    boundary_digests: tuple[bytes, ...]
    det_class: str
    sane: bool = True
    problem: str = ""  # why a claim is not sane (verification failed before the scheduler)


# Events


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    job: str
    spec: JobSpec
    start_digests: tuple[bytes, ...]  # one prepared start state per run


@dataclass(frozen=True, slots=True)
class WorkRequested:
    volunteer: str
    det_class: str
    slots: int
    now: float
    #: Only WUs of this engine ("" = any). An HTTP volunteer declares one determinism class
    #: per engine; without the filter a class of one engine could claim another's fresh WU.
    engine: str = ""


@dataclass(frozen=True, slots=True)
class ResultReturned:
    replica: int
    volunteer: str
    claim: Claim
    now: float


@dataclass(frozen=True, slots=True)
class ReplicaFailed:
    replica: int
    volunteer: str
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class BeaconPublished:
    """Public randomness that did not exist when pending commitments were made."""

    value: bytes
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class SpotCheckReturned:
    check: int
    volunteer: str
    end_digests: tuple[bytes, ...]  # digest of the state at the end of each checked segment
    det_class: str
    now: float
    #: For a check from another determinism class: whether the coordinator found its end
    #: states within the engine's tolerance of the claimed ones (None: same class, digests
    #: are compared bit for bit).
    agrees: bool | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class NodeLost:
    volunteer: str
    now: float


@dataclass(frozen=True, slots=True)
class JobCancelled:
    """The job's lab withdrew it: no WU of it is handed out, validated or credited again.

    Work already validated stays validated (and credited); results still in flight are
    refused when they come back. Cancelling twice is a no-op, so replaying a log is safe.
    """

    job: str
    now: float


@dataclass(frozen=True, slots=True)
class Abandoned:
    """Every replica and spot check in flight is lost (the coordinator restarted)."""

    now: float


Event = (
    JobSubmitted
    | WorkRequested
    | ResultReturned
    | ReplicaFailed
    | BeaconPublished
    | SpotCheckReturned
    | Tick
    | NodeLost
    | Abandoned
    | JobCancelled
)


# Instructions


@dataclass(frozen=True, slots=True)
class Dispatch:
    replica: int
    wu: WorkUnit
    volunteer: str
    deadline: float


@dataclass(frozen=True, slots=True)
class DispatchSpotCheck:
    check: int
    wu: WorkUnit
    volunteer: str
    segments: tuple[int, ...]
    start_digests: tuple[bytes, ...]  # boundary digest at the start of each checked segment
    deadline: float


@dataclass(frozen=True, slots=True)
class Validated:
    wu: WorkUnit
    final_digest: bytes
    valid: tuple[tuple[int, str], ...]  # (replica, volunteer) whose results agreed
    invalid: tuple[tuple[int, str], ...]
    spot_checked: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class GrantCredit:
    volunteer: str
    wu: WorkUnit
    replica: int


@dataclass(frozen=True, slots=True)
class Invalidated:
    volunteer: str
    wu: WorkUnit
    replica: int
    reason: str


@dataclass(frozen=True, slots=True)
class WUFailed:
    wu: WorkUnit
    reason: str


@dataclass(frozen=True, slots=True)
class JobCompleted:
    job: str


Instruction = (
    Dispatch | DispatchSpotCheck | Validated | GrantCredit | Invalidated | WUFailed | JobCompleted
)


# -- mutable state (private) ----------------------------------------------------------------

WUState = Literal[
    "unsent",
    "in_progress",
    "awaiting_beacon",
    "spot_checking",
    "validated",
    "failed",
    "cancelled",
]
ReplicaState = Literal[
    "assigned",
    "returned",
    "errored",
    "timed_out",
    "lost",
    "valid",
    "invalid",
    "disputed",
    "cancelled",
]


@dataclass(slots=True)
class _Replica:
    id: int
    wu: bytes
    volunteer: str
    deadline: float
    state: ReplicaState = "assigned"
    claim: Claim | None = None


@dataclass(slots=True)
class _WU:
    unit: WorkUnit
    state: WUState = "unsent"
    required: int = 2
    det_class: str | None = None
    replicas: list[int] = field(default_factory=list)
    volunteers: set[str] = field(default_factory=set)
    errors: int = 0
    check: int | None = None
    group: list[int] = field(default_factory=list)  # an agreeing quorum awaiting its audit
    disputed: list[int] = field(default_factory=list)  # a quorum an audit contradicted
    auditor: str | None = None


@dataclass(slots=True)
class _Check:
    id: int
    wu: bytes
    replica: int
    volunteer: str
    segments: tuple[int, ...]
    deadline: float
    state: Literal["assigned", "done", "lost", "skipped"] = "assigned"


@dataclass(slots=True)
class _Volunteer:
    id: str
    streak: int = 0
    quota: int = DEFAULT_QUOTA
    in_flight: set[int] = field(default_factory=set)
    checks: set[int] = field(default_factory=set)
    #: determinism class -> when the volunteer last asked for work of it (to SEEN_GRAIN_S)
    seen: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Job:
    spec: JobSpec
    remaining: int  # trajectories not yet through all generations
    cancelled: bool = False
    params: bytes = b""  # spec.engine_parameters(), computed once per job, not once per WU


def unreplicated_coin(wu: bytes, volunteer: str) -> float:
    """A uniform number in [0, 1) that anyone can re-derive from the WU id and volunteer."""
    digest = hashlib.sha256(b"foldnet/adaptive/v1\x00" + wu + volunteer.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def _claim_problem(claim: Claim, w: _WU) -> str:
    """Why a claim cannot be compared with others, or "" if it can."""
    if not claim.sane:
        return claim.problem or "failed verification"
    if claim.det_class != w.det_class:
        return f"determinism class {claim.det_class} is not the WU's {w.det_class}"
    if len(claim.boundary_digests) != w.unit.spec.n_segments + 1:
        return (
            f"{len(claim.boundary_digests)} boundary states, expected {w.unit.spec.n_segments + 1}"
        )
    if claim.boundary_digests[0] != w.unit.input_digest:
        return "the first boundary state is not the WU's input"
    if claim.boundary_digests[-1] != claim.final_digest:
        return "the final state is not the last boundary state"
    return ""


def audit_coin(segment_root: bytes, beacon: bytes) -> float:
    """Uniform in [0, 1), fixed only once the beacon exists: whether a quorum is audited."""
    digest = hashlib.sha256(b"foldnet/audit/v1\x00" + segment_root + beacon).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def spot_check_segments(
    segment_root: bytes, beacon: bytes, n_segments: int, k: int
) -> tuple[int, ...]:
    """``k`` distinct segments drawn from SHA-256(root || beacon || counter), sorted."""
    k = min(k, n_segments)
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < k:
        h = hashlib.sha256(
            b"foldnet/spot-check/v1\x00" + segment_root + beacon + counter.to_bytes(8, "little")
        ).digest()
        chosen.add(int.from_bytes(h[:8], "little") % n_segments)
        counter += 1
    return tuple(sorted(chosen))


class Scheduler:
    """All job, WU, replica and volunteer state, and the transitions between states."""

    def __init__(self) -> None:
        self.jobs: dict[str, _Job] = {}
        self.wus: dict[bytes, _WU] = {}
        self.replicas: dict[int, _Replica] = {}
        self.checks: dict[int, _Check] = {}
        self.volunteers: dict[str, _Volunteer] = {}
        self._ready: dict[bytes, None] = {}  # WUs that need another replica, oldest first
        self._awaiting_beacon: dict[bytes, None] = {}
        self._check_queue: dict[int, None] = {}  # spot checks waiting for a verifier
        self._audit_waits: dict[int, int] = {}  # audit-wait deadline id -> check id
        self._deadlines: list[tuple[float, str, int]] = []
        self._next_id = 1

    # -- the one entry point ---------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        match event:
            case JobSubmitted():
                self._on_job_submitted(event, out)
            case WorkRequested():
                self._on_work_requested(event, out)
            case ResultReturned():
                self._on_result(event, out)
            case ReplicaFailed():
                self._on_failed(event, out)
            case BeaconPublished():
                self._on_beacon(event, out)
            case SpotCheckReturned():
                self._on_spot_check(event, out)
            case Tick():
                self._on_tick(event.now, out)
            case NodeLost():
                self._on_node_lost(event, out)
            case Abandoned():
                # The coordinator restarted: work in flight is lost, volunteers are not.
                for vol in sorted(self.volunteers):
                    self._on_node_lost(NodeLost(vol, event.now), out, gone=False)
            case JobCancelled():
                self._on_job_cancelled(event)
            case _:
                raise ProtocolError(f"unknown event {event!r}")
        return out

    # -- events ----------------------------------------------------------------------------

    def _on_job_submitted(self, ev: JobSubmitted, out: list[Instruction]) -> None:
        if ev.job in self.jobs:
            raise SubmissionError(f"job {ev.job!r} already exists")
        if len(ev.start_digests) != ev.spec.runs:
            raise SubmissionError(
                f"expected one start state per run ({ev.spec.runs}), got {len(ev.start_digests)}"
            )
        self.jobs[ev.job] = _Job(
            ev.spec, remaining=ev.spec.runs * ev.spec.clones, params=ev.spec.engine_parameters()
        )
        for run, digest in enumerate(ev.start_digests):
            for clone in range(ev.spec.clones):
                self._create_wu(TrajectoryKey(ev.job, run, clone), 0, digest)

    def _on_work_requested(self, ev: WorkRequested, out: list[Instruction]) -> None:
        vol = self._volunteer(ev.volunteer)
        # Coarse, so that an idle volunteer's polls change nothing (and are not logged) but
        # once a SEEN_GRAIN_S: who is online decides whether an audit can wait for them.
        if ev.now - vol.seen.get(ev.det_class, -math.inf) >= SEEN_GRAIN_S:
            vol.seen[ev.det_class] = ev.now
        budget = min(ev.slots, vol.quota - len(vol.in_flight) - len(vol.checks))
        # Spot checks first: they unblock validated credit for someone else. Candidates are
        # chosen first and assigned after: an assignment changes only its own WU's
        # eligibility, and copying a queue of 10^5 WUs on every request would cost more
        # than the request itself.
        checks: list[_Check] = []
        for check_id in self._check_queue:
            if len(checks) >= budget:
                break
            chk = self.checks[check_id]
            w = self.wus[chk.wu]
            if ev.volunteer in self._claimants(w):
                continue
            if ev.det_class != w.det_class and not self._cross_class_ok(w, ev.now):
                continue
            if ev.engine and w.unit.spec.engine != ev.engine:
                continue
            checks.append(chk)
        for chk in checks:
            self._transition_check_queued_assigned(chk, vol, ev.now, out)
        budget -= len(checks)
        chosen: list[_WU] = []
        for key in self._ready:
            if len(chosen) >= budget:
                break
            w = self.wus[key]
            if ev.volunteer in w.volunteers:
                continue  # one result per volunteer per WU
            if w.det_class is not None and w.det_class != ev.det_class:
                continue  # homogeneous redundancy
            if ev.engine and w.unit.spec.engine != ev.engine:
                continue
            chosen.append(w)
        for w in chosen:
            self._transition_ready_assigned(w, vol, ev, out)

    def _on_result(self, ev: ResultReturned, out: list[Instruction]) -> None:
        rep = self._replica(ev.replica, ev.volunteer)
        if rep.state != "assigned":
            raise ProtocolError(f"replica {rep.id} already ended as {rep.state}")
        w = self.wus[rep.wu]
        self.volunteers[rep.volunteer].in_flight.discard(rep.id)
        problem = _claim_problem(ev.claim, w)
        if problem:
            rep.state = "invalid"
            rep.claim = ev.claim
            self._penalise(rep.volunteer)
            out.append(Invalidated(rep.volunteer, w.unit, rep.id, problem))
            self._count_error(w, out)
            return
        rep.state = "returned"
        rep.claim = ev.claim
        if w.state in ("validated", "failed"):
            return  # a late replica: its WU was decided without it
        self._try_validate(w, out)

    def _on_failed(self, ev: ReplicaFailed, out: list[Instruction]) -> None:
        rep = self._replica(ev.replica, ev.volunteer)
        if rep.state != "assigned":
            return
        self._transition_assigned_errored(rep, "errored", out)

    def _on_beacon(self, ev: BeaconPublished, out: list[Instruction]) -> None:
        for key in list(self._awaiting_beacon):
            w = self.wus[key]
            del self._awaiting_beacon[key]
            rep = self.replicas[w.group[0] if w.group else w.replicas[-1]]
            assert rep.claim is not None
            if w.group and audit_coin(rep.claim.segment_root, ev.value) >= w.unit.spec.audit_rate:
                group = [self.replicas[r] for r in w.group]
                w.group = []
                w.state = "in_progress"
                self._transition_in_progress_validated(w, rep.claim.final_digest, group, out)
                continue
            segments = spot_check_segments(
                rep.claim.segment_root,
                ev.value,
                w.unit.spec.n_segments,
                w.unit.spec.spot_check_segments,
            )
            chk = _Check(self._new_id(), key, rep.id, "", segments, 0.0)
            self.checks[chk.id] = chk
            w.check = chk.id
            w.state = "spot_checking"
            self._check_queue[chk.id] = None
            if w.group:
                if not self._checker_online(w, ev.now):
                    self._transition_audit_queued_skipped(w, chk, out)
                    continue
                self._start_audit_wait(w, chk, ev.now)

    def _on_spot_check(self, ev: SpotCheckReturned, out: list[Instruction]) -> None:
        chk = self.checks.get(ev.check)
        if chk is None or chk.volunteer != ev.volunteer or chk.state != "assigned":
            raise ProtocolError(f"spot check {ev.check} is not assigned to {ev.volunteer}")
        chk.state = "done"
        self.volunteers[chk.volunteer].checks.discard(chk.id)
        w = self.wus[chk.wu]
        rep = self.replicas[chk.replica]
        assert rep.claim is not None
        claimed = tuple(rep.claim.boundary_digests[k + 1] for k in chk.segments)
        if ev.det_class == w.det_class:
            agrees = ev.end_digests == claimed
        else:  # compared with the engine's tolerance by the coordinator, which has the states
            agrees = bool(ev.agrees) and w.unit.spec.engine in CROSS_CLASS_ENGINES
        if agrees:
            if w.group:  # an audited quorum: all of it is valid
                group = [self.replicas[r] for r in w.group]
                w.group = []
                w.state = "in_progress"
                self._transition_in_progress_validated(w, rep.claim.final_digest, group, out)
            else:
                self._transition_spot_checking_validated(w, rep, chk, out)
        else:
            w.required = w.unit.spec.min_quorum
            w.state = "in_progress"
            w.check = None
            if w.group:
                # One auditor against a quorum: neither side is believed yet. The quorum is
                # set aside and a fresh quorum of volunteers new to this WU decides who lied.
                for r in w.group:
                    self.replicas[r].state = "disputed"
                w.disputed, w.group, w.auditor = w.group, [], chk.volunteer
                w.volunteers.add(chk.volunteer)
            else:
                # An unreplicated claim that a check contradicts: replicate it as usual.
                rep.state = "invalid"
                self._penalise(rep.volunteer)
                out.append(Invalidated(rep.volunteer, w.unit, rep.id, "spot-check mismatch"))
            self._want_more(w, out)

    def _on_tick(self, now: float, out: list[Instruction]) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, kind, ident = heapq.heappop(self._deadlines)
            if kind == "replica":
                rep = self.replicas[ident]
                if rep.state == "assigned":
                    self._transition_assigned_errored(rep, "timed_out", out)
            elif kind == "check":
                chk = self.checks[ident]
                if chk.state == "assigned":
                    self._requeue_check(chk, now)
            else:  # "audit": nobody outside the quorum came to audit it in time
                chk = self.checks[self._audit_waits.pop(ident)]
                if chk.id in self._check_queue:  # not taken, not replaced
                    self._transition_audit_queued_skipped(self.wus[chk.wu], chk, out)

    def _on_job_cancelled(self, ev: JobCancelled) -> None:
        job = self.jobs.get(ev.job)
        if job is None:
            raise ProtocolError(f"no job {ev.job!r}")
        if job.cancelled:
            return
        job.cancelled = True
        for w in self.wus.values():
            if w.unit.job == ev.job and w.state not in ("validated", "failed"):
                self._transition_open_cancelled(w)

    def _on_node_lost(self, ev: NodeLost, out: list[Instruction], *, gone: bool = True) -> None:
        vol = self.volunteers.get(ev.volunteer)
        if vol is None:
            return
        for rid in sorted(vol.in_flight):
            self._transition_assigned_errored(self.replicas[rid], "lost", out)
        for cid in sorted(vol.checks):
            self._requeue_check(self.checks[cid], ev.now)
        if gone:  # no audit waits for it any longer
            vol.seen.clear()
            for cid in list(self._check_queue):
                w = self.wus[self.checks[cid].wu]
                if w.group and not self._checker_online(w, ev.now):
                    self._transition_audit_queued_skipped(w, self.checks[cid], out)

    # -- transitions -----------------------------------------------------------------------

    def _transition_ready_assigned(
        self, w: _WU, vol: _Volunteer, ev: WorkRequested, out: list[Instruction]
    ) -> None:
        if w.det_class is None:
            w.det_class = ev.det_class
            if (
                w.unit.spec.min_quorum > 1
                and vol.streak >= ADAPTIVE_MIN_STREAK
                and unreplicated_coin(w.unit.id, vol.id) < 1.0 - 1.0 / vol.streak
            ):
                w.required = 1
        rep = _Replica(self._new_id(), w.unit.id, vol.id, ev.now + w.unit.spec.deadline_s)
        self.replicas[rep.id] = rep
        w.replicas.append(rep.id)
        w.volunteers.add(vol.id)
        w.state = "in_progress"
        vol.in_flight.add(rep.id)
        heapq.heappush(self._deadlines, (rep.deadline, "replica", rep.id))
        self._want_more(w, out)
        out.append(Dispatch(rep.id, w.unit, vol.id, rep.deadline))

    def _transition_assigned_errored(
        self, rep: _Replica, state: ReplicaState, out: list[Instruction]
    ) -> None:
        rep.state = state
        self.volunteers[rep.volunteer].in_flight.discard(rep.id)
        w = self.wus[rep.wu]
        if state == "errored":
            self._count_error(w, out)
        else:
            # A missed deadline or a lost node is not cheating: just reissue. The volunteer
            # keeps its place in ``w.volunteers``, so a replica never returns to it.
            self._want_more(w, out)

    def _transition_open_cancelled(self, w: _WU) -> None:
        """Any undecided WU -> cancelled: out of every queue, its work in flight withdrawn."""
        w.state = "cancelled"
        self._ready.pop(w.unit.id, None)
        self._awaiting_beacon.pop(w.unit.id, None)
        w.group = []
        for rid in w.replicas:
            rep = self.replicas[rid]
            if rep.state == "assigned":
                self.volunteers[rep.volunteer].in_flight.discard(rid)
                rep.state = "cancelled"
        if w.check is not None:
            chk = self.checks[w.check]
            self._check_queue.pop(chk.id, None)
            if chk.state == "assigned":
                self.volunteers[chk.volunteer].checks.discard(chk.id)
            chk.state = "lost"
            w.check = None

    def _transition_in_progress_validated(
        self, w: _WU, final: bytes, agreeing: list[_Replica], out: list[Instruction]
    ) -> None:
        invalid: list[_Replica] = []
        for rid in w.replicas:
            r = self.replicas[rid]
            if r in agreeing:
                continue
            if r.state == "returned":
                r.state = "invalid"
                invalid.append(r)
        w.state = "validated"
        self._ready.pop(w.unit.id, None)
        out.append(
            Validated(
                w.unit,
                final,
                tuple((r.id, r.volunteer) for r in agreeing),
                tuple((r.id, r.volunteer) for r in invalid),
            )
        )
        for r in agreeing:
            r.state = "valid"
            self._reward(r.volunteer)
            out.append(GrantCredit(r.volunteer, w.unit, r.id))
        for r in invalid:
            self._penalise(r.volunteer)
            out.append(Invalidated(r.volunteer, w.unit, r.id, "disagreed with the quorum"))
        self._advance_trajectory(w, final, out)

    def _transition_spot_checking_validated(
        self, w: _WU, rep: _Replica, chk: _Check, out: list[Instruction]
    ) -> None:
        assert rep.claim is not None
        w.state = "validated"
        rep.state = "valid"
        out.append(
            Validated(
                w.unit,
                rep.claim.final_digest,
                ((rep.id, rep.volunteer),),
                (),
                spot_checked=chk.segments,
            )
        )
        self._reward(rep.volunteer)
        out.append(GrantCredit(rep.volunteer, w.unit, rep.id))
        self._advance_trajectory(w, rep.claim.final_digest, out)

    def _transition_check_queued_assigned(
        self, chk: _Check, vol: _Volunteer, now: float, out: list[Instruction]
    ) -> None:
        w = self.wus[chk.wu]
        rep = self.replicas[chk.replica]
        assert rep.claim is not None
        del self._check_queue[chk.id]
        chk.volunteer = vol.id
        chk.state = "assigned"
        # a spot check costs a few segments, so it gets a proportional share of the deadline
        share = max(1.0, w.unit.spec.deadline_s * len(chk.segments) / w.unit.spec.n_segments)
        chk.deadline = now + share
        vol.checks.add(chk.id)
        heapq.heappush(self._deadlines, (chk.deadline, "check", chk.id))
        out.append(
            DispatchSpotCheck(
                chk.id,
                w.unit,
                vol.id,
                chk.segments,
                tuple(rep.claim.boundary_digests[k] for k in chk.segments),
                chk.deadline,
            )
        )

    # -- helpers ---------------------------------------------------------------------------

    def _create_wu(self, traj: TrajectoryKey, gen: int, input_digest: bytes) -> None:
        job = self.jobs[traj.job]
        spec = job.spec
        ident = wu_id(traj.job, traj.run, traj.clone, gen, input_digest, job.params)
        seed = int.from_bytes(
            hashlib.sha256(b"foldnet/wu-seed/v1\x00" + ident).digest()[:8], "little"
        )
        unit = WorkUnit(ident, traj.job, traj.run, traj.clone, gen, input_digest, seed, spec)
        self.wus[ident] = _WU(unit, required=spec.min_quorum)
        self._ready[ident] = None

    def _advance_trajectory(self, w: _WU, final: bytes, out: list[Instruction]) -> None:
        u = w.unit
        job = self.jobs[u.job]
        if u.gen + 1 < u.spec.gens:
            self._create_wu(TrajectoryKey(u.job, u.run, u.clone), u.gen + 1, final)
            return
        job.remaining -= 1
        if job.remaining == 0:
            out.append(JobCompleted(u.job))

    def _settle_dispute(
        self, w: _WU, final: bytes, fresh: list[_Replica], out: list[Instruction]
    ) -> None:
        """A fresh quorum decided a disputed WU: the side it contradicts lied."""
        disputed = [self.replicas[r] for r in w.disputed]
        w.disputed = []
        vindicated = all(r.claim is not None and r.claim.final_digest == final for r in disputed)
        if vindicated:
            for r in disputed:
                r.state = "returned"
            if w.auditor is not None:
                self._penalise(w.auditor)
        else:
            for r in disputed:
                r.state = "invalid"
                self._penalise(r.volunteer)
                out.append(Invalidated(r.volunteer, w.unit, r.id, "contradicted by an audit"))
        agreeing = fresh + (disputed if vindicated else [])
        self._transition_in_progress_validated(w, final, agreeing, out)

    def _cross_class_ok(self, w: _WU, now: float) -> bool:
        """Whether a check of ``w`` may go to another determinism class: only for engines
        whose segments can be compared with a tolerance, and only when no volunteer of
        ``w``'s own class who may check it is online (a bit-for-bit check is cheaper and
        stricter, so it is preferred)."""
        if w.unit.spec.engine not in CROSS_CLASS_ENGINES:
            return False
        return not self._checker_online(w, now, same_class=True)

    def _checker_online(self, w: _WU, now: float, *, same_class: bool = False) -> bool:
        """Whether a volunteer who may check ``w`` asked for work lately: of ``w``'s class,
        or (engines compared with a tolerance, unless ``same_class``) of any class."""
        assert w.det_class is not None
        classes = (
            None
            if (w.unit.spec.engine in CROSS_CLASS_ENGINES and not same_class)
            else {w.det_class}
        )
        claimants = self._claimants(w)
        horizon = w.unit.spec.deadline_s + SEEN_GRAIN_S
        return any(
            now - t <= horizon
            for v in self.volunteers.values()
            if v.id not in claimants
            for c, t in v.seen.items()
            if classes is None or c in classes
        )

    def _claimants(self, w: _WU) -> set[str]:
        """Volunteers who returned a result for ``w``: none of them may check it."""
        return {
            r.volunteer
            for r in (self.replicas[i] for i in w.replicas)
            if r.state in ("returned", "valid", "invalid", "disputed")
        }

    def _outstanding(self, w: _WU) -> int:
        return sum(1 for r in w.replicas if self.replicas[r].state == "assigned")

    def _groups(self, w: _WU) -> dict[tuple[bytes, bytes], list[_Replica]]:
        groups: dict[tuple[bytes, bytes], list[_Replica]] = {}
        for rid in w.replicas:
            r = self.replicas[rid]
            if r.state == "returned" and r.claim is not None:
                groups.setdefault((r.claim.final_digest, r.claim.segment_root), []).append(r)
        return groups

    def _agreeing_best(self, w: _WU) -> int:
        return max((len(g) for g in self._groups(w).values()), default=0)

    def _try_validate(self, w: _WU, out: list[Instruction]) -> None:
        groups = self._groups(w)
        for (final, _root), members in groups.items():
            if len(members) >= w.required:
                if w.required == 1 and w.unit.spec.min_quorum > 1:
                    w.state = "awaiting_beacon"  # unreplicated: spot-check before credit
                    self._awaiting_beacon[w.unit.id] = None
                    self._ready.pop(w.unit.id, None)
                    return
                if w.disputed:
                    self._settle_dispute(w, final, members, out)
                    return
                if w.unit.spec.audit_rate > 0:
                    # The beacon decides, after the fact, whether a third volunteer checks.
                    w.group = [r.id for r in members]
                    w.state = "awaiting_beacon"
                    self._awaiting_beacon[w.unit.id] = None
                    self._ready.pop(w.unit.id, None)
                    return
                self._transition_in_progress_validated(w, final, members, out)
                return
        self._want_more(w, out)

    def _want_more(self, w: _WU, out: list[Instruction]) -> None:
        """Put ``w`` in the ready queue if it needs another replica, or fail it."""
        if w.state not in ("unsent", "in_progress"):
            return
        outstanding = self._outstanding(w)
        if self._agreeing_best(w) + outstanding >= w.required:
            self._ready.pop(w.unit.id, None)  # enough replicas in flight to reach a quorum
            return
        results = sum(
            1 for r in w.replicas if self.replicas[r].state in ("returned", "invalid", "valid")
        )
        if results + outstanding >= w.unit.spec.max_total_results:
            self._ready.pop(w.unit.id, None)
            if outstanding == 0:
                self._fail(w, f"no quorum among {results} results", out)
            return
        self._ready[w.unit.id] = None

    def _count_error(self, w: _WU, out: list[Instruction]) -> None:
        w.errors += 1
        if w.errors >= w.unit.spec.max_error_results:
            self._fail(w, f"{w.errors} error results", out)
        else:
            self._want_more(w, out)

    def _fail(self, w: _WU, reason: str, out: list[Instruction]) -> None:
        if w.state in ("validated", "failed"):
            return
        w.state = "failed"
        self._ready.pop(w.unit.id, None)
        out.append(WUFailed(w.unit, reason))

    def _requeue_check(self, chk: _Check, now: float) -> None:
        self.volunteers[chk.volunteer].checks.discard(chk.id)
        chk.state = "lost"
        replacement = _Check(self._new_id(), chk.wu, chk.replica, "", chk.segments, 0.0)
        self.checks[replacement.id] = replacement
        w = self.wus[chk.wu]
        w.check = replacement.id
        self._check_queue[replacement.id] = None
        if w.group:
            self._start_audit_wait(w, replacement, now)

    def _start_audit_wait(self, w: _WU, chk: _Check, now: float) -> None:
        """An audit needs a volunteer outside the quorum; if none takes it within the WU's
        deadline, the quorum stands without its audit (liveness over the extra sample: a
        network of two volunteers must still make progress)."""
        ident = self._new_id()
        self._audit_waits[ident] = chk.id
        heapq.heappush(self._deadlines, (now + w.unit.spec.deadline_s, "audit", ident))

    def _transition_audit_queued_skipped(self, w: _WU, chk: _Check, out: list[Instruction]) -> None:
        del self._check_queue[chk.id]
        chk.state = "skipped"
        group = [self.replicas[r] for r in w.group]
        w.group = []
        w.check = None
        w.state = "in_progress"
        claim = group[0].claim
        assert claim is not None
        self._transition_in_progress_validated(w, claim.final_digest, group, out)

    def _reward(self, volunteer: str) -> None:
        v = self._volunteer(volunteer)
        v.streak += 1
        v.quota = min(MAX_QUOTA, v.quota + 1)

    def _penalise(self, volunteer: str) -> None:
        v = self._volunteer(volunteer)
        v.streak = 0
        v.quota = max(MIN_QUOTA, v.quota // 2)

    def _volunteer(self, volunteer: str) -> _Volunteer:
        v = self.volunteers.get(volunteer)
        if v is None:
            v = self.volunteers[volunteer] = _Volunteer(volunteer)
        return v

    def _replica(self, replica: int, volunteer: str) -> _Replica:
        rep = self.replicas.get(replica)
        if rep is None:
            raise ProtocolError(f"no replica {replica}")
        if rep.volunteer != volunteer:
            raise ProtocolError(f"replica {replica} was not assigned to {volunteer}")
        return rep

    def _new_id(self) -> int:
        ident = self._next_id
        self._next_id += 1
        return ident

    # -- invariants (checked by the test fixture after every test) --------------------------

    def validate_state(self) -> None:
        for key, w in self.wus.items():
            assert w.unit.id == key
            vols = [self.replicas[r].volunteer for r in w.replicas]
            assert len(vols) == len(set(vols)), f"two replicas of one WU on one volunteer: {vols}"
            assert set(vols) <= w.volunteers
            for rid in w.replicas:
                r = self.replicas[rid]
                if r.state == "assigned":
                    assert rid in self.volunteers[r.volunteer].in_flight
                if r.state == "valid":
                    assert w.state == "validated", "credit-worthy replica of an undecided WU"
            if key in self._ready:
                assert w.state in ("unsent", "in_progress"), f"ready WU in state {w.state}"
            if w.state == "validated":
                assert any(self.replicas[r].state == "valid" for r in w.replicas)
            if w.state == "cancelled":
                assert self.jobs[w.unit.job].cancelled, "a cancelled WU of a live job"
                assert key not in self._ready and key not in self._awaiting_beacon
                assert all(self.replicas[r].state != "assigned" for r in w.replicas)
                assert w.check is None
            if self.jobs[w.unit.job].cancelled:
                assert w.state in ("validated", "failed", "cancelled"), (
                    f"WU of a cancelled job in state {w.state}"
                )
        for cid in self._check_queue:
            chk = self.checks[cid]
            w = self.wus[chk.wu]
            assert chk.volunteer == "" and w.check == cid and w.state == "spot_checking"
        for w in self.wus.values():
            if w.group:
                assert w.state in ("awaiting_beacon", "spot_checking"), f"audit group in {w.state}"
                if w.state == "spot_checking" and w.check in self._check_queue:
                    assert w.check in self._audit_waits.values(), "an audit nobody times out"
        for v in self.volunteers.values():
            for rid in v.in_flight:
                assert self.replicas[rid].state == "assigned"
                assert self.replicas[rid].volunteer == v.id
            assert MIN_QUOTA <= v.quota <= MAX_QUOTA

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline of anything in flight (a Tick before it changes nothing)."""
        return self._deadlines[0][0] if self._deadlines else None

    @property
    def awaiting_beacon(self) -> bool:
        """Whether unreplicated results wait for a beacon to draw their spot-checks from."""
        return bool(self._awaiting_beacon)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.wus.values():
            counts[w.state] = counts.get(w.state, 0) + 1
        return counts


def replay(events: Iterable[Event]) -> tuple[Scheduler, list[Instruction]]:
    """Rebuild a scheduler from its event log (what a restarted coordinator does)."""
    s = Scheduler()
    out: list[Instruction] = []
    for ev in events:
        out.extend(s.handle(ev))
    return s, out
