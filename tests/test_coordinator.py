"""The coordinator end to end in one process (no Ray): real engine, real signatures, real
SQLite, real ledger; volunteers are in-process workers, some of them dishonest."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import sqlalchemy as sa

from coordinator.classes import ClassRefusedError
from coordinator.errors import ProtocolError
from coordinator.jobs import JobSpec
from coordinator.policy import NetworkPolicy
from coordinator.service import DEFAULT_ORIGIN, Coordinator, det_class_key
from ledger import entries as le
from ledger import run_audit
from ledger.errors import EntryRejectedError, StorageError
from ledger.keys import load_or_create_private_key
from ledger.log import Log, UnsafeAdmitAll
from sims.go import GoEngine, GoModel
from sims.state import State
from worker.adversary import BEHAVIOURS
from worker.identity import Identity
from worker.systems import EngineCache, system_digest
from worker.tasks import ComputeTask, SpotCheckTask, spot_check


class Volunteer:
    """An in-process volunteer. Honest ones are the operator's machines (trusted) unless
    ``trusted=False``: these tests are about the coordinator's mechanics, not probation."""

    def __init__(self, behaviour: str = "honest", *, trusted: bool | None = None) -> None:
        self.identity = Identity.ephemeral()
        self.engines = EngineCache()
        self.behaviour = BEHAVIOURS[behaviour]
        self.trusted = behaviour == "honest" if trusted is None else trusted

    @property
    def key(self) -> bytes:
        return self.identity.public_key

    def det_class(self, model: GoModel) -> str:
        return det_class_key(GoEngine(model).determinism_class().canonical().decode())

    def work(self, coord: Coordinator, model: GoModel, slots: int = 2) -> int:
        if self.trusted:
            coord.trust(self.key)
        canonical = GoEngine(model).determinism_class().canonical().decode()
        accepted = coord.accept_class(canonical)
        assert accepted.key == self.det_class(model)
        tasks = coord.request_work(self.key, accepted.key, slots, accepted.engine)
        for t in tasks:
            if isinstance(t, ComputeTask):
                coord.submit_result(
                    self.key, t.replica, self.behaviour(t, self.engines, self.identity)
                )
            else:
                coord.submit_spot_check(
                    self.key, spot_check(t, engines=self.engines, identity=self.identity)
                )
        return len(tasks)


@pytest.fixture(scope="module")
def model(villin_pdb) -> GoModel:
    return GoModel.from_pdb(villin_pdb)


def small_job(coord: Coordinator, model: GoModel, **kw) -> str:
    engine = GoEngine(model)
    base = dict(
        engine="go", system_digest=system_digest(model), runs=1, clones=2, gens=2,
        steps_per_wu=2000, segment_steps=500, report_steps=500, temperature=0.8,
    )  # fmt: skip
    spec = JobSpec(**(base | kw))
    start = engine.initial_state(temperature=0.8, seed=1)
    return coord.submit(lab="lab-a", system=model, starts=[start], spec=spec)


def run_until_done(coord, job, model, volunteers, rounds=40):
    for _ in range(rounds):
        for v in volunteers:
            v.work(coord, model)
        coord.tick()
        if coord.job_done(job):
            return
    pytest.fail(f"job not done: {coord.scheduler.summary()}")


def test_job_completes_cheaters_earn_nothing_and_the_ledger_audits(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    honest = [Volunteer(), Volunteer()]
    cheats = [Volunteer("perturb"), Volunteer("skip")]
    # No audits: with both cheaters among a WU's replicas nobody is left to audit the honest
    # quorum, and the audit's liveness wait (the WU's deadline) is not this test's subject.
    job = small_job(coord, model, audit_rate=0.0)
    run_until_done(coord, job, model, [cheats[0], honest[0], cheats[1], honest[1]])
    out = coord.drain()
    assert len(out.validated) == 4  # 2 clones x 2 gens
    cheat_ids = {c.key.hex() for c in cheats}
    assert {i.volunteer for i in out.invalidated} == cheat_ids
    credits = coord.credits()
    assert set(credits) == {h.key.hex() for h in honest}
    assert all(amount > 0 for amount in credits.values())
    coord.log.publish_checkpoint()
    report = run_audit(coord.log.store.path, workers=1)
    assert report.ok, report.discrepancies
    assert report.balances == {bytes.fromhex(k): v for k, v in credits.items()}
    coord.close()


def test_a_ledger_down_after_the_commit_loses_nothing_and_tells_no_caller_to_retry(
    tmp_path, model, monkeypatch
):
    """The store commits a batch, then the ledger fails to append its records (its database
    is down; injected here): the batch does not raise (what it did is committed, and its
    callers must not be told to retry it), the records wait, and the next group commit after
    the ledger is back appends each exactly once; the log then audits."""
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    a, b = Volunteer(), Volunteer()
    job = small_job(coord, model, audit_rate=0.0)
    record = Log.record_validated_results
    calls = []
    ledger_up = False

    def down(log, entries):
        if ledger_up:
            return record(log, entries)
        calls.append(len(entries))
        raise StorageError("the ledger's database is unavailable (injected)")

    monkeypatch.setattr(Log, "record_validated_results", down)
    with coord.batch():
        for _ in range(3):
            a.work(coord, model)
            b.work(coord, model)
            coord.tick()  # the beacon: the results wait for it
    assert calls, "nothing was validated: the test never reached the ledger"
    validated = [v.wu.id for v in coord.drain().validated]
    assert validated and coord.ledger_pending > 0
    assert all(coord.scheduler.wus[w].state == "validated" for w in validated)  # committed
    assert coord.credits() == {}  # on no ledger yet
    ledger_up = True
    run_until_done(coord, job, model, [a, b])  # each call below is a group commit of its own
    with coord.batch():
        pass
    assert coord.ledger_pending == 0
    recorded = [
        e.wu_id
        for _i, _leaf, data in coord.log.store.iter_entries()
        if isinstance(e := le.decode_record(data).entry, le.ResultValidated)
    ]
    assert sorted(recorded) == sorted(set(recorded)) and set(validated) <= set(recorded)
    assert set(coord.credits()) == {a.key.hex(), b.key.hex()}
    coord.log.publish_checkpoint()
    report = run_audit(coord.log.store.path, workers=1)
    assert report.ok, report.discrepancies
    coord.close()


def test_restart_replays_the_log_and_credits_nothing_twice(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    a, b = Volunteer(), Volunteer()
    job = small_job(coord, model)
    a.work(coord, model)
    b.work(coord, model)
    auditor = Volunteer()
    coord.tick()  # the beacon: gen 0 of both clones validated (or audited first)
    while coord.scheduler.summary().get("validated", 0) < 2:
        auditor.work(coord, model)
        coord.tick()
    in_flight = coord.request_work(a.key, a.det_class(model), 2)  # gen 1, never returned
    assert len(in_flight) == 2
    before = coord.credits()
    size = coord.log.size
    coord.close()

    again = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    assert again.credits() == before and again.log.size == size  # nothing re-appended
    assert all(r.state != "assigned" for r in again.scheduler.replicas.values())
    run_until_done(again, job, model, [a, b, Volunteer()])
    total = again.credits()
    assert sum(total.values()) > sum(before.values())
    again.log.publish_checkpoint()
    assert run_audit(again.log.store.path, workers=1).ok
    again.close()


def test_idle_polling_does_not_grow_the_event_log(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    idle = Volunteer()
    assert idle.work(coord, model) == 0  # no job yet: registers the volunteer, once
    logged = len(list(coord.store.events()))
    for _ in range(50):
        assert idle.work(coord, model) == 0
        coord.tick()
    assert len(list(coord.store.events())) == logged
    coord.close()


def small_job_id(coord: Coordinator) -> str:
    (job,) = coord.scheduler.jobs
    return job


def recorded_wus(coord: Coordinator) -> set[bytes]:
    return {
        e.wu_id
        for _i, _l, d in coord.log.store.iter_entries()
        if isinstance(e := le.decode_record(d).entry, le.ResultValidated)
    }


def test_a_batch_commits_once_and_records_the_ledger_after_the_commit(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    vols = [Volunteer(), Volunteer(), Volunteer()]
    job = small_job(coord, model)
    commits = []
    sa.event.listen(coord.store._engine, "commit", lambda _conn: commits.append(1))
    events_before = len(list(coord.store.events()))
    batches = 0
    while not coord.job_done(job) and batches < 40:
        batches += 1
        with coord.batch():
            recorded_at_start = len(recorded_wus(coord))
            for v in vols:
                v.work(coord, model)
            coord.tick()
            validated_inside = len(coord._deferred)
            # Validated inside the batch, but not yet in the ledger: the events behind the
            # records are not committed yet.
            assert len(recorded_wus(coord)) == recorded_at_start
        assert len(recorded_wus(coord)) == recorded_at_start + validated_inside
    assert coord.job_done(job)
    events = len(list(coord.store.events())) - events_before
    assert len(commits) <= batches < events  # many events, one commit per batch
    assert len(recorded_wus(coord)) == 4
    credits = coord.credits()
    coord.close()
    again = Coordinator.local(tmp_path / "c", beacon_interval_s=0)  # the same state, replayed
    assert again.job_done(job) and again.credits() == credits
    again.close()


def test_a_failed_batch_keeps_nothing_and_the_scheduler_is_rebuilt(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    a = Volunteer()
    small_job(coord, model)
    events_before = len(list(coord.store.events()))
    summary_before = coord.scheduler.summary()
    b = Volunteer()
    with pytest.raises(RuntimeError, match="boom"), coord.batch():
        assert a.work(coord, model) == 2  # results returned (and cached) inside the batch
        raise RuntimeError("boom")
    assert len(list(coord.store.events())) == events_before
    assert coord.scheduler.summary() == summary_before  # the dispatch never happened
    # The same replica ids are handed out again, now to b first: nothing cached from the
    # rolled-back batch may stand in for what b returns.
    run_until_done(coord, small_job_id(coord), model, [b, a, Volunteer()])
    coord.log.publish_checkpoint()
    assert run_audit(coord.log.store.path, workers=1).ok
    coord.close()


def test_a_late_result_is_refused_and_never_logged(tmp_path, model):
    """A result for a replica that already timed out is refused before anything is stored,
    so the event log never holds an event that replay would choke on."""
    now = [1000.0]
    coord = Coordinator(
        store=Coordinator.local(tmp_path / "c").store,
        log=Coordinator.local(tmp_path / "l").log,
        clock=lambda: now[0],
        beacon_interval_s=0,
    )
    a = Volunteer()
    small_job(coord, model, deadline_s=60)
    (task, *_) = coord.request_work(a.key, a.det_class(model), 1)
    result = a.behaviour(task, a.engines, a.identity)
    now[0] += 3600
    coord.tick()  # the replica times out
    n_events = len(list(coord.store.events()))
    with pytest.raises(ProtocolError, match="already ended as timed_out"):
        coord.submit_result(a.key, task.replica, result)
    assert len(list(coord.store.events())) == n_events
    with pytest.raises(ProtocolError):
        coord.submit_result(Volunteer().key, task.replica, result)  # nor someone else's
    coord.close()
    replayed = Coordinator(
        store=Coordinator.local(tmp_path / "c").store,
        log=Coordinator.local(tmp_path / "l").log,
        clock=lambda: now[0],
    )
    assert replayed.scheduler.replicas[task.replica].state == "timed_out"
    replayed.close()


def test_a_fabricated_result_fails_the_physics_sanity_check_before_any_comparison(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    liar = Volunteer("fabricate")
    small_job(coord, model)
    assert liar.work(coord, model) == 2
    out = coord.drain()
    assert len(out.invalidated) == 2 and {i.volunteer for i in out.invalidated} == {liar.key.hex()}
    for inv in out.invalidated:
        assert "kinetic temperature" in inv.reason or "bond" in inv.reason, inv.reason
    assert coord.credits() == {}
    coord.close()


def _other_class(model: GoModel) -> str:
    """The Go class of another CPU flavour (canonical JSON), as an operator would list it."""
    real = json.loads(GoEngine(model).determinism_class().canonical())
    return json.dumps(
        real | {"cpu": "aarch64/base/glibc-2.36"}, sort_keys=True, separators=(",", ":")
    )


def _as_other_class(r, identity: Identity, end_states=None, other: str = "{}"):
    """The same recomputation, reported from another determinism class (re-signed)."""
    states = r.end_states if end_states is None else end_states
    unsigned = dataclasses.replace(
        r,
        determinism=other,
        end_digests=tuple(s.digest() for s in states),
        end_states=states,
        signature=b"",
    )
    return dataclasses.replace(unsigned, signature=identity.sign(unsigned.message()))


@pytest.mark.parametrize(
    ("tamper", "credited"),
    [
        ("none", True),  # honest, other bits: within the Go engine's tolerance
        ("nudge", False),  # end states 1e-3 A away from the claim
        ("mismatch", False),  # end states that are not the ones the digests were signed for
    ],
)
def test_a_spot_check_from_another_determinism_class_is_compared_with_a_tolerance(
    tmp_path, model, tamper, credited
):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    a, x = Volunteer(), Volunteer()
    small_job(coord, model, audit_rate=0.0)
    a.work(coord, model)  # registers A, so it can be given a long streak
    coord.scheduler._volunteer(a.key.hex()).streak = 10**6  # its next WUs go unreplicated
    job = small_job(coord, model, audit_rate=0.0)
    tasks = [t for t in coord.request_work(a.key, a.det_class(model), 2) if t.wu_id]
    unreplicated = [t for t in tasks if coord.scheduler.wus[t.wu_id].required == 1]
    assert unreplicated
    for t in tasks:
        coord.submit_result(a.key, t.replica, a.behaviour(t, a.engines, a.identity))
    coord.tick()  # the beacon: the spot-checks are drawn
    coord.trust(x.key)  # checkers are established volunteers
    other_json = _other_class(model)
    other = coord.classes.add(other_json).key  # the operator accepts that CPU flavour
    checks = [t for t in coord.request_work(x.key, other, 4) if isinstance(t, SpotCheckTask)]
    assert checks  # nobody of A's class may check it, so another class does
    for t in checks:
        honest = spot_check(t, engines=x.engines, identity=x.identity)
        assert len(honest.end_states) == len(t.segments)
        if tamper == "nudge":
            nudged = tuple(
                State(positions=s.positions + 1e-3, velocities=s.velocities, step=s.step)
                for s in honest.end_states
            )
            report = _as_other_class(honest, x.identity, nudged, other_json)
        elif tamper == "mismatch":
            good = _as_other_class(honest, x.identity, other=other_json)
            wrong = tuple(
                State(positions=s.positions + 1e-3, velocities=s.velocities, step=s.step)
                for s in good.end_states
            )
            report = dataclasses.replace(good, end_states=wrong)  # digests still the old ones
        else:
            report = _as_other_class(honest, x.identity, other=other_json)
        coord.submit_spot_check(x.key, report)
    out = coord.drain()
    checked = {t.wu_id for t in checks}
    validated = {v.wu.id for v in out.validated if v.wu.job == job}
    assert (checked <= validated) is credited
    assert not out.invalidated  # a check that disagrees starts a dispute, it condemns nobody
    if not credited:
        assert all(coord.scheduler.wus[w].disputed for w in checked)
        # a fresh panel of A's class settles it: A computed honestly, the checker lied
        run_until_done(coord, job, model, [*(Volunteer() for _ in range(6)), a])
        out = coord.drain()
        assert checked <= {v.wu.id for v in out.validated}
        assert [c.volunteer for c in out.convicted] == [x.key.hex()]
        assert a.key.hex() in coord.credits() and x.key.hex() not in coord.credits()
    coord.close()


@pytest.mark.parametrize("field", ["wu_id", "segments"])
def test_a_spot_check_signed_for_another_wu_or_segments_is_refused(tmp_path, model, field):
    """A check's report binds the WU and segments it was given: a signed report naming
    another WU or other segments is refused and changes nothing (the Ray path calls the
    coordinator with what an actor returned; HTTP checks it before, too)."""
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    a, x = Volunteer(), Volunteer()
    small_job(coord, model, audit_rate=0.0)
    a.work(coord, model)  # registers A, so it can be given a long streak
    coord.scheduler._volunteer(a.key.hex()).streak = 10**6  # its next WUs are spot-checked
    small_job(coord, model, audit_rate=0.0)
    for t in [t for t in coord.request_work(a.key, a.det_class(model), 2) if t.wu_id]:
        coord.submit_result(a.key, t.replica, a.behaviour(t, a.engines, a.identity))
    coord.tick()  # the beacon: the spot checks are drawn
    coord.trust(x.key)
    tasks = coord.request_work(x.key, x.det_class(model), 4)
    checks = [t for t in tasks if isinstance(t, SpotCheckTask)]
    assert checks
    t = checks[0]
    honest = spot_check(t, engines=x.engines, identity=x.identity)
    if field == "wu_id":
        other = next(w for w in coord.scheduler.wus if w != t.wu_id)
        changed = dataclasses.replace(honest, wu_id=other, signature=b"")
    else:
        n = coord.scheduler.wus[t.wu_id].unit.spec.n_segments
        moved = tuple((k + 1) % n for k in honest.segments)
        changed = dataclasses.replace(honest, segments=moved, signature=b"")
    forged = dataclasses.replace(changed, signature=x.identity.sign(changed.message()))
    forged.verify()  # a genuine signature: only the binding is wrong
    with pytest.raises(ProtocolError, match="recompute the task as it was handed out"):
        coord.submit_spot_check(x.key, forged)
    assert coord.scheduler.checks[t.check].state == "assigned"
    coord.submit_spot_check(x.key, honest)  # the report of the check it was given
    assert coord.scheduler.checks[t.check].state == "done"
    coord.close()


class LyingChecker(Volunteer):
    """Computes honestly (it earns credit and standing), lies whenever it checks others."""

    def work(self, coord: Coordinator, model: GoModel, slots: int = 2) -> int:
        coord.trust(self.key)
        det = self.det_class(model)
        tasks = coord.request_work(self.key, det, slots, "go")
        for t in tasks:
            if isinstance(t, ComputeTask):
                coord.submit_result(
                    self.key, t.replica, self.behaviour(t, self.engines, self.identity)
                )
            else:
                honest = spot_check(t, engines=self.engines, identity=self.identity)
                lie = tuple(hashlib.sha256(d).digest() for d in honest.end_digests)
                unsigned = dataclasses.replace(honest, end_digests=lie, signature=b"")
                coord.submit_spot_check(
                    self.key,
                    dataclasses.replace(unsigned, signature=self.identity.sign(unsigned.message())),
                )
        return len(tasks)


def test_a_convicted_key_loses_all_its_credit_on_the_ledger_with_evidence(tmp_path, model):
    policy = NetworkPolicy(min_audit_rate=0.0)
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0, policy=policy)
    liar, h1, h2 = LyingChecker(), Volunteer(), Volunteer()
    first = small_job(coord, model, audit_rate=0.0)
    run_until_done(coord, first, model, [liar, h1])
    earned = coord.credits()[liar.key.hex()]
    assert earned > 0  # an honest record first
    coord.node_lost(liar.key)  # away while the honest quorum computes the next job...
    second = small_job(coord, model, audit_rate=1.0, gens=1)
    assert h1.work(coord, model) == 2 and h2.work(coord, model) == 2  # (two clones)
    assert liar.work(coord, model) == 0  # ...back, idle, online: the only possible auditor
    coord.tick()  # the beacon: the quorum is audited (rate 1.0)
    assert liar.work(coord, model) == 2  # drawn to audit both, and lies
    assert not coord.drain().convicted  # one word against a quorum: a dispute, not a verdict
    run_until_done(coord, second, model, [h1, h2, *(Volunteer() for _ in range(6))])
    assert coord.scheduler.volunteers[liar.key.hex()].trust == "banned"
    assert coord.credits().get(liar.key.hex(), 0) == 0  # every grant taken back
    assert coord.credits()[h1.key.hex()] > 0 and coord.credits()[h2.key.hex()] > 0
    revoked = [
        e
        for _i, _l, d in coord.log.store.iter_entries()
        if isinstance(e := le.decode_record(d).entry, le.CreditRevoked)
    ]
    assert revoked and {e.volunteer_key for e in revoked} == {liar.key}
    assert sum(e.amount for e in revoked) == earned
    evidence = {json.loads(e.reason)["evidence_wu"] for e in revoked}
    assert evidence <= {w.hex() for w in recorded_wus(coord)}  # a validated WU of the ledger
    coord.log.publish_checkpoint()
    report = run_audit(coord.log.store.path, workers=1)
    assert report.ok, report.discrepancies
    assert report.balances.get(liar.key, 0) == 0
    coord.close()


def test_the_auditor_refuses_a_revocation_that_cites_no_validated_result(tmp_path, model):
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    a, b = Volunteer(), Volunteer()
    job = small_job(coord, model, audit_rate=0.0)
    run_until_done(coord, job, model, [a, b])
    (wu, *_) = recorded_wus(coord)
    amount = next(
        e.amount
        for _i, _l, d in coord.log.store.iter_entries()
        if isinstance(e := le.decode_record(d).entry, le.CreditGranted)
        and (e.volunteer_key, e.wu_id) == (a.key, wu)
    )
    fake = json.dumps({"evidence_wu": "ab" * 32, "decided_by": [], "reason": "made up"})
    bad = le.CreditRevoked(volunteer_key=a.key, wu_id=wu, amount=amount, reason=fake)
    with pytest.raises(EntryRejectedError, match="revocation-without-evidence"):
        coord.log.append(bad)  # the log's own rules refuse it...
    path = coord.log.store.path
    coord.close()
    forced = Log.open(path, origin=DEFAULT_ORIGIN, signing_key=load_or_create_private_key(
        tmp_path / "c" / "ledger.key"), admission=UnsafeAdmitAll())  # fmt: skip
    forced.append(bad)  # ...an operator who bypasses them is caught by every auditor
    forced.publish_checkpoint()
    forced.close()
    report = run_audit(path, workers=1)
    assert "revocation-without-evidence" in report.kinds()


def test_a_result_signed_over_inflated_prices_is_invalid_and_earns_nothing(tmp_path, model):
    """A volunteer who computes honestly but signs inflated pricing inputs: its signature is
    valid, but the inputs are not its WU's, so the result counts as invalid."""
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    greedy = Volunteer("inflate-price", trusted=True)
    small_job(coord, model)
    assert greedy.work(coord, model) == 2
    out = coord.drain()
    assert {i.volunteer for i in out.invalidated} == {greedy.key.hex()}
    assert len(out.invalidated) == 2 and not out.validated
    for inv in out.invalidated:
        assert "signed price inputs are not the WU's" in inv.reason, inv.reason
        assert "n_particles: expected 36, got 36000" in inv.reason
        assert "steps: expected 2000, got 20000" in inv.reason
    assert coord.credits() == {}
    coord.close()


def test_the_ledger_records_signed_prices_and_the_job_spec_digest(tmp_path, model):
    """Every attestation on the ledger carries the prices its worker signed (its task's), the
    result entries name the spec digest the job was submitted with, and the audit holds."""
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    job = small_job(coord, model, audit_rate=0.0)
    spec = coord.scheduler.jobs[job].spec
    run_until_done(coord, job, model, [Volunteer(), Volunteer()])
    coord.log.publish_checkpoint()
    entries = [le.decode_record(d).entry for _, _, d in coord.log.store.iter_entries()]
    (submitted,) = [e for e in entries if isinstance(e, le.JobSubmitted)]
    assert submitted.spec_digest == hashlib.sha256(spec.engine_parameters()).digest()
    assert submitted.version == 2
    results = [e for e in entries if isinstance(e, le.ResultValidated)]
    assert len(results) == 4
    for r in results:
        assert r.version == 2 and r.spec_digest == submitted.spec_digest
        for a in r.attestations:
            assert a.price == r.stated_price(a.issued_at_ms)
            assert a.price is not None and a.price.n_particles == 36
            assert a.price.steps == 2000 and a.price.deadline_s == int(spec.deadline_s)
    report = run_audit(coord.log.store.path, workers=1)
    assert report.ok, report.discrepancies
    coord.close()


def test_a_stored_header_reads_back_signed_with_its_price(tmp_path, model):
    """After a restart the ledger attestation is built from the stored header: it must come
    back whole (price and per-segment digests included), so its signature still verifies."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    v = Volunteer()
    small_job(coord, model)
    coord.trust(v.key)
    canonical = GoEngine(model).determinism_class().canonical().decode()
    accepted = coord.accept_class(canonical)
    (task, *_) = coord.request_work(v.key, accepted.key, 1, accepted.engine)
    assert isinstance(task, ComputeTask)
    assert task.price == coord.price(task.replica)
    result = v.behaviour(task, v.engines, v.identity)
    coord.submit_result(v.key, task.replica, result)
    header, signature = coord.store.signed_header(task.replica)
    assert header == result.header and header.price == task.price
    assert header.segment_data == result.header.segment_data
    Ed25519PublicKey.from_public_bytes(v.key).verify(signature, header.message())
    coord.close()


def test_a_checker_cannot_name_its_own_class_in_a_spot_check(tmp_path, model):
    """Attack: drawn to check in the WU's class, a checker signs its report as another class
    (one nobody accepted), which would move the comparison to the cross-class tolerance
    path. The report is refused and nothing is logged; the check stays its to answer."""
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    a, x = Volunteer(), Volunteer()
    a.work(coord, model)
    coord.scheduler._volunteer(a.key.hex()).streak = 10**6  # its next WUs go unreplicated
    small_job(coord, model, audit_rate=0.0)
    tasks = coord.request_work(a.key, a.det_class(model), 2, "go")
    for t in tasks:
        coord.submit_result(a.key, t.replica, a.behaviour(t, a.engines, a.identity))
    coord.tick()  # the beacon
    coord.trust(x.key)
    checks = [
        t
        for t in coord.request_work(x.key, x.det_class(model), 4, "go")
        if isinstance(t, SpotCheckTask)
    ]
    assert checks
    honest = spot_check(checks[0], engines=x.engines, identity=x.identity)
    events = len(list(coord.store.events()))
    with pytest.raises(ClassRefusedError):  # a class nobody accepted
        coord.submit_spot_check(x.key, _as_other_class(honest, x.identity, other='{"engine":"go"}'))
    accepted = coord.classes.add(_other_class(model))
    assert accepted.key != x.det_class(model)
    with pytest.raises(ProtocolError, match="computes go in"):  # accepted, but not x's own
        coord.submit_spot_check(
            x.key, _as_other_class(honest, x.identity, other=accepted.canonical)
        )
    assert len(list(coord.store.events())) == events
    coord.submit_spot_check(x.key, honest)  # its own class: accepted
    coord.close()
