"""The scheduler's draw: its fast path for small pools picks exactly what the plain algorithm
picks (an auditor re-derives every draw with the plain one), on random pools and on whole
honest runs fed to both."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.draws import draw_index
from coordinator.jobs import JobSpec
from coordinator.scheduler import (
    _DRAW_TRIES,
    ONLINE_S,
    BeaconPublished,
    Claim,
    Dispatch,
    DispatchSpotCheck,
    Instruction,
    JobSubmitted,
    ResultReturned,
    Scheduler,
    SpotCheckReturned,
    VolunteerTrusted,
    WorkRequested,
    _Pool,
    _Volunteer,
)

_TRIES = _DRAW_TRIES


def plain_draw(
    s: Scheduler, subject: bytes, ok: Callable[[_Volunteer], bool], now: float, pool: _Pool
) -> _Volunteer | None:
    """The draw as docs/architecture.md states it: a few tries, then a scan."""
    items = pool._items
    for attempt in range(_TRIES):
        if not items:
            return None
        v = s.volunteers[items[draw_index(s._beacon, subject, attempt, len(items))]]
        if now - v.seen > ONLINE_S:
            continue
        if ok(v):
            return v
    n = len(items)
    if not n:
        return None
    start = draw_index(s._beacon, subject, _TRIES, n)
    for j in range(n):
        v = s.volunteers[items[(start + j) % n]]
        if now - v.seen <= ONLINE_S and ok(v):
            return v
    return None


class PlainScheduler(Scheduler):
    def _draw(self, subject, ok, now, pool=None):  # type: ignore[no-untyped-def]
        return plain_draw(self, subject, ok, now, self._free if pool is None else pool)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 12),
    online=st.lists(st.booleans(), min_size=12, max_size=12),
    eligible=st.lists(st.booleans(), min_size=12, max_size=12),
    subject=st.binary(min_size=1, max_size=40),
    beacon=st.binary(min_size=0, max_size=32),
)
def test_the_draw_picks_what_the_plain_algorithm_picks(size, online, eligible, subject, beacon):
    s = Scheduler()
    s._beacon = beacon
    now = 1000.0
    pool = _Pool()
    for i in range(size):
        v = _Volunteer(f"v{i}", seen=now if online[i] else now - 10 * ONLINE_S)
        s.volunteers[v.id] = v
        pool.add(v.id)
    ok_ids = {f"v{i}" for i in range(size) if eligible[i]}

    def ok(v: _Volunteer) -> bool:
        return v.id in ok_ids

    assert s._draw(subject, ok, now, pool) is plain_draw(s, subject, ok, now, pool)


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _run(s: Scheduler, n_vols: int, n_wus: int) -> list[list[Instruction]]:
    """Honest volunteers (the first one the operator's) pull until every WU is validated;
    every instruction the scheduler gave, in order."""
    spec = JobSpec(
        engine="go", system_digest=_h("s"), runs=n_wus, clones=1, gens=1, steps_per_wu=2,
        segment_steps=1, report_steps=1, temperature=1.0, spot_check_segments=1,
    )  # fmt: skip
    trace = [s.handle(JobSubmitted("j", spec, tuple(_h("start", i) for i in range(n_wus))))]
    vols = [f"v{i}" for i in range(n_vols)]
    trace.append(s.handle(VolunteerTrusted(vols[0], 0.0)))
    for rnd in range(400):
        now = float(rnd)
        for v in vols:
            out = s.handle(WorkRequested(v, "c", 3, now))
            trace.append(out)
            for ins in out:
                if isinstance(ins, Dispatch):
                    b = (ins.wu.input_digest, *(_h(ins.wu.id, k) for k in (1, 2)))
                    claim = Claim(b[-1], _h(b), b, "c")
                    trace.append(s.handle(ResultReturned(ins.replica, v, claim, now)))
                elif isinstance(ins, DispatchSpotCheck):
                    ends = tuple(_h(ins.wu.id, k + 1) for k in ins.segments)
                    trace.append(s.handle(SpotCheckReturned(ins.check, v, ends, "c", now)))
        trace.append(s.handle(BeaconPublished(_h("beacon", rnd), now)))
        if all(j.remaining == 0 for j in s.jobs.values()):
            return trace
    raise AssertionError("the honest run did not finish in 400 rounds")


def test_honest_runs_give_the_same_instructions_as_the_plain_draw():
    for n_vols in (2, 3, 5, 11):  # pools below, at and above the fast path's size
        fast, plain = _run(Scheduler(), n_vols, 150), _run(PlainScheduler(), n_vols, 150)
        assert sum(len(t) for t in fast) > 150 * 2
        assert fast == plain
