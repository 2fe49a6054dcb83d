"""The scheduler under attack, as a hypothesis state machine (issue 9).

A :class:`~hypothesis.stateful.RuleBasedStateMachine` drives :class:`Scheduler` with the
volunteers docs/architecture.md §1 guards against, next to honest ones:

* ``op-*``: the operator's machines (:class:`VolunteerTrusted`), always honest;
* ``hon-*``: honest keys that start on probation; ``flaky-*``: honest keys that error,
  miss deadlines and vanish;
* ``fake-*``: colluders who build a reputation honestly and then, when it suits them,
  return one shared lie (invented boundary states), invented frames on real states
  (the copier ``copy-*`` does only that), or garbage, and vouch for each other's lies as
  checkers; ``liar-*``: computes honestly, lies as a checker;
* ``sybil-<n>``: a fresh key for every identity, colluding with the fakers.

Events are only those the protocol allows; the few rules that send refused ones (late
results, results under another key, checks that are not theirs) check that a refusal
raises :class:`ProtocolError` and leaves the state exactly as it was, and refused events
never enter the log. After every step: :meth:`Scheduler.validate_state` and the invariants
of :class:`SchedulerMachine` (``@invariant``); at the end, replay of the log reproduces every
instruction and the state, and (liveness) with the attackers gone and the operator's
machines computing, every job that was not cancelled completes within a bounded number of
rounds.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from coordinator.errors import ProtocolError
from coordinator.jobs import JobSpec
from coordinator.scheduler import (
    Abandoned,
    BeaconPublished,
    Claim,
    Convicted,
    Dispatch,
    DispatchSpotCheck,
    Event,
    GrantCredit,
    Instruction,
    JobCancelled,
    JobCompleted,
    JobSubmitted,
    NetworkPolicy,
    NodeLost,
    ReplicaFailed,
    ResultReturned,
    Retracted,
    RevokeCredit,
    Scheduler,
    SpotCheckReturned,
    Tick,
    Validated,
    VolunteerTrusted,
    WorkRequested,
    WUFailed,
    replay,
)

X86, ARM = "go-x86", "go-arm"
CLASSES = (X86, ARM)
POLICY = NetworkPolicy(min_quorum=2, min_audit_rate=0.3, probation_results=2)

#: name -> (kind, the classes it may compute in)
OPERATORS = {"op-0": X86, "op-1": X86, "op-2": ARM, "op-3": ARM}
VOLUNTEERS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{name: ("operator", (cls,)) for name, cls in OPERATORS.items()},
    "hon-0": ("honest", (X86,)),
    "hon-1": ("honest", (ARM,)),
    "flaky-0": ("flaky", (X86,)),
    "fake-0": ("faker", CLASSES),
    "fake-1": ("faker", CLASSES),
    "copy-0": ("copier", (X86,)),
    "liar-0": ("liar", (X86,)),
}
HONEST_KINDS = frozenset({"operator", "honest", "flaky"})
NAMES = sorted(VOLUNTEERS)
#: How many rounds of honest work the liveness check at the end allows.
LIVENESS_ROUNDS = 150
ROUND_S = 20.0
#: Rounds without a single instruction after which the network is taken to be stuck (longer
#: than any deadline or offer).
IDLE_ROUNDS = 12


def h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def kind_of(volunteer: str) -> str:
    if volunteer.startswith("final-"):
        return "operator"
    return "sybil" if volunteer.startswith("sybil-") else VOLUNTEERS[volunteer][0]


def is_honest(volunteer: str) -> bool:
    return kind_of(volunteer) in HONEST_KINDS


# -- what a worker computes: honest physics is a function of the WU and the start state ------


def step(wu: bytes, k: int, start: bytes) -> bytes:
    """The state at the end of segment ``k`` computed honestly from ``start``."""
    return h("step", wu, k, start)


def seg_data(wu: bytes, k: int, start: bytes) -> bytes:
    """The frames and observables of segment ``k`` computed honestly from ``start``."""
    return h("data", wu, k, start)


def make_claim(
    bounds: tuple[bytes, ...], data: tuple[bytes, ...], det_class: str, *, frames_tag: str = ""
) -> Claim:
    # (the coordinator checks frames_digest and segment_data against the same arrays, so
    # they always go together)
    return Claim(
        bounds[-1],
        h("root", bounds),
        bounds,
        det_class,
        frames_digest=h("frames", frames_tag, data),
        observables_digest=h("obs", frames_tag, data),
        segment_data=data,
    )


def honest_claim(d: Dispatch, det_class: str) -> Claim:
    wu = d.wu
    bounds = [wu.input_digest]
    data = []
    for k in range(wu.spec.n_segments):
        data.append(seg_data(wu.id, k, bounds[-1]))
        bounds.append(step(wu.id, k, bounds[-1]))
    return make_claim(tuple(bounds), tuple(data), det_class)


def dishonest_claim(d: Dispatch, det_class: str, how: str) -> Claim:
    """What a cheater returns: ``lie`` (invented states, the colluders' shared lie),
    ``lazy`` (the input state repeated), ``frames`` (real states, invented frames: a copier
    who took another key's states) or ``garbage`` (fails verification)."""
    wu = d.wu
    n = wu.spec.n_segments
    if how == "garbage":
        return Claim(h("x"), h("y"), (h("z"),) * (n + 1), det_class, sane=False, problem="bad")
    if how == "frames":
        good = honest_claim(d, det_class)
        data = tuple(h("invented", wu.id, k) for k in range(n))
        return make_claim(good.boundary_digests, data, det_class, frames_tag="invented")
    if how == "lazy":
        bounds = (wu.input_digest,) * (n + 1)
    else:
        bounds = (wu.input_digest, *(h("lie", wu.id, k) for k in range(1, n + 1)))
    data = tuple(h("lie-data", wu.id, k) for k in range(n))
    return make_claim(bounds, data, det_class)


def spec(**kw: Any) -> JobSpec:
    base: dict[str, Any] = dict(
        engine="go", system_digest=h("villin"), runs=1, clones=1, gens=1, steps_per_wu=1000,
        segment_steps=250, report_steps=250, temperature=0.7, audit_rate=0.0, deadline_s=100.0,
    )  # fmt: skip
    return JobSpec(**(base | kw))


def snapshot(s: Scheduler) -> dict[str, Any]:
    """A deep copy of the scheduler's state, to compare with ``==``."""
    state = {k: v for k, v in vars(s).items() if k != "changed"}
    snap: dict[str, Any] = pickle.loads(pickle.dumps(state))
    return snap


CHEATS = st.sampled_from(["honest", "lie", "smart", "lazy", "frames", "garbage"])


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = Scheduler(POLICY)
        self.events: list[Event] = []  # every event the scheduler accepted
        self.logged: list[Event] = []  # what the coordinator logs: events that changed something
        self.log: list[Instruction] = []
        self.now = 0.0
        self.tasks: dict[int, Dispatch] = {}  # replicas handed out, not yet answered
        self.stale: dict[int, Dispatch] = {}  # handed out, then withdrawn by the scheduler
        self.checks: dict[int, DispatchSpotCheck] = {}
        self.claims: dict[int, Claim] = {}  # replica -> what its volunteer returned
        self.honest_agreement: dict[bytes, tuple[bytes, ...]] = {}  # WU -> the true claim
        self.jobs: dict[str, bool] = {}  # job -> cancelled
        self.completed: set[str] = set()
        self.validated_pairs: set[tuple[int, str]] = set()
        self.granted: dict[int, str] = {}
        self.revoked: set[int] = set()
        self.convicted: set[str] = set()
        self.ever_established: set[str] = set()
        self.trusted: set[str] = set()
        self.vouchers: dict[bytes, set[str]] = {}  # validated WU -> established voices
        self.retracted: set[bytes] = set()
        self.wu_job: dict[bytes, str] = {}
        self.sybils = 0
        self.beacons = 0

    # -- plumbing -------------------------------------------------------------------------

    def send(self, ev: Event, *, may_refuse: bool = False) -> list[Instruction] | None:
        """Feed one event; a refused one must leave the state as it was and is not logged."""
        before = snapshot(self.s) if may_refuse else None
        trust = {v: x.trust for v, x in self.s.volunteers.items()}
        try:
            out = self.s.handle(ev)
        except ProtocolError:
            assert may_refuse, f"refused a legal event {ev!r}"
            assert snapshot(self.s) == before, f"a refused {type(ev).__name__} changed the state"
            return None
        self.events.append(ev)
        if self.s.changed:
            self.logged.append(ev)
        else:
            assert out == [], "an event that changed nothing gave instructions"
        self.log.extend(out)
        self.absorb(ev, out, trust)
        return out

    def absorb(self, ev: Event, out: list[Instruction], trust: dict[str, str]) -> None:
        convicted_now = {i.volunteer for i in out if isinstance(i, Convicted)}
        checker = None
        if isinstance(ev, SpotCheckReturned):
            checker = ev.volunteer
        for ins in out:
            match ins:
                case Dispatch():
                    assert self.s.volunteers[ins.volunteer].trust != "banned"
                    assert not self.jobs[ins.wu.job], "work of a cancelled job handed out"
                    self.tasks[ins.replica] = ins
                    self.wu_job[ins.wu.id] = ins.wu.job
                case DispatchSpotCheck():
                    assert trust.get(ins.volunteer) == "established" or (
                        self.s.volunteers[ins.volunteer].trust == "established"
                    ), "a check went to a key on probation"
                    assert not self.jobs[ins.wu.job], "a check of a cancelled job handed out"
                    self.checks[ins.check] = ins
                case Validated():
                    assert not self.jobs[ins.wu.job], "a WU of a cancelled job validated"
                    voices = {v for _, v in ins.valid}
                    if checker is not None and ins.spot_checked:
                        voices.add(checker)
                    elif checker is not None and ins.wu.id == self.s.checks[ev.check].wu:
                        voices.add(checker)  # an audit that confirmed a quorum
                    established = {
                        v
                        for v in voices
                        if trust.get(v) == "established" and v not in convicted_now
                    }
                    assert established, (
                        f"WU validated by {sorted(voices)}, none of them established"
                    )
                    truth = self.honest_agreement.get(ins.wu.id)
                    fakes = [
                        (rid, v) for rid, v in ins.valid if self.claims[rid].agreement != truth
                    ]
                    if fakes:
                        # (a fresh key's fake included: it needs an established accomplice)
                        assert any(not is_honest(v) for v in established), (
                            f"fakes {fakes} validated with no established cheater among "
                            f"the voices {sorted(voices)}"
                        )
                    self.vouchers[ins.wu.id] = established
                    self.retracted.discard(ins.wu.id)
                    for rid, v in ins.valid:
                        self.validated_pairs.add((rid, v))
                case GrantCredit():
                    assert (ins.replica, ins.volunteer) in self.validated_pairs, (
                        "credit without a validation"
                    )
                    assert ins.replica not in self.granted, "credit granted twice"
                    self.granted[ins.replica] = ins.volunteer
                case RevokeCredit():
                    assert self.granted.get(ins.replica) == ins.volunteer, "revoked, never granted"
                    assert ins.replica not in self.revoked, "credit revoked twice"
                    assert not is_honest(ins.volunteer), f"honest {ins.volunteer} lost credit"
                    self.revoked.add(ins.replica)
                case Convicted():
                    assert not is_honest(ins.volunteer), f"honest {ins.volunteer} convicted"
                    assert ins.volunteer not in self.convicted, "convicted twice"
                    self.convicted.add(ins.volunteer)
                case Retracted():
                    self.retracted.add(ins.wu.id)
                case JobCompleted():
                    self.completed.add(ins.job)
                case WUFailed():
                    pass
                case _:
                    pass
        # a re-verification that confirmed a WU: its checker vouches for it now
        if isinstance(ev, SpotCheckReturned) and not any(isinstance(i, Retracted) for i in out):
            chk = self.s.checks[ev.check]
            if chk.kind == "reverify" and trust.get(ev.volunteer) == "established":
                self.vouchers.setdefault(chk.wu, set()).add(ev.volunteer)
        for v, x in self.s.volunteers.items():
            if x.trust == "established":
                self.ever_established.add(v)
        self._prune()

    def _prune(self) -> None:
        for rid in [r for r, d in self.tasks.items() if self.s.replicas[r].state != "assigned"]:
            self.stale[rid] = self.tasks.pop(rid)
        for cid in [c for c in self.checks if self.s.checks[c].state != "assigned"]:
            del self.checks[cid]

    def classes_used(self, volunteer: str) -> list[str]:
        v = self.s.volunteers.get(volunteer)
        return [] if v is None else v.class_history

    def class_of(self, volunteer: str, pick: int = 0) -> str:
        if volunteer.startswith("final-"):
            return X86 if "x86" in volunteer else ARM
        if volunteer.startswith("sybil-"):
            return CLASSES[pick % 2]
        classes = VOLUNTEERS[volunteer][1]
        return classes[pick % len(classes)]

    def request(self, volunteer: str, slots: int, pick: int = 0) -> list[Instruction]:
        cls = self.class_of(volunteer, pick)
        may_refuse = len(self.classes_used(volunteer)) >= POLICY.max_classes_per_volunteer
        return (
            self.send(WorkRequested(volunteer, cls, slots, self.now), may_refuse=may_refuse) or []
        )

    def compute(self, d: Dispatch, how: str) -> None:
        vol = d.volunteer
        kind = kind_of(vol)
        cls = self.s.wus[d.wu.id].det_class or self.class_of(vol)
        truth = honest_claim(d, cls)
        self.honest_agreement[d.wu.id] = truth.agreement
        if how == "smart":  # lie only when every other voice on this WU is a colluder
            w = self.s.wus[d.wu.id]
            how = "lie" if all(not is_honest(v) for v in w.volunteers) else "honest"
        if kind in HONEST_KINDS or kind == "liar" or how == "honest":
            claim = truth
        elif kind == "copier":
            claim = dishonest_claim(d, cls, "frames")
        else:
            claim = dishonest_claim(d, cls, how)
        self.claims[d.replica] = claim
        self.send(ResultReturned(d.replica, vol, claim, self.now))

    def check(self, d: DispatchSpotCheck, lie: bool) -> None:
        vol = d.volunteer
        chk = self.s.checks[d.check]
        w = self.s.wus[d.wu.id]
        claim = self.claims[chk.replica]
        my_class = self.s.volunteers[vol].class_for(d.wu.spec.engine) or X86
        honest_ends = tuple(
            step(d.wu.id, k, start) for k, start in zip(d.segments, d.start_digests, strict=True)
        )
        honest_data = tuple(
            seg_data(d.wu.id, k, start)
            for k, start in zip(d.segments, d.start_digests, strict=True)
        )
        claimed_ends = tuple(claim.boundary_digests[k + 1] for k in d.segments)
        claimed_data = tuple(claim.segment_data[k] for k in d.segments)
        truthful = claimed_ends == honest_ends and claimed_data == honest_data
        kind = kind_of(vol)
        if is_honest(vol) or not lie:
            ends, data, agrees = honest_ends, honest_data, truthful
        elif kind == "liar":  # contradicts whatever it checks
            ends, data, agrees = tuple(h("lie", e) for e in honest_ends), honest_data, False
        elif self.honest_agreement.get(d.wu.id) != claim.agreement:  # a colluder's lie: confirm
            ends, data, agrees = claimed_ends, claimed_data, True
        else:  # an honest result: contradict it
            ends, data, agrees = tuple(h("lie", e) for e in honest_ends), honest_data, False
        if my_class == w.det_class:
            self.send(SpotCheckReturned(d.check, vol, ends, my_class, self.now, None, data))
        else:
            self.send(SpotCheckReturned(d.check, vol, ends, my_class, self.now, agrees, data))

    # -- rules ----------------------------------------------------------------------------

    @initialize()
    def operators(self) -> None:
        for op in ("op-0", "op-2"):
            self.trusted.add(op)
            self.send(VolunteerTrusted(op, self.now))

    @precondition(lambda self: len(self.jobs) < 4)
    @rule(
        engine=st.sampled_from(["go", "go", "openmm"]),
        runs=st.integers(1, 2),
        clones=st.integers(1, 2),
        gens=st.integers(1, 3),
        quorum=st.sampled_from([1, 2, 3]),
        audit=st.sampled_from([0.0, 0.5, 1.0]),
    )
    def submit(self, engine: str, runs: int, clones: int, gens: int, quorum: int, audit: float):
        job = f"job-{len(self.jobs)}"
        js = spec(
            engine=engine, runs=runs, clones=clones, gens=gens, min_quorum=quorum,
            audit_rate=audit, max_total_results=max(6, quorum),
        )  # fmt: skip
        self.jobs[job] = False
        self.send(JobSubmitted(job, js, tuple(h(job, r) for r in range(runs))))

    @precondition(lambda self: self.jobs)
    @rule(n=st.integers(0, 3))
    def cancel(self, n: int) -> None:
        job = sorted(self.jobs)[n % len(self.jobs)]
        self.send(JobCancelled(job, self.now))
        self.jobs[job] = True

    @rule(op=st.sampled_from(sorted(OPERATORS)))
    def trust(self, op: str) -> None:
        self.trusted.add(op)
        self.send(VolunteerTrusted(op, self.now))

    @rule(vol=st.sampled_from(NAMES), slots=st.integers(1, 4), pick=st.integers(0, 2))
    def ask(self, vol: str, slots: int, pick: int) -> None:
        self.request(vol, slots, pick)

    @rule(vol=st.sampled_from(NAMES), how=CHEATS, lie=st.booleans(), pick=st.integers(0, 2))
    def work(self, vol: str, how: str, lie: bool, pick: int) -> None:
        """The volunteer asks for work and answers everything it holds."""
        self.request(vol, 4, pick)
        for d in [d for d in self.checks.values() if d.volunteer == vol]:
            if d.check in self.checks:
                self.check(d, lie)
        for d in [d for d in self.tasks.values() if d.volunteer == vol]:
            if d.replica in self.tasks:
                self.compute(d, how)

    @rule(
        members=st.frozensets(st.sampled_from(NAMES), min_size=1),
        how=CHEATS,
        lie=st.booleans(),
    )
    def round(self, members: frozenset[str], how: str, lie: bool) -> None:
        """Some volunteers each ask for work and answer everything they hold (attackers their
        way, ``how``; checkers who lie do so if ``lie``)."""
        for vol in sorted(members):
            self.work(vol, how, lie, 0)

    @rule(how=CHEATS, pick=st.integers(0, 2))
    def sybil(self, how: str, pick: int) -> None:
        """A fresh key joins, computes what it is given (its way), and never comes back."""
        self.sybils += 1
        vol = f"sybil-{self.sybils}"
        self.request(vol, 4, pick)
        for d in [d for d in self.tasks.values() if d.volunteer == vol]:
            if d.replica in self.tasks:
                self.compute(d, "lie" if how == "honest" else how)

    @precondition(lambda self: self.tasks)
    @rule(n=st.integers(0, 50), how=CHEATS)
    def result(self, n: int, how: str) -> None:
        d = sorted(self.tasks.values(), key=lambda d: d.replica)[n % len(self.tasks)]
        self.compute(d, how)

    @precondition(lambda self: self.tasks)
    @rule(n=st.integers(0, 50))
    def error(self, n: int) -> None:
        d = sorted(self.tasks.values(), key=lambda d: d.replica)[n % len(self.tasks)]
        self.send(ReplicaFailed(d.replica, d.volunteer, "crashed", self.now))

    @precondition(lambda self: self.checks)
    @rule(n=st.integers(0, 50), lie=st.booleans())
    def spot_check(self, n: int, lie: bool) -> None:
        d = sorted(self.checks.values(), key=lambda d: d.check)[n % len(self.checks)]
        self.check(d, lie)

    @rule(vol=st.sampled_from(NAMES))
    def vanish(self, vol: str) -> None:
        self.send(NodeLost(vol, self.now))

    @rule(dt=st.sampled_from([1.0, 31.0, 61.0, 101.0, 250.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.send(Tick(self.now))

    @rule()
    def beacon(self) -> None:
        self.beacons += 1
        self.send(BeaconPublished(h("beacon", self.beacons), self.now))

    @rule()
    def restart(self) -> None:
        self.send(Abandoned(self.now))

    # refused events: nothing changes, nothing is logged

    @precondition(lambda self: self.stale)
    @rule(n=st.integers(0, 50))
    def late_result(self, n: int) -> None:
        d = sorted(self.stale.values(), key=lambda d: d.replica)[n % len(self.stale)]
        claim = honest_claim(d, self.s.wus[d.wu.id].det_class or X86)
        ev = ResultReturned(d.replica, d.volunteer, claim, self.now)
        assert self.send(ev, may_refuse=True) is None
        self.send(ReplicaFailed(d.replica, d.volunteer, "late", self.now))  # (a no-op)

    @precondition(lambda self: self.tasks)
    @rule(n=st.integers(0, 50), thief=st.sampled_from(NAMES))
    def copied_result(self, n: int, thief: str) -> None:
        """A result submitted under a key the replica was not given to is refused."""
        d = sorted(self.tasks.values(), key=lambda d: d.replica)[n % len(self.tasks)]
        if thief == d.volunteer:
            return
        claim = honest_claim(d, self.s.wus[d.wu.id].det_class or X86)
        ev = ResultReturned(d.replica, thief, claim, self.now)
        assert self.send(ev, may_refuse=True) is None

    @precondition(lambda self: self.checks)
    @rule(n=st.integers(0, 50), thief=st.sampled_from(NAMES))
    def stolen_check(self, n: int, thief: str) -> None:
        d = sorted(self.checks.values(), key=lambda d: d.check)[n % len(self.checks)]
        if thief == d.volunteer:
            return
        ev = SpotCheckReturned(d.check, thief, (), X86, self.now)
        assert self.send(ev, may_refuse=True) is None

    @rule(vol=st.sampled_from(["fake-0", "fake-1"]), n=st.integers(0, 3))
    def class_fishing(self, vol: str, n: int) -> None:
        """A key may use a few determinism classes, no more."""
        cls = f"go-extra-{n}"
        known = self.classes_used(vol)
        may_refuse = cls not in known and len(known) >= POLICY.max_classes_per_volunteer
        out = self.send(WorkRequested(vol, cls, 0, self.now), may_refuse=may_refuse)
        if may_refuse:
            assert out is None, "a key used more determinism classes than allowed"

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def scheduler_state_is_consistent(self) -> None:
        self.s.validate_state()

    @invariant()
    def validated_wus_have_an_established_voice(self) -> None:
        for key, voices in self.vouchers.items():
            w = self.s.wus[key]
            if w.state != "validated" or key in self.retracted or w.reverify is not None:
                continue
            if self.jobs[w.unit.job]:
                continue
            assert voices - self.convicted, (
                f"WU {key.hex()[:12]} is validated, and every voice behind it "
                f"({sorted(voices)}) was convicted"
            )

    @invariant()
    def honest_keys_are_never_banned(self) -> None:
        for v, x in self.s.volunteers.items():
            if is_honest(v):
                assert x.trust != "banned", f"honest {v} banned"

    # -- the end --------------------------------------------------------------------------

    def teardown(self) -> None:
        if sys.exc_info()[0] is not None:
            return  # a step failed: that is the report
        self.check_replay()
        self.check_liveness()
        self.check_replay()

    def check_replay(self) -> None:
        for events in (self.events, self.logged):
            again, out = replay(events, POLICY)
            assert out == self.log, "replay gave other instructions"
            assert snapshot(again) == snapshot(self.s), "replay reached another state"

    def check_liveness(self) -> None:
        """Attackers gone, the operator's machines computing: every live job completes."""
        for vol in sorted(self.s.volunteers):
            if not vol.startswith("op-"):
                self.send(NodeLost(vol, self.now))
        finals = [f"final-{cls}-{i}" for cls in ("x86", "arm") for i in range(3)]
        for vol in finals:
            self.send(VolunteerTrusted(vol, self.now))
        workers = [*(op for op in OPERATORS if op in self.trusted), *finals]
        live = {j for j, cancelled in self.jobs.items() if not cancelled}
        idle = 0
        for _ in range(LIVENESS_ROUNDS):
            if live <= self.completed and not self.s._check_queue:
                break
            if idle >= IDLE_ROUNDS:
                break  # nothing happens any more: stuck
            self.now += ROUND_S
            before = len(self.log)
            self.send(BeaconPublished(h("final beacon", self.now), self.now))
            self.send(Tick(self.now))
            for vol in workers:
                self.request(vol, 8)
                for d in [d for d in self.checks.values() if d.volunteer == vol]:
                    if d.check in self.checks:
                        self.check(d, lie=False)
                for d in [d for d in self.tasks.values() if d.volunteer == vol]:
                    if d.replica in self.tasks:
                        self.compute(d, "honest")
            idle = 0 if len(self.log) > before else idle + 1
        stuck = {
            w.unit.job: (w.state, w.unit.gen, w.det_class)
            for w in self.s.wus.values()
            if w.unit.job in live and w.unit.job not in self.completed
        }
        failed = [i.reason for i in self.log if isinstance(i, WUFailed)]
        assert live <= self.completed, (
            f"jobs {sorted(live - self.completed)} never completed in {LIVENESS_ROUNDS} rounds "
            f"of honest work: {stuck}; failures: {failed}"
        )


SchedulerMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
#: About 15 s when the scheduler holds (0.3 s an example, mostly the liveness rounds).
TestSchedulerMachine = pytest.mark.slow(SchedulerMachine.TestCase)


# -- the scheduler bugs the machine found, as the minimal event sequences it shrank to --------


def _claim_of(d: Dispatch, how: str = "honest") -> Claim:
    return honest_claim(d, X86) if how == "honest" else dishonest_claim(d, X86, how)


def _feed(s: Scheduler, ev: Event) -> list[Instruction]:
    out = s.handle(ev)
    s.validate_state()
    return out


def _take(s: Scheduler, volunteer: str, slots: int = 1) -> list[Dispatch]:
    out = _feed(s, WorkRequested(volunteer, X86, slots, 0.0))
    return [i for i in out if isinstance(i, Dispatch)]


def test_a_penalised_volunteer_leaves_the_draw_pool_when_it_has_no_room():
    """Found by the machine: ``_on_result`` refreshes the draw pool *before* it halves the
    quota of a key whose result is invalid, so the key stays in the pool with no capacity
    (``validate_state``: every pooled volunteer has capacity > 0)."""
    s = Scheduler(POLICY)
    _feed(s, JobSubmitted("j", spec(runs=3), tuple(h("s", r) for r in range(3))))
    first, *_ = _take(s, "m", slots=4)  # three WUs in flight, width 4, quota 4
    _feed(s, ResultReturned(first.replica, "m", _claim_of(first, "garbage"), 0.0))


def test_six_throwaway_keys_cannot_fail_a_wu():
    """Found by the machine: results of keys on probation count toward
    ``max_total_results``, so six fresh keys returning garbage fail any fresh WU, and its
    job can never complete (issue 9, attack 4, with invalid results instead of errors)."""
    s = Scheduler(POLICY)
    _feed(s, VolunteerTrusted("op-0", 0.0))
    _feed(s, JobSubmitted("j", spec(), (h("s"),)))
    for n in range(6):
        (d,) = _take(s, f"sybil-{n}")
        out = _feed(s, ResultReturned(d.replica, f"sybil-{n}", _claim_of(d, "garbage"), 0.0))
        assert not [i for i in out if isinstance(i, WUFailed)], f"failed by {n + 1} fresh keys"


def test_two_fresh_keys_agreeing_on_a_fake_do_not_stall_a_wu():
    """Found by the machine: an operator returns the true result, two fresh keys then agree
    on a fake. ``_want_more`` counts the fresh pair as the best group (2 = quorum), so it
    asks for no replica, although that group can never validate (no established voice):
    the WU stays in progress forever and nobody is ever given it again."""
    s = Scheduler(POLICY)
    _feed(s, VolunteerTrusted("op-0", 0.0))
    _feed(s, VolunteerTrusted("op-1", 0.0))
    _feed(s, JobSubmitted("j", spec(), (h("s"),)))
    (d,) = _take(s, "op-0")
    _feed(s, ResultReturned(d.replica, "op-0", _claim_of(d), 0.0))
    for sybil in ("sybil-a", "sybil-b"):
        (d,) = _take(s, sybil)
        _feed(s, ResultReturned(d.replica, sybil, _claim_of(d, "lie"), 0.0))
    assert _take(s, "op-1"), "the WU is stuck: op-1 asks and is given nothing"


def test_a_wu_confirmed_by_re_verification_keeps_an_established_voice():
    """Found by the machine: fake-0 builds a reputation, then validates an honest WU with a
    key on probation (hon-0); caught colluding elsewhere, fake-0 is convicted, so that WU
    is re-verified, and an operator's full recomputation confirms it. The confirming
    checker is not recorded as a voice (``_WU.checker``), so the WU is left validated with
    nobody established behind it (``validate_state``), and a later conviction of hon-0
    could not tell that it was checked."""
    s = Scheduler(NetworkPolicy(min_audit_rate=0.0, probation_results=2))

    def take(volunteer: str) -> list[Any]:
        out = _feed(s, WorkRequested(volunteer, X86, 1, 0.0))
        return [i for i in out if isinstance(i, Dispatch | DispatchSpotCheck)]

    def ret(d: Dispatch, how: str = "honest") -> None:
        _feed(s, ResultReturned(d.replica, d.volunteer, _claim_of(d, how), 0.0))

    def gone(*volunteers: str) -> None:
        for v in volunteers:
            _feed(s, NodeLost(v, 0.0))

    def check(c: DispatchSpotCheck) -> None:
        pairs = list(zip(c.segments, c.start_digests, strict=True))
        ends = tuple(step(c.wu.id, k, start) for k, start in pairs)
        data = tuple(seg_data(c.wu.id, k, start) for k, start in pairs)
        _feed(s, SpotCheckReturned(c.check, c.volunteer, ends, X86, 0.0, None, data))

    ops = tuple(f"op-{i}" for i in range(8))
    for op in ops:
        _feed(s, VolunteerTrusted(op))
    gone(*ops)  # (only whoever asks next is online)
    _feed(s, JobSubmitted("warm", spec(runs=4), tuple(h("w", r) for r in range(4))))
    for fake in ("fake-0", "fake-1"):  # two colluders build a reputation honestly
        for _ in range(2):
            (a,) = take(fake)
            (b,) = take("op-0")
            ret(a)
            ret(b)
            gone(fake, "op-0")
    _feed(s, JobSubmitted("w", spec(), (h("W"),)))  # fake-0 and hon-0 validate W
    (a,) = take("fake-0")
    (b,) = take("hon-0")
    ret(a)
    ret(b)
    gone("fake-0", "hon-0")
    _feed(s, JobSubmitted("c", spec(audit_rate=1.0), (h("C"),)))  # the colluders lie...
    (a,) = take("fake-0")
    (b,) = take("fake-1")
    ret(a, "lie")
    ret(b, "lie")
    gone("fake-0", "fake-1")
    assert take("op-1") == []
    _feed(s, BeaconPublished(h("b"), 0.0))
    (audit,) = take("op-1")  # ...the audit contradicts them...
    check(audit)
    gone("op-1")
    panel = ops[2:]  # ...a fresh panel (a lead of 2 x (quorum + 1)) convicts both:
    for d in [d for op in panel for d in take(op)]:  # W is re-verified
        ret(d)
    gone(*panel)
    (reverify,) = take("op-1")
    check(reverify)  # confirmed: validate_state fails here
