"""The adversary benchmark's driver, small: the metrics exist and the invariants hold."""

from __future__ import annotations

import pytest

from benchmarks.adversary import Config, print_results, run_all, simulate

KEYS = {
    "fake_validated_per_10k_f10",
    "fake_validated_per_10k_f30",
    "bound_per_10k_f10",
    "bound_per_10k_f30",
    "attacker_gain_f30",
    "overhead_f0",
    "fresh_fake_validated",
    "wus",
    "wall_s",
}


@pytest.mark.slow
def test_small_run_has_every_metric_and_keeps_the_invariants(capsys):
    metrics, results = run_all(honest=40, wus=1200, join_s=600.0)
    print_results(results, 40)
    assert "f=0.3, no lies" in capsys.readouterr().out
    assert metrics.keys() >= KEYS
    assert metrics["all_finished"] is True
    assert metrics["fresh_fake_validated"] == 0
    lying = results[:3]  # (the run without lies can convict an honest auditor: see below)
    assert not any(r.convicted_honest or r.honest_revoked for r in lying)
    assert metrics["bound_per_10k_f30"] == pytest.approx(837.0)
    assert metrics["bound_per_10k_f10"] == pytest.approx(91.0)
    for r in results:
        assert r.validated >= r.submitted > 0  # every WU of the jobs, and any computed again


@pytest.mark.slow
def test_fresh_sybils_faking_from_the_start_never_validate_a_fake():
    """Probationary attacker keys fake whenever its keys hold the whole quorum: a WU needs
    an established voice, so none of those fakes is ever validated. The scheduler's own
    invariants are checked along the way."""
    r = simulate(
        Config(honest=30, f=0.3, wus=600, join_s=300.0, fresh_fakes=True, validate_every=50)
    )
    assert r.finished
    assert r.fake_returned > 0
    assert r.fresh_fake_validated == 0
    assert r.honest_revoked == 0 and not r.convicted_honest


def test_a_fresh_quorum_of_colluders_does_not_convict_an_honest_auditor():
    from coordinator.scheduler import (
        BeaconPublished,
        Convicted,
        DispatchSpotCheck,
        JobSubmitted,
        NodeLost,
        SpotCheckReturned,
        WorkRequested,
    )
    from tests.test_scheduler import CLASS, Harness, fake_claim, h, spec

    hs = Harness()  # every key here is established (as colluding keys are, after probation)
    hs(JobSubmitted("j", spec(audit_rate=1.0), (h("s"),)))
    (a,) = hs.request("mallory-1")
    (b,) = hs.request("mallory-2")
    hs.ret(a, fake_claim(a, "same lie"))
    hs.ret(b, fake_claim(b, "same lie"))
    assert hs.request("honest-C") == []  # online: the audit waits for it
    hs(BeaconPublished(h("checkpoint")))
    (chk,) = [
        i for i in hs(WorkRequested("honest-C", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)
    ]
    true_ends = tuple(h(a.wu.id, k + 1) for k in chk.segments)
    hs(SpotCheckReturned(chk.check, "honest-C", true_ends, CLASS, 0.0))  # a dispute
    hs(NodeLost("honest-C", 0.0))
    # the dispute's fresh quorum is drawn from whoever is online: two more of the same person
    while batch := hs.request("mallory-3") + hs.request("mallory-4"):
        for d in batch:
            hs.ret(d, fake_claim(d, "same lie"))
    assert "honest-C" not in {c.volunteer for c in hs.of(Convicted)}


def test_a_passed_reverification_leaves_an_established_voice():
    from coordinator.scheduler import (
        BeaconPublished,
        DispatchSpotCheck,
        JobSubmitted,
        SpotCheckReturned,
        WorkRequested,
    )
    from tests.test_scheduler import CLASS, Harness, fake_claim, h, spec

    hs = Harness()  # validate_state runs after every event
    hs(JobSubmitted("j", spec(audit_rate=0.0), (h("s1"),)))
    (a1,) = hs.request("A")
    (b1,) = hs.request("B")
    hs.ret(a1)
    hs.ret(b1)  # WU1: validated by A and B, honestly
    hs(JobSubmitted("k", spec(audit_rate=1.0), (h("s2"),)))
    (a2,) = hs.request("A")
    (b2,) = hs.request("B")
    hs.ret(a2, fake_claim(a2, "same lie"))
    hs.ret(b2, fake_claim(b2, "same lie"))
    assert hs.request("C") == []
    hs(BeaconPublished(h("checkpoint")))
    (chk,) = [i for i in hs(WorkRequested("C", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)]
    hs(SpotCheckReturned(chk.check, "C", tuple(h(a2.wu.id, k + 1) for k in chk.segments), CLASS, 0))
    while batch := [d for x in "DEFGHI" for d in hs.request(x)]:
        for d in batch:
            hs.ret(d)  # A and B convicted: WU1 has no voice left and is re-verified
    assert hs.s.wus[a1.wu.id].reverify is not None
    rv = next((i for i in hs.of(DispatchSpotCheck) if i.wu.id == a1.wu.id), None)
    for _ in range(3):  # the server draws the re-checker among C, D, E, F
        for vol in "CDEF":
            if rv is None:
                got = [
                    i
                    for i in hs(WorkRequested(vol, CLASS, 1, 0.0))
                    if isinstance(i, DispatchSpotCheck)
                ]
                rv = got[0] if got else None
    assert rv is not None and rv.wu.id == a1.wu.id
    ends = tuple(h(a1.wu.id, k + 1) for k in rv.segments)
    hs(SpotCheckReturned(rv.check, rv.volunteer, ends, CLASS, 0))
    assert rv.volunteer in hs.s.wus[a1.wu.id].vouchers  # the re-checker vouches now


def test_a_convict_is_not_credited_for_a_result_awaiting_its_spot_check():
    from coordinator.errors import ProtocolError
    from coordinator.scheduler import (
        BeaconPublished,
        DispatchSpotCheck,
        GrantCredit,
        JobSubmitted,
        SpotCheckReturned,
        WorkRequested,
    )
    from tests.test_scheduler import CLASS, Harness, fake_claim, h, spec

    hs = Harness()  # validate_state runs after every event
    hs(JobSubmitted("j", spec(audit_rate=0.0), (h("s1"),)))
    hs.s._volunteer("A").streak = 10**6  # A's next WU goes unreplicated
    (a1,) = hs.request("A")
    assert hs.s.wus[a1.wu.id].required == 1
    hs.ret(a1)  # WU1 awaits its spot-check
    hs(JobSubmitted("k", spec(audit_rate=1.0), (h("s2"),)))
    (b2,) = hs.request("B")  # B first: WU2 is replicated
    (a2,) = hs.request("A")
    hs.ret(a2, fake_claim(a2, "same lie"))
    hs.ret(b2, fake_claim(b2, "same lie"))
    assert hs.request("C", slots=2) == []
    hs(BeaconPublished(h("checkpoint")))
    checks = {
        i.wu.id: i
        for i in hs(WorkRequested("C", CLASS, 2, 0.0))
        if isinstance(i, DispatchSpotCheck)
    }
    audit, spot = checks[a2.wu.id], checks[a1.wu.id]
    hs(
        SpotCheckReturned(
            audit.check, "C", tuple(h(a2.wu.id, k + 1) for k in audit.segments), CLASS, 0
        )
    )
    while batch := [d for x in "DEFGHI" for d in hs.request(x)]:
        for d in batch:
            hs.ret(d)  # the fresh panel convicts A and B
    assert hs.s.volunteers["A"].trust == "banned"
    # A's unreplicated WU1 is judged again without A: its spot-check is withdrawn...
    with pytest.raises(ProtocolError):
        hs(
            SpotCheckReturned(
                spot.check, "C", tuple(h(a1.wu.id, k + 1) for k in spot.segments), CLASS, 0
            )
        )
    hs.events.pop()  # (a refused event is never logged)
    # ...and A is never credited for it (a fresh panel computed it again without A)
    assert not [g for g in hs.of(GrantCredit) if g.volunteer == "A" and g.wu.id == a1.wu.id]


def test_a_lying_checker_and_colluding_fresh_quorum_do_not_convict_an_honest_result():
    from coordinator.scheduler import (
        BeaconPublished,
        Convicted,
        DispatchSpotCheck,
        JobSubmitted,
        NodeLost,
        SpotCheckReturned,
        WorkRequested,
    )
    from tests.test_scheduler import CLASS, Harness, fake_claim, h, spec

    hs = Harness()
    hs(JobSubmitted("j", spec(audit_rate=0.0), (h("s"),)))
    hs.s._volunteer("honest-H").streak = 10**6  # its WU goes unreplicated
    (d,) = hs.request("honest-H")
    assert hs.s.wus[d.wu.id].required == 1
    hs.ret(d)  # an honest result, awaiting its spot-check
    hs(NodeLost("honest-H", 0.0))
    hs(BeaconPublished(h("checkpoint")))
    (chk,) = [
        i for i in hs(WorkRequested("mallory-1", CLASS, 1, 0.0)) if isinstance(i, DispatchSpotCheck)
    ]
    lie = tuple(h("lie", k) for k in chk.segments)
    hs(SpotCheckReturned(chk.check, "mallory-1", lie, CLASS, 0.0))  # a dispute
    hs(NodeLost("mallory-1", 0.0))
    while batch := hs.request("mallory-2") + hs.request("mallory-3"):
        for r in batch:
            hs.ret(r, fake_claim(r, "same lie"))
    assert "honest-H" not in {c.volunteer for c in hs.of(Convicted)}
