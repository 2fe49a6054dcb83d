"""The coordinator: the I/O shell around the sans-I/O :class:`Scheduler`.

Every event goes to the scheduler first, in memory; an event that changed its state is then
appended to the store (committed at once, or when the enclosing :meth:`Coordinator.batch`
exits), and the scheduler's instructions leave the process only after that commit: ledger
appends here (a batch defers them to its end; idempotent, so that replaying the event log
after a crash appends nothing twice), work handed to a transport (Ray or HTTP) as plain
tasks (a batch's caller holds them until the block exits). An event the scheduler refuses is
never stored; if an append or a batch fails, the scheduler is rebuilt from the committed
events. Results are verified (:func:`worker.result.verify_result`) before they become
events, so the scheduler only ever compares digests that a valid signature vouches for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.classes import AcceptedClass, ClassRegistry
from coordinator.databases import Databases
from coordinator.errors import CorruptionError, ProtocolError, SubmissionError, UsageError
from coordinator.jobs import JobSpec, TrajectoryKey
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
    Instruction,
    Invalidated,
    JobAccepted,
    JobCancelled,
    JobCompleted,
    JobPreparationFailed,
    JobPrepared,
    JobSubmitted,
    NodeLost,
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
from coordinator.plan import JobPlan
from coordinator.policy import NetworkPolicy
from coordinator.prepare import PreparedJob
from coordinator.scheduler import Scheduler, collector_paused
from coordinator.seeding import Seeder
from coordinator.store import Store
from ledger import entries as le
from ledger.checkpoint import SignedCheckpoint
from ledger.keys import load_or_create_private_key
from ledger.log import CheckRules, Log
from ledger.signatures import VerifiedSignatures
from sims.engine import Engine
from sims.examples import VILLIN_PDB
from sims.go import GoModel
from sims.spec import RunSpec
from sims.state import State
from worker.errors import ResultError
from worker.result import Expected, ResultHeader, WorkerResult, segment_frames, verify_result
from worker.systems import (
    EngineCache,
    SystemDefinition,
    decode_system,
    encode_system,
    engine_name,
    particle_count,
    system_digest,
)
from worker.tasks import ComputeTask, SpotCheckResult, SpotCheckTask

logger = logging.getLogger(__name__)

DEFAULT_ORIGIN = "foldnet.local/ledger"

Task = ComputeTask | SpotCheckTask


class _ByteLRU:
    """Recently used arrays, bounded by bytes: the states and boundary states that the next
    dispatch or spot-check is about to need, so the hot path reads nothing back from disk."""

    def __init__(self, budget_bytes: int) -> None:
        self._items: OrderedDict[object, tuple[object, int]] = OrderedDict()
        self.budget = budget_bytes
        self._bytes = 0

    def put(self, key: object, value: object, nbytes: int) -> None:
        if key in self._items or nbytes > self.budget // 4:
            return
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.budget:
            _, (_, n) = self._items.popitem(last=False)
            self._bytes -= n

    def get(self, key: object) -> object | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]


def checkpoint_beacon(cp: SignedCheckpoint) -> bytes:
    """The beacon a signed checkpoint publishes (docs/architecture.md §6.3).

    SHA-256 over the checkpoint's body *and the log's Ed25519 signature on it*. Ed25519
    signatures are deterministic (RFC 8032) but cannot be computed without the log's key,
    so a worker who knows the public log when it commits still cannot predict the beacon
    (and grind its commitment to pick the segments checked); anyone with the checkpoint
    re-derives it. The checkpoint is published after the commitments it judges.
    """
    h = hashlib.sha256(b"foldnet/beacon/v1\x00" + cp.note.text.encode())
    for sig in cp.note.signatures[:1]:  # the log's own signature comes first
        h.update(sig.signature)
    return h.digest()


def _job_id(lab: str, *parts: object) -> str:
    """A fresh job id: SHA-256 over the lab, what it asked for and the time."""
    text = json.dumps([lab, *parts, time.time_ns()])
    return hashlib.sha256(text.encode()).hexdigest()


def det_class_key(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to the coordinator as a result of one call, for logs and progress."""

    validated: tuple[Validated, ...] = ()
    invalidated: tuple[Invalidated, ...] = ()
    failed: tuple[WUFailed, ...] = ()
    completed: tuple[str, ...] = ()
    convicted: tuple[Convicted, ...] = ()
    retracted: tuple[Retracted, ...] = ()


class Coordinator:
    """Jobs in, tasks out, results in, ledger entries out. Not thread-safe: one caller."""

    def __init__(
        self,
        *,
        store: Store,
        log: Log,
        clock: Callable[[], float] = time.time,
        beacon_interval_s: float = 0.5,
        policy: NetworkPolicy | None = None,
        classes: ClassRegistry | None = None,
        signatures: VerifiedSignatures | None = None,
    ) -> None:
        self.store = store
        #: The signatures this process verified (results' attestations); the ledger's
        #: admission consults it when the log was opened with it (:meth:`local`).
        self.signatures = VerifiedSignatures() if signatures is None else signatures
        self.log = log
        self.clock = clock
        self.policy = policy or NetworkPolicy()
        self.scheduler = Scheduler(self.policy)
        #: Determinism classes accepted from volunteers: the operator's list plus what this
        #: machine's own engines report for the systems of its jobs.
        self.classes = classes or ClassRegistry(discover=self._own_classes)
        self._systems: dict[bytes, SystemDefinition] = {}
        self._recorded: set[bytes] = set()  # WU ids with a result in the ledger
        self._registered: set[bytes] = set()
        self._jobs_in_ledger: set[bytes] = set()
        self._grants: dict[tuple[bytes, bytes], int] = {}  # (volunteer, WU) -> credit
        self._revoked: set[tuple[bytes, bytes]] = set()
        self._events: list[Instruction] = []
        self._batching = False
        # ledger records waiting for the batch's commit
        self._deferred: list[Validated | RevokeCredit | le.GenerationSeeded] = []
        #: Ledger records of committed events that the ledger did not take (it was down):
        #: appended after the next group commit (or by a restart's replay), never lost.
        self._unrecorded: list[Validated | RevokeCredit | le.GenerationSeeded] = []
        self._seeds_in_ledger: set[bytes] = set()  # WU ids whose seed the ledger states
        #: Headers of results not yet recorded, so recording reads nothing back from the store.
        self._headers: dict[int, tuple[ResultHeader, bytes]] = {}
        self._engines = EngineCache()  # for the physical sanity checks of results
        self._states = _ByteLRU(64 << 20)  # digest -> State
        self._boundaries = _ByteLRU(128 << 20)  # replica -> (positions, velocities)
        #: Adaptive jobs: where each new generation starts (coordinator/seeding.py).
        self._seeder = Seeder(
            store=store, system=self._system, engines=self._engines, put_state=self._put_state
        )
        #: Checkpoints double as beacons; at most one per interval keeps the log small.
        self.beacon_interval_s = beacon_interval_s
        self._last_beacon = float("-inf")
        self._scan_ledger()
        self._replay()

    @classmethod
    def local(
        cls,
        workdir: str | Path,
        *,
        checkpoint_every: int = 1000,
        beacon_interval_s: float = 0.5,
        policy: NetworkPolicy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Coordinator:
        """The coordinator of ``workdir`` (created): its databases are SQLite files inside it
        or the PostgreSQL ones it remembers (:mod:`coordinator.databases`); the ledger key is
        made on first use.

        ``clock`` (wall seconds; default :func:`time.time`) drives the scheduler's time and,
        when given, the ledger's timestamps too, so that a test can move both together."""
        d = Path(workdir)
        d.mkdir(parents=True, exist_ok=True)
        dbs = Databases.of_folder(d)
        key: Ed25519PrivateKey = load_or_create_private_key(d / "ledger.key")
        store = Store.open(dbs.coordinator, exclusive=True)  # one coordinator per database
        signatures = VerifiedSignatures()
        try:
            log = Log.open(
                dbs.ledger,
                origin=DEFAULT_ORIGIN,
                signing_key=key,
                checkpoint_every=checkpoint_every,
                clock=None if clock is None else lambda: int(clock() * 1000),
                admission=CheckRules(verified=signatures),
            )
        except BaseException:
            store.close()
            raise
        try:
            coord = cls(
                store=store,
                log=log,
                clock=time.time if clock is None else clock,
                beacon_interval_s=beacon_interval_s,
                policy=policy,
                signatures=signatures,
            )
        except BaseException:
            log.close()
            store.close()
            raise
        coord.classes = ClassRegistry.load(d, discover=coord._own_classes)
        return coord

    def close(self) -> None:
        if self._unrecorded:  # a last try; else the next start's replay appends them
            self._record_or_keep(self._unrecorded)
        self.log.close()
        self.store.close()

    # -- start-up --------------------------------------------------------------------------

    def _scan_ledger(self) -> None:
        for _idx, _leaf, data in self.log.store.iter_entries():
            entry = le.decode_record(data).entry
            if isinstance(entry, le.ResultValidated):
                self._recorded.add(entry.wu_id)
            elif isinstance(entry, le.CreditGranted):
                self._grants[(entry.volunteer_key, entry.wu_id)] = entry.amount
            elif isinstance(entry, le.CreditRevoked):
                self._revoked.add((entry.volunteer_key, entry.wu_id))
            elif isinstance(entry, le.VolunteerRegistered):
                self._registered.add(entry.volunteer_key)
            elif isinstance(entry, le.GenerationSeeded):
                self._seeds_in_ledger.add(entry.wu_id)
            elif isinstance(entry, le.JobSubmitted):
                self._jobs_in_ledger.add(entry.job_id)

    def _replay(self, *, abandon: bool = True) -> None:
        replayed: list[Instruction | le.GenerationSeeded] = []
        with collector_paused():  # the state it builds all lives on (scheduler.replay)
            for ev in self.store.events():
                replayed.extend(self.scheduler.handle(ev))
                if isinstance(ev, GenerationSeeded):
                    replayed.append(self._seed_entry(ev))
        # Ledger effects of the history, idempotently: a crash may have come between
        # committing an event and appending its consequences. Not reported by drain():
        # that is what happened before this process started.
        self._record_ledger_effects(replayed)
        if not abandon:  # the same process after a failed batch: its work is still out
            return
        if any(r.state == "assigned" for r in self.scheduler.replicas.values()) or any(
            c.state == "assigned" for c in self.scheduler.checks.values()
        ):
            self._apply(Abandoned(self.clock()))
        self._seed_pending()  # adaptive choices a crash came before

    # -- the event pipeline ----------------------------------------------------------------

    def _apply(self, ev: Event) -> list[Instruction]:
        """Feed one event to the scheduler, log it, then carry out what it says. An event the
        scheduler refuses (:class:`ProtocolError`, raised before it changes anything) is not
        logged, so replay never meets it."""
        out = self.scheduler.handle(ev)
        if not self.scheduler.changed:
            return out
        try:
            self.store.append_events([ev])  # committed (now, or with the batch) before acted on
        except BaseException:
            if not self._batching:  # a batch rebuilds the scheduler itself when it fails
                self._reload()
            raise
        self._carry_out(out)
        return out

    def _carry_out(self, instructions: Sequence[Instruction]) -> None:
        self._record_ledger_effects(instructions)
        self._events.extend(instructions)
        for ins in instructions:
            if isinstance(ins, ChooseSeed):
                self._seed(ins)

    def _seed(self, ins: ChooseSeed) -> None:
        """Run an adaptive job's policy and start the generation where it says. A choice that
        cannot be made now (no validated state left after a retraction) waits for the next
        tick; the trajectory stays in ``scheduler.seeding`` meanwhile."""
        if self.scheduler.seeding.get(TrajectoryKey(ins.job, ins.run, ins.clone)) != ins.gen:
            return  # answered already, or withdrawn (a cancel, a retraction)
        try:
            event, _decision = self._seeder.decide(self.scheduler, ins, self.clock())
        except UsageError:
            return
        self._apply(event)
        self._record_ledger_effects([self._seed_entry(event)])

    def _seed_entry(self, ev: GenerationSeeded) -> le.GenerationSeeded:
        """The ledger's record of a seeding the scheduler just applied."""
        traj = TrajectoryKey(ev.job, ev.run, ev.clone)
        return le.GenerationSeeded(
            job_id=bytes.fromhex(ev.job),
            wu_id=self.scheduler.newest(traj).id,
            parent_wu=ev.parent_wu,
            boundary=ev.boundary,
            parent_state=ev.parent_state,
            input_digest=ev.input_digest,
            decision=ev.decision,
            policy=self.scheduler.jobs[ev.job].spec.adaptive,
        )

    def _seed_pending(self) -> None:
        for traj, gen in list(self.scheduler.seeding.items()):
            self._seed(ChooseSeed(traj.job, traj.run, traj.clone, gen))

    def _record_ledger_effects(
        self, instructions: Sequence[Instruction | le.GenerationSeeded]
    ) -> None:
        todo: list[Validated | RevokeCredit | le.GenerationSeeded] = [
            ins
            for ins in instructions
            if (isinstance(ins, Validated) and ins.wu.id not in self._recorded)
            or isinstance(ins, RevokeCredit)
            or (isinstance(ins, le.GenerationSeeded) and ins.wu_id not in self._seeds_in_ledger)
        ]
        if self._batching:  # appended once the events behind them are committed
            self._deferred.extend(todo)
        elif todo:
            self._record(todo)

    def _record(self, todo: Sequence[Validated | RevokeCredit | le.GenerationSeeded]) -> None:
        """Validated results first (with their grants), then where adaptive generations
        started (their parents are validated by then), then revocations of grants."""
        validated = [t for t in todo if isinstance(t, Validated)]
        if validated:
            self._record_validated(validated)
        seeds = [
            t
            for t in todo
            if isinstance(t, le.GenerationSeeded) and t.wu_id not in self._seeds_in_ledger
        ]
        if seeds:
            self.log.append_batch(seeds)
            self._seeds_in_ledger.update(t.wu_id for t in seeds)
        revocations = []
        revoking: set[tuple[bytes, bytes]] = set()
        for t in todo:
            if not isinstance(t, RevokeCredit):
                continue
            key = bytes.fromhex(t.volunteer)
            pair = (key, t.wu.id)
            if pair not in self._grants:  # granted since start-up: read it back (rare)
                self._scan_ledger()
            amount = self._grants.get(pair)
            if amount is None or pair in self._revoked:
                continue  # never granted on the ledger (or revoked already: a replay)
            evidence = {
                "evidence_wu": t.evidence_wu.hex(),
                "decided_by": list(t.evidence),
                "reason": t.reason,
            }
            if pair in revoking:
                continue
            revocations.append(
                le.CreditRevoked(
                    volunteer_key=key,
                    wu_id=t.wu.id,
                    amount=amount,
                    reason=json.dumps(evidence, sort_keys=True, separators=(",", ":"))[:1000],
                )
            )
            revoking.add(pair)
        if revocations:
            self.log.append_batch(revocations)
            self._revoked |= revoking  # only once appended: a failed append is retried

    def _record_validated(self, validated: Sequence[Validated]) -> None:
        entries = []
        for v in validated:
            if v.wu.id in self._recorded:
                continue
            attestations = []
            cached = {
                r: self._headers.pop(r)
                for r in self.scheduler.wus[v.wu.id].replicas
                if r in self._headers
            }
            for replica, _volunteer in v.valid:
                # After a restart the cache is empty: read back (the arrays stay on disk).
                header, signature = cached.get(replica) or self.store.signed_header(replica)
                attestations.append(
                    le.Attestation(
                        volunteer_key=header.worker_key,
                        issued_at_ms=header.price.issued_at_ms,
                        result_digest=header.digest(),
                        final_state_digest=header.final_digest,
                        signature=signature,
                        price=header.price,  # what the worker signed (the WU's: checked)
                    )
                )
            system = self._system(v.wu.spec.system_digest)
            entries.append(
                le.ResultValidated(
                    wu_id=v.wu.id,
                    job_id=bytes.fromhex(v.wu.job),
                    engine=v.wu.spec.engine,
                    n_particles=int(particle_count(system)),
                    steps=v.wu.spec.steps_per_wu,
                    deadline_s=int(v.wu.spec.deadline_s),
                    attestations=tuple(attestations),
                    spec_digest=v.wu.spec.spec_digest(),
                )
            )
            self._recorded.add(v.wu.id)
        try:
            self.log.record_validated_results(entries)
        except BaseException:
            self._recorded.difference_update(e.wu_id for e in entries)
            raise

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: every event of the calls inside is committed in one transaction
        when the block exits, then their ledger records in one more. Tasks that
        :meth:`request_work` returns inside the block must not be handed out before it exits
        (commit before acting). If the block raises, nothing of it is kept: the store rolls
        back and the scheduler is rebuilt from the committed events. Nested blocks join the
        outer one."""
        if self._batching:
            yield
            return
        self._batching = True
        try:
            with self.store.batch():
                yield
        except BaseException:
            self._deferred.clear()
            self._batching = False
            self._reload()
            raise
        self._batching = False
        deferred, self._deferred = [*self._unrecorded, *self._deferred], []
        if deferred:
            self._record_or_keep(deferred)

    @property
    def ledger_pending(self) -> int:
        """Ledger records of committed events waiting for the ledger (0 but while it is
        down or refuses them)."""
        return len(self._unrecorded)

    def _record_or_keep(self, todo: list[Validated | RevokeCredit | le.GenerationSeeded]) -> None:
        """Append the ledger records of committed events; if the ledger fails, keep them for
        the next group commit. The events are committed, so what they did stands and their
        callers are answered so (a 503 saying nothing was kept would make a volunteer retry
        an upload that counted, and let work handed out in the batch lapse against it).
        Retrying is safe: every record is appended once (:meth:`_record` skips what is on
        the ledger), and a restart's replay appends whatever is still missing."""
        try:
            self._record(todo)
        except Exception:
            self._unrecorded = todo
            logger.exception(
                "the ledger did not take %d records of committed events; retried after the "
                "next group commit",
                len(todo),
            )
        else:
            self._unrecorded = []

    def _reload(self) -> None:
        """Back to the committed state: the scheduler replayed, and every cache dropped
        (replica ids are reused by the replay, so a cached header could name another
        result)."""
        self.scheduler = Scheduler(self.policy)
        self._seeder.forget()
        self._headers.clear()
        self._states = _ByteLRU(self._states.budget)
        self._boundaries = _ByteLRU(self._boundaries.budget)
        self._recorded.clear()
        self._registered.clear()
        self._jobs_in_ledger.clear()
        self._grants.clear()
        self._revoked.clear()
        self._seeds_in_ledger.clear()
        self._scan_ledger()
        self._replay(abandon=False)

    def drain(self) -> Outcome:
        """Instructions carried out since the last call, summarised."""
        evs, self._events = self._events, []
        return Outcome(
            validated=tuple(i for i in evs if isinstance(i, Validated)),
            invalidated=tuple(i for i in evs if isinstance(i, Invalidated)),
            failed=tuple(i for i in evs if isinstance(i, WUFailed)),
            completed=tuple(i.job for i in evs if isinstance(i, JobCompleted)),
            convicted=tuple(i for i in evs if isinstance(i, Convicted)),
            retracted=tuple(i for i in evs if isinstance(i, Retracted)),
        )

    # -- labs ------------------------------------------------------------------------------

    def submit(
        self, *, lab: str, system: SystemDefinition, starts: Sequence[State], spec: JobSpec
    ) -> str:
        """Accept a job prepared already (:func:`coordinator.prepare.prepare_job`); nothing is
        stored unless everything about it is valid."""
        self._check_prepared(system, starts, spec)
        job = _job_id(lab, spec.engine_parameters().decode(), [s.digest().hex() for s in starts])
        self.store.put_job(
            job,
            lab,
            {"engine": spec.engine, "runs": spec.runs, "clones": spec.clones, "gens": spec.gens},
        )
        self._store_prepared(job, lab, system, starts, spec)
        self._apply(JobSubmitted(job, spec, tuple(s.digest() for s in starts)))
        return job

    def accept(self, *, lab: str, plan: JobPlan) -> str:
        """Take a lab's job to be prepared (by a :class:`~coordinator.preparer.Preparer`, in
        another process): its plan is stored and the job is ``preparing`` until
        :meth:`prepared` or :meth:`preparation_failed`. The plan was checked when it was made."""
        job = _job_id(lab, plan.dumps())
        self.store.put_job(
            job,
            lab,
            {
                "engine": plan.engine,
                "runs": plan.runs,
                "clones": plan.clones,
                "gens": plan.gens,
                "description": plan.describe(),
                "parameters": plan.parameters(),
            },
        )
        self.store.put_plan(job, plan.dumps())
        self._apply(JobAccepted(job, plan.engine, plan.wus, self.clock()))
        return job

    def pending_preparations(self) -> list[tuple[str, JobPlan]]:
        """Jobs accepted and not yet prepared, oldest first, with their plans: what a
        coordinator that (re)starts hands to its preparer."""
        out = []
        for job, p in self.scheduler.pending.items():
            if p.state != "preparing":
                continue
            body = self.store.plan(job)
            if body is None:  # the plan commits with the event: only a damaged store lacks it
                self.preparation_failed(job, "the job's plan is missing from the store")
                continue
            out.append((job, _stored_plan(job, body)))
        return out

    def plan(self, job: str) -> JobPlan | None:
        body = self.store.plan(job)
        return None if body is None else _stored_plan(job, body)

    def prepared(self, job: str, prepared: PreparedJob) -> bool:
        """Store a finished preparation and create the job's WUs. False (and nothing stored)
        when the job is no longer waiting for it (cancelled meanwhile, or prepared already
        before a restart). Everything is checked before anything is stored."""
        p = self.scheduler.pending.get(job)
        if p is None or p.state != "preparing":
            return False
        system, starts, spec = prepared
        self._check_prepared(system, starts, spec)
        if spec.engine != p.engine or spec.runs * spec.clones * spec.gens != p.wus:
            raise SubmissionError(f"job {job[:16]} was prepared with another plan than its own")
        lab = str((self.store.job(job) or {}).get("lab", ""))
        self._store_prepared(job, lab, system, starts, spec)
        self._apply(JobPrepared(job, spec, tuple(s.digest() for s in starts), self.clock()))
        return True

    def preparation_failed(self, job: str, reason: str) -> None:
        """The job's preparation failed: it ends ``failed`` with ``reason`` (what its lab
        reads); nothing else of it is stored. A job not preparing any more is left alone."""
        p = self.scheduler.pending.get(job)
        if p is None or p.state != "preparing":
            return
        self._apply(JobPreparationFailed(job, reason[:4000], self.clock()))

    def _check_prepared(
        self, system: SystemDefinition, starts: Sequence[State], spec: JobSpec
    ) -> None:
        if engine_name(system) != spec.engine:
            raise SubmissionError(
                f"the job says engine {spec.engine!r} but the system is for {engine_name(system)!r}"
            )
        if spec.system_digest != system_digest(system):
            raise SubmissionError("spec.system_digest is not the digest of the given system")
        n = particle_count(system)
        if len(starts) != spec.runs:
            raise SubmissionError(
                f"expected {spec.runs} start states (one per run), got {len(starts)}"
            )
        for i, s in enumerate(starts):
            if s.n_atoms != n:
                raise SubmissionError(f"start state {i} has {s.n_atoms} atoms; the system has {n}")

    def _store_prepared(
        self,
        job: str,
        lab: str,
        system: SystemDefinition,
        starts: Sequence[State],
        spec: JobSpec,
    ) -> None:
        """The system, the start states and the ledger's ``job submitted`` entry (once: a
        job prepared again after a restart is not entered twice)."""
        self._systems[spec.system_digest] = system
        self.store.put_system(spec.system_digest, encode_system(system))
        for st in starts:
            self._put_state(st)
        job_id = bytes.fromhex(job)
        if job_id not in self._jobs_in_ledger:
            self.log.append(le.JobSubmitted(job_id=job_id, lab=lab, spec_digest=spec.spec_digest()))
            self._jobs_in_ledger.add(job_id)

    def cancel(self, job: str) -> None:
        """Withdraw a job (its lab's request). Checked before the event is committed, so the
        log never holds an event that replay would refuse."""
        p = self.scheduler.pending.get(job)
        if p is not None:
            if p.state == "failed":
                raise SubmissionError(
                    f"job {job[:16]} failed in its preparation: nothing to cancel"
                )
            if p.state == "cancelled":
                raise SubmissionError(f"job {job[:16]} is already cancelled")
            self._apply(JobCancelled(job, self.clock()))
            return
        j = self.scheduler.jobs.get(job)
        if j is None:
            raise SubmissionError(f"no job {job!r}")
        if j.cancelled:
            raise SubmissionError(f"job {job[:16]} is already cancelled")
        if j.remaining == 0:
            raise SubmissionError(f"job {job[:16]} is already complete: nothing to cancel")
        self._apply(JobCancelled(job, self.clock()))

    def job_done(self, job: str) -> bool:
        j = self.scheduler.jobs.get(job)
        return j is not None and j.remaining == 0

    # -- volunteers ------------------------------------------------------------------------

    def register(self, volunteer_key: bytes, name: str = "") -> None:
        if volunteer_key not in self._registered:
            self.log.append(le.VolunteerRegistered(volunteer_key=volunteer_key, name=name[:100]))
            self._registered.add(volunteer_key)

    def trust(self, volunteer_key: bytes) -> None:
        """The operator vouches for a key (its own machine): established from the start."""
        vol = self.scheduler.volunteers.get(volunteer_key.hex())
        if vol is not None and vol.trust == "established":
            return
        self.register(volunteer_key)
        self._apply(VolunteerTrusted(volunteer_key.hex(), self.clock()))

    def accept_class(self, canonical: str) -> AcceptedClass:
        """A reported determinism class, if this coordinator accepts it
        (:class:`~coordinator.classes.ClassRefusedError` otherwise)."""
        return self.classes.accept(canonical)

    def _own_classes(self) -> list[str]:
        """The classes this machine's engines report for the systems of the jobs here (and
        the Go engine's on a small built-in protein, so that volunteers who come before the
        first job are not refused)."""
        systems = [
            self._system(d) for d in {j.spec.system_digest for j in self.scheduler.jobs.values()}
        ]
        if not any(engine_name(s) == "go" for s in systems):
            systems.append(GoModel.from_pdb(VILLIN_PDB))
        return [self._engines.get(s).determinism_class().canonical().decode() for s in systems]

    def request_work(
        self, volunteer_key: bytes, det_class: str, slots: int, engine: str = ""
    ) -> list[Task]:
        """Tasks for a volunteer computing in ``det_class`` (the key of a class
        :meth:`accept_class` accepted)."""
        self.register(volunteer_key)
        ev = WorkRequested(volunteer_key.hex(), det_class, slots, self.clock(), engine)
        # Committed before any task leaves (and the scheduler rebuilt if the commit fails).
        # A request that changed nothing (an idle volunteer polling) is not logged: replay
        # reaches the same state without it.
        out = self._apply(ev)
        tasks: list[Task] = []
        for ins in out:
            if isinstance(ins, Dispatch):
                tasks.append(
                    ComputeTask(
                        ins.wu.id,
                        ins.replica,
                        self._system(ins.wu.spec.system_digest),
                        self._run_spec(ins),
                        self._state(ins.wu.input_digest),
                        self.price(ins.replica),
                    )
                )
            elif isinstance(ins, DispatchSpotCheck):
                chk = self.scheduler.checks[ins.check]
                tasks.append(
                    SpotCheckTask(
                        ins.wu.id,
                        ins.check,
                        self._system(ins.wu.spec.system_digest),
                        self._run_spec(ins),
                        ins.segments,
                        self._boundary_states(chk.replica, ins.segments),
                    )
                )
        return tasks

    def submit_result(
        self, volunteer_key: bytes, replica: int, result: WorkerResult, *, verified: bool = False
    ) -> None:
        """Verify a returned result and feed it to the scheduler; a bad one counts against its
        volunteer (as an invalid result) and is never stored as a trajectory.

        ``verified``: the caller (an HTTP front-end) verified the signature, every digest and
        the physics against this replica already (:func:`verify_upload`); only the header's
        binding to this replica (WU, key, price, input state, sizes) is checked again here,
        and a result that does not bind is verified in full."""
        wu, system = self._returned(volunteer_key, replica)
        n = particle_count(system)
        price = self.price(replica)
        h = result.header
        bound = (
            h.wu_id == wu.id
            and h.worker_key == volunteer_key
            and h.price == price
            and h.n_atoms == n
            and len(h.boundary_digests) == wu.spec.n_segments + 1
            and h.boundary_digests[0] == wu.input_digest
        )
        try:
            if not (verified and bound):
                expected = Expected(
                    wu_id=wu.id,
                    worker_key=volunteer_key,
                    input_digest=wu.input_digest,
                    n_segments=wu.spec.n_segments,
                    n_atoms=n,
                    n_frames=wu.spec.steps_per_wu // wu.spec.report_steps,
                    segment_steps=wu.spec.segment_steps,
                    report_steps=wu.spec.report_steps,
                    price=price,
                )
                engine = self._engines.get(system)
                verify_upload(
                    result,
                    expected,
                    engine=engine,
                    temperature=wu.spec.temperature,
                    verified=self.signatures,
                )
            det = det_class_key(h.determinism)
            claim = Claim(
                h.final_digest,
                h.segment_root,
                h.boundary_digests,
                det,
                frames_digest=h.frames_digest,
                observables_digest=h.observables_digest,
                segment_data=h.segment_data,
            )
            self.store.put_result(replica, result)
            self._headers[replica] = (h, result.signature)
            self._put_state(
                State(
                    positions=result.positions[-1],
                    velocities=result.velocities[-1],
                    step=(wu.gen + 1) * wu.spec.steps_per_wu,
                )
            )
            self._boundaries.put(
                replica,
                (result.positions, result.velocities),
                result.positions.nbytes + result.velocities.nbytes,
            )
        except ResultError as e:
            claim = Claim(b"\0" * 32, b"\0" * 32, (), "", sane=False, problem=str(e)[:500])
        self._apply(ResultReturned(replica, volunteer_key.hex(), claim, self.clock()))

    def submit_invalid(self, volunteer_key: bytes, replica: int, problem: str) -> None:
        """A result the caller (an HTTP front-end) found invalid (:func:`verify_upload`
        raised ``problem``): counted against its volunteer, as :meth:`submit_result` counts
        a result that does not verify."""
        self._returned(volunteer_key, replica)
        claim = Claim(b"\0" * 32, b"\0" * 32, (), "", sane=False, problem=problem[:500])
        self._apply(ResultReturned(replica, volunteer_key.hex(), claim, self.clock()))

    def _returned(self, volunteer_key: bytes, replica: int) -> tuple[WorkUnit, SystemDefinition]:
        """The WU and system of a replica assigned to this volunteer (else ProtocolError)."""
        rep = self.scheduler.replicas.get(replica)
        if rep is None or rep.volunteer != volunteer_key.hex():
            raise ProtocolError(f"replica {replica} was not assigned to this volunteer")
        if rep.state != "assigned":
            raise ProtocolError(f"replica {replica} already ended as {rep.state}")
        wu = self.scheduler.wus[rep.wu].unit
        return wu, self._system(wu.spec.system_digest)

    def submit_spot_check(self, volunteer_key: bytes, result: SpotCheckResult) -> None:
        result.verify()
        if result.worker_key != volunteer_key:
            raise ProtocolError("spot check signed by another key than the volunteer's")
        chk = self.scheduler.checks.get(result.check)
        if chk is None or chk.volunteer != volunteer_key.hex() or chk.state != "assigned":
            raise ProtocolError(f"spot check {result.check} is not assigned to this volunteer")
        wu = self.scheduler.wus[chk.wu]
        if result.wu_id != chk.wu or tuple(result.segments) != chk.segments:
            # what the volunteer signed must be the check it was given, not another WU's or
            # other segments' digests compared against this one's
            raise ProtocolError(
                f"spot check {result.check} is signed for WU {result.wu_id.hex()[:16]} "
                f"segments {list(result.segments)}, but it checks WU {chk.wu.hex()[:16]} "
                f"segments {list(chk.segments)}: recompute the task as it was handed out"
            )
        # The class a check is compared in is the server's: one it accepts, and the one this
        # volunteer was drawn in, never one its report names for itself.
        det = self.accept_class(result.determinism).key
        declared = self.scheduler.volunteers[chk.volunteer].class_for(wu.unit.spec.engine)
        if det != declared:
            raise ProtocolError(
                f"spot check {result.check} reports determinism class {det}, but this "
                f"volunteer computes {wu.unit.spec.engine} in {declared}"
            )
        if det != wu.det_class and len(result.segment_frames) != len(chk.segments):
            # nothing to compare the frames a lab receives with: not an answer (an older
            # client), so not a contradiction either; the check stays this volunteer's
            raise ProtocolError(
                f"spot check {result.check} comes from another determinism class than its "
                f"WU's, so it must carry the frames and observables of each segment it "
                f"recomputed (segment_frames: {len(chk.segments)}, got "
                f"{len(result.segment_frames)}): update the client and send it again"
            )
        agrees = None if det == wu.det_class else self._agrees_across_classes(chk.id, result)
        self._apply(
            SpotCheckReturned(
                result.check,
                volunteer_key.hex(),
                result.end_digests,
                det,
                self.clock(),
                agrees,
                result.segment_data,
            )
        )

    def _agrees_across_classes(self, check_id: int, result: SpotCheckResult) -> bool:
        """A check from another determinism class: its end states (bound to its signed
        digests) against the claimed boundary states, and its frames and observables (bound
        to its signed segment data) against the claimed ones of those segments, within the
        engine's tolerance. The frames are what a lab receives: a claim whose states are
        right and whose frames were invented does not agree."""
        chk = self.scheduler.checks[check_id]
        wu = self.scheduler.wus[chk.wu].unit
        system = self._system(wu.spec.system_digest)
        tolerance = self._engines.get(system).cross_class_tolerance(wu.spec.segment_steps)
        ends = result.end_states
        if (
            tolerance is None
            or tuple(result.segments) != tuple(chk.segments)
            or len(ends) != len(chk.segments)
            or any(s.digest() != d for s, d in zip(ends, result.end_digests, strict=True))
        ):
            return False
        claimed = self._boundary_states(chk.replica, [k + 1 for k in chk.segments])
        for mine, theirs in zip(ends, claimed, strict=True):
            if mine.n_atoms != theirs.n_atoms:
                return False
            worst = max(
                float(np.max(np.abs(mine.positions - theirs.positions))),
                float(np.max(np.abs(mine.velocities - theirs.velocities))),
            )
            if not worst <= tolerance:
                return False
        segments = result.segment_frames
        if len(result.segment_data) != len(segments) or any(
            seg.digest() != signed
            for seg, signed in zip(segments, result.segment_data, strict=True)
        ):
            return False  # not the frames it signed for
        arrays = self.store.result_arrays(chk.replica)
        frames, steps = arrays["frames"], arrays["frame_steps"]
        obs = {k[4:]: v for k, v in arrays.items() if k.startswith("obs_")}
        for k, seg in zip(chk.segments, segments, strict=True):
            part = segment_frames(k, len(frames), wu.spec.segment_steps, wu.spec.report_steps)
            claimed_obs = {name: v[part] for name, v in obs.items()}
            if not seg.agrees(frames[part], steps[part], claimed_obs, tolerance):
                return False
        return True

    def fail(self, volunteer_key: bytes, replica: int, reason: str) -> None:
        self._apply(ReplicaFailed(replica, volunteer_key.hex(), reason[:500], self.clock()))

    def give_back(self, volunteer_key: bytes, replica: int, reason: str) -> None:
        """A replica its volunteer could not compute, given back (it is reissued): only one
        assigned to that volunteer and still out (:class:`ProtocolError` otherwise, so a
        replica whose result came back is never answered as given back)."""
        self._returned(volunteer_key, replica)
        self.fail(volunteer_key, replica, reason)

    def node_lost(self, volunteer_key: bytes) -> None:
        self._apply(NodeLost(volunteer_key.hex(), self.clock()))

    def tick(self) -> SignedCheckpoint | None:
        """Deadlines; and when unreplicated results wait for randomness, a new checkpoint
        whose root is the beacon their spot-checks are drawn from."""
        now = self.clock()
        if self.scheduler.seeding and not self._batching:
            self._seed_pending()
        deadline = self.scheduler.next_deadline
        if deadline is not None and deadline <= now:  # a tick before any deadline is a no-op
            self._apply(Tick(now))
        if self.scheduler.awaiting_beacon and now - self._last_beacon >= self.beacon_interval_s:
            self._last_beacon = now
            cp = self.log.publish_checkpoint()
            self._apply(BeaconPublished(checkpoint_beacon(cp), now))
            return cp
        return None

    # -- helpers ---------------------------------------------------------------------------

    def price(self, replica: int) -> le.PriceInputs:
        """The credit formula's inputs for a replica, as its task states them and its worker
        must sign them: the WU's engine, particles, steps and deadline, and when it was
        issued (its deadline less the job's ``deadline_s``, in ledger milliseconds)."""
        rep = self.scheduler.replicas[replica]
        spec = self.scheduler.wus[rep.wu].unit.spec
        issued_ms = int((rep.deadline - spec.deadline_s) * 1000)
        return le.PriceInputs(
            engine=spec.engine,
            n_particles=int(particle_count(self._system(spec.system_digest))),
            steps=spec.steps_per_wu,
            deadline_s=int(spec.deadline_s),
            issued_at_ms=max(0, issued_ms),
        )

    def _system(self, digest: bytes) -> SystemDefinition:
        system = self._systems.get(digest)
        if system is None:
            system = self._systems[digest] = decode_system(self.store.system(digest))
        return system

    def _put_state(self, state: State) -> bytes:
        digest = self.store.put_state(state)
        self._states.put(digest, state, state.positions.nbytes + state.velocities.nbytes)
        return digest

    def _state(self, digest: bytes) -> State:
        cached = self._states.get(digest)
        if isinstance(cached, State):
            return cached
        state = self.store.state(digest)  # after a restart: read once, then from memory
        self._states.put(digest, state, state.positions.nbytes + state.velocities.nbytes)
        return state

    def _boundary_states(self, replica: int, segments: Sequence[int]) -> tuple[State, ...]:
        """Boundary states of a stored result, with the simulation step each one is at (a
        recomputed segment reports its frames at those steps)."""
        wu = self.scheduler.wus[self.scheduler.replicas[replica].wu].unit
        first = wu.gen * wu.spec.steps_per_wu
        cached = self._boundaries.get(replica)
        if cached is not None:  # (the hot path: one State per boundary, built with its step)
            positions, velocities = cast("tuple[np.ndarray, np.ndarray]", cached)
            return tuple(
                State(
                    positions=positions[k],
                    velocities=velocities[k],
                    step=first + k * wu.spec.segment_steps,
                )
                for k in segments
            )
        states = self.store.boundary_states(replica, segments)
        return tuple(
            State(
                positions=s.positions,
                velocities=s.velocities,
                step=first + k * wu.spec.segment_steps,
            )
            for s, k in zip(states, segments, strict=True)
        )

    @staticmethod
    def _run_spec(ins: Dispatch | DispatchSpotCheck) -> RunSpec:
        s = ins.wu.spec
        return RunSpec(
            steps=s.steps_per_wu,
            segment_steps=s.segment_steps,
            report_steps=s.report_steps,
            temperature=s.temperature,
            seed=ins.wu.seed,
        )

    def credits(self) -> dict[str, int]:
        """Credit per volunteer (hex key), read back from the ledger."""
        total: dict[str, int] = {}
        for _idx, _leaf, data in self.log.store.iter_entries():
            e = le.decode_record(data).entry
            if isinstance(e, le.CreditGranted):
                total[e.volunteer_key.hex()] = total.get(e.volunteer_key.hex(), 0) + e.amount
            elif isinstance(e, le.CreditRevoked):
                total[e.volunteer_key.hex()] = total.get(e.volunteer_key.hex(), 0) - e.amount
        return total


def _stored_plan(job: str, body: str) -> JobPlan:
    """The plan stored with ``job`` (:class:`CorruptionError` if it does not decode)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise CorruptionError(f"the stored plan of job {job} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise CorruptionError(f"the stored plan of job {job} is not a JSON object")
    return JobPlan.from_json(doc)  # a plan this version refuses: SubmissionError, as on entry


def verify_upload(
    result: WorkerResult,
    expected: Expected,
    *,
    engine: Engine,
    temperature: float,
    verified: VerifiedSignatures | None = None,
) -> None:
    """Everything a returned result must pass before it counts (:class:`ResultError`
    naming the first problem): :func:`worker.result.verify_result` (signature, price,
    shapes, every digest), then the physical sanity of every boundary state
    (docs/architecture.md §6.1), so garbage fails before any replica or spot check is spent
    on it. Pure: an HTTP front-end runs it in its own process, the coordinator otherwise.
    ``verified``: the process's memo of verified signatures (the coordinator's, which its
    ledger consults before verifying the attestation again)."""
    verify_result(result, expected, verified=verified)
    bad = engine.first_insane_state(result.positions, result.velocities, temperature=temperature)
    if bad is not None:
        k, problems = bad
        raise ResultError(f"boundary state {k}: {'; '.join(problems)}")
