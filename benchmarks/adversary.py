"""Verification under attack: a Sybil group that builds reputation, then colludes.

``python -m benchmarks.adversary [--quick]``

The scheduler core alone (events in, instructions out: no I/O, no Ray, no database) in
virtual time, with honest volunteers and one attacker who controls a fraction f of all keys
(attacker keys / all keys = f), for f = 0 (the honest network's overhead), 0.1 and 0.3, and
once more at 0.3 with an attacker who never lies as a checker (its keys live longer).

* Policy: ``NetworkPolicy()`` defaults (quorum 2, audit rate >= 0.1, probation 5 results).
  The operator trusts a few of its own machines (``VolunteerTrusted``); every other key,
  honest or not, starts on probation.
* Volunteers have a speed (lognormal) and 1-4 slots; they poll while they have a free slot
  (at once after finishing a task, then every few virtual seconds), take what they were
  offered while away, compute (time proportional to segments / speed) and return.
* The attacker's keys compute honestly until they are established. Then they collude:
  fake (no compute) a WU only when its own established keys hold the whole quorum; copy
  (compute once, return the same result from two keys) when two keys hold a WU it does not
  fake; lie as a checker of an honest result (and confirm its own fakes); fail a few WUs.

Measures: fakes validated (and not retracted) per 10,000 validated WUs, against the floor
for colluding established keys f^q (1 - a (1 - f)) x 10^4; the attacker's credit per
CPU-second it really spent over an honest volunteer's (clawback counted); the honest
network's compute per useful compute. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from benchmarks.common import print_table
from coordinator.errors import ProtocolError
from coordinator.jobs import JobSpec
from coordinator.scheduler import (
    BeaconPublished,
    Claim,
    Convicted,
    Dispatch,
    DispatchSpotCheck,
    GrantCredit,
    Instruction,
    Invalidated,
    JobSubmitted,
    NetworkPolicy,
    Offered,
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
    WorkUnit,
    WUFailed,
)

CLASS = "go-x86_64-avx2"  # one determinism class for everybody
_UNDECIDED = frozenset({"unsent", "in_progress", "awaiting_beacon", "spot_checking"})

# event kinds in the virtual-time queue
_POLL, _RESULT, _FAILED, _CHECK, _CLOCK, _HOLD = range(6)
_CheckData = tuple["_Vol", int, tuple[bytes, ...], tuple[bytes, ...]]


def _h(*parts: bytes) -> bytes:
    d = hashlib.sha256()
    for p in parts:
        d.update(len(p).to_bytes(4, "little"))
        d.update(p)
    return d.digest()


def _k(i: int) -> bytes:
    return i.to_bytes(4, "little")


@functools.lru_cache(maxsize=8192)
def _claim(wu: WorkUnit, tag: bytes) -> Claim:
    """What a key returns for ``wu``: a deterministic function of the WU (``tag`` b"" for the
    honest computation; the attacker's fake uses its own tag, the same for all its keys).

    Digests only need to be equal or not, so each is one SHA-256 prefix plus a label (one
    hash per claim instead of forty: the driver should not be the benchmark's hot spot)."""
    n = wu.spec.n_segments
    p = _h(tag, wu.id)[:16]
    bounds = (wu.input_digest, *(p + b"b" + _k(k) for k in range(1, n + 1)))
    return Claim(
        final_digest=bounds[-1],
        segment_root=p + b"root",
        boundary_digests=bounds,
        det_class=CLASS,
        frames_digest=p + b"frames",
        observables_digest=p + b"observables",
        segment_data=tuple(p + b"d" + _k(k) for k in range(n)),
    )


def honest_claim(wu: WorkUnit) -> Claim:
    return _claim(wu, b"")


def fake_claim(wu: WorkUnit) -> Claim:
    return _claim(wu, b"fake")


def is_fake(wu: WorkUnit, final_digest: bytes) -> bool:
    return final_digest == _h(b"fake", wu.id)[:16] + b"b" + _k(wu.spec.n_segments)


def recompute(chk: DispatchSpotCheck) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """An honest checker's answer: each listed segment recomputed from its start state (the
    true end where the start is the true one; something else from a made-up start)."""
    true = honest_claim(chk.wu)
    ends, data = [], []
    for start, k in zip(chk.start_digests, chk.segments, strict=True):
        if start == true.boundary_digests[k]:
            ends.append(true.boundary_digests[k + 1])
            data.append(true.segment_data[k])
        else:
            ends.append(_h(b"recomputed", start, _k(k)))
            data.append(_h(b"recomputed-data", start, _k(k)))
    return tuple(ends), tuple(data)


@dataclass(frozen=True, slots=True)
class Config:
    honest: int = 1000
    f: float = 0.0  # attacker keys / all keys
    wus: int = 100_000  # WUs of the submitted jobs (more are computed after retractions)
    jobs: int = 4
    gens: int = 5
    trusted_share: float = 0.05  # honest keys the operator vouches for (its own machines)
    #: Keys other than the operator's join at random times over this long (a network grows;
    #: the attacker's keys join along with everyone else's).
    join_s: float = 3600.0
    seg_s: float = 3.0  # virtual seconds per segment at speed 1
    poll_s: float = 20.0  # an idle volunteer's polling interval (offers lapse after 30 s)
    tick_s: float = 5.0
    beacon_s: float = 10.0
    fail_rate: float = 0.05  # established attacker keys report failure on this share
    lie: bool = True  # established attacker keys lie when they check an honest result
    hold_s: float = 120.0  # how long an attacker key waits for a partner key to get its WU
    #: The attacker's keys on probation fake too (a Sybil group that never builds a
    #: reputation). Off in the benchmark (its keys behave until established); the test
    #: turns it on to show fresh keys never validate a fake.
    fresh_fakes: bool = False
    seed: int = 1
    validate_every: int = 0  # call Scheduler.validate_state() every N events (tests only)
    max_virtual_s: float = 1e6

    @property
    def attacker_keys(self) -> int:
        return round(self.f / (1 - self.f) * self.honest)


@dataclass(slots=True)
class _Vol:
    id: str
    speed: float
    slots: int
    attacker: bool
    busy: int = 0
    polling: bool = False  # a poll is queued
    gone: bool = False  # a convicted attacker key: abandoned
    cpu: float = 0.0  # CPU-seconds really spent
    segments: float = 0.0  # segments really computed


@dataclass
class Result:
    f: float
    lie: bool
    honest: int
    attacker_keys: int
    submitted: int = 0  # WUs of the submitted jobs
    validated: int = 0
    fake_returned: int = 0
    fake_validated: int = 0  # ended validated and not retracted
    fake_validated_ever: int = 0
    fresh_fake_validated: int = 0
    retracted: int = 0
    copies: int = 0
    lies: int = 0
    confirms: int = 0
    fails: int = 0
    wu_failed: int = 0
    convicted_attacker: int = 0
    convicted_honest: list[str] = field(default_factory=list)
    honest_credit: float = 0.0
    honest_revoked: float = 0.0
    attacker_credit: float = 0.0
    attacker_revoked: float = 0.0
    honest_cpu: float = 0.0
    attacker_cpu: float = 0.0
    honest_segments: float = 0.0
    useful_segments: float = 0.0
    steady_overhead: float = 0.0
    refused: int = 0
    events: int = 0
    virtual_s: float = 0.0
    wall_s: float = 0.0
    finished: bool = False

    @property
    def fake_per_10k(self) -> float:
        return 1e4 * self.fake_validated / max(1, self.validated - self.retracted)

    @property
    def bound_per_10k(self) -> float:
        a = NetworkPolicy().min_audit_rate
        q = NetworkPolicy().min_quorum
        return self.f**q * (1 - a * (1 - self.f)) * 1e4

    @property
    def overhead(self) -> float:
        return self.honest_segments / max(1.0, self.useful_segments)

    @property
    def gain(self) -> float:
        if not self.attacker_keys:
            return 0.0
        honest = (self.honest_credit - self.honest_revoked) / max(1e-9, self.honest_cpu)
        att = (self.attacker_credit - self.attacker_revoked) / max(1e-9, self.attacker_cpu)
        return att / honest if honest > 0 else math.inf


class Attacker:
    """One person behind many keys, who knows what its own keys were given."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        #: WU id -> its keys that hold (were offered or given) a replica: "pending" until
        #: the key answers, then "returned"
        self.holders: dict[bytes, dict[str, str]] = {}
        #: WU id -> the keys of the round that fakes it, or that copies one computation
        self.fake_round: dict[bytes, frozenset[str]] = {}
        self.copy_ready: dict[bytes, float] = {}

    def offered(self, key: str, wu: bytes) -> None:
        self.holders.setdefault(wu, {})[key] = "pending"

    def _established(self, key: str) -> bool:
        return self.sim.s.volunteers[key].trust == "established"

    def colluding(self, key: str) -> bool:
        return self.sim.cfg.fresh_fakes or self._established(key)

    def decide(self, key: str, d: Dispatch, now: float, t_compute: float, may_hold: bool) -> str:
        """What one of its keys does with WU ``d.wu``: "fake", "copy", "fail", "compute" or
        "hold" (wait for a partner key to be given the WU too)."""
        w = d.wu.id
        held = self.holders.setdefault(w, {})
        held[key] = "pending"
        if self.colluding(key):
            members = self.fake_round.get(w)
            if members is not None and key in members:
                return "fake"
            pending = frozenset(
                k for k, st in held.items() if st == "pending" and not self.sim.vols[k].gone
            )
            if len(pending) >= self.sim.quorum and all(self.colluding(k) for k in pending):
                self.fake_round[w] = pending  # its keys hold the whole quorum
                return "fake"
            if w in self.copy_ready:  # another of its keys computes it: one compute, two credits
                return "copy"
            if may_hold and len(pending) < self.sim.quorum:
                return "hold"
            if self.sim.rng.random() < self.sim.cfg.fail_rate:
                return "fail"
        self.copy_ready.setdefault(w, now + t_compute)
        return "compute"

    def check(self, chk: DispatchSpotCheck) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """Confirm its own fakes, answer truly for what it computed, lie about the rest."""
        fake = fake_claim(chk.wu)
        if all(
            s == fake.boundary_digests[k]
            for s, k in zip(chk.start_digests, chk.segments, strict=True)
        ):
            self.sim.res.confirms += 1
            return (
                tuple(fake.boundary_digests[k + 1] for k in chk.segments),
                tuple(fake.segment_data[k] for k in chk.segments),
            )
        if not self.sim.cfg.lie or (
            self.holders.get(chk.wu.id) and chk.wu.id not in self.fake_round
        ):
            return recompute(chk)  # its own honest result (it has the data), or no lying
        self.sim.res.lies += 1
        return (
            tuple(_h(b"lie", chk.wu.id, _k(k)) for k in chk.segments),
            tuple(_h(b"lie-data", chk.wu.id, _k(k)) for k in chk.segments),
        )


class Simulation:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.policy = NetworkPolicy()
        self.quorum = self.policy.min_quorum
        self.s = Scheduler(self.policy)
        self.vols: dict[str, _Vol] = {}
        self.queue: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self.now = 0.0
        self.event_no = 0
        self.att = Attacker(self) if cfg.attacker_keys else None
        self.res = Result(cfg.f, cfg.lie, cfg.honest, cfg.attacker_keys)
        self.fake_ok: set[bytes] = set()  # fake WUs validated (minus those retracted)
        self.retracted: set[bytes] = set()
        self.established_at: dict[str, int] = {}  # key -> event number it was established
        self.n_segments = 0
        self._half: tuple[float, float] | None = None
        self._last_beacon = -math.inf

    # -- set-up ---------------------------------------------------------------------------

    def _add(self, vid: str, attacker: bool) -> _Vol:
        speed = min(4.0, max(0.25, self.rng.lognormvariate(0.0, 0.5)))
        v = _Vol(vid, speed, self.rng.randint(1, 4), attacker)
        self.vols[vid] = v
        return v

    def _jobs(self) -> list[JobSubmitted]:
        cfg = self.cfg
        trajectories = max(1, cfg.wus // cfg.gens // cfg.jobs)
        clones = 50
        runs = max(1, trajectories // clones)
        jobs = []
        for j in range(cfg.jobs):
            spec = JobSpec(
                engine="go",
                system_digest=_h(b"villin", _k(j)),
                runs=runs,
                clones=clones,
                gens=cfg.gens,
                steps_per_wu=1000,
                segment_steps=50,
                report_steps=50,
                temperature=0.7,
                spot_check_segments=2,
            )
            self.n_segments = spec.n_segments
            starts = tuple(_h(b"start", _k(j), _k(r)) for r in range(runs))
            jobs.append(JobSubmitted(f"job-{j}", spec, starts))
            self.res.submitted += runs * clones * cfg.gens
        return jobs

    def _push(self, t: float, kind: int, data: object) -> None:
        self._seq += 1
        heapq.heappush(self.queue, (t, self._seq, kind, data))

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> Result:
        cfg = self.cfg
        t0 = time.perf_counter()
        for ev in self._jobs():
            self.feed(ev)
        n_trusted = max(1, round(cfg.trusted_share * cfg.honest))
        for i in range(cfg.honest):
            v = self._add(f"honest-{i:04d}", attacker=False)
            if i < n_trusted:
                self.feed(VolunteerTrusted(v.id, 0.0))
                self.established_at[v.id] = 0
        for i in range(cfg.attacker_keys):
            self._add(f"mallory-{i:04d}", attacker=True)
        for v in self.vols.values():
            v.polling = True
            trusted = v.id in self.established_at
            self._push(self.rng.uniform(0, cfg.poll_s if trusted else cfg.join_s), _POLL, v)
        self._push(cfg.tick_s, _CLOCK, None)
        next_done_check = 0.0
        while self.queue:
            t, _, kind, data = heapq.heappop(self.queue)
            self.now = t
            if kind == _POLL:
                assert isinstance(data, _Vol)
                self._poll(data)
            elif kind == _RESULT:
                v, rid, claim = cast(tuple[_Vol, int, Claim], data)
                v.busy -= 1
                self.feed(ResultReturned(rid, v.id, claim, t))
                self._wake(v)
            elif kind == _FAILED:
                v, rid = cast(tuple[_Vol, int], data)
                v.busy -= 1
                self.feed(ReplicaFailed(rid, v.id, "crashed", t))
                self._wake(v)
            elif kind == _HOLD:
                assert isinstance(data, Dispatch)
                self._dispatch(data, resumed=True)
            elif kind == _CHECK:
                v, cid, ends, seg_data = cast(_CheckData, data)
                v.busy -= 1
                self.feed(SpotCheckReturned(cid, v.id, ends, CLASS, t, segment_data=seg_data))
                self._wake(v)
            else:
                self.feed(Tick(t))
                if self.s.awaiting_beacon and t - self._last_beacon >= cfg.beacon_s:
                    self._last_beacon = t
                    self.feed(BeaconPublished(_h(b"beacon", _k(self.event_no)), t))
                if t >= next_done_check:
                    next_done_check = t + 120.0
                    if self._done():
                        self.res.finished = True
                        break
                if t > cfg.max_virtual_s:
                    break
                self._push(t + cfg.tick_s, _CLOCK, None)
        self._finish(time.perf_counter() - t0)
        return self.res

    def _done(self) -> bool:
        s = self.s
        if any(w.state in _UNDECIDED for w in s.wus.values()):
            return False
        return not any(c.state in ("queued", "offered", "assigned") for c in s.checks.values())

    def _wake(self, v: _Vol) -> None:
        """A volunteer with a free slot asks for work at once (after finishing a task)."""
        if not v.gone and v.busy < v.slots:
            self._poll(v, scheduled=False)

    def _poll(self, v: _Vol, *, scheduled: bool = True) -> None:
        if scheduled:
            v.polling = False
        if v.gone:
            return
        free = v.slots - v.busy
        if free > 0:
            self.feed(WorkRequested(v.id, CLASS, free, self.now))
        if v.busy < v.slots and not v.polling:
            v.polling = True
            self._push(self.now + self.cfg.poll_s * self.rng.uniform(0.8, 1.2), _POLL, v)

    # -- events in, instructions out ------------------------------------------------------

    def feed(self, ev: object) -> None:
        self.event_no += 1
        self.res.events += 1
        try:
            out = self.s.handle(ev)  # type: ignore[arg-type]
        except ProtocolError:
            self.res.refused += 1  # e.g. a result after its deadline
            return
        credited: list[str] = []
        if self.att is not None:  # the attacker sees all its keys were given, at once
            for ins in out:
                if isinstance(ins, Offered) and self.vols[ins.volunteer].attacker:
                    self.att.offered(ins.volunteer, ins.wu)
        for ins in out:
            self._carry_out(ins, credited)
        for vid in credited:
            if vid not in self.established_at and self.s.volunteers[vid].trust == "established":
                self.established_at[vid] = self.event_no
        if self.cfg.validate_every and self.event_no % self.cfg.validate_every == 0:
            self.s.validate_state()

    def _carry_out(self, ins: Instruction, credited: list[str]) -> None:
        res = self.res
        match ins:
            case Dispatch():
                self._dispatch(ins)
            case DispatchSpotCheck():
                self._spot_check(ins)
            case Offered():
                v = self.vols[ins.volunteer]
                if not v.polling and not v.gone:
                    v.polling = True
                    self._push(self.now + self.rng.uniform(0, self.cfg.poll_s), _POLL, v)
            case Validated():
                res.validated += 1
                if self._half is None and res.validated >= self._half_mark:
                    self._half = (self._honest_segments(), res.validated)
                if is_fake(ins.wu, ins.final_digest):
                    res.fake_validated_ever += 1
                    self.fake_ok.add(ins.wu.id)
                    vouched = any(
                        self.established_at.get(vid, self.event_no) < self.event_no
                        for _, vid in ins.valid
                    )
                    if not vouched:
                        res.fresh_fake_validated += 1
                self.res.useful_segments += self.n_segments
            case GrantCredit():
                credited.append(ins.volunteer)
                units = ins.wu.spec.steps_per_wu / 1000
                if self.vols[ins.volunteer].attacker:
                    res.attacker_credit += units
                else:
                    res.honest_credit += units
            case RevokeCredit():
                units = ins.wu.spec.steps_per_wu / 1000
                if self.vols[ins.volunteer].attacker:
                    res.attacker_revoked += units
                else:
                    res.honest_revoked += units
            case Convicted():
                v = self.vols[ins.volunteer]
                if v.attacker:
                    res.convicted_attacker += 1
                    v.gone = True  # the attacker abandons a banned key
                else:
                    res.convicted_honest.append(
                        f"{v.id} at t={self.now:.0f}: {ins.reason} (evidence {ins.evidence})"
                    )
            case Retracted():
                if ins.wu.id not in self.retracted:
                    self.retracted.add(ins.wu.id)
                    res.retracted += 1
                    self.res.useful_segments -= self.n_segments
                self.fake_ok.discard(ins.wu.id)
            case WUFailed():
                res.wu_failed += 1
            case Invalidated():
                pass
            case _:
                pass

    @property
    def _half_mark(self) -> int:
        return self.res.submitted // 2

    def _honest_segments(self) -> float:
        return sum(v.segments for v in self.vols.values() if not v.attacker)

    def _dispatch(self, d: Dispatch, *, resumed: bool = False) -> None:
        v = self.vols[d.volunteer]
        if not resumed:
            v.busy += 1
        n = d.wu.spec.n_segments
        t = n * self.cfg.seg_s / v.speed
        action = "compute"
        if v.attacker and self.att is not None:
            hold = min(self.cfg.hold_s, d.deadline - self.now - t - 60.0)
            action = self.att.decide(v.id, d, self.now, t, may_hold=not resumed and hold > 5.0)
            if action == "hold":
                self._push(self.now + hold, _HOLD, d)
                return
        if action == "fail":
            self.res.fails += 1
            self._push(self.now + self.rng.uniform(2, 10), _FAILED, (v, d.replica))
            self._answered(v.id, d.wu.id)
            return
        if action == "fake":
            self.res.fake_returned += 1
            claim = fake_claim(d.wu)
            when = self.now + self.rng.uniform(2, 10)
        elif action == "copy":
            self.res.copies += 1
            claim = honest_claim(d.wu)
            assert self.att is not None
            when = max(self.now, self.att.copy_ready[d.wu.id]) + self.rng.uniform(1, 5)
        else:
            claim = honest_claim(d.wu)
            when = self.now + t
            v.cpu += t
            v.segments += n
        self._answered(v.id, d.wu.id)
        self._push(when, _RESULT, (v, d.replica, claim))

    def _answered(self, key: str, wu: bytes) -> None:
        if self.att is not None and key in self.att.holders.get(wu, {}):
            self.att.holders[wu][key] = "returned"

    def _spot_check(self, chk: DispatchSpotCheck) -> None:
        v = self.vols[chk.volunteer]
        v.busy += 1
        if v.attacker and self.att is not None and self.att.colluding(v.id):
            ends, data = self.att.check(chk)
            when = self.now + self.rng.uniform(1, 5)  # no real compute
        else:
            ends, data = recompute(chk)
            t = len(chk.segments) * self.cfg.seg_s / v.speed
            v.cpu += t
            v.segments += len(chk.segments)
            when = self.now + t
        self._push(when, _CHECK, (v, chk.check, ends, data))

    def _finish(self, wall: float) -> None:
        res = self.res
        res.fake_validated = len(self.fake_ok)
        res.wall_s = wall
        res.virtual_s = self.now
        for v in self.vols.values():
            if v.attacker:
                res.attacker_cpu += v.cpu
            else:
                res.honest_cpu += v.cpu
                res.honest_segments += v.segments
        if self._half is not None:
            seg, val = self._half
            useful = (res.validated - val) * self.n_segments
            res.steady_overhead = (res.honest_segments - seg) / max(1, useful)
        else:
            res.steady_overhead = res.overhead


def simulate(cfg: Config) -> Result:
    return Simulation(cfg).run()


def _fmt(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


#: (f, whether the attacker lies as a checker): the honest network, the attacker as the
#: issue describes it at f = 0.1 and 0.3, and a quieter one that never lies (so its keys are
#: not convicted for lying and live longer to fake).
RUNS = ((0.0, True), (0.1, True), (0.3, True), (0.3, False))


def run_all(
    honest: int, wus: int, join_s: float, seed: int = 1
) -> tuple[dict[str, object], list[Result]]:
    t0 = time.perf_counter()
    results = [
        simulate(Config(honest=honest, f=f, wus=wus, join_s=join_s, seed=seed, lie=lie))
        for f, lie in RUNS
    ]
    wall = time.perf_counter() - t0
    r0, r10, r30, quiet = results
    metrics: dict[str, object] = {
        "fake_validated_per_10k_f10": round(r10.fake_per_10k, 2),
        "fake_validated_per_10k_f30": round(r30.fake_per_10k, 2),
        "bound_per_10k_f10": round(r10.bound_per_10k, 2),
        "bound_per_10k_f30": round(r30.bound_per_10k, 2),
        "attacker_gain_f10": round(r10.gain, 4),
        "attacker_gain_f30": round(r30.gain, 4),
        "overhead_f0": round(r0.steady_overhead, 4),
        "overhead_f0_whole_run": round(r0.overhead, 4),
        "fresh_fake_validated": sum(r.fresh_fake_validated for r in results),
        "fakes_returned_f10": r10.fake_returned,
        "fakes_returned_f30": r30.fake_returned,
        "fakes_retracted_f10": r10.retracted,
        "fakes_retracted_f30": r30.retracted,
        "attacker_keys_f10": r10.attacker_keys,
        "attacker_keys_f30": r30.attacker_keys,
        "convicted_attacker_keys_f10": r10.convicted_attacker,
        "convicted_attacker_keys_f30": r30.convicted_attacker,
        "fake_validated_per_10k_f30_no_lies": round(quiet.fake_per_10k, 2),
        "attacker_gain_f30_no_lies": round(quiet.gain, 4),
        "honest_keys_convicted_no_lies": len(quiet.convicted_honest),
        "attacker_credit_revoked_share_f30": round(
            r30.attacker_revoked / max(1.0, r30.attacker_credit), 4
        ),
        "honest_keys_convicted": sum(len(r.convicted_honest) for r in results),
        "honest_credit_revoked": sum(r.honest_revoked for r in results),
        "wus_failed": sum(r.wu_failed for r in results),
        "all_finished": all(r.finished for r in results),
        "honest_volunteers": honest,
        "wus": min(r.submitted for r in results),
        "wus_validated": [r.validated for r in results],
        "events": sum(r.events for r in results),
        "wall_s": round(wall, 1),
    }
    return metrics, results


def print_results(results: list[Result], honest: int) -> None:
    r10, r30 = results[1], results[2]

    def row(name: str, get: Callable[[Result], str], goal: str = "") -> list[str]:
        return [name, *(get(r) for r in results), goal]

    rows = [
        row("keys: honest + attacker", lambda r: f"{r.honest}+{r.attacker_keys}"),
        row("WUs validated", lambda r: f"{r.validated:,}"),
        row("fake results returned", lambda r: f"{r.fake_returned:,}"),
        row("fakes validated (ever)", lambda r: f"{r.fake_validated_ever:,}"),
        row("WUs retracted (fakes, descendants)", lambda r: f"{r.retracted:,}"),
        row(
            "fakes validated / 10k WUs",
            lambda r: _fmt(r.fake_per_10k, 2),
            f"<= bound ({_fmt(r10.bound_per_10k)} | {_fmt(r30.bound_per_10k)})",
        ),
        row("bound f^2 (1-a(1-f)) / 10k", lambda r: _fmt(r.bound_per_10k, 1), ""),
        row("fakes from fresh keys validated", lambda r: str(r.fresh_fake_validated), "0"),
        row("copied results", lambda r: f"{r.copies:,}"),
        row("lies as a checker", lambda r: f"{r.lies:,}"),
        row("own fakes confirmed as checker", lambda r: f"{r.confirms:,}"),
        row("failures reported", lambda r: f"{r.fails:,}"),
        row("WUs failed", lambda r: f"{r.wu_failed:,}"),
        row(
            "attacker keys convicted",
            lambda r: f"{r.convicted_attacker}/{r.attacker_keys}" if r.attacker_keys else "-",
        ),
        row(
            "attacker credit granted / revoked",
            lambda r: (
                f"{r.attacker_credit:,.0f} / {r.attacker_revoked:,.0f}" if r.attacker_keys else "-"
            ),
        ),
        row(
            "attacker CPU-s / honest CPU-s",
            lambda r: f"{r.attacker_cpu:,.0f} / {r.honest_cpu:,.0f}",
        ),
        row(
            "attacker gain (credit/CPU-s vs honest)",
            lambda r: _fmt(r.gain, 3) if r.attacker_keys else "-",
            "< 1.0 at f=0.3",
        ),
        row("honest keys convicted", lambda r: str(len(r.convicted_honest)), "0"),
        row("honest credit revoked", lambda r: _fmt(r.honest_revoked, 0), "0"),
        row(
            "honest compute / useful (2nd half)",
            lambda r: _fmt(r.steady_overhead, 3),
            "<= 1.10 at f=0",
        ),
        row("honest compute / useful (all)", lambda r: _fmt(r.overhead, 3)),
        row("virtual hours", lambda r: _fmt(r.virtual_s / 3600, 2)),
        row("events", lambda r: f"{r.events:,}"),
        row("wall s", lambda r: _fmt(r.wall_s, 1)),
    ]
    print_table(
        f"Adversary benchmark: scheduler core, {honest} honest volunteers, "
        f"attacker holds f of all keys",
        ["measure", "f=0", "f=0.1", "f=0.3", "f=0.3, no lies", "goal"],
        rows,
    )
    for r in results:
        for line in r.convicted_honest[:5]:
            print(f"  honest key convicted (f={r.f}, lies={r.lie}): {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="200 honest volunteers, 10,000 WUs")
    ap.add_argument("--seed", type=int, default=1)
    ns = ap.parse_args()
    honest, wus, join_s = (200, 10_000, 1800.0) if ns.quick else (1000, 100_000, 3600.0)
    metrics, results = run_all(honest, wus, join_s, ns.seed)
    print_results(results, honest)
    metrics["quick"] = ns.quick
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
