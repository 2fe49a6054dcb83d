"""The scheduler state machine, driven by events alone: no Ray, no database, no clock."""

from __future__ import annotations

import hashlib

import pytest

from coordinator.errors import ProtocolError, SubmissionError
from coordinator.jobs import JobSpec
from coordinator.scheduler import (
    BeaconPublished,
    Claim,
    Convicted,
    Dispatch,
    DispatchSpotCheck,
    GrantCredit,
    Invalidated,
    JobCancelled,
    JobCompleted,
    JobSubmitted,
    NetworkPolicy,
    NodeLost,
    ReplicaFailed,
    ResultReturned,
    RevokeCredit,
    Scheduler,
    SpotCheckReturned,
    Tick,
    Validated,
    VolunteerTrusted,
    WorkRequested,
    WUFailed,
    replay,
    spot_check_segments,
    unreplicated_coin,
)

CLASS = "go-x86"


def h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def spec(**kw) -> JobSpec:
    base = dict(
        engine="go", system_digest=h("villin"), runs=1, clones=1, gens=1, steps_per_wu=1000,
        segment_steps=250, report_steps=250, temperature=0.7, audit_rate=0.0,
    )  # fmt: skip
    return JobSpec(**(base | kw))


def honest_claim(d: Dispatch, det_class: str = CLASS) -> Claim:
    """What an honest worker returns: digests are a function of the WU alone."""
    n = d.wu.spec.n_segments
    bounds = (d.wu.input_digest, *(h(d.wu.id, k) for k in range(1, n + 1)))
    return Claim(bounds[-1], h("root", bounds), bounds, det_class)


def fake_claim(d: Dispatch, tag: str = "fake") -> Claim:
    n = d.wu.spec.n_segments
    bounds = (d.wu.input_digest, *(h(tag, d.wu.id, k) for k in range(1, n + 1)))
    return Claim(bounds[-1], h("root", bounds), bounds, CLASS)


#: Fresh established volunteers enough for a dispute's default margin (2 x (quorum + 1)).
PANEL = ("D", "E", "F", "G", "H", "I")


class Harness:
    """Feeds events and records instructions; the invariants run after every event.

    Volunteers are the operator's trusted machines (established) unless their name starts
    with ``fresh``: the tests of quorum mechanics are not about probation."""

    def __init__(self, policy: NetworkPolicy | None = None) -> None:
        self.policy = policy or NetworkPolicy(min_audit_rate=0.0)
        self.s = Scheduler(self.policy)
        self.log: list[object] = []
        self.events: list[object] = []
        self.now = 0.0
        self.known: set[str] = set()

    def __call__(self, event):
        vol = getattr(event, "volunteer", None)
        if isinstance(event, WorkRequested) and vol not in self.known:
            self.known.add(vol)
            if not vol.startswith("fresh"):
                self(VolunteerTrusted(vol, self.now))
        self.events.append(event)
        out = self.s.handle(event)
        self.log.extend(out)
        self.s.validate_state()
        return out

    def request(self, volunteer: str, slots: int = 1, det_class: str = CLASS) -> list[Dispatch]:
        return [
            i for i in self(WorkRequested(volunteer, det_class, slots, self.now))
            if isinstance(i, Dispatch)
        ]  # fmt: skip

    def ret(self, d: Dispatch, claim: Claim | None = None):
        return self(ResultReturned(d.replica, d.volunteer, claim or honest_claim(d), self.now))

    def of(self, kind):
        return [i for i in self.log if isinstance(i, kind)]


@pytest.fixture
def hs() -> Harness:
    harness = Harness()
    yield harness
    harness.s.validate_state()


def test_quorum_of_two_validates_credits_once_and_chains_generations(hs):
    hs(JobSubmitted("j", spec(clones=2, gens=2), (h("start"),)))
    for _gen in range(2):
        a = hs.request("A", slots=4)
        b = hs.request("B", slots=4)
        assert len(a) == 2 and len(b) == 2  # both clones, each on two distinct volunteers
        assert {d.wu.id for d in a} == {d.wu.id for d in b}
        for d in a + b:
            hs.ret(d)
    validated = hs.of(Validated)
    assert len(validated) == 4 and {v.wu.gen for v in validated} == {0, 1}
    gen1 = [v.wu for v in validated if v.wu.gen == 1]
    gen0_finals = {v.wu.clone: v.final_digest for v in validated if v.wu.gen == 0}
    assert all(w.input_digest == gen0_finals[w.clone] for w in gen1)  # from validated state
    credits = hs.of(GrantCredit)
    assert sorted((c.volunteer, c.wu.gen) for c in credits) == sorted(
        [(v, g) for v in "AB" for g in (0, 0, 1, 1)]
    )
    assert len({(c.volunteer, c.replica) for c in credits}) == len(credits)
    assert hs.of(JobCompleted) == [JobCompleted("j")]


def test_one_result_per_volunteer_per_wu(hs):
    hs(JobSubmitted("j", spec(), (h("s"),)))
    assert len(hs.request("A", slots=5)) == 1
    assert hs.request("A", slots=5) == []  # same WU may not go to A twice


def test_disagreement_sends_a_third_replica_and_invalidates_the_odd_one(hs):
    hs(JobSubmitted("j", spec(), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    hs.ret(a)
    hs.ret(b, fake_claim(b))
    assert not hs.of(Validated)
    (c,) = hs.request("C")
    hs.ret(c)
    (v,) = hs.of(Validated)
    assert {vol for _, vol in v.valid} == {"A", "C"} and v.invalid == ((b.replica, "B"),)
    assert [i.volunteer for i in hs.of(Invalidated)] == ["B"]
    assert {c.volunteer for c in hs.of(GrantCredit)} == {"A", "C"}
    assert hs.s.volunteers["B"].streak == 0 and hs.s.volunteers["B"].quota == 2


def test_missed_deadline_and_lost_node_reissue_elsewhere(hs):
    hs(JobSubmitted("j", spec(deadline_s=60), (h("s"),)))
    (a,) = hs.request("A")
    (_b,) = hs.request("B")
    hs.now = 61.0
    hs(Tick(hs.now))
    assert hs.request("A") == [] and hs.request("B") == []  # never back to the same volunteer
    (c,) = hs.request("C")
    (_d,) = hs.request("D")
    hs(NodeLost("D", hs.now))
    (e,) = hs.request("E")
    hs.ret(c)
    hs.ret(e)
    assert len(hs.of(Validated)) == 1
    with pytest.raises(ProtocolError, match="already ended as timed_out"):
        hs.ret(a)  # a late result after its deadline is refused


def test_too_many_errors_fail_the_wu(hs):
    hs(JobSubmitted("j", spec(max_error_results=2), (h("s"),)))
    for vol in "AB":
        (d,) = hs.request(vol)
        hs(ReplicaFailed(d.replica, vol, "crashed", hs.now))
    (f,) = hs.of(WUFailed)
    assert "2 error results" in f.reason
    assert hs.request("C") == []


def test_no_quorum_within_max_total_results_fails(hs):
    hs(JobSubmitted("j", spec(max_total_results=3), (h("s"),)))
    for vol in "ABC":
        (d,) = hs.request(vol)
        hs.ret(d, fake_claim(d, tag=vol))
    (f,) = hs.of(WUFailed)
    assert "no quorum among 3 results" in f.reason
    assert not hs.of(GrantCredit)


def test_insane_results_are_invalid_and_replaced(hs):
    hs(JobSubmitted("j", spec(), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    good = honest_claim(a)
    truncated = Claim(good.final_digest, good.segment_root, good.boundary_digests[:2], CLASS)
    hs.ret(a, truncated)  # skipped segments
    hs.ret(b, Claim(h("x"), h("y"), (h("z"),) * 5, CLASS, sane=False, problem="bad signature"))
    assert [(i.volunteer, i.reason) for i in hs.of(Invalidated)] == [
        ("A", "2 boundary states, expected 5"),
        ("B", "bad signature"),
    ]
    (c,) = hs.request("C")
    (d,) = hs.request("D")
    hs.ret(c)
    hs.ret(d)
    assert {v for _, v in hs.of(Validated)[0].valid} == {"C", "D"}


def test_homogeneous_redundancy_keeps_replicas_in_one_class(hs):
    hs(JobSubmitted("j", spec(), (h("s"),)))
    (a,) = hs.request("A", det_class="cls-1")
    assert hs.request("B", det_class="cls-2") == []
    (c,) = hs.request("C", det_class="cls-1")
    hs.ret(a, honest_claim(a, "cls-1"))
    hs.ret(c, honest_claim(c, "cls-1"))
    assert len(hs.of(Validated)) == 1


def test_events_that_contradict_the_state_are_protocol_errors(hs):
    hs(JobSubmitted("j", spec(), (h("s"),)))
    (a,) = hs.request("A")
    with pytest.raises(ProtocolError, match="not assigned to B"):
        hs(ResultReturned(a.replica, "B", honest_claim(a), 0.0))  # a copied result
    with pytest.raises(ProtocolError, match="no replica 999"):
        hs(ResultReturned(999, "A", honest_claim(a), 0.0))
    with pytest.raises(SubmissionError, match="already exists"):
        hs(JobSubmitted("j", spec(), (h("s"),)))
    with pytest.raises(SubmissionError, match="one start state per run"):
        hs(JobSubmitted("k", spec(runs=2), (h("s"),)))


def _build_streak(hs: Harness, volunteer: str, n: int) -> None:
    hs(JobSubmitted("warmup", spec(gens=n), (h("w"),)))
    for _ in range(n):
        (a,) = hs.request(volunteer)
        (b,) = hs.request("helper")
        hs.ret(a)
        hs.ret(b)
    assert hs.s.volunteers[volunteer].streak == n
    hs(NodeLost("helper", hs.now))  # (else the server may draw it for the next WUs)


def test_adaptive_replication_and_spot_checks(hs):
    _build_streak(hs, "A", 10)
    hs(JobSubmitted("j", spec(runs=20), tuple(h("s", r) for r in range(20))))
    alone = []
    for _ in range(20):
        (d,) = hs.request("A")
        if hs.s.wus[d.wu.id].required == 1:
            alone.append(d)
        hs.ret(d)
    # BOINC's rule: unreplicated with probability 1 - 1/N, from a coin anyone can recompute
    expected = sum(unreplicated_coin(w.id, "A") < 1 - 1 / 10 for w in
                   [hs.s.wus[k].unit for k in hs.s.wus if hs.s.wus[k].unit.job == "j"])  # fmt: skip
    assert len(alone) >= 10 and len(alone) <= expected
    credits_before = len(hs.of(GrantCredit))
    hs(BeaconPublished(h("checkpoint-root")))
    checks = []
    while batch := [
        i for i in hs(WorkRequested("C", CLASS, 50, hs.now)) if isinstance(i, DispatchSpotCheck)
    ]:
        if not checks:
            assert len(hs.of(GrantCredit)) == credits_before  # no credit before the check
        checks += batch
        for chk in batch:  # C's quota bounds how many it holds at once
            claim = hs.s.replicas[hs.s.checks[chk.check].replica].claim
            assert chk.segments == spot_check_segments(
                claim.segment_root, h("checkpoint-root"), 4, 2
            )
            ends = tuple(claim.boundary_digests[k + 1] for k in chk.segments)
            hs(SpotCheckReturned(chk.check, "C", ends, CLASS, hs.now))
    assert len(checks) == len(alone)
    spot = [v for v in hs.of(Validated) if v.spot_checked]
    assert len(spot) == len(alone)


def test_spot_check_catches_a_lie_and_a_fresh_quorum_convicts_the_liar(hs):
    _build_streak(hs, "A", 10)
    hs(JobSubmitted("j", spec(runs=10), tuple(h("s", r) for r in range(10))))
    for _ in range(10):
        (d,) = hs.request("A")
        if hs.s.wus[d.wu.id].required == 1:
            hs.ret(d, fake_claim(d))
            break
        hs.ret(d)
    else:
        pytest.fail("no unreplicated WU in 10 tries at streak 10")
    hs(NodeLost("A", hs.now))  # (A's own WUs are the others' business now)
    hs(BeaconPublished(h("beacon")))
    (chk,) = [i for i in hs(WorkRequested("C", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)]
    honest_ends = tuple(h(d.wu.id, k + 1) for k in chk.segments)
    hs(SpotCheckReturned(chk.check, "C", honest_ends, CLASS, 0.0))
    assert not hs.of(Invalidated)  # one checker's word is not enough: a dispute
    assert hs.s.wus[d.wu.id].required == 6 and hs.s.wus[d.wu.id].state == "in_progress"
    hs(NodeLost("C", hs.now))
    while batch := [d2 for x in PANEL for d2 in hs.request(x, slots=20)]:
        for d2 in batch:
            hs.ret(d2)
    assert any(
        v.wu.id == d.wu.id and {x for _, x in v.valid} == set(PANEL) for v in hs.of(Validated)
    )
    assert [i.volunteer for i in hs.of(Invalidated) if i.wu.id == d.wu.id] == ["A"]
    assert [c.volunteer for c in hs.of(Convicted)] == ["A"]
    assert hs.s.volunteers["A"].trust == "banned"
    granted = [c.replica for c in hs.of(GrantCredit) if c.volunteer == "A"]
    assert granted and sorted(r.replica for r in hs.of(RevokeCredit)) == sorted(granted)


def test_replaying_the_event_log_reproduces_every_instruction(hs):
    hs(JobSubmitted("j", spec(clones=3, gens=2), (h("s"),)))
    for _ in range(4):
        for vol in "ABC":
            for d in hs.request(vol, slots=2):
                hs.ret(d)
    again, out = replay(hs.events, hs.policy)
    assert out == hs.log
    assert again.summary() == hs.s.summary()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "gromacs"}, "unknown engine 'gromacs'"),
        ({"gens": 10**9}, r"gens must be in \[1, 100,000\]"),
        ({"runs": 0}, r"runs must be in \[1,"),
        ({"min_quorum": 0}, r"min_quorum must be in \[1, 10\]"),
        ({"steps_per_wu": -1}, "steps_per_wu must be in"),
        ({"segment_steps": 300}, "multiple of segment_steps"),
        ({"temperature": float("nan")}, "temperature must be a finite number > 0"),
        ({"system_digest": b"short"}, "32 bytes"),
        ({"runs": 1000, "clones": 1000}, "trajectories; the limit is"),
    ],
)
def test_bad_job_specs_are_refused(kwargs, message):
    with pytest.raises(SubmissionError, match=message):
        spec(**kwargs)


def test_a_restart_abandons_work_in_flight_and_reissues_it(hs):
    from coordinator.scheduler import Abandoned

    hs(JobSubmitted("j", spec(), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    hs.ret(a)
    hs(Abandoned(5.0))
    assert hs.s.replicas[b.replica].state == "lost"
    (c,) = hs.request("C")
    hs.ret(c)
    (v,) = hs.of(Validated)
    assert {x for _, x in v.valid} == {"A", "C"}


def test_every_event_survives_the_json_event_log(hs):
    from coordinator.codec import decode_event, encode_event

    hs(JobSubmitted("j", spec(clones=2), (h("s"),)))
    (a,) = hs.request("A")
    hs.ret(a)
    hs(BeaconPublished(h("b")))
    hs(Tick(3.0))
    hs(NodeLost("A", 4.0))
    hs(JobCancelled("j", 5.0))
    unfed = [ReplicaFailed(9, "Z", "crashed", 1.0), SpotCheckReturned(3, "C", (h(1),), CLASS, 2.0)]
    for ev in [*hs.events, *unfed]:
        assert decode_event(encode_event(ev)) == ev
    assert {type(e).__name__ for e in [*hs.events, *unfed]} >= {
        "JobSubmitted",
        "WorkRequested",
        "ResultReturned",
        "ReplicaFailed",
        "BeaconPublished",
        "SpotCheckReturned",
        "Tick",
        "NodeLost",
        "JobCancelled",
    }
    old = '{"body":{"det_class":"c","now":1.0,"slots":2,"volunteer":"A"},"type":"WorkRequested"}'
    assert decode_event(old) == WorkRequested("A", "c", 2, 1.0)  # logs from before engine=


def test_cancel_withdraws_open_work_keeps_validated_work_and_refuses_late_results(hs):
    hs(JobSubmitted("j", spec(clones=3, gens=2), (h("s"),)))
    hs(JobSubmitted("k", spec(), (h("other"),)))
    a = hs.request("A", slots=4)
    b = hs.request("B", slots=4)
    clone0 = [d for d in a + b if d.wu.clone == 0 and d.wu.job == "j"]
    for d in clone0:
        hs.ret(d)  # clone 0's gen 0 is validated before the cancel
    assert len(hs.of(Validated)) == 1
    credits = len(hs.of(GrantCredit))
    assert hs(JobCancelled("j", 1.0)) == []
    assert {w.state for w in hs.s.wus.values() if w.unit.job == "j"} == {"validated", "cancelled"}
    late = next(d for d in a if d.wu.job == "j" and d.wu.clone == 1)
    with pytest.raises(ProtocolError, match="already ended as cancelled"):
        hs.ret(late)
    hs.events.pop()  # a refused event never enters the coordinator's log
    assert all(d.wu.job == "k" for d in hs.request("C", slots=8))  # only the other job
    assert hs(JobCancelled("j", 2.0)) == []  # idempotent: a replayed log stays valid
    hs.now = 10_000.0
    hs(Tick(hs.now))  # deadlines of withdrawn replicas change nothing
    assert len(hs.of(GrantCredit)) == credits and not hs.of(JobCompleted)
    assert all(not v.in_flight or all(hs.s.replicas[r].wu not in
               {w for w in hs.s.wus if hs.s.wus[w].unit.job == "j"} for r in v.in_flight)
               for v in hs.s.volunteers.values())  # fmt: skip
    with pytest.raises(ProtocolError, match="no job"):
        hs(JobCancelled("nope", 3.0))
    hs.events.pop()
    again, _ = replay(
        hs.events, hs.policy
    )  # the log a coordinator keeps (refused events never enter it)
    again.validate_state()
    assert {w.state for w in again.wus.values() if w.unit.job == "j"} == {"validated", "cancelled"}


def test_cancel_withdraws_a_pending_spot_check(hs):
    _build_streak(hs, "A", 10)
    hs(JobSubmitted("j", spec(runs=10), tuple(h("s", r) for r in range(10))))
    for _ in range(10):
        (d,) = hs.request("A")
        hs.ret(d)
        if hs.s.wus[d.wu.id].required == 1:
            break
    hs(BeaconPublished(h("beacon")))
    (chk,) = [i for i in hs(WorkRequested("C", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)]
    hs(JobCancelled("j", 1.0))
    assert not hs.s.volunteers["C"].checks
    with pytest.raises(ProtocolError, match="not assigned"):
        hs(SpotCheckReturned(chk.check, "C", (), CLASS, 2.0))


def test_an_engine_filter_keeps_fresh_wus_of_other_engines(hs):
    hs(JobSubmitted("mm", spec(engine="openmm"), (h("s"),)))
    assert hs(WorkRequested("A", "go-class", 4, 0.0, "go")) == []
    (d,) = hs(WorkRequested("A", "mm-class", 4, 0.0, "openmm"))
    assert d.wu.job == "mm"


def test_a_sybil_pair_agreeing_on_a_fake_is_caught_by_the_audit(hs):
    hs(JobSubmitted("j", spec(audit_rate=1.0), (h("s"),)))
    (a,) = hs.request("mallory-1")
    (b,) = hs.request("mallory-2")
    hs.ret(a, fake_claim(a, "same lie"))
    hs.ret(b, fake_claim(b, "same lie"))
    assert not hs.of(Validated) and not hs.of(GrantCredit)  # a quorum, but not yet valid
    assert hs.request("C") == []  # C is online: an audit can wait for it
    hs(BeaconPublished(h("checkpoint")))
    assert hs.request("mallory-1") == []  # the audit goes to someone outside the quorum
    (chk,) = [i for i in hs(WorkRequested("C", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)]
    honest_ends = tuple(h(a.wu.id, k + 1) for k in chk.segments)
    hs(SpotCheckReturned(chk.check, "C", honest_ends, CLASS, 0.0))
    assert not hs.of(Invalidated)  # one auditor's word does not condemn a quorum...
    while batch := [d for x in PANEL for d in hs.request(x)]:  # ...a fresh panel decides
        for d in batch:
            hs.ret(d)
    assert {i.volunteer for i in hs.of(Invalidated)} == {"mallory-1", "mallory-2"}
    (v,) = hs.of(Validated)
    assert {x for _, x in v.valid} == set(PANEL)
    assert {c.volunteer for c in hs.of(GrantCredit)} == set(PANEL)
    assert hs.s.volunteers["mallory-1"].streak == 0 and hs.s.volunteers["C"].streak == 0


def test_colluders_who_answer_a_dispute_first_do_not_convict_an_honest_auditor(hs):
    """Three colluding established keys drawn into the panel agree on the fake: under a
    first-to-(quorum + 1) rule they would convict the honest auditor whenever they answer
    first. The panel votes until one answer leads by the margin, so every honest voice counts
    against them: the fake quorum is convicted, the outvoted colluders lose their results."""
    hs(JobSubmitted("j", spec(audit_rate=1.0), (h("s"),)))
    (a,) = hs.request("mallory-1")
    (b,) = hs.request("mallory-2")
    hs.ret(a, fake_claim(a, "same lie"))
    hs.ret(b, fake_claim(b, "same lie"))
    assert hs.request("C") == []
    hs(BeaconPublished(h("checkpoint")))
    (chk,) = [i for i in hs(WorkRequested("C", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)]
    honest_ends = tuple(h(a.wu.id, k + 1) for k in chk.segments)
    hs(SpotCheckReturned(chk.check, "C", honest_ends, CLASS, 0.0))
    colluders = ("mallory-3", "mallory-4", "mallory-5")
    votes = []
    while batch := [d for x in (*colluders, *PANEL, "J", "K", "L") for d in hs.request(x)]:
        for d in sorted(batch, key=lambda d: d.volunteer not in colluders):  # colluders first
            votes.append(d.volunteer)
            hs.ret(d, fake_claim(d, "same lie") if d.volunteer in colluders else None)
    assert sorted(v for v in votes if v in colluders) == list(colluders)  # each voted once
    (v,) = hs.of(Validated)
    honest = {x for _, x in v.valid}
    assert honest.isdisjoint(colluders) and len(honest) >= 9  # 9 honest - 3 colluders = 6
    assert {c.volunteer for c in hs.of(Convicted)} == {"mallory-1", "mallory-2"}
    assert {i.volunteer for i in hs.of(Invalidated)} == {"mallory-1", "mallory-2", *colluders}
    assert hs.s.volunteers["C"].trust == "established"
    assert all(hs.s.volunteers[c].trust == "established" for c in colluders)  # not convicted


def test_a_dispute_no_answer_wins_fails_the_wu_and_convicts_nobody():
    hs = Harness(NetworkPolicy(min_audit_rate=0.0, dispute_margin=2))
    hs(JobSubmitted("j", spec(audit_rate=1.0), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    hs.ret(a)
    hs.ret(b)
    assert hs.request("C") == []
    hs(BeaconPublished(h("checkpoint")))
    (chk,) = [i for i in hs(WorkRequested("C", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)]
    hs(SpotCheckReturned(chk.check, "C", tuple(h("lie", k) for k in chk.segments), CLASS, 0.0))
    n = 0
    while batch := [d for x in "DEFGHIJKLMNO" for d in hs.request(x)]:
        for d in batch:  # the panel splits evenly: honest, lie, honest, lie ...
            hs.ret(d, fake_claim(d, "lie") if n % 2 else None)
            n += 1
    (failed,) = hs.of(WUFailed)
    assert "dispute unresolved after 12 fresh results" in failed.reason and n == 12
    assert not hs.of(Convicted) and not hs.of(Validated) and not hs.of(GrantCredit)


def test_a_lying_auditor_cannot_condemn_an_honest_quorum(hs):
    hs(JobSubmitted("j", spec(audit_rate=1.0), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    hs.ret(a)
    hs.ret(b)
    assert hs.request("M") == []
    hs(BeaconPublished(h("checkpoint")))
    (chk,) = [i for i in hs(WorkRequested("M", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)]
    hs(SpotCheckReturned(chk.check, "M", tuple(h("lie", k) for k in chk.segments), CLASS, 0.0))
    while batch := [d for x in PANEL for d in hs.request(x)]:
        for d in batch:
            hs.ret(d)
    (v,) = hs.of(Validated)
    assert {x for _, x in v.valid} == {"A", "B", *PANEL}
    assert not hs.of(Invalidated)
    assert hs.s.volunteers["M"].quota < hs.s.volunteers["A"].quota  # the auditor paid


def test_audits_are_drawn_from_the_beacon_at_the_configured_rate(hs):
    from coordinator.scheduler import audit_coin

    hs(JobSubmitted("j", spec(runs=200, audit_rate=0.25), tuple(h("s", r) for r in range(200))))
    for _ in range(200):
        (a,) = hs.request("A")
        (b,) = hs.request("B")
        hs.ret(a)
        hs.ret(b)
    roots = [w.replicas for w in hs.s.wus.values()]
    assert len(roots) == 200 and not hs.of(Validated)
    assert hs.request("C") == []  # an auditor is online
    hs(BeaconPublished(h("beacon")))
    audited = len(hs.s._check_queue)
    expected = sum(
        audit_coin(hs.s.replicas[w.replicas[0]].claim.segment_root, h("beacon")) < 0.25
        for w in hs.s.wus.values()
    )
    assert audited == expected and 30 <= audited <= 70
    assert len(hs.of(Validated)) == 200 - audited


def test_an_audit_nobody_online_can_run_is_skipped_at_once(hs):
    """Liveness: with only the quorum's own volunteers online, an audit would wait forever."""
    hs(JobSubmitted("j", spec(audit_rate=1.0, deadline_s=100.0), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    hs.ret(a)
    hs.ret(b)
    hs(BeaconPublished(h("checkpoint"), now=10.0))
    (v,) = hs.of(Validated)
    assert {x for _, x in v.valid} == {"A", "B"} and v.spot_checked == ()
    assert {c.volunteer for c in hs.of(GrantCredit)} == {"A", "B"}
    assert not hs.s._check_queue


def test_an_audit_an_online_volunteer_does_not_take_is_skipped_after_the_deadline(hs):
    hs(JobSubmitted("j", spec(audit_rate=1.0, deadline_s=100.0), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    assert hs.request("C") == []  # C is online, so the audit waits for it...
    hs.ret(a)
    hs.ret(b)
    hs(BeaconPublished(h("checkpoint"), now=10.0))
    assert hs.request("A") == [] and hs.request("B") == []  # (neither may audit itself)
    hs(Tick(109.0))
    assert not hs.of(Validated)
    hs(Tick(110.0))  # ...but C never came back: the quorum stands without its audit
    (v,) = hs.of(Validated)
    assert {x for _, x in v.valid} == {"A", "B"} and v.spot_checked == ()
    assert not hs.s._check_queue  # the audit is withdrawn, not left for someone later
    assert [i for i in hs(WorkRequested("C", CLASS, 1, 111.0))] == []


def test_a_volunteer_not_seen_for_a_while_is_not_waited_for(hs):
    assert hs.request("C") == []  # at t = 0, before there is any work
    hs(JobSubmitted("j", spec(audit_rate=1.0, deadline_s=100.0), (h("s"),)))
    hs.now = 500.0
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    hs.ret(a)
    hs.ret(b)
    hs(BeaconPublished(h("checkpoint"), now=500.0))
    assert len(hs.of(Validated)) == 1  # C was last seen 500 s ago: gone


def test_a_lost_auditor_rearms_the_wait(hs):
    hs(JobSubmitted("j", spec(audit_rate=1.0, deadline_s=100.0), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    hs.ret(a)
    hs.ret(b)
    assert hs.request("C") == [] and hs.request("D") == []
    hs(BeaconPublished(h("checkpoint"), now=0.0))
    hs.now = 50.0
    (chk,) = [i for i in hs(WorkRequested("C", CLASS, 1, 50.0)) if isinstance(i, DispatchSpotCheck)]
    hs(NodeLost("C", 70.0))  # the auditor vanishes: the audit is queued again, afresh...
    hs(Tick(169.0))  # (the first wait, at 100, was for C's audit, which C had taken)
    assert not hs.of(Validated)
    hs(Tick(170.0))  # ...and nobody else came within a deadline: the quorum stands
    (v,) = hs.of(Validated)
    assert {x for _, x in v.valid} == {"A", "B"}
    with pytest.raises(ProtocolError):
        hs(SpotCheckReturned(chk.check, "C", (), CLASS, 171.0))


def test_replay_of_an_audit_wait_reaches_the_same_state(hs):
    hs(JobSubmitted("j", spec(audit_rate=1.0, deadline_s=100.0), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    hs.ret(a)
    hs.ret(b)
    assert hs.request("C") == []
    hs(BeaconPublished(h("checkpoint"), now=10.0))
    assert not hs.of(Validated)
    again, _ = replay(hs.events, hs.policy)
    again.validate_state()
    out = again.handle(Tick(110.0))
    assert [type(i).__name__ for i in out].count("Validated") == 1


def test_when_the_last_possible_auditor_is_lost_the_audit_is_skipped(hs):
    hs(JobSubmitted("j", spec(audit_rate=1.0, deadline_s=100.0), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    assert hs.request("C") == []
    hs.ret(a)
    hs.ret(b)
    hs(BeaconPublished(h("checkpoint"), now=10.0))
    assert not hs.of(Validated)  # waiting for C
    hs(NodeLost("C", 20.0))
    (v,) = hs.of(Validated)  # nobody else could audit it: no need to wait out the deadline
    assert {x for _, x in v.valid} == {"A", "B"}


def test_a_check_goes_to_another_class_only_when_nobody_of_its_own_is_online(hs):
    """Go segments can be compared across determinism classes with a tolerance; a bit-exact
    check in the WU's own class is preferred while someone of that class is online."""
    hs(JobSubmitted("j", spec(audit_rate=1.0, deadline_s=100.0), (h("s"),)))
    (a,) = hs.request("A")
    (b,) = hs.request("B")
    assert hs.request("C") == []  # C, of the WU's class, is online
    hs.ret(a)
    hs.ret(b)
    hs(BeaconPublished(h("checkpoint"), now=0.0))
    assert not [
        i for i in hs(WorkRequested("X", "arm-neon", 1, 1.0)) if isinstance(i, DispatchSpotCheck)
    ]
    hs(NodeLost("C", 2.0))  # C leaves: X, of another class, may take the audit now
    (chk,) = [
        i for i in hs(WorkRequested("X", "arm-neon", 1, 3.0)) if isinstance(i, DispatchSpotCheck)
    ]
    hs(SpotCheckReturned(chk.check, "X", (h("other bits"),) * 2, "arm-neon", 4.0, agrees=True))
    (v,) = hs.of(Validated)  # the coordinator found X's states within tolerance
    assert {x for _, x in v.valid} == {"A", "B"}


def test_a_cross_class_check_that_disagrees_sends_an_unreplicated_claim_to_a_quorum(hs):
    hs(JobSubmitted("j", spec(), (h("s"),)))
    hs.s._volunteer("A").streak = 10**6  # an established volunteer: its WU goes unreplicated
    (a,) = hs.request("A")
    assert hs.s.wus[a.wu.id].required == 1
    hs.ret(a, fake_claim(a))
    hs(BeaconPublished(h("checkpoint"), now=0.0))
    (chk,) = [
        i for i in hs(WorkRequested("X", "arm-neon", 1, 1.0)) if isinstance(i, DispatchSpotCheck)
    ]
    hs(
        SpotCheckReturned(
            chk.check, "X", (h("e"),) * len(chk.segments), "arm-neon", 2.0, agrees=False
        )
    )
    assert not hs.of(Invalidated) and not hs.of(GrantCredit)  # disputed, not yet decided
    hs(NodeLost("A", 3.0))
    hs(NodeLost("X", 3.0))
    while batch := [d for x in PANEL for d in hs.request(x)]:
        for d in batch:
            hs.ret(d)
    assert [i.volunteer for i in hs.of(Invalidated)] == ["A"]
    assert {c.volunteer for c in hs.of(GrantCredit)} == set(PANEL)
    assert [c.volunteer for c in hs.of(Convicted)] == ["A"]


def test_engines_without_a_tolerance_keep_checks_in_their_class(hs):
    hs(JobSubmitted("j", spec(engine="openmm", audit_rate=0.0), (h("s"),)))
    hs.s._volunteer("A").streak = 10**6
    (a,) = hs.request("A")
    hs.ret(a)
    hs(BeaconPublished(h("checkpoint"), now=0.0))
    assert not [
        i for i in hs(WorkRequested("X", "cuda", 1, 1.0)) if isinstance(i, DispatchSpotCheck)
    ]
    assert [i for i in hs(WorkRequested("B", CLASS, 1, 1.0)) if isinstance(i, DispatchSpotCheck)]


def test_a_wu_whose_only_replica_walked_away_is_released_from_its_class(hs):
    """One key cannot lock a fresh WU into a class nobody else computes in."""
    hs(JobSubmitted("j", spec(deadline_s=60), (h("s"),)))
    (a,) = hs.request("A", det_class="rare")
    w = hs.s.wus[a.wu.id]
    assert w.det_class == "rare"
    hs.now = 61.0
    hs(Tick(hs.now))  # A never returns
    assert w.det_class is None
    (b,) = hs.request("B")
    (c,) = hs.request("C")
    hs.ret(b)
    hs.ret(c)
    assert w.state == "validated" and w.det_class == CLASS


def test_fresh_keys_alone_never_validate_and_an_established_one_is_drawn_to_join_them(hs):
    hs(JobSubmitted("j", spec(), (h("s"),)))
    (a,) = hs.request("fresh-1")
    assert hs.request("fresh-2") == []  # the second replica must be an established volunteer
    (b,) = hs.request("E")
    hs.ret(a)
    hs.ret(b)
    (v,) = hs.of(Validated)
    assert {x for _, x in v.valid} == {"fresh-1", "E"}
    assert hs.s.volunteers["fresh-1"].proven == 1


def test_probation_ends_after_enough_results_alongside_established_volunteers(hs):
    hs(JobSubmitted("j", spec(gens=5), (h("s"),)))
    for _ in range(5):
        assert (
            hs.s.volunteers.get("fresh-1") is None
            or hs.s.volunteers["fresh-1"].trust == "probation"
        )
        (a,) = hs.request("fresh-1")
        (b,) = hs.request("E")
        hs.ret(a)
        hs.ret(b)
    assert hs.s.volunteers["fresh-1"].trust == "established"


def test_errors_of_keys_on_probation_do_not_fail_a_wu(hs):
    hs(JobSubmitted("j", spec(max_error_results=2), (h("s"),)))
    for i in range(5):
        (d,) = hs.request(f"fresh-{i}")
        hs(ReplicaFailed(d.replica, d.volunteer, "gave up", hs.now))
        assert hs.s.volunteers[d.volunteer].quota < 4
    assert not hs.of(WUFailed)
    (a,) = hs.request("E")
    (b,) = hs.request("F")
    hs.ret(a)
    hs.ret(b)
    assert len(hs.of(Validated)) == 1


def test_a_job_cannot_lower_verification_below_the_network_floor():
    hs = Harness(NetworkPolicy(min_quorum=2, min_audit_rate=0.0))
    hs(JobSubmitted("j", spec(min_quorum=1), (h("s"),)))
    (a,) = hs.request("A")
    hs.ret(a)
    assert not hs.of(Validated) and not hs.of(GrantCredit)  # one result alone: never
    (b,) = hs.request("B")
    hs.ret(b)
    assert len(hs.of(Validated)) == 1


def test_the_ready_queue_head_is_the_queue_as_it_was_asked_even_as_given_keys_move():
    """A request is handed the ready queue's head lazily; moving or removing the WUs it was
    given (what drawing for them does) must not change which others it gets."""
    from coordinator.scheduler import _ReadyQueue

    def keys(prefix: str, n: int) -> list[bytes]:
        return [f"{prefix}{i:03d}".encode() for i in range(n)]

    for n_est, n_any, limit in [(0, 30, 512), (3, 30, 10), (40, 40, 512), (600, 5, 512)]:
        q = _ReadyQueue()
        for k in keys("a", n_any):
            q.add(k, established=False)
        for k in keys("e", n_est):
            q.add(k, established=True)
        expected = (keys("e", n_est) + keys("a", n_any))[:limit]
        got = []
        for i, k in enumerate(q.head(limit, established_free=True)):
            got.append(k)
            if i % 3 == 0:
                q.pop(k)  # taken
            elif i % 3 == 1:
                q.add(k, established=k.startswith(b"a"))  # to the end of the other lane
            q.add(b"new%03d" % i, established=i % 2 == 0)  # queued meanwhile: not given
        assert got == expected
        assert list(q.head(5, established_free=False)) == list(q._any)[:5]


def test_ids_and_draws_keep_their_values_when_computed_in_one_hash_call():
    """WU ids and draws are re-derived by auditors and by replays of old logs: the faster
    forms must give the values of the original length-prefixed updates (pinned here)."""
    from coordinator.draws import _uniform, draw_index
    from coordinator.jobs import wu_id

    ident = wu_id("job-7", 3, 11, 2, bytes(range(32)), b'{"engine": "go"}#attempt=1')
    assert ident.hex() == "af424a5a98b723ce63ea79a415bc84f82084d4149110997eae555623a8226e00"
    assert [draw_index(b"", b"wu" * 18, a, 1000) for a in range(4)] == [41, 787, 961, 446]
    assert draw_index(bytes(32), b"x", 9, 7919) == 3524
    assert draw_index(b"b" * 32, b"", 0, 10**6) == 313831
    for beacon, subject, attempt, n in [(b"", b"s", 0, 5), (b"\x01" * 32, b"q" * 40, 8, 99)]:
        tag, a4 = b"foldnet/draw/v1\x00", attempt.to_bytes(4, "little")
        assert draw_index(beacon, subject, attempt, n) == int(
            _uniform(tag, beacon, subject, a4) * n
        )


def test_the_collector_pause_restores_what_it_found_even_on_an_error():
    import gc

    from coordinator.scheduler import collector_paused

    assert gc.isenabled()
    with pytest.raises(ProtocolError), collector_paused():
        assert not gc.isenabled()
        raise ProtocolError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
