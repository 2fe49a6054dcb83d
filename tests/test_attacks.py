"""Issue 9's attacks, tried over the documented HTTP protocol against a real service.

Each test plays one attacker with its own real keys, real signatures and real uploads, next
to honest volunteers (the operator's trusted machines and keys that earned their standing),
and checks what matters: the cheating keys end with no credit, nothing they invented reaches
the lab's results, honest volunteers keep their credit, and the job still completes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from http_helpers import add_lab, go_job, lab_client, post_job, running_service, signed, trust

from coordinator.classes import CLASSES_FILE
from coordinator.draws import spot_check_segments
from coordinator.http.app import ServiceConfig
from coordinator.policy import NetworkPolicy
from coordinator.service import Coordinator, checkpoint_beacon
from sims.examples import VILLIN_PDB
from sims.go import GoModel
from sims.result import RunResult
from sims.state import State
from worker.adversary import BEHAVIOURS
from worker.identity import Identity
from worker.result import WorkerResult, sign_result
from worker.systems import EngineCache, decode_system
from worker.tasks import ComputeTask, SpotCheckTask, compute, spot_check
from worker.wire import decode_task, encode_result, encode_spot_check

pytestmark = pytest.mark.slow

FAST = ServiceConfig(policy=NetworkPolicy(offer_s=3.0), idle_retry_s=0.1)
ENGINES = EngineCache()


def _det_class() -> str:
    return ENGINES.get(GoModel.from_pdb(VILLIN_PDB)).determinism_class().canonical().decode()


class Volunteer:
    """A volunteer over HTTP. ``behaviour`` turns an honest result into what it uploads."""

    def __init__(self, url: str, name: str, behaviour: str = "honest") -> None:
        self.me = Identity.ephemeral()
        self.name = name
        self.behaviour = behaviour
        self.c = httpx.Client(base_url=url, timeout=60)
        body = json.dumps({"public_key": self.me.public_key.hex(), "name": name}).encode()
        r = signed(self.c, self.me, "POST", "/v1/volunteers", body)
        assert r.status_code == 201, r.text
        self.det_class = _det_class()
        self.results: dict[bytes, WorkerResult] = {}  # what it uploaded, by WU
        self.copy_from: Volunteer | None = None
        self.checks = 0
        self.failed = 0

    @property
    def key(self) -> str:
        return self.me.public_key.hex()

    def close(self) -> None:
        self.c.close()

    def pull(self, slots: int = 2) -> list[dict]:
        body = json.dumps({"det_class": self.det_class, "slots": slots}).encode()
        r = signed(self.c, self.me, "POST", "/v1/work", body)
        assert r.status_code == 200, r.text
        return r.json()["tasks"]

    def task(self, doc: dict) -> ComputeTask | SpotCheckTask:
        r = signed(self.c, self.me, "GET", f"/v1/systems/{doc['system']}")
        assert r.status_code == 200, r.text
        return decode_task(doc, decode_system(r.content))

    def step(self) -> int:
        """Pull once and do (or fake) everything handed out."""
        docs = self.pull()
        for doc in docs:
            t = self.task(doc)
            if isinstance(t, SpotCheckTask):
                self.checks += 1
                self.upload_check(t)
            else:
                self.upload(t)
        return len(docs)

    def upload(self, t: ComputeTask) -> httpx.Response:
        if self.behaviour == "fail":
            self.failed += 1
            body = json.dumps({"reason": "gave up"}).encode()
            r = signed(self.c, self.me, "POST", f"/v1/results/{t.replica}/failure", body)
            assert r.status_code == 200, r.text
            return r
        result = self.result_for(t)
        self.results[t.wu_id] = result
        r = signed(self.c, self.me, "POST", f"/v1/results/{t.replica}", encode_result(result))
        assert r.status_code == 200, r.text
        return r

    def result_for(self, t: ComputeTask) -> WorkerResult:
        if self.behaviour == "never-computed":
            return never_computed(t, self.me)
        if self.behaviour == "copy-invent-frames" and self.copy_from is not None:
            source = self.copy_from.results.get(t.wu_id)
            if source is not None:
                return invented_frames(source, t, self.me)
        return compute(t, engines=ENGINES, identity=self.me)

    def upload_check(self, t: SpotCheckTask) -> None:
        honest = spot_check(t, engines=ENGINES, identity=self.me)
        report = honest
        if self.behaviour == "lying-checker":
            lie = tuple(bytes(32 - len(d)) + d[::-1][: len(d)] for d in honest.end_digests)
            unsigned = dataclasses.replace(honest, end_digests=lie, end_states=(), signature=b"")
            report = dataclasses.replace(unsigned, signature=self.me.sign(unsigned.message()))
        body = json.dumps(encode_spot_check(report)).encode()
        r = signed(self.c, self.me, "POST", f"/v1/checks/{t.check}", body)
        assert r.status_code == 200, r.text

    def me_info(self) -> dict:
        r = signed(self.c, self.me, "GET", "/v1/volunteers/me")
        assert r.status_code == 200, r.text
        return r.json()


def never_computed(t: ComputeTask, me: Identity) -> WorkerResult:
    return BEHAVIOURS["never-computed"](t, ENGINES, me)


def invented_frames(source: WorkerResult, t: ComputeTask, me: Identity) -> WorkerResult:
    """Another key's boundary states, copied, with frames that fold perfectly (q = 1)."""
    engine = ENGINES.get(t.system)
    obs = {k: np.array(v, copy=True) for k, v in source.observables.items()}
    obs["q"] = np.ones_like(obs["q"])
    obs["rmsd"] = np.zeros_like(obs["rmsd"])
    run = RunResult(
        spec=t.spec,
        boundaries=tuple(
            State(positions=p, velocities=v)
            for p, v in zip(source.positions, source.velocities, strict=True)
        ),
        frames=source.frames,
        frame_steps=source.frame_steps,
        observables=obs,
        determinism=engine.determinism_class(),
        wall_time_s=0.01,
    )
    return sign_result(run, wu_id=t.wu_id, identity=me, price=t.price)


def drive(served, vols: list[Volunteer], done: Callable[[], bool], *, rounds: int = 200) -> None:
    for _ in range(rounds):
        for v in vols:
            v.step()
        if done():
            return
        time.sleep(0.05)  # the service's thread ticks: beacons, deadlines, lapsed offers
    names = {v.key: v.name for v in vols}

    def describe(c: Coordinator) -> list[str]:
        s = c.scheduler
        return [
            f"gen {w.unit.gen} {w.state} required={w.required} "
            + str([(names.get(s.replicas[r].volunteer), s.replicas[r].state) for r in w.replicas])
            for w in s.wus.values()
        ] + [
            f"{names.get(k)}: {v.trust} q={v.quota} cap={v.capacity()}"
            for k, v in s.volunteers.items()
        ]

    pytest.fail(
        "the job did not complete:\n" + "\n".join(served.service.thread.call_sync(describe))
    )


def credits(served) -> dict[str, int]:
    return served.service.thread.call_sync(lambda c: c.credits())


def standing(served, v: Volunteer) -> str:
    return served.service.thread.call_sync(lambda c: c.scheduler.volunteers[v.key].trust)


def job_state(lab: httpx.Client, job: str) -> dict:
    return lab.get(f"/v1/jobs/{job}").json()


def lab_column(lab: httpx.Client, job: str, column: str = "q") -> list[float]:
    r = lab.get(f"/v1/jobs/{job}/results")
    assert r.status_code == 200, r.text
    qs: list[float] = []
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        for name in z.namelist():
            if name.endswith(".csv"):
                lines = z.read(name).decode().splitlines()
                col = lines[0].split(",").index(column)
                qs += [float(line.split(",")[col]) for line in lines[1:]]
    assert qs
    return qs


@pytest.fixture
def service(tmp_path: Path):
    key = add_lab(tmp_path / "c", "lab-a")
    opened: list[Volunteer] = []
    with running_service(tmp_path / "c", FAST) as s, lab_client(s.url, key) as lab:
        s.lab = lab  # type: ignore[attr-defined]
        s.opened = opened  # type: ignore[attr-defined]
        yield s
    for v in opened:
        v.close()


def _vol(served, name: str, behaviour: str = "honest") -> Volunteer:
    v = Volunteer(served.url, name, behaviour)
    served.opened.append(v)
    return v


def _submit(served, **kw) -> str:
    r = post_job(served.lab, go_job(**kw))
    assert r.status_code == 202, r.text
    return r.json()["job"]


# -- 1. a volunteer chooses its own determinism class --------------------------------------


def test_attack_1_sybils_in_a_private_class_are_refused_and_fakes_earn_nothing(service):
    job = _submit(service, clones=2, gens=2)
    sybils = [_vol(service, f"sybil{i}", "never-computed") for i in range(3)]
    for s in sybils:  # a class of their own making is refused outright, before any work
        private = json.dumps({"engine": "go", "cpu": f"private-{s.name}"})
        body = json.dumps({"det_class": private, "slots": 1}).encode()
        r = signed(s.c, s.me, "POST", "/v1/work", body)
        assert r.status_code == 422 and r.json()["error"] == "unknown_class", r.text
    # in the real class, three fresh keys that never compute validate nothing among
    # themselves: with nobody established online, nothing they return is ever credited
    for _ in range(10):
        for s in sybils:
            s.step()
        time.sleep(0.05)
    assert job_state(service.lab, job)["wus"]["validated"] == 0
    honest = _vol(service, "operator")
    trust(service, honest.me)
    drive(
        service,
        [*sybils, honest, _vol(service, "carol")],
        lambda: job_state(service.lab, job)["state"] == "completed",
    )
    earned = credits(service)
    assert all(earned.get(s.key, 0) == 0 for s in sybils)
    assert earned.get(honest.key, 0) > 0
    energies = lab_column(service.lab, job, "energy")  # (Q may well stay 0 this early)
    assert len(set(energies)) > 1  # real dynamics, not a repeated input state


# -- 2. copied states with invented frames -------------------------------------------------


def test_attack_2_copied_states_with_invented_frames_never_reach_the_lab(service):
    original = _vol(service, "mallory-a")
    copier = _vol(service, "mallory-b", "copy-invent-frames")
    copier.copy_from = original
    trust(service, original.me, copier.me)  # both built a reputation first
    job = _submit(service, clones=1, gens=1)
    # only the two keys of one person are online: the server has nobody else to draw
    assert original.step() == 1
    assert copier.step() == 1
    honest = _vol(service, "honest")
    trust(service, honest.me)
    drive(
        service,
        [original, copier, honest],
        lambda: job_state(service.lab, job)["state"] == "completed",
    )
    earned = credits(service)
    assert earned.get(copier.key, 0) == 0  # frames and observables are part of the claim
    assert earned.get(original.key, 0) > 0 and earned.get(honest.key, 0) > 0
    assert max(lab_column(service.lab, job)) < 1.0  # the invented q = 1 never got there


def test_attack_2_two_keys_of_one_person_are_not_paired_by_asking_first(service):
    """The server draws the second replica among everyone eligible online; asking right
    after one's partner does not win it (first-come would pair them every time)."""
    honest = [_vol(service, f"h{i}") for i in range(8)]
    pair = [_vol(service, "pair-a"), _vol(service, "pair-b")]
    trust(service, *(v.me for v in honest + pair))
    for v in honest + pair:
        assert v.pull(slots=1) == []  # everyone is online, idle, before the job arrives
    job = _submit(service, clones=16, gens=1)
    drive(
        service,
        [pair[0], pair[1], *honest],
        lambda: job_state(service.lab, job)["state"] == "completed",
    )
    both = set(pair[0].results) & set(pair[1].results)
    assert len(both) <= 3, f"the pair shared {len(both)} of 16 WUs"  # chance: ~16 x 2/90


# -- 3. a lab switches verification off ----------------------------------------------------


def test_attack_3_a_job_cannot_switch_verification_off(service):
    job = _submit(service, clones=1, gens=1, min_quorum=1, audit_rate=0.0)
    faker = _vol(service, "faker", "never-computed")
    trust(service, faker.me)  # even an established key: one result alone is never credited
    for _ in range(10):
        faker.step()
        time.sleep(0.05)
    assert credits(service) == {}
    assert job_state(service.lab, job)["wus"]["validated"] == 0
    a, b = _vol(service, "a"), _vol(service, "b")
    trust(service, a.me, b.me)
    drive(service, [faker, a, b], lambda: job_state(service.lab, job)["state"] == "completed")
    earned = credits(service)
    assert earned.get(faker.key, 0) == 0 and earned.get(a.key, 0) > 0 and earned.get(b.key, 0) > 0


# -- 4. failing work on purpose --------------------------------------------------------------


def test_attack_4_throwaway_keys_cannot_fail_a_trajectory(service):
    job = _submit(service, clones=1, gens=2)  # max_error_results: 3 (the default)
    saboteurs = [_vol(service, f"throwaway{i}", "fail") for i in range(4)]
    for _ in range(3):
        for s in saboteurs:
            s.step()
    honest = [_vol(service, "op"), _vol(service, "bob")]
    trust(service, honest[0].me)
    drive(
        service, [*saboteurs, *honest], lambda: job_state(service.lab, job)["state"] == "completed"
    )
    state = job_state(service.lab, job)
    assert state["wus"]["failed"] == 0 and state["wus"]["validated"] == 2
    assert all(credits(service).get(s.key, 0) == 0 for s in saboteurs)
    quotas = service.service.thread.call_sync(
        lambda c: {s.key: c.scheduler.volunteers[s.key].quota for s in saboteurs}
    )
    assert sum(s.failed for s in saboteurs) >= 2
    assert all(quotas[s.key] < 4 for s in saboteurs if s.failed)  # every failure cost its key


# -- 5. a lying spot-checker -----------------------------------------------------------------


def test_attack_5_a_lying_checker_is_convicted_and_the_honest_result_stands(service):
    honest = _vol(service, "veteran")
    liar = _vol(service, "liar", "lying-checker")
    others = [_vol(service, name) for name in "defghi"]  # a dispute's panel: 2 x (2 + 1)
    trust(service, honest.me, liar.me, *(o.me for o in others))

    def veteran(c: Coordinator) -> None:  # a long record of valid results: unreplicated WUs
        c.scheduler.volunteers[honest.key].streak = 10**6

    service.service.thread.call_sync(veteran)
    job = _submit(service, clones=1, gens=1)
    assert honest.step() == 1
    unreplicated = service.service.thread.call_sync(
        lambda c: [w.required for w in c.scheduler.wus.values()]
    )
    assert unreplicated == [1]
    deadline = time.monotonic() + 30
    while liar.checks == 0 and time.monotonic() < deadline:
        liar.step()  # the beacon draws the segments; the only other online checker: the liar
        time.sleep(0.1)
    assert liar.checks == 1
    assert credits(service) == {}  # disputed: nobody is believed yet
    drive(
        service,
        [*others, honest, liar],
        lambda: job_state(service.lab, job)["state"] == "completed",
    )
    earned = credits(service)
    assert earned.get(honest.key, 0) > 0  # vindicated by the fresh panel
    assert earned.get(liar.key, 0) == 0 and standing(service, liar) == "banned"


# -- 6. unbounded class strings --------------------------------------------------------------


def test_attack_6_a_key_cannot_collect_classes(tmp_path: Path):
    workdir = tmp_path / "c"
    workdir.mkdir()
    real = json.loads(_det_class())
    variants = [
        json.dumps(
            real | {"cpu": f"x86_64/variant{i}/glibc"}, sort_keys=True, separators=(",", ":")
        )
        for i in range(6)
    ]
    (workdir / CLASSES_FILE).write_text(json.dumps({"accepted": variants}))
    add_lab(workdir, "lab-a")
    with running_service(workdir, FAST) as s:
        v = Volunteer(s.url, "collector")
        before = s.stored()
        for i in range(100):  # classes nobody accepted: refused, nothing stored
            v.det_class = json.dumps(
                real | {"cpu": f"junk{i}"}, sort_keys=True, separators=(",", ":")
            )
            body = json.dumps({"det_class": v.det_class, "slots": 1}).encode()
            r = signed(v.c, v.me, "POST", "/v1/work", body)
            assert r.status_code == 422 and r.json()["error"] == "unknown_class"
        assert s.stored() == before
        limit = NetworkPolicy().max_classes_per_volunteer
        for i, cls in enumerate(variants):
            body = json.dumps({"det_class": cls, "slots": 1}).encode()
            r = signed(v.c, v.me, "POST", "/v1/work", body)
            assert r.status_code == (200 if i < limit else 409), r.text
        v.close()


# -- 7. the beacon ---------------------------------------------------------------------------


def test_attack_7_spot_checks_come_from_a_beacon_the_worker_cannot_predict(tmp_path: Path):
    """The segments checked are drawn from a checkpoint published after the worker committed
    and carrying the log's Ed25519 signature: everything the worker could know then (the
    public log, its root and size) does not determine them; an auditor re-derives them from
    the published checkpoint."""
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    model = GoModel.from_pdb(VILLIN_PDB)
    me = Identity.ephemeral()
    coord.trust(me.public_key)
    coord.scheduler.volunteers[me.public_key.hex()].streak = 10**6  # unreplicated from now on
    engine = ENGINES.get(model)
    from coordinator.jobs import JobSpec
    from worker.systems import system_digest

    spec = JobSpec(
        engine="go", system_digest=system_digest(model), runs=1, clones=1, gens=1,
        steps_per_wu=2000, segment_steps=250, report_steps=250, temperature=0.8,
        spot_check_segments=2,
    )  # fmt: skip
    coord.submit(
        lab="lab", system=model, starts=[engine.initial_state(temperature=0.8, seed=3)], spec=spec
    )
    accepted = coord.accept_class(engine.determinism_class().canonical().decode())
    (task,) = coord.request_work(me.public_key, accepted.key, 1, accepted.engine)
    assert isinstance(task, ComputeTask) and coord.scheduler.wus[task.wu_id].required == 1
    result = compute(task, engines=ENGINES, identity=me)
    coord.submit_result(me.public_key, task.replica, result)
    public = (coord.log.root(), coord.log.size)  # all the worker could know when it committed
    cp = coord.tick()
    assert cp is not None and cp.checkpoint.size >= public[1]
    beacon = checkpoint_beacon(cp)
    assert beacon not in {public[0] + public[1].to_bytes(8, "big"), public[0]}
    (chk,) = [c for c in coord.scheduler.checks.values() if c.wu == task.wu_id]
    assert chk.segments == spot_check_segments(result.header.segment_root, beacon, 8, 2)
    # an auditor holding only the published checkpoint text re-derives the same beacon
    from ledger.checkpoint import open_checkpoint

    assert coord.log.verifier is not None
    again = open_checkpoint(cp.encode(), log_verifier=coord.log.verifier)
    assert checkpoint_beacon(again) == beacon
    # and another log key over the very same tree gives another beacon: without the log's
    # private key nobody (the worker included) could have computed it in advance
    from ledger.note import NoteSignature

    forged = dataclasses.replace(
        cp,
        note=dataclasses.replace(
            cp.note,
            signatures=(NoteSignature(cp.note.signatures[0].name, b"\0" * 4, b"\1" * 64),),
        ),
    )
    assert checkpoint_beacon(forged) != beacon
    coord.close()
