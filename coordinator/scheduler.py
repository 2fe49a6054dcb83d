"""The scheduler and validator as a sans-I/O state machine (the dask ``worker_state_machine``
pattern): events in, instructions out, no clocks, no randomness, no I/O.

Ray, HTTP and the database only feed :meth:`Scheduler.handle` events and carry out the
instructions it returns, so every scheduling and validation decision is a pure function of
the event history: replayable after a crash and testable without Ray or a database.

States and transitions
----------------------
Every change of a WU's, replica's or check's state goes through one checked transition
(:data:`WU_TRANSITIONS`, :data:`REPLICA_TRANSITIONS`, :data:`CHECK_TRANSITIONS`); the
``_transition_<from>_<to>`` methods carry the ones with consequences.

WU:       unsent -> in_progress -> [awaiting_beacon -> spot_checking ->] validated | failed
          (and cancelled from any undecided state)
Replica:  offered -> assigned -> returned -> valid | invalid | disputed
          (offered -> lapsed; assigned -> errored | timed_out | lost; valid -> revoked)
Check:    queued -> offered -> assigned -> done (or lost, skipped, cancelled)

Trust (docs/architecture.md §1: nothing a volunteer says about itself decides who checks it)
-------------------------------------------------------------------------------------------
* Determinism classes are accepted by the coordinator from a known set before they reach
  the scheduler; a key may use at most ``max_classes_per_volunteer`` of them.
* **The server draws.** Every replica, spot-check and audit goes to a volunteer drawn
  uniformly from the eligible volunteers online with free capacity, seeded by the latest
  beacon (:func:`coordinator.draws.draw_index`); a drawn volunteer who is not asking right
  now is *offered* the task and takes it at its next request. Asking first, or often,
  chooses nothing.
* **Probation.** A key starts on probation. A WU is validated only by an agreeing group that
  includes an established volunteer, so fresh keys alone never validate anything; a key is
  established after ``probation_results`` results validated alongside established ones.
  The operator's own machines are established by :class:`VolunteerTrusted`.
* **Network minimum.** A job may raise its quorum or audit rate, never lower them below the
  :class:`~coordinator.policy.NetworkPolicy`: one unchecked result is never credited.
* **Claims bind everything a lab receives**: boundary states, final state, frames and
  observables (:attr:`Claim.agreement`).
* **Penalties and disputes.** Errors, timeouts and lost work cost the key (streak, quota);
  errors of keys on probation do not count toward ``max_error_results``. A spot-check or
  audit that contradicts a result is a dispute, settled by a sequential vote of fresh
  established volunteers (one answer must lead all others together by the policy's
  margin, 2 x (quorum + 1) by default); the losing side is convicted: banned, every credit
  it earned revoked (with the evidence), and the WUs it vouched for without another
  trustworthy voice are checked again (and retracted, their trajectory rolled back, if they
  were fakes).

Validation (docs/architecture.md §6)
------------------------------------
* Quorum replication: ``quorum`` replicas on distinct volunteers, one per volunteer per
  WU, in the WU's determinism class (homogeneous redundancy: the class is fixed by the
  first replica); a quorum of identical claims validates, disagreement adds a replica up to
  ``max_total_results``, errors up to ``max_error_results``, a missed deadline reissues.
* Adaptive replication (BOINC): an established volunteer whose streak of consecutive valid
  results is N >= 10 gets a WU unreplicated with probability 1 - 1/N. The coin is SHA-256 of
  the WU id and the volunteer, so an auditor can re-derive it.
* Spot-checks: an unreplicated result is validated only after ``spot_check_segments``
  segments, chosen from SHA-256(segment root || beacon) with a beacon published *after* the
  worker committed (the next ledger checkpoint), are recomputed by a drawn volunteer and match
  (end states, frames and observables).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from coordinator.draws import (
    audit_coin,
    draw_index,
    spot_check_segments,
    unreplicated_coin,
)
from coordinator.errors import ProtocolError, SubmissionError
from coordinator.jobs import JobSpec, TrajectoryKey, attempt_params, wu_id
from coordinator.messages import (
    Abandoned,
    BeaconPublished,
    ChooseSeed,
    Claim,
    Convicted,
    Dispatch,
    DispatchSpotCheck,
    Event,
    GenerationSeeded,
    GrantCredit,
    Instruction,
    Invalidated,
    JobAccepted,
    JobCancelled,
    JobCompleted,
    JobPreparationFailed,
    JobPrepared,
    JobSubmitted,
    NodeLost,
    Offered,
    ReplicaFailed,
    ResultReturned,
    Retracted,
    RevokeCredit,
    SpotCheckReturned,
    Tick,
    Validated,
    VolunteerTrusted,
    WorkRequested,
    WorkUnit,
    WUFailed,
)
from coordinator.policy import NetworkPolicy
from sims.seeds import seed_from_id

__all__ = [
    "ADAPTIVE_MIN_STREAK",
    "CROSS_CLASS_ENGINES",
    "Abandoned",
    "BeaconPublished",
    "ChooseSeed",
    "Claim",
    "Convicted",
    "Dispatch",
    "DispatchSpotCheck",
    "Event",
    "GenerationSeeded",
    "GrantCredit",
    "Instruction",
    "Invalidated",
    "JobAccepted",
    "JobCancelled",
    "JobCompleted",
    "JobPreparationFailed",
    "JobPrepared",
    "JobSubmitted",
    "NetworkPolicy",
    "NodeLost",
    "Offered",
    "ReplicaFailed",
    "ResultReturned",
    "Retracted",
    "RevokeCredit",
    "Scheduler",
    "SpotCheckReturned",
    "Tick",
    "Validated",
    "VolunteerTrusted",
    "WUFailed",
    "WorkRequested",
    "WorkUnit",
    "audit_coin",
    "replay",
    "spot_check_segments",
    "unreplicated_coin",
]

ADAPTIVE_MIN_STREAK = 10
DEFAULT_QUOTA = 4
#: Engines whose spot-checks may be recomputed in another determinism class and compared
#: with a tolerance (see ``sims.engine.Engine.cross_class_tolerance``).
CROSS_CLASS_ENGINES = frozenset({"go"})
#: How finely the scheduler tracks when a volunteer was last online (seconds).
SEEN_GRAIN_S = 60.0
#: A volunteer seen within this long may be drawn.
ONLINE_S = 2 * SEEN_GRAIN_S
MIN_QUOTA = 1
MAX_QUOTA = 64
#: Ready WUs (and queued checks) looked at per request: bounds a request's cost when the
#: head of a long queue has nobody eligible online.
SCAN_LIMIT = 512
#: A dispute's panel may grow to this many times its margin; past that it ends with the WU
#: failed and nobody convicted (a network too small, or too split, to give a verdict).
DISPUTE_BUDGET = 6
_DRAW_TRIES = 8
_ABSENT = object()  # a missing dict entry, unequal to any value

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
    "offered",
    "assigned",
    "returned",
    "errored",
    "timed_out",
    "lost",
    "lapsed",
    "valid",
    "invalid",
    "disputed",
    "revoked",
    "cancelled",
]
CheckState = Literal["queued", "offered", "assigned", "done", "lost", "skipped", "cancelled"]
Trust = Literal["probation", "established", "banned"]

_UNDECIDED: tuple[WUState, ...] = ("unsent", "in_progress", "awaiting_beacon", "spot_checking")

#: (from, to) -> the method that carries the transition out (dask's ``_TRANSITIONS_TABLE``).
WU_TRANSITIONS: dict[tuple[WUState, WUState], str] = {
    ("unsent", "in_progress"): "_transition_unsent_in_progress",
    ("in_progress", "awaiting_beacon"): "_transition_in_progress_awaiting_beacon",
    ("awaiting_beacon", "spot_checking"): "_transition_awaiting_beacon_spot_checking",
    ("spot_checking", "in_progress"): "_transition_spot_checking_in_progress",
    ("awaiting_beacon", "in_progress"): "_transition_awaiting_beacon_in_progress",
    ("in_progress", "validated"): "_transition_to_validated",
    ("awaiting_beacon", "validated"): "_transition_to_validated",
    ("spot_checking", "validated"): "_transition_to_validated",
    ("unsent", "failed"): "_transition_to_failed",
    ("in_progress", "failed"): "_transition_to_failed",
    **{(s, "cancelled"): "_transition_to_cancelled" for s in _UNDECIDED},
}
REPLICA_TRANSITIONS: frozenset[tuple[ReplicaState, ReplicaState]] = frozenset(
    {
        ("offered", "assigned"),
        ("offered", "lapsed"),
        ("offered", "cancelled"),
        ("assigned", "returned"),
        ("assigned", "invalid"),
        ("assigned", "errored"),
        ("assigned", "timed_out"),
        ("assigned", "lost"),
        ("assigned", "cancelled"),
        ("returned", "valid"),
        ("returned", "invalid"),
        ("returned", "disputed"),
        ("disputed", "valid"),
        ("disputed", "invalid"),
        ("disputed", "returned"),
        ("valid", "revoked"),
    }
)
CHECK_TRANSITIONS: frozenset[tuple[CheckState, CheckState]] = frozenset(
    {
        ("queued", "offered"),
        ("queued", "assigned"),
        ("queued", "skipped"),
        ("queued", "cancelled"),
        ("offered", "assigned"),
        ("offered", "lost"),
        ("offered", "cancelled"),
        ("assigned", "done"),
        ("assigned", "lost"),
        ("assigned", "cancelled"),
    }
)


# -- mutable state (private) ----------------------------------------------------------------


@dataclass(slots=True)
class _Replica:
    id: int
    wu: bytes
    volunteer: str
    deadline: float
    state: ReplicaState = "offered"
    claim: Claim | None = None


@dataclass(slots=True)
class _WU:
    """A WU's state. Most of a large queue is WUs nobody was drawn for yet, so what is empty
    until then is an immutable empty value shared by all of them (an empty set is 216 bytes,
    and every container is one more object for the cyclic collector to walk)."""

    unit: WorkUnit
    required: int
    state: WUState = "unsent"
    det_class: str | None = None
    replicas: list[int] = field(default_factory=list)
    volunteers: frozenset[str] = frozenset()  # drawn for it (a new set for each one added)
    errors: int = 0
    check: int | None = None
    group: tuple[int, ...] = ()  # an agreeing quorum awaiting its audit
    disputed: tuple[int, ...] = ()  # a result a check contradicted
    dispute_from: int = 0  # replicas[dispute_from:] are the dispute's fresh panel
    auditor: str | None = None  # the checker whose word started the dispute
    checker: str | None = None  # who confirmed it, for a spot-checked WU
    retracted: bool = False  # validated, then found to be a fake
    reverify: int | None = None  # a full re-check after one of its voices was convicted
    #: The established volunteers who vouched for it when it was validated (or re-checked).
    vouchers: frozenset[str] = frozenset()
    #: An adaptive generation: the validated WU, and its boundary, whose state it starts from.
    parent: tuple[bytes, int] | None = None


@dataclass(slots=True)
class _Check:
    id: int
    wu: bytes
    replica: int
    volunteer: str
    segments: tuple[int, ...]
    deadline: float
    state: CheckState = "queued"
    kind: Literal["spot", "audit", "reverify"] = "spot"


@dataclass(slots=True)
class _Volunteer:
    id: str
    trust: Trust = "probation"
    proven: int = 0  # results validated alongside an established volunteer
    streak: int = 0
    quota: int = DEFAULT_QUOTA
    width: int = 0  # tasks it said it can hold at once (in flight + what it asked for)
    in_flight: set[int] = field(default_factory=set)
    offers: set[int] = field(default_factory=set)
    checks: set[int] = field(default_factory=set)  # offered or assigned
    classes: dict[str, str] = field(default_factory=dict)  # engine ("" = any) -> class
    class_history: list[str] = field(default_factory=list)
    seen: float = -math.inf  # when it last asked for work (to SEEN_GRAIN_S)
    credited: list[int] = field(default_factory=list)  # its valid replicas, for clawback

    @property
    def established(self) -> bool:
        return self.trust == "established"

    def class_for(self, engine: str) -> str | None:
        return self.classes.get(engine) or self.classes.get("")

    def capacity(self) -> int:
        return (
            min(self.width, self.quota) - len(self.in_flight) - len(self.offers) - len(self.checks)
        )


class _Pool:
    """An ordered set with O(1) add, remove and indexing (swap-with-last removal): who may be
    drawn. Its order depends only on the logged events, so replays draw alike."""

    __slots__ = ("_at", "_items")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._at: dict[str, int] = {}

    def add(self, vid: str) -> None:
        if vid not in self._at:
            self._at[vid] = len(self._items)
            self._items.append(vid)

    def discard(self, vid: str) -> None:
        i = self._at.pop(vid, None)
        if i is None:
            return
        last = self._items.pop()
        if last != vid:
            self._items[i] = last
            self._at[last] = i

    def __contains__(self, vid: object) -> bool:
        return vid in self._at

    def __getitem__(self, i: int) -> str:
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Pool) and self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"_Pool({self._items!r})"

    def consistent(self) -> bool:
        return all(self._at[v] == i for i, v in enumerate(self._items)) and len(self._at) == len(
            self._items
        )


class _ReadyQueue:
    """WUs that need another replica, oldest first, in two lanes: those whose next replica
    must come from an established volunteer (a fresh key's WU waiting for its voucher), and
    the rest. A request while no established volunteer is free skips the first lane without
    looking at it: on a network that is mostly keys on probation, that lane is most of the
    queue, and looking at 512 of its WUs per request was most of the scheduler's time."""

    __slots__ = ("_any", "_est")

    def __init__(self) -> None:
        # OrderedDicts, not dicts: a dict keeps the slots of deleted keys until it resizes,
        # so reading the head of a queue consumed from the front costs as much as all that
        # was taken from it (1.5 ms per request after 500,000 WUs; quadratic at 10^6)
        self._any: OrderedDict[bytes, None] = OrderedDict()
        self._est: OrderedDict[bytes, None] = OrderedDict()

    def add(self, key: bytes, *, established: bool) -> None:
        """Queue ``key`` (it keeps its place if it stays in its lane)."""
        here, there = (self._est, self._any) if established else (self._any, self._est)
        if key in here:  # (then not in the other lane: nothing to do)
            return
        there.pop(key, None)
        here[key] = None

    def pop(self, key: bytes, default: None = None) -> None:
        self._any.pop(key, None)
        self._est.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._any or key in self._est

    def __len__(self) -> int:
        return len(self._any) + len(self._est)

    def __iter__(self) -> Iterator[bytes]:
        return itertools.chain(self._est, self._any)

    def __eq__(self, other: object) -> bool:  # order included: it decides who is drawn
        if not isinstance(other, _ReadyQueue):
            return NotImplemented
        return list(self._any) == list(other._any) and list(self._est) == list(other._est)

    __hash__ = None  # type: ignore[assignment]

    def head(self, limit: int, *, established_free: bool) -> Iterator[bytes]:
        """The WUs a request looks at: first those only an established volunteer may take
        (when one is free: they wait for the scarcer volunteers), then the rest; ``limit``
        in all, as the queue was when asked.

        Lazy, a few keys at a time: a request usually takes one or two WUs, and copying 512
        keys out of the queue for each was a third of its cost. The caller may remove a key
        it was given, or move it to the end of a lane, between keys (what a request does to
        the WU it draws for), and queue new ones; the keys it was not yet given stay where
        they were, so what it gets is exactly the first ``limit`` keys as they were when it
        asked."""
        n_est = min(limit, len(self._est)) if established_free else 0
        n_any = min(limit - n_est, len(self._any))
        given: set[bytes] = set()
        for lane, quota in ((self._est, n_est), (self._any, n_any)):
            n, chunk = quota, 4
            while n > 0:
                # the lane now: the keys given that stayed in place, then those not yet given
                # (in their order; at most ``n``), then keys moved or queued to its end since
                batch: list[bytes] = []
                for key in lane:
                    if key in given:
                        if batch:
                            break  # past the keys not yet given
                        continue
                    batch.append(key)
                    if len(batch) == min(chunk, n):
                        break
                if not batch:
                    break
                n -= len(batch)
                chunk *= 4
                for key in batch:
                    given.add(key)
                    yield key


@dataclass(slots=True)
class _Job:
    spec: JobSpec
    remaining: int  # trajectories not yet through all generations
    quorum: int
    audit_rate: float
    cancelled: bool = False
    params: bytes = b""  # spec.engine_parameters(), computed once per job, not once per WU


PendingState = Literal["preparing", "failed", "cancelled"]


@dataclass(slots=True)
class _Pending:
    """A job accepted but not prepared: preparing, or ended before it was ready."""

    engine: str
    wus: int
    since: float
    state: PendingState = "preparing"
    error: str = ""


class Scheduler:
    """All job, WU, replica and volunteer state, and the transitions between states."""

    def __init__(self, policy: NetworkPolicy | None = None) -> None:
        self.policy = policy or NetworkPolicy()
        self.jobs: dict[str, _Job] = {}
        #: Jobs accepted but not (or never to be) prepared; a prepared one moves to ``jobs``.
        self.pending: dict[str, _Pending] = {}
        self.wus: dict[bytes, _WU] = {}
        self.replicas: dict[int, _Replica] = {}
        self.checks: dict[int, _Check] = {}
        self.volunteers: dict[str, _Volunteer] = {}
        self._ready = _ReadyQueue()  # WUs that need another replica, oldest first
        self._awaiting_beacon: dict[bytes, None] = {}
        self._check_queue: OrderedDict[int, None] = OrderedDict()  # checks waiting (FIFO)
        self._audit_waits: dict[int, int] = {}  # audit-wait deadline id -> check id
        self._deadlines: list[tuple[float, str, int]] = []
        self._free = _Pool()  # volunteers online with free capacity (the draw pool)
        self._free_est = _Pool()  # the established ones among them
        self._trajectory: dict[TrajectoryKey, bytes] = {}  # newest WU of each trajectory
        #: Adaptive trajectories waiting for the start of their next generation (its number):
        #: a :class:`ChooseSeed` is out for each, answered by :class:`GenerationSeeded`.
        self.seeding: dict[TrajectoryKey, int] = {}
        self._beacon = b""
        self._now = 0.0  # the time of the event being handled
        self._next_id = 1
        #: Whether the last event changed anything (an idle poll does not, and is not logged).
        self.changed = False

    # -- the one entry point ---------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        self.changed = True
        self._now = getattr(event, "now", self._now)
        match event:
            case JobSubmitted():
                self._on_job_submitted(event)
            case JobAccepted():
                self._on_job_accepted(event)
            case JobPrepared():
                self._on_job_prepared(event)
            case JobPreparationFailed():
                self._preparing(event.job)
                self.pending[event.job].state = "failed"
                self.pending[event.job].error = event.reason
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
                for vol in list(self.volunteers):
                    self._on_node_lost(NodeLost(vol, event.now), out, gone=False)
            case JobCancelled():
                self._on_job_cancelled(event)
            case VolunteerTrusted():
                self._on_trusted(event)
            case GenerationSeeded():
                self._on_generation_seeded(event)
            case _:
                raise ProtocolError(f"unknown event {event!r}")
        return out

    # -- events ----------------------------------------------------------------------------

    def _on_job_accepted(self, ev: JobAccepted) -> None:
        if ev.job in self.jobs or ev.job in self.pending:
            raise SubmissionError(f"job {ev.job!r} already exists")
        self.pending[ev.job] = _Pending(ev.engine, ev.wus, ev.now)

    def _preparing(self, job: str) -> _Pending:
        p = self.pending.get(job)
        if p is None or p.state != "preparing":
            state = "unknown" if p is None else p.state
            raise ProtocolError(f"job {job[:16]} is not being prepared (it is {state})")
        return p

    def _on_job_prepared(self, ev: JobPrepared) -> None:
        p = self._preparing(ev.job)
        if ev.spec.engine != p.engine:
            raise ProtocolError(
                f"job {ev.job[:16]} was accepted for {p.engine}, prepared for {ev.spec.engine}"
            )
        if ev.spec.runs * ev.spec.clones * ev.spec.gens != p.wus:
            raise ProtocolError(f"job {ev.job[:16]} was prepared with another plan")
        self._on_job_submitted(JobSubmitted(ev.job, ev.spec, ev.start_digests))
        del self.pending[ev.job]

    def _on_job_submitted(self, ev: JobSubmitted) -> None:
        if ev.job in self.jobs:
            raise SubmissionError(f"job {ev.job!r} already exists")
        if len(ev.start_digests) != ev.spec.runs:
            raise SubmissionError(
                f"expected one start state per run ({ev.spec.runs}), got {len(ev.start_digests)}"
            )
        self.jobs[ev.job] = _Job(
            ev.spec,
            remaining=ev.spec.runs * ev.spec.clones,
            quorum=self.policy.quorum(ev.spec),
            audit_rate=self.policy.audit_rate(ev.spec),
            params=ev.spec.engine_parameters(),
        )
        # The job's WUs all live on and hold no cycles: the cyclic collector, run every 700
        # allocations, would only walk them again and again (a third of the time it takes
        # to create 10^6 WUs, on every replay of the log too).
        with collector_paused():
            for run, digest in enumerate(ev.start_digests):
                for clone in range(ev.spec.clones):
                    self._create_wu(TrajectoryKey(ev.job, run, clone), 0, digest)

    def _on_trusted(self, ev: VolunteerTrusted) -> None:
        vol = self._volunteer(ev.volunteer)
        if vol.trust == "banned":
            raise ProtocolError(f"volunteer {ev.volunteer[:16]} was convicted of faking")
        vol.trust = "established"
        self._refresh(vol, ev.now)

    def _on_work_requested(self, ev: WorkRequested, out: list[Instruction]) -> None:
        vol = self._volunteer(ev.volunteer)
        # what an idle poll may change (compared below, to tell whether to log the event)
        seen, width = vol.seen, vol.width
        classes_changed = vol.classes.get(ev.engine, _ABSENT) != ev.det_class
        if ev.det_class not in vol.class_history:
            if len(vol.class_history) >= self.policy.max_classes_per_volunteer:
                raise ProtocolError(
                    f"this key already computes in {len(vol.class_history)} determinism "
                    f"classes, the most one key may use; expected one of those again"
                )
            vol.class_history.append(ev.det_class)
        vol.classes[ev.engine] = ev.det_class
        # Coarse, so that an idle volunteer's polls change nothing (and are not logged) but
        # once a SEEN_GRAIN_S: who is online decides who is drawn and whom an audit awaits.
        if ev.now - vol.seen >= SEEN_GRAIN_S:
            vol.seen = ev.now
        vol.width = min(MAX_QUOTA, len(vol.in_flight) + len(vol.checks) + ev.slots)
        if vol.trust == "banned":
            self.changed = classes_changed or (seen, width) != (vol.seen, vol.width)
            return
        self._refresh(vol, ev.now)
        budget = ev.slots
        # What it was offered while away: checks first (they unblock someone's credit).
        for cid in sorted(vol.checks) if vol.checks else ():
            chk = self.checks[cid]
            if budget > 0 and chk.state == "offered":
                self._assign_check(chk, vol, ev.now, out)
                budget -= 1
        for rid in sorted(vol.offers) if vol.offers else ():
            rep = self.replicas[rid]
            if budget > 0 and self._matches(self.wus[rep.wu], ev.engine):
                self._assign_replica(rep, vol, ev.now, out)
                budget -= 1
        if budget > 0 and self._check_queue:
            budget = self._draw_checks(vol, budget, ev, out)
        if budget > 0:
            self._draw_replicas(vol, budget, ev, out)
        self.changed = bool(out) or classes_changed or (seen, width) != (vol.seen, vol.width)

    def _on_result(self, ev: ResultReturned, out: list[Instruction]) -> None:
        rep = self._replica(ev.replica, ev.volunteer)
        if rep.state != "assigned":
            raise ProtocolError(f"replica {rep.id} already ended as {rep.state}")
        w = self.wus[rep.wu]
        vol = self.volunteers[rep.volunteer]
        vol.in_flight.discard(rep.id)
        self._refresh(vol, ev.now)
        rep.claim = ev.claim
        problem = _claim_problem(ev.claim, w)
        if not problem and vol.trust == "banned":
            problem = "the key was convicted of faking results"
        if problem:
            self._set_replica(rep, "invalid")
            self._penalise(vol)
            out.append(Invalidated(rep.volunteer, w.unit, rep.id, problem))
            self._count_error(w, vol, out)
            return
        self._set_replica(rep, "returned")
        if w.state not in ("in_progress",):
            return  # a late replica: its WU was decided (or is being checked) without it
        self._try_validate(w, ev.now, out)

    def _on_failed(self, ev: ReplicaFailed, out: list[Instruction]) -> None:
        rep = self._replica(ev.replica, ev.volunteer)
        if rep.state != "assigned":
            return
        self._transition_assigned_ended(rep, "errored", ev.now, out)

    def _on_beacon(self, ev: BeaconPublished, out: list[Instruction]) -> None:
        self._beacon = ev.value
        for key in list(self._awaiting_beacon):
            w = self.wus[key]
            del self._awaiting_beacon[key]
            rep = self.replicas[w.group[0] if w.group else self._unreplicated(w).id]
            assert rep.claim is not None
            job = self.jobs[w.unit.job]
            if w.group and audit_coin(rep.claim.segment_root, ev.value) >= job.audit_rate:
                self._transition_wu(w, "validated", rep.claim, self._group(w), out)
                continue
            self._transition_wu(w, "spot_checking", rep, ev, out)

    def _on_spot_check(self, ev: SpotCheckReturned, out: list[Instruction]) -> None:
        chk = self.checks.get(ev.check)
        if chk is None or chk.volunteer != ev.volunteer or chk.state != "assigned":
            raise ProtocolError(f"spot check {ev.check} is not assigned to {ev.volunteer}")
        self._set_check(chk, "done")
        vol = self.volunteers[chk.volunteer]
        vol.checks.discard(chk.id)
        self._refresh(vol, ev.now)
        w = self.wus[chk.wu]
        rep = self.replicas[chk.replica]
        assert rep.claim is not None
        agrees = self._check_agrees(chk, w, rep.claim, ev)
        if chk.kind == "reverify":
            w.reverify = None
            if agrees:
                self._reward(vol)
                w.vouchers = w.vouchers | {vol.id}
            else:
                self._retract(w, chk.volunteer, ev.now, out)
            return
        if agrees:
            self._reward(vol)
            w.checker = chk.volunteer
            members = self._group(w) if w.group else [rep]
            self._transition_wu(w, "validated", rep.claim, members, out)
            return
        # One checker against a result: neither side is believed yet. The result is set
        # aside and a fresh quorum of volunteers new to this WU decides who lied.
        self._transition_wu(w, "in_progress", chk, out)
        self._want_more(w, out)

    def _on_tick(self, now: float, out: list[Instruction]) -> None:
        for vid in [v for v in self._free if not self._online(self.volunteers[v], now)]:
            self._refresh(self.volunteers[vid], now)  # gone quiet: out of the draw pool
        while self._deadlines and self._deadlines[0][0] <= now:
            when, kind, ident = heapq.heappop(self._deadlines)
            if kind == "replica":
                rep = self.replicas[ident]
                if when < rep.deadline:
                    continue  # the deadline of an offer since taken
                if rep.state == "assigned":
                    self._transition_assigned_ended(rep, "timed_out", now, out)
                elif rep.state == "offered":
                    self._lapse_offer(rep, now, out)
            elif kind == "check":
                chk = self.checks[ident]
                if when < chk.deadline:
                    continue
                if chk.state in ("assigned", "offered"):
                    if chk.state == "offered":  # not taken: whoever was drawn is away
                        self.volunteers[chk.volunteer].seen = -math.inf
                    else:
                        self._penalise(self.volunteers[chk.volunteer])
                    self._requeue_check(chk, now)
            else:  # "audit": nobody outside the quorum came to audit it in time
                chk = self.checks[self._audit_waits.pop(ident)]
                if chk.state in ("queued", "offered"):  # not taken, not replaced
                    self._skip_audit(self.wus[chk.wu], chk, out)

    def _on_generation_seeded(self, ev: GenerationSeeded) -> None:
        """Start an adaptive generation from the validated boundary state its policy chose.

        Checked before anything changes: the trajectory waits for exactly this generation,
        and the parent is a validated WU of the same job (not retracted, not waiting for a
        re-check) whose agreed claim has ``parent_state`` at that boundary. The restart
        state itself (those positions, velocities redrawn) is the coordinator's to store.
        """
        traj = TrajectoryKey(ev.job, ev.run, ev.clone)
        if self.seeding.get(traj) != ev.gen:
            self.changed = False
            raise ProtocolError(
                f"trajectory {ev.run}/{ev.clone} of job {ev.job[:16]} does not wait for a "
                f"start of generation {ev.gen}"
            )
        parent = self.wus.get(ev.parent_wu)
        problem = ""
        if parent is None or parent.unit.job != ev.job:
            problem = "is not a WU of the job"
        elif parent.state != "validated" or parent.retracted or parent.reverify is not None:
            problem = f"is {parent.state}{', retracted' if parent.retracted else ''}, not validated"
        else:
            claim = self.canonical(parent.unit.id)[1]
            if not 1 <= ev.boundary < len(claim.boundary_digests):
                problem = f"has no boundary {ev.boundary}"
            elif claim.boundary_digests[ev.boundary] != ev.parent_state:
                problem = f"has another state at boundary {ev.boundary}"
        if problem:
            self.changed = False
            raise ProtocolError(f"seed parent {ev.parent_wu.hex()[:16]} {problem}")
        del self.seeding[traj]
        self._create_wu(traj, ev.gen, ev.input_digest)
        self.wus[self._trajectory[traj]].parent = (ev.parent_wu, ev.boundary)

    def canonical(self, wu: bytes) -> tuple[int, Claim]:
        """A validated WU's canonical replica (its first valid, or revoked, one) and its
        agreed claim: what a lab's results and adaptive seeds are read from."""
        w = self.wus[wu]
        rid = next(r for r in w.replicas if self.replicas[r].state in ("valid", "revoked"))
        claim = self.replicas[rid].claim
        if claim is None:
            raise ProtocolError(f"replica {rid} of a validated WU has no claim")
        return rid, claim

    def newest(self, traj: TrajectoryKey) -> WorkUnit:
        """The newest WU of a trajectory."""
        return self.wus[self._trajectory[traj]].unit

    @property
    def beacon(self) -> bytes:
        """The latest beacon (empty before the first checkpoint)."""
        return self._beacon

    def _on_job_cancelled(self, ev: JobCancelled) -> None:
        pending = self.pending.get(ev.job)
        if pending is not None:
            if pending.state == "failed":
                raise ProtocolError(f"job {ev.job[:16]} failed in its preparation")
            pending.state = "cancelled"
            return
        job = self.jobs.get(ev.job)
        if job is None:
            raise ProtocolError(f"no job {ev.job!r}")
        if job.cancelled:
            return
        job.cancelled = True
        for traj in [t for t in self.seeding if t.job == ev.job]:
            del self.seeding[traj]
        for w in self.wus.values():
            if w.unit.job == ev.job and w.state in _UNDECIDED:
                self._transition_wu(w, "cancelled", ev.now)
            if w.unit.job == ev.job and w.reverify is not None:
                self._cancel_check(self.checks[w.reverify], ev.now)
                w.reverify = None

    def _on_node_lost(self, ev: NodeLost, out: list[Instruction], *, gone: bool = True) -> None:
        vol = self.volunteers.get(ev.volunteer)
        if vol is None:
            return
        for rid in sorted(vol.in_flight):
            self._transition_assigned_ended(self.replicas[rid], "lost", ev.now, out, blame=gone)
        for rid in sorted(vol.offers):
            self._lapse_offer(self.replicas[rid], ev.now, out)
        for cid in sorted(vol.checks):
            self._requeue_check(self.checks[cid], ev.now)
        if gone:  # no audit waits for it any longer
            vol.seen = -math.inf
            self._refresh(vol, ev.now)
            for cid in list(self._check_queue):
                chk = self.checks[cid]
                w = self.wus[chk.wu]
                if chk.kind == "audit" and not self._checker_online(w, ev.now):
                    self._skip_audit(w, chk, out)

    # -- drawing volunteers ----------------------------------------------------------------

    def _draw(
        self,
        subject: bytes,
        ok: Callable[[_Volunteer], bool],
        now: float,
        pool: _Pool | None = None,
    ) -> _Volunteer | None:
        """A volunteer drawn uniformly (by the beacon) from ``pool`` (those online with free
        capacity, or the established ones among them) for whom ``ok`` holds: a few random
        tries, then a scan from a random start."""
        items = (self._free if pool is None else pool)._items  # (ok() changes no pool)
        volunteers, beacon = self.volunteers, self._beacon
        # Equivalent to: a few tries, then a scan, with ok() asked at most once per
        # volunteer (it is pure) and an early None once everyone in the pool was refused: a
        # check nobody free may take is met again on every request until someone can.
        n = len(items)
        if n <= 1:  # (draw_index(..., 1) is always 0)
            v = volunteers[items[0]] if n else None
            return v if v is not None and now - v.seen <= ONLINE_S and ok(v) else None
        refused: set[str] = set()
        for attempt in range(_DRAW_TRIES):
            vid = items[draw_index(beacon, subject, attempt, n)]
            if vid in refused:
                continue
            v = volunteers[vid]
            if now - v.seen <= ONLINE_S and ok(v):
                return v
            refused.add(vid)
            if len(refused) == n:
                return None
        start = draw_index(beacon, subject, _DRAW_TRIES, n)
        for j in range(n):
            vid = items[(start + j) % n]
            if vid in refused:
                continue
            v = volunteers[vid]
            if now - v.seen <= ONLINE_S and ok(v):
                return v
        return None

    def _draw_checks(
        self, vol: _Volunteer, budget: int, ev: WorkRequested, out: list[Instruction]
    ) -> int:
        for cid in list(itertools.islice(self._check_queue, SCAN_LIMIT)):
            if budget <= 0 or not self._free_est:  # only established volunteers check
                break
            chk = self.checks[cid]
            w = self.wus[chk.wu]
            pick = self._draw(
                w.unit.id + b"check" + chk.id.to_bytes(8, "little"),
                functools.partial(self._may_check, w=w, now=ev.now),
                ev.now,
                self._free_est,
            )
            if pick is None:
                continue
            if pick is vol and self._matches(w, ev.engine):
                self._assign_check(chk, vol, ev.now, out)
                budget -= 1
            else:
                self._offer_check(chk, pick, ev.now, out)
        return budget

    def _draw_replicas(
        self, vol: _Volunteer, budget: int, ev: WorkRequested, out: list[Instruction]
    ) -> None:
        ready, wus = self._ready, self.wus
        free, free_est = self._free._items, self._free_est._items  # (truthy: someone is free)
        for key in ready.head(SCAN_LIMIT, established_free=bool(free_est)):
            if budget <= 0 or not free:
                break
            w = wus.get(key)
            if w is None or key not in ready:
                continue
            while key in ready and budget > 0 and free:
                subject = w.unit.id + len(w.replicas).to_bytes(4, "little")
                need_established = bool(w.disputed) or self._needs_established(w)
                if need_established and not free_est:
                    break  # nobody established is free: skip it cheaply, it waits its turn
                pick = self._draw(
                    subject,
                    functools.partial(self._may_compute, w=w, need_established=need_established),
                    ev.now,
                    self._free_est if need_established else self._free,
                )
                if pick is None:
                    break
                if pick is vol and self._matches(w, ev.engine):
                    rep = self._offer_replica(w, vol, ev.now, out, announce=False)
                    self._assign_replica(rep, vol, ev.now, out)  # (refreshes vol's pools)
                    budget -= 1
                else:  # (drawn for an engine it is not asking for now: it takes it later)
                    self._offer_replica(w, pick, ev.now, out)

    def _may_compute(self, v: _Volunteer, w: _WU, need_established: bool) -> bool:
        if v.id in w.volunteers or v.capacity() <= 0:
            return False
        cls = v.class_for(w.unit.spec.engine)
        if cls is None or (w.det_class is not None and cls != w.det_class):
            return False  # homogeneous redundancy
        return v.established or not need_established

    def _may_check(self, v: _Volunteer, w: _WU, now: float) -> bool:
        if not v.established or v.capacity() <= 0 or v.id in self._claimants(w):
            return False
        if w.group and v.id in w.volunteers:
            return False
        cls = v.class_for(w.unit.spec.engine)
        if cls is None:
            return False
        return cls == w.det_class or self._cross_class_ok(w, now)

    def _needs_established(self, w: _WU) -> bool:
        """Whether the next replica must be an established volunteer: the last one that can
        still join the WU's quorum while nobody established is among its live replicas."""
        if not w.replicas:  # (what the rest gives for a WU nobody was drawn for yet)
            return w.required <= 1
        live = [
            self.replicas[r]
            for r in w.replicas
            if self.replicas[r].state in ("offered", "assigned", "returned")
        ]
        if any(self.volunteers[r.volunteer].established for r in live):
            return False
        best = max((len(g) for g in self._groups(w).values()), default=0)
        outstanding = sum(1 for r in live if r.state != "returned")
        return best + outstanding + 1 >= w.required

    def _online(self, v: _Volunteer, now: float) -> bool:
        return now - v.seen <= ONLINE_S

    def _refresh(self, v: _Volunteer, now: float) -> None:
        """Keep the draw pools exact: in them iff online, not banned and with free capacity
        (and, for the second, established)."""
        # (_online and capacity() inlined: called several times per event)
        if (
            v.trust != "banned"
            and now - v.seen <= ONLINE_S
            and min(v.width, v.quota) - len(v.in_flight) - len(v.offers) - len(v.checks) > 0
        ):
            self._free.add(v.id)
            if v.trust == "established":
                self._free_est.add(v.id)
            else:
                self._free_est.discard(v.id)
        else:
            self._free.discard(v.id)
            self._free_est.discard(v.id)

    # -- offers and assignments ------------------------------------------------------------

    def _offer_replica(
        self, w: _WU, vol: _Volunteer, now: float, out: list[Instruction], *, announce: bool = True
    ) -> _Replica:
        if w.state == "unsent":
            self._transition_wu(w, "in_progress", vol)
        elif w.det_class is None:
            self._fix_class(w, vol)
        rep = _Replica(self._new_id(), w.unit.id, vol.id, now + self.policy.offer_s)
        self.replicas[rep.id] = rep
        w.replicas.append(rep.id)
        w.volunteers |= {vol.id}
        vol.offers.add(rep.id)
        if announce:  # (else it is assigned at once, which refreshes vol's pools: nothing
            # reads them in between, and an offer and an assignment take the same room)
            self._refresh(vol, now)
            heapq.heappush(self._deadlines, (rep.deadline, "replica", rep.id))
            out.append(Offered(vol.id, w.unit.id, rep.deadline))
        self._want_more(w, out)
        return rep

    def _assign_replica(
        self, rep: _Replica, vol: _Volunteer, now: float, out: list[Instruction]
    ) -> None:
        w = self.wus[rep.wu]
        self._set_replica(rep, "assigned")
        vol.offers.discard(rep.id)
        vol.in_flight.add(rep.id)
        rep.deadline = now + w.unit.spec.deadline_s
        heapq.heappush(self._deadlines, (rep.deadline, "replica", rep.id))
        self._refresh(vol, now)
        out.append(Dispatch(rep.id, w.unit, vol.id, rep.deadline))

    def _lapse_offer(self, rep: _Replica, now: float, out: list[Instruction]) -> None:
        """An offer nobody came for: the volunteer is taken to be away, the WU drawn again."""
        vol = self.volunteers[rep.volunteer]
        self._set_replica(rep, "lapsed")
        vol.offers.discard(rep.id)
        w = self.wus[rep.wu]
        w.volunteers -= {vol.id}  # it computed nothing: may be drawn again
        vol.seen = -math.inf
        self._refresh(vol, now)
        self._release_class(w)
        self._want_more(w, out)

    def _offer_check(
        self, chk: _Check, vol: _Volunteer, now: float, out: list[Instruction]
    ) -> None:
        del self._check_queue[chk.id]
        self._set_check(chk, "offered")
        chk.volunteer = vol.id
        chk.deadline = now + self.policy.offer_s
        vol.checks.add(chk.id)
        self._refresh(vol, now)
        heapq.heappush(self._deadlines, (chk.deadline, "check", chk.id))
        out.append(Offered(vol.id, chk.wu, chk.deadline))

    def _assign_check(
        self, chk: _Check, vol: _Volunteer, now: float, out: list[Instruction]
    ) -> None:
        w = self.wus[chk.wu]
        rep = self.replicas[chk.replica]
        assert rep.claim is not None
        self._check_queue.pop(chk.id, None)
        self._set_check(chk, "assigned")
        chk.volunteer = vol.id
        # a spot check costs a few segments, so it gets a proportional share of the deadline
        share = max(1.0, w.unit.spec.deadline_s * len(chk.segments) / w.unit.spec.n_segments)
        chk.deadline = now + share
        vol.checks.add(chk.id)
        self._refresh(vol, now)
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

    # -- transitions -----------------------------------------------------------------------

    def _transition_wu(self, w: _WU, to: WUState, *args: object) -> None:
        name = WU_TRANSITIONS.get((w.state, to))
        if name is None:
            raise AssertionError(f"no transition {w.state} -> {to} for WU {w.unit.id.hex()[:12]}")
        getattr(self, name)(w, *args)

    def _set_wu(self, w: _WU, to: WUState) -> None:
        assert (w.state, to) in WU_TRANSITIONS, f"WU {w.state} -> {to}"
        w.state = to

    def _set_replica(self, r: _Replica, to: ReplicaState) -> None:
        assert (r.state, to) in REPLICA_TRANSITIONS, f"replica {r.state} -> {to}"
        r.state = to

    def _set_check(self, c: _Check, to: CheckState) -> None:
        assert (c.state, to) in CHECK_TRANSITIONS, f"check {c.state} -> {to}"
        c.state = to

    def _transition_unsent_in_progress(self, w: _WU, vol: _Volunteer) -> None:
        self._set_wu(w, "in_progress")
        self._fix_class(w, vol)

    def _fix_class(self, w: _WU, vol: _Volunteer) -> None:
        """The first replica fixes the WU's class and whether it goes unreplicated."""
        w.det_class = vol.class_for(w.unit.spec.engine)
        job = self.jobs[w.unit.job]
        if (
            job.quorum > 1
            and vol.established
            and vol.streak >= ADAPTIVE_MIN_STREAK
            and unreplicated_coin(w.unit.id, vol.id) < 1.0 - 1.0 / vol.streak
        ):
            w.required = 1

    def _transition_in_progress_awaiting_beacon(self, w: _WU, group: list[_Replica] | None) -> None:
        self._set_wu(w, "awaiting_beacon")
        w.group = tuple(r.id for r in group) if group else ()
        self._awaiting_beacon[w.unit.id] = None
        self._ready.pop(w.unit.id, None)

    def _transition_awaiting_beacon_spot_checking(
        self, w: _WU, rep: _Replica, ev: BeaconPublished, out: list[Instruction]
    ) -> None:
        assert rep.claim is not None
        self._set_wu(w, "spot_checking")
        segments = spot_check_segments(
            rep.claim.segment_root,
            ev.value,
            w.unit.spec.n_segments,
            w.unit.spec.spot_check_segments,
        )
        kind: Literal["spot", "audit"] = "audit" if w.group else "spot"
        chk = _Check(self._new_id(), w.unit.id, rep.id, "", segments, 0.0, kind=kind)
        self.checks[chk.id] = chk
        w.check = chk.id
        self._check_queue[chk.id] = None
        if w.group:
            if not self._checker_online(w, ev.now):
                self._skip_audit(w, chk, out)
                return
            self._start_audit_wait(w, chk, ev.now)

    def _transition_awaiting_beacon_in_progress(self, w: _WU) -> None:
        """A result (or quorum) waiting for its beacon lost a voice (its key was convicted):
        it is judged again from what is left."""
        self._awaiting_beacon.pop(w.unit.id, None)
        self._set_wu(w, "in_progress")
        w.group = ()
        w.required = self.jobs[w.unit.job].quorum

    def _transition_spot_checking_in_progress(
        self, w: _WU, chk: _Check | None, out: list[Instruction]
    ) -> None:
        """A check contradicted the result (or the audited quorum): a dispute. Without a
        check: one of the voices being checked was convicted; it is judged again."""
        if chk is None:
            self._set_wu(w, "in_progress")
            if w.check is not None:
                self._cancel_check(self.checks[w.check], self._now)
                w.check = None
            w.group = ()
            w.required = self.jobs[w.unit.job].quorum
            return
        self._set_wu(w, "in_progress")
        w.check = None
        # A verdict convicts somebody, so it takes far more than the quorum it judges: a
        # panel of established volunteers new to the WU, voting until one answer leads all
        # the others by the margin. A first verdict by q + 1 voices that agree would let
        # colluders who win the race to q + 1 convict an honest checker (about 16% of
        # disputes at f = 0.3, measured); the margin counts every honest voice against them.
        w.required = self.policy.margin(self.jobs[w.unit.job].quorum)
        disputed = self._group(w) if w.group else [self.replicas[chk.replica]]
        for r in disputed:
            self._set_replica(r, "disputed")
        w.disputed, w.group, w.auditor = tuple(r.id for r in disputed), (), chk.volunteer
        w.dispute_from = len(w.replicas)
        w.volunteers |= {chk.volunteer}

    def _transition_to_validated(
        self, w: _WU, claim: Claim, agreeing: list[_Replica], out: list[Instruction]
    ) -> None:
        was = w.state
        if was == "awaiting_beacon":
            self._awaiting_beacon.pop(w.unit.id, None)
        self._set_wu(w, "validated")
        self._ready.pop(w.unit.id, None)
        w.group = ()
        if w.check is not None:
            chk = self.checks[w.check]
            spot = chk.segments if chk.state == "done" and chk.kind == "spot" else ()
            w.check = None
        else:
            spot = ()
        invalid: list[_Replica] = []
        convicts = [r for r in agreeing if self.volunteers[r.volunteer].trust == "banned"]
        if convicts:  # a convict earns nothing more
            convict_ids = {r.id for r in convicts}  # (replica ids are unique: = identity)
            agreeing = [r for r in agreeing if r.id not in convict_ids]
        for r in convicts:
            if r.state in ("returned", "disputed"):
                self._set_replica(r, "invalid")
                out.append(Invalidated(r.volunteer, w.unit, r.id, "the key was convicted"))
        agreeing_ids = {r.id for r in agreeing}
        for rid in w.replicas:
            r = self.replicas[rid]
            if rid in agreeing_ids:
                continue
            if r.state == "returned":
                self._set_replica(r, "invalid")
                invalid.append(r)
        out.append(
            Validated(
                w.unit,
                claim.final_digest,
                tuple((r.id, r.volunteer) for r in agreeing),
                tuple((r.id, r.volunteer) for r in invalid),
                spot_checked=spot,
            )
        )
        vouchers = {r.volunteer for r in agreeing} | ({w.checker} if w.checker else set())
        established = {v for v in vouchers if self.volunteers[v].established}
        w.vouchers = frozenset(established)
        for r in agreeing:
            self._set_replica(r, "valid")
            vol = self.volunteers[r.volunteer]
            vol.credited.append(r.id)
            self._reward(vol)
            if not vol.established and established - {vol.id}:
                vol.proven += 1
                if vol.proven >= self.policy.probation_results and vol.trust == "probation":
                    vol.trust = "established"
                    self._refresh(vol, self._now)
            out.append(GrantCredit(r.volunteer, w.unit, r.id))
        for r in invalid:
            self._penalise(self.volunteers[r.volunteer])
            out.append(Invalidated(r.volunteer, w.unit, r.id, "disagreed with the quorum"))
        self._advance_trajectory(w, claim.final_digest, out)

    def _transition_to_failed(self, w: _WU, reason: str, out: list[Instruction]) -> None:
        self._set_wu(w, "failed")
        self._ready.pop(w.unit.id, None)
        out.append(WUFailed(w.unit, reason))

    def _transition_to_cancelled(self, w: _WU, now: float) -> None:
        """Any undecided WU -> cancelled: out of every queue, its work in flight withdrawn."""
        self._set_wu(w, "cancelled")
        self._ready.pop(w.unit.id, None)
        self._awaiting_beacon.pop(w.unit.id, None)
        w.group = ()
        for rid in w.replicas:
            rep = self.replicas[rid]
            if rep.state in ("assigned", "offered"):
                vol = self.volunteers[rep.volunteer]
                vol.in_flight.discard(rid)
                vol.offers.discard(rid)
                self._set_replica(rep, "cancelled")
                self._refresh(vol, now)
        if w.check is not None:
            self._cancel_check(self.checks[w.check], now)
            w.check = None

    def _transition_assigned_ended(
        self,
        rep: _Replica,
        state: Literal["errored", "timed_out", "lost"],
        now: float,
        out: list[Instruction],
        *,
        blame: bool = True,
    ) -> None:
        """Errors, missed deadlines and lost nodes all cost the key (work it held and did
        not deliver); only errors of established keys count toward ``max_error_results``,
        so throwaway keys cannot fail a WU on purpose."""
        self._set_replica(rep, state)
        vol = self.volunteers[rep.volunteer]
        vol.in_flight.discard(rep.id)
        if blame:
            self._penalise(vol)
        self._refresh(vol, now)
        w = self.wus[rep.wu]
        self._release_class(w)
        if state == "errored":
            self._count_error(w, vol, out)
        else:
            # The volunteer keeps its place in ``w.volunteers``: a replica never returns to it.
            self._want_more(w, out)

    def _release_class(self, w: _WU) -> None:
        """A WU whose every replica ended without a result is nobody's: its class (and its
        draw for going unreplicated) is decided afresh by whoever is drawn next, so one key
        cannot lock a WU into a class by taking it and walking away."""
        if w.state != "in_progress" or w.det_class is None:
            return
        live = ("offered", "assigned", "returned", "valid", "invalid", "disputed")
        if not any(self.replicas[r].state in live for r in w.replicas):
            w.det_class = None
            w.required = self.jobs[w.unit.job].quorum

    def _cancel_check(self, chk: _Check, now: float) -> None:
        self._check_queue.pop(chk.id, None)
        if chk.state in ("assigned", "offered"):
            vol = self.volunteers[chk.volunteer]
            vol.checks.discard(chk.id)
            self._refresh(vol, now)
        if chk.state in ("queued", "offered", "assigned"):
            self._set_check(chk, "cancelled")

    # -- validation ------------------------------------------------------------------------

    def _try_validate(self, w: _WU, now: float, out: list[Instruction]) -> None:
        if w.disputed:
            lead, dissent = self._panel(w)
            if lead and len(lead) - len(dissent) >= w.required:
                claim = lead[0].claim
                assert claim is not None
                self._settle_dispute(w, claim, lead, dissent, now, out)
            else:
                self._want_more(w, out)
            return
        for members in self._groups(w).values():
            if len(members) < w.required or not self._vouched(members):
                continue
            claim = members[0].claim
            assert claim is not None
            if w.required == 1 and self.jobs[w.unit.job].quorum > 1:
                self._transition_wu(w, "awaiting_beacon", None)  # spot-check before credit
            elif self.jobs[w.unit.job].audit_rate > 0:
                # The beacon decides, after the fact, whether a volunteer outside checks.
                self._transition_wu(w, "awaiting_beacon", members)
            else:
                self._transition_wu(w, "validated", claim, members, out)
            return
        self._want_more(w, out)

    def _vouched(self, members: list[_Replica]) -> bool:
        """An agreeing group counts only with an established, unconvicted volunteer in it."""
        return any(self.volunteers[r.volunteer].established for r in members)

    def _panel(self, w: _WU) -> tuple[list[_Replica], list[_Replica]]:
        """A dispute's vote so far: the largest group of agreeing fresh established results
        (ties broken by the claim's bytes, so a replay decides alike), and all the others."""
        groups: dict[tuple[bytes, bytes, bytes, bytes], list[_Replica]] = {}
        for rid in w.replicas[w.dispute_from :]:
            r = self.replicas[rid]
            if r.state == "returned" and r.claim and self.volunteers[r.volunteer].established:
                groups.setdefault(r.claim.agreement, []).append(r)
        if not groups:
            return [], []
        key = max(groups, key=lambda k: (len(groups[k]), k))
        return groups.pop(key), [r for g in groups.values() for r in g]

    def _settle_dispute(
        self,
        w: _WU,
        claim: Claim,
        fresh: list[_Replica],
        dissent: list[_Replica],
        now: float,
        out: list[Instruction],
    ) -> None:
        """The panel decided a disputed WU: the side it contradicts lied. A panel member
        outvoted is not convicted (it may be the honest one in a rare colluding majority):
        its result is invalid and costs its key, as any result outvoted by a quorum."""
        disputed = [self.replicas[r] for r in w.disputed]
        w.disputed = ()
        for r in dissent:
            self._set_replica(r, "invalid")
            out.append(Invalidated(r.volunteer, w.unit, r.id, "outvoted by a dispute's panel"))
            self._penalise(self.volunteers[r.volunteer])
        vindicated = all(
            r.claim is not None and r.claim.agreement == claim.agreement for r in disputed
        )
        evidence = tuple(r.volunteer for r in fresh)
        if vindicated:
            if w.auditor is not None:
                self._convict(w.auditor, w, evidence, "a check it returned contradicts", now, out)
            agreeing = fresh + disputed
        else:
            agreeing = fresh
            for r in disputed:
                self._set_replica(r, "invalid")
                out.append(Invalidated(r.volunteer, w.unit, r.id, "contradicted by a check"))
            for r in disputed:
                self._convict(r.volunteer, w, evidence, "its result contradicts", now, out)
        w.auditor = None
        self._transition_wu(w, "validated", claim, agreeing, out)

    def _check_agrees(self, chk: _Check, w: _WU, claim: Claim, ev: SpotCheckReturned) -> bool:
        if ev.det_class == w.det_class:
            claimed = tuple(claim.boundary_digests[k + 1] for k in chk.segments)
            if ev.end_digests != claimed:
                return False
            if claim.segment_data:  # frames and observables of the checked segments too
                data = tuple(claim.segment_data[k] for k in chk.segments)
                return ev.segment_data == data
            return True
        # compared with the engine's tolerance by the coordinator, which has the states
        return bool(ev.agrees) and w.unit.spec.engine in CROSS_CLASS_ENGINES

    # -- conviction and clawback -----------------------------------------------------------

    def _convict(
        self,
        volunteer: str,
        w: _WU,
        evidence: tuple[str, ...],
        why: str,
        now: float,
        out: list[Instruction],
    ) -> None:
        """Caught faking: banned; every credit revoked; what it vouched for re-checked."""
        vol = self.volunteers[volunteer]
        if vol.trust == "banned":
            return
        vol.trust = "banned"
        vol.streak = 0
        vol.quota = MIN_QUOTA
        reason = f"{why} the validated outcome of WU {w.unit.id.hex()[:16]}"
        out.append(Convicted(volunteer, w.unit.id, evidence, reason))
        for rid in sorted(vol.offers):
            rep = self.replicas[rid]
            vol.offers.discard(rid)
            self._set_replica(rep, "lapsed")
            self._want_more(self.wus[rep.wu], out)
        for cid in sorted(vol.checks):
            self._requeue_check(self.checks[cid], now)
        self._refresh(vol, now)
        credited, vol.credited = vol.credited, []
        for rid in credited:
            rep = self.replicas[rid]
            if rep.state != "valid":
                continue
            self._set_replica(rep, "revoked")
            cw = self.wus[rep.wu]
            out.append(RevokeCredit(volunteer, cw.unit, rid, w.unit.id, evidence, reason))
            if not self._trustworthy(cw) and not cw.retracted:
                self._start_reverify(cw, rep)
        # results (or quorums) of its waiting for a beacon or a check: judged again without it
        for a_wu in list(self.wus.values()):
            if a_wu.state not in ("awaiting_beacon", "spot_checking"):
                continue
            mine = [
                self.replicas[r]
                for r in a_wu.replicas
                if self.replicas[r].volunteer == volunteer and self.replicas[r].state == "returned"
            ]
            if not mine:
                continue
            if a_wu.state == "awaiting_beacon":
                self._transition_wu(a_wu, "in_progress")
            else:
                self._transition_wu(a_wu, "in_progress", None, out)
            for r in mine:
                self._set_replica(r, "invalid")
                out.append(Invalidated(volunteer, a_wu.unit, r.id, "the key was convicted"))
            self._try_validate(a_wu, now, out)
        # disputes it started by its word alone: its word no longer counts
        for d_wu in self.wus.values():
            if d_wu.auditor == volunteer and d_wu.disputed and d_wu.state == "in_progress":
                for rid in d_wu.disputed:
                    self._set_replica(self.replicas[rid], "returned")
                d_wu.disputed, d_wu.auditor = (), None
                d_wu.required = self.jobs[d_wu.unit.job].quorum
                self._try_validate(d_wu, now, out)
        # results it returned that wait for a decision no longer count
        for v_wu in self.wus.values():
            if v_wu.state != "in_progress" or volunteer not in v_wu.volunteers:
                continue
            for rid in v_wu.replicas:
                r = self.replicas[rid]
                if r.volunteer == volunteer and r.state == "returned":
                    self._set_replica(r, "invalid")
                    out.append(Invalidated(volunteer, v_wu.unit, rid, "the key was convicted"))
                    self._want_more(v_wu, out)

    def _trustworthy(self, w: _WU) -> bool:
        """Whether a validated WU still has a voice that was established when it vouched
        (trust earned later does not cover what a key vouched for while on probation) and
        has not been convicted since."""
        return any(self.volunteers[v].trust != "banned" for v in w.vouchers)

    def _start_reverify(self, w: _WU, rep: _Replica) -> None:
        """Recompute every segment of a WU whose only trustworthy voice was a convict's."""
        if w.reverify is not None or self.jobs[w.unit.job].cancelled:
            return
        segments = tuple(range(w.unit.spec.n_segments))
        chk = _Check(self._new_id(), w.unit.id, rep.id, "", segments, 0.0, kind="reverify")
        self.checks[chk.id] = chk
        w.reverify = chk.id
        self._check_queue[chk.id] = None

    def _retract(self, w: _WU, checker: str, now: float, out: list[Instruction]) -> None:
        """A validated WU was a fake: everyone who vouched for it is convicted, its data and
        its trajectory's later generations are withdrawn from the lab, and the generation
        is computed again from its (validated) input."""
        w.retracted = True
        out.append(Retracted(w.unit, "a full recomputation contradicts it"))
        for rid in w.replicas:
            r = self.replicas[rid]
            if r.state in ("valid", "revoked"):
                self._convict(r.volunteer, w, (checker,), "it vouched for a fake;", now, out)
        traj = TrajectoryKey(w.unit.job, w.unit.run, w.unit.clone)
        job = self.jobs[w.unit.job]
        newest = self.wus[self._trajectory[traj]]
        for later in self.wus.values():
            if (
                later.unit.job == w.unit.job
                and (later.unit.run, later.unit.clone) == (w.unit.run, w.unit.clone)
                and later.unit.gen > w.unit.gen
                and later is not w
            ):
                if later.state == "validated" and not later.retracted:
                    later.retracted = True
                    out.append(Retracted(later.unit, "it descends from a retracted generation"))
                elif later.state in _UNDECIDED:
                    later.retracted = True
                    self._transition_wu(later, "cancelled", now)
        if newest.state == "validated" and newest.unit.gen + 1 >= newest.unit.spec.gens:
            job.remaining += 1  # the trajectory is no longer through all its generations
        self.seeding.pop(traj, None)
        self._create_wu(traj, w.unit.gen, w.unit.input_digest, attempt=w.unit.attempt + 1)
        self.wus[self._trajectory[traj]].parent = w.parent
        if w.unit.spec.adaptive != "none":
            self._retract_descendants(w, now, out)

    def _retract_descendants(self, w: _WU, now: float, out: list[Instruction]) -> None:
        """An adaptive job's generations that started from a retracted WU's states (or from
        their descendants', in any trajectory) are withdrawn too, and their trajectories
        choose a new start among what is still validated."""
        gone = {x.unit.id for x in self.wus.values() if x.unit.job == w.unit.job and x.retracted}
        while True:
            tainted = [
                x
                for x in self.wus.values()
                if x.unit.job == w.unit.job
                and x.parent is not None
                and x.parent[0] in gone
                and not x.retracted
            ]
            if not tainted:
                return
            for x in tainted:
                if x.retracted:  # rolled back with an earlier one of its trajectory
                    continue
                traj = TrajectoryKey(x.unit.job, x.unit.run, x.unit.clone)
                newest = self.wus[self._trajectory[traj]]
                if newest.state == "validated" and newest.unit.gen + 1 >= newest.unit.spec.gens:
                    self.jobs[x.unit.job].remaining += 1
                for later in self.wus.values():
                    if (
                        later.unit.job == x.unit.job
                        and (later.unit.run, later.unit.clone) == (x.unit.run, x.unit.clone)
                        and later.unit.gen >= x.unit.gen
                        and not later.retracted
                    ):
                        later.retracted = True
                        gone.add(later.unit.id)
                        if later.state == "validated":
                            out.append(Retracted(later.unit, "it started from a retracted state"))
                        elif later.state in _UNDECIDED:
                            self._transition_wu(later, "cancelled", now)
                self.seeding[traj] = x.unit.gen
                out.append(ChooseSeed(x.unit.job, x.unit.run, x.unit.clone, x.unit.gen))

    # -- helpers ---------------------------------------------------------------------------

    def _create_wu(
        self, traj: TrajectoryKey, gen: int, input_digest: bytes, *, attempt: int = 0
    ) -> None:
        job = self.jobs[traj.job]
        params = attempt_params(job.params, attempt)
        ident = wu_id(traj.job, traj.run, traj.clone, gen, input_digest, params)
        seed = seed_from_id(ident)
        unit = WorkUnit(
            ident, traj.job, traj.run, traj.clone, gen, input_digest, seed, job.spec, attempt
        )
        self.wus[ident] = _WU(unit, required=job.quorum)
        self._trajectory[traj] = ident
        self._ready.add(ident, established=False)

    def _advance_trajectory(self, w: _WU, final: bytes, out: list[Instruction]) -> None:
        u = w.unit
        job = self.jobs[u.job]
        if u.gen + 1 < u.spec.gens:
            traj = TrajectoryKey(u.job, u.run, u.clone)
            if u.spec.adaptive != "none":
                self.seeding[traj] = u.gen + 1
                out.append(ChooseSeed(u.job, u.run, u.clone, u.gen + 1))
                return
            self._create_wu(traj, u.gen + 1, final)
            return
        job.remaining -= 1
        if job.remaining == 0:
            out.append(JobCompleted(u.job))

    def _cross_class_ok(self, w: _WU, now: float) -> bool:
        """Whether a check of ``w`` may go to another determinism class: only for engines
        whose segments can be compared with a tolerance, and only when no volunteer of
        ``w``'s own class who may check it is online (a bit-for-bit check is cheaper and
        stricter, so it is preferred)."""
        if w.unit.spec.engine not in CROSS_CLASS_ENGINES:
            return False
        return not self._checker_online(w, now, same_class=True)

    def _checker_online(self, w: _WU, now: float, *, same_class: bool = False) -> bool:
        """Whether an established volunteer who may check ``w`` asked for work lately: of
        ``w``'s class, or (engines compared with a tolerance, unless ``same_class``) of any."""
        assert w.det_class is not None
        any_class = w.unit.spec.engine in CROSS_CLASS_ENGINES and not same_class
        claimants = self._claimants(w)
        horizon = w.unit.spec.deadline_s + SEEN_GRAIN_S
        engine = w.unit.spec.engine
        return any(
            v.established
            and now - v.seen <= horizon
            and v.id not in claimants
            and not (w.group and v.id in w.volunteers)
            and (cls := v.class_for(engine)) is not None
            and (any_class or cls == w.det_class)
            for v in self.volunteers.values()
        )

    def _claimants(self, w: _WU) -> set[str]:
        """Volunteers who returned a result for ``w``: none of them may check it."""
        return {
            r.volunteer
            for r in (self.replicas[i] for i in w.replicas)
            if r.state in ("returned", "valid", "invalid", "disputed", "revoked")
        }

    def _unreplicated(self, w: _WU) -> _Replica:
        return next(
            self.replicas[r] for r in reversed(w.replicas) if self.replicas[r].state == "returned"
        )

    def _group(self, w: _WU) -> list[_Replica]:
        return [self.replicas[r] for r in w.group]

    def _outstanding(self, w: _WU) -> int:
        return sum(1 for r in w.replicas if self.replicas[r].state in ("assigned", "offered"))

    def _groups(self, w: _WU) -> dict[tuple[bytes, bytes, bytes, bytes], list[_Replica]]:
        groups: dict[tuple[bytes, bytes, bytes, bytes], list[_Replica]] = {}
        for rid in w.replicas:
            r = self.replicas[rid]
            if r.state == "returned" and r.claim is not None:
                groups.setdefault(r.claim.agreement, []).append(r)
        return groups

    def _want_more(self, w: _WU, out: list[Instruction]) -> None:
        """Put ``w`` in the ready queue if it needs another replica, or fail it. A quorum
        counts only with an established volunteer in it, so a WU whose live replicas are
        all on probation needs one more (drawn among established volunteers)."""
        if w.state not in ("unsent", "in_progress"):
            return
        # one pass over the replicas for what follows (and for _needs_established's answer)
        out_reps: list[_Replica] = []
        returned: list[_Replica] = []
        replicas = self.replicas
        for rid in w.replicas:
            r = replicas[rid]
            if r.state in ("assigned", "offered"):
                out_reps.append(r)
            elif r.state == "returned":
                returned.append(r)
        outstanding = len(out_reps)
        if w.disputed:
            lead, dissent = self._panel(w)
            if w.required - (len(lead) - len(dissent)) - outstanding <= 0:
                self._ready.pop(w.unit.id, None)
                return
            panel = len(w.replicas) - w.dispute_from
            if panel >= DISPUTE_BUDGET * w.required:  # nobody won: nobody is convicted
                self._ready.pop(w.unit.id, None)
                if outstanding == 0:
                    why = f"dispute unresolved after {panel} fresh results"
                    self._transition_wu(w, "failed", why, out)
                return
            self._ready.add(w.unit.id, established=True)
            return
        by_claim: dict[tuple[bytes, bytes, bytes, bytes], list[_Replica]] = {}
        for r in returned:  # (as _groups)
            if r.claim is not None:
                by_claim.setdefault(r.claim.agreement, []).append(r)
        groups = list(by_claim.values())
        best_any = max((len(g) for g in groups), default=0)
        # a replica in flight from an established volunteer may vouch for any group it joins;
        # otherwise only groups that already have an established member count
        volunteers = self.volunteers
        established_out = any(volunteers[r.volunteer].established for r in out_reps)
        if established_out:
            best = best_any
        else:
            best = max(
                (
                    len(g)
                    for g in groups
                    if any(volunteers[r.volunteer].established for r in g)  # (_vouched)
                ),
                default=0,
            )
        if w.required - best - outstanding <= 0:
            self._ready.pop(w.unit.id, None)  # enough replicas in flight to reach a quorum
            return
        # Only established keys' results use up max_total_results: throwaway keys returning
        # garbage must not be able to fail a WU (as their errors cannot either).
        results = 0
        for rid in w.replicas:
            r = replicas[rid]
            if r.state in ("returned", "invalid", "valid") and volunteers[r.volunteer].established:
                results += 1
        if results + outstanding >= w.unit.spec.max_total_results:
            self._ready.pop(w.unit.id, None)
            if outstanding == 0:
                self._transition_wu(w, "failed", f"no quorum among {results} results", out)
            return
        # _needs_established(w), from what was gathered above
        needs = (
            not established_out
            and not any(volunteers[r.volunteer].established for r in returned)
            and best_any + outstanding + 1 >= w.required
        )
        self._ready.add(w.unit.id, established=needs)

    def _count_error(self, w: _WU, vol: _Volunteer, out: list[Instruction]) -> None:
        if vol.established:
            w.errors += 1
        if w.errors >= w.unit.spec.max_error_results and w.state in ("unsent", "in_progress"):
            self._transition_wu(w, "failed", f"{w.errors} error results", out)
        else:
            self._want_more(w, out)

    def _requeue_check(self, chk: _Check, now: float) -> None:
        """A check its volunteer did not take (offer lapsed) or did not finish: queued
        afresh. An audit's wait restarts only when an auditor had taken it and vanished."""
        taken = chk.state == "assigned"
        vol = self.volunteers[chk.volunteer]
        vol.checks.discard(chk.id)
        self._refresh(vol, now)
        self._set_check(chk, "lost")
        replacement = _Check(
            self._new_id(), chk.wu, chk.replica, "", chk.segments, 0.0, kind=chk.kind
        )
        self.checks[replacement.id] = replacement
        w = self.wus[chk.wu]
        if chk.kind == "reverify":
            w.reverify = replacement.id
        else:
            w.check = replacement.id
        self._check_queue[replacement.id] = None
        if chk.kind == "audit":
            if taken:
                self._start_audit_wait(w, replacement, now)
            else:
                for ident, cid in self._audit_waits.items():
                    if cid == chk.id:
                        self._audit_waits[ident] = replacement.id

    def _start_audit_wait(self, w: _WU, chk: _Check, now: float) -> None:
        """An audit needs a volunteer outside the quorum; if none takes it within the WU's
        deadline, the quorum stands without its audit (liveness over the extra sample: a
        network of two volunteers must still make progress)."""
        ident = self._new_id()
        self._audit_waits[ident] = chk.id
        heapq.heappush(self._deadlines, (now + w.unit.spec.deadline_s, "audit", ident))

    def _skip_audit(self, w: _WU, chk: _Check, out: list[Instruction]) -> None:
        if chk.state == "offered":
            vol = self.volunteers[chk.volunteer]
            vol.checks.discard(chk.id)
            self._set_check(chk, "cancelled")
            self._refresh(vol, vol.seen)
        else:
            del self._check_queue[chk.id]
            self._set_check(chk, "skipped")
        w.check = None
        group = self._group(w)
        claim = group[0].claim
        assert claim is not None
        self._transition_wu(w, "validated", claim, group, out)

    def _reward(self, v: _Volunteer) -> None:
        v.streak += 1
        v.quota = min(MAX_QUOTA, v.quota + 1)
        self._refresh(v, self._now)

    def _penalise(self, v: _Volunteer) -> None:
        v.streak = 0
        v.quota = max(MIN_QUOTA, v.quota // 2)
        self._refresh(v, self._now)

    def _volunteer(self, volunteer: str) -> _Volunteer:
        v = self.volunteers.get(volunteer)
        if v is None:
            v = self.volunteers[volunteer] = _Volunteer(volunteer)
        return v

    @staticmethod
    def _matches(w: _WU, engine: str) -> bool:
        """Whether ``w`` runs the engine a request asks for (any, if it names none)."""
        return not engine or w.unit.spec.engine == engine

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

    # -- invariants (checked by the test fixture after every event) -------------------------

    def validate_state(self) -> None:
        assert not set(self.pending) & set(self.jobs), "a job both prepared and pending"
        for key, w in self.wus.items():
            assert w.unit.id == key
            vols = [
                self.replicas[r].volunteer
                for r in w.replicas
                if self.replicas[r].state not in ("lapsed", "cancelled")
            ]
            assert len(vols) == len(set(vols)), f"two replicas of one WU on one volunteer: {vols}"
            assert set(vols) <= w.volunteers
            for rid in w.replicas:
                r = self.replicas[rid]
                if r.state == "assigned":
                    assert rid in self.volunteers[r.volunteer].in_flight
                if r.state == "offered":
                    assert rid in self.volunteers[r.volunteer].offers
                if r.state == "valid":
                    assert w.state == "validated", "credit-worthy replica of an undecided WU"
                    assert self.volunteers[r.volunteer].trust != "banned", "a convict's credit"
            if key in self._ready:
                assert w.state in ("unsent", "in_progress"), f"ready WU in state {w.state}"
            if w.state == "validated" and not w.retracted:
                valid = [
                    self.replicas[r]
                    for r in w.replicas
                    if self.replicas[r].state in ("valid", "revoked")
                ]
                assert valid, "a validated WU without an agreeing result"
                assert (
                    w.reverify is not None
                    or self._trustworthy(w)
                    or self.jobs[w.unit.job].cancelled
                ), "a validated WU nobody established vouches for"
            if w.state == "cancelled":
                assert self.jobs[w.unit.job].cancelled or w.retracted, (
                    "a cancelled WU of a live job"
                )
                assert key not in self._ready and key not in self._awaiting_beacon
                assert all(
                    self.replicas[r].state not in ("assigned", "offered") for r in w.replicas
                )
                assert w.check is None
            if self.jobs[w.unit.job].cancelled:
                assert w.state in ("validated", "failed", "cancelled"), (
                    f"WU of a cancelled job in state {w.state}"
                )
        for cid in self._check_queue:
            chk = self.checks[cid]
            w = self.wus[chk.wu]
            assert chk.volunteer == "" and chk.state == "queued"
            if chk.kind == "reverify":
                assert w.reverify == cid and w.state == "validated"
            else:
                assert w.check == cid and w.state == "spot_checking"
        for w in self.wus.values():
            if w.group:
                assert w.state in ("awaiting_beacon", "spot_checking"), f"audit group in {w.state}"
                if w.state == "spot_checking" and w.check in self._check_queue:
                    assert w.check in self._audit_waits.values(), "an audit nobody times out"
        for v in self.volunteers.values():
            for rid in v.in_flight:
                assert self.replicas[rid].state == "assigned"
                assert self.replicas[rid].volunteer == v.id
            for rid in v.offers:
                assert self.replicas[rid].state == "offered"
            for cid in v.checks:
                assert self.checks[cid].state in ("offered", "assigned")
                assert self.checks[cid].volunteer == v.id
            assert MIN_QUOTA <= v.quota <= MAX_QUOTA
            assert len(v.class_history) <= self.policy.max_classes_per_volunteer
            if v.trust == "banned":
                assert v.id not in self._free and not v.credited and not v.offers
        assert self._free.consistent() and self._free_est.consistent()
        for vid in self._free_est:
            assert vid in self._free and self.volunteers[vid].established
        for vid in self._free:
            assert self.volunteers[vid].capacity() > 0

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
    if claim.segment_data and len(claim.segment_data) != w.unit.spec.n_segments:
        return f"{len(claim.segment_data)} segment digests, expected {w.unit.spec.n_segments}"
    return ""


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while building state that all lives on (the collector
    would walk it again every 700 allocations, and all of it at every full collection);
    handling events makes no reference cycles, so nothing is left for it to find after."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def replay(
    events: Iterable[Event], policy: NetworkPolicy | None = None
) -> tuple[Scheduler, list[Instruction]]:
    """Rebuild a scheduler from its event log (what a restarted coordinator does): the
    state and every instruction are kept, so the collector is paused while it runs."""
    s = Scheduler(policy)
    out: list[Instruction] = []
    with collector_paused():
        for ev in events:
            out.extend(s.handle(ev))
    return s, out
