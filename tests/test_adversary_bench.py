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


@pytest.mark.xfail(
    strict=True,
    reason="scheduler: a dispute's fresh quorum of two colluding keys convicts the honest "
    "auditor and validates the fake (found by benchmarks.adversary with lie=False)",
)
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
