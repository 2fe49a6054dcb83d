"""The coordinator: the I/O shell around the sans-I/O :class:`Scheduler`.

Every event is committed to the store before the scheduler sees it; the scheduler's
instructions are then carried out: ledger appends here (idempotently, so that replaying the
event log after a crash appends nothing twice), work handed to a transport (Ray or HTTP) as
plain tasks. Results are verified (:func:`worker.result.verify_result`) before they become
events, so the scheduler only ever compares digests that a valid signature vouches for.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.errors import ProtocolError, SubmissionError
from coordinator.jobs import JobSpec
from coordinator.scheduler import (
    Abandoned,
    BeaconPublished,
    Claim,
    Dispatch,
    DispatchSpotCheck,
    Event,
    Instruction,
    Invalidated,
    JobCancelled,
    JobCompleted,
    JobSubmitted,
    NodeLost,
    ReplicaFailed,
    ResultReturned,
    Scheduler,
    SpotCheckReturned,
    Tick,
    Validated,
    WorkRequested,
    WUFailed,
)
from coordinator.store import Store
from ledger import entries as le
from ledger.checkpoint import SignedCheckpoint
from ledger.keys import load_or_create_private_key
from ledger.log import Log
from sims.spec import RunSpec
from sims.state import State
from worker.errors import ResultError
from worker.result import WorkerResult, verify_result
from worker.systems import (
    SystemDefinition,
    decode_system,
    encode_system,
    engine_name,
    particle_count,
    system_digest,
)
from worker.tasks import ComputeTask, SpotCheckResult, SpotCheckTask

DEFAULT_ORIGIN = "foldnet.local/ledger"

Task = ComputeTask | SpotCheckTask


def det_class_key(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to the coordinator as a result of one call, for logs and progress."""

    validated: tuple[Validated, ...] = ()
    invalidated: tuple[Invalidated, ...] = ()
    failed: tuple[WUFailed, ...] = ()
    completed: tuple[str, ...] = ()


class Coordinator:
    """Jobs in, tasks out, results in, ledger entries out. Not thread-safe: one caller."""

    def __init__(
        self,
        *,
        store: Store,
        log: Log,
        clock: Callable[[], float] = time.time,
        beacon_interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.log = log
        self.clock = clock
        self.scheduler = Scheduler()
        self._systems: dict[bytes, SystemDefinition] = {}
        self._recorded: set[bytes] = set()  # WU ids with a result in the ledger
        self._registered: set[bytes] = set()
        self._jobs_in_ledger: set[bytes] = set()
        self._events: list[Instruction] = []
        #: Checkpoints double as beacons; at most one per interval keeps the log small.
        self.beacon_interval_s = beacon_interval_s
        self._last_beacon = float("-inf")
        self._scan_ledger()
        self._replay()

    @classmethod
    def local(
        cls, workdir: str | Path, *, checkpoint_every: int = 1000, beacon_interval_s: float = 0.5
    ) -> Coordinator:
        """SQLite coordinator and ledger in ``workdir`` (created), ledger key made on first use."""
        d = Path(workdir)
        d.mkdir(parents=True, exist_ok=True)
        key: Ed25519PrivateKey = load_or_create_private_key(d / "ledger.key")
        log = Log.open(
            d / "ledger.db",
            origin=DEFAULT_ORIGIN,
            signing_key=key,
            checkpoint_every=checkpoint_every,
        )
        return cls(
            store=Store.open(d / "coordinator.db"), log=log, beacon_interval_s=beacon_interval_s
        )

    def close(self) -> None:
        self.log.close()
        self.store.close()

    # -- start-up --------------------------------------------------------------------------

    def _scan_ledger(self) -> None:
        for _idx, _leaf, data in self.log.store.iter_entries():
            entry = le.decode_record(data).entry
            if isinstance(entry, le.ResultValidated):
                self._recorded.add(entry.wu_id)
            elif isinstance(entry, le.VolunteerRegistered):
                self._registered.add(entry.volunteer_key)
            elif isinstance(entry, le.JobSubmitted):
                self._jobs_in_ledger.add(entry.job_id)

    def _replay(self) -> None:
        replayed: list[Instruction] = []
        for ev in self.store.events():
            replayed.extend(self.scheduler.handle(ev))
        # Ledger effects of the history, idempotently: a crash may have come between
        # committing an event and appending its consequences. Not reported by drain():
        # that is what happened before this process started.
        self._record_ledger_effects(replayed)
        if any(r.state == "assigned" for r in self.scheduler.replicas.values()) or any(
            c.state == "assigned" for c in self.scheduler.checks.values()
        ):
            self._apply([Abandoned(self.clock())])

    # -- the event pipeline ----------------------------------------------------------------

    def _apply(self, evs: Sequence[Event]) -> list[Instruction]:
        self.store.append_events(list(evs))  # committed before acted on
        out: list[Instruction] = []
        for ev in evs:
            out.extend(self.scheduler.handle(ev))
        self._carry_out(out)
        return out

    def _carry_out(self, instructions: Sequence[Instruction]) -> None:
        self._record_ledger_effects(instructions)
        self._events.extend(instructions)

    def _record_ledger_effects(self, instructions: Sequence[Instruction]) -> None:
        for ins in instructions:
            if isinstance(ins, Validated) and ins.wu.id not in self._recorded:
                self._record_validated(ins)

    def _record_validated(self, v: Validated) -> None:
        attestations = []
        for replica, _volunteer in v.valid:
            header, signature = self.store.signed_header(replica)  # the arrays stay on disk
            rep = self.scheduler.replicas[replica]
            issued_ms = int((rep.deadline - v.wu.spec.deadline_s) * 1000)
            attestations.append(
                le.Attestation(
                    volunteer_key=header.worker_key,
                    issued_at_ms=max(0, issued_ms),
                    result_digest=header.digest(),
                    final_state_digest=header.final_digest,
                    signature=signature,
                )
            )
        system = self._system(v.wu.spec.system_digest)
        n_particles = particle_count(system)
        self.log.record_validated_result(
            le.ResultValidated(
                wu_id=v.wu.id,
                job_id=bytes.fromhex(v.wu.job),
                engine=v.wu.spec.engine,
                n_particles=int(n_particles),
                steps=v.wu.spec.steps_per_wu,
                deadline_s=int(v.wu.spec.deadline_s),
                attestations=tuple(attestations),
            )
        )
        self._recorded.add(v.wu.id)

    def drain(self) -> Outcome:
        """Instructions carried out since the last call, summarised."""
        evs, self._events = self._events, []
        return Outcome(
            validated=tuple(i for i in evs if isinstance(i, Validated)),
            invalidated=tuple(i for i in evs if isinstance(i, Invalidated)),
            failed=tuple(i for i in evs if isinstance(i, WUFailed)),
            completed=tuple(i.job for i in evs if isinstance(i, JobCompleted)),
        )

    # -- labs ------------------------------------------------------------------------------

    def submit(
        self, *, lab: str, system: SystemDefinition, starts: Sequence[State], spec: JobSpec
    ) -> str:
        """Accept a job; nothing is stored unless everything about it is valid."""
        if engine_name(system) != spec.engine:
            raise SubmissionError(
                f"the job says engine {spec.engine!r} but the system is for {engine_name(system)!r}"
            )
        digest = system_digest(system)
        if spec.system_digest != digest:
            raise SubmissionError("spec.system_digest is not the digest of the given system")
        n = particle_count(system)
        if len(starts) != spec.runs:
            raise SubmissionError(
                f"expected {spec.runs} start states (one per run), got {len(starts)}"
            )
        for i, s in enumerate(starts):
            if s.n_atoms != n:
                raise SubmissionError(f"start state {i} has {s.n_atoms} atoms; the system has {n}")
        job = hashlib.sha256(
            json.dumps(
                [
                    lab,
                    spec.engine_parameters().decode(),
                    [s.digest().hex() for s in starts],
                    time.time_ns(),
                ]
            ).encode()
        ).hexdigest()
        self._systems[digest] = system
        self.store.put_system(digest, encode_system(system))
        start_digests = tuple(self.store.put_state(s) for s in starts)
        self.store.put_job(
            job,
            lab,
            {"engine": spec.engine, "runs": spec.runs, "clones": spec.clones, "gens": spec.gens},
        )
        self.log.append(le.JobSubmitted(job_id=bytes.fromhex(job), lab=lab))
        self._jobs_in_ledger.add(bytes.fromhex(job))
        self._apply([JobSubmitted(job, spec, start_digests)])
        return job

    def cancel(self, job: str) -> None:
        """Withdraw a job (its lab's request). Checked before the event is committed, so the
        log never holds an event that replay would refuse."""
        j = self.scheduler.jobs.get(job)
        if j is None:
            raise SubmissionError(f"no job {job!r}")
        if j.cancelled:
            raise SubmissionError(f"job {job[:16]} is already cancelled")
        if j.remaining == 0:
            raise SubmissionError(f"job {job[:16]} is already complete: nothing to cancel")
        self._apply([JobCancelled(job, self.clock())])

    def job_done(self, job: str) -> bool:
        j = self.scheduler.jobs.get(job)
        return j is not None and j.remaining == 0

    # -- volunteers ------------------------------------------------------------------------

    def register(self, volunteer_key: bytes, name: str = "") -> None:
        if volunteer_key not in self._registered:
            self.log.append(le.VolunteerRegistered(volunteer_key=volunteer_key, name=name[:100]))
            self._registered.add(volunteer_key)

    def request_work(
        self, volunteer_key: bytes, det_class: str, slots: int, engine: str = ""
    ) -> list[Task]:
        self.register(volunteer_key)
        ev = WorkRequested(volunteer_key.hex(), det_class, slots, self.clock(), engine)
        known = ev.volunteer in self.scheduler.volunteers
        out = self.scheduler.handle(ev)
        if out or not known:
            # Committed before any task leaves. A request that changed nothing (an idle
            # volunteer polling) is not logged: replay reaches the same state without it.
            self.store.append_events([ev])
            self._carry_out(out)
        tasks: list[Task] = []
        for ins in out:
            if isinstance(ins, Dispatch):
                tasks.append(
                    ComputeTask(
                        ins.wu.id,
                        ins.replica,
                        self._system(ins.wu.spec.system_digest),
                        self._run_spec(ins),
                        self.store.state(ins.wu.input_digest),
                    )
                )
            elif isinstance(ins, DispatchSpotCheck):
                chk = self.scheduler.checks[ins.check]
                rep = self.store.result(chk.replica)
                tasks.append(
                    SpotCheckTask(
                        ins.wu.id,
                        ins.check,
                        self._system(ins.wu.spec.system_digest),
                        self._run_spec(ins),
                        ins.segments,
                        tuple(
                            State(positions=rep.positions[k], velocities=rep.velocities[k])
                            for k in ins.segments
                        ),
                    )
                )
        return tasks

    def submit_result(self, volunteer_key: bytes, replica: int, result: WorkerResult) -> None:
        """Verify a returned result and feed it to the scheduler; a bad one counts against its
        volunteer (as an invalid result) and is never stored as a trajectory."""
        rep = self.scheduler.replicas.get(replica)
        if rep is None or rep.volunteer != volunteer_key.hex():
            raise ProtocolError(f"replica {replica} was not assigned to this volunteer")
        wu = self.scheduler.wus[rep.wu].unit
        system = self._system(wu.spec.system_digest)
        n = particle_count(system)
        try:
            verify_result(
                result,
                wu_id=wu.id,
                worker_key=volunteer_key,
                input_digest=wu.input_digest,
                n_segments=wu.spec.n_segments,
                n_atoms=n,
                n_frames=wu.spec.steps_per_wu // wu.spec.report_steps,
            )
            det = det_class_key(result.header.determinism)
            claim = Claim(
                result.header.final_digest,
                result.header.segment_root,
                result.header.boundary_digests,
                det,
            )
            self.store.put_result(replica, result)
            self.store.put_state(
                State(
                    positions=result.positions[-1],
                    velocities=result.velocities[-1],
                    step=(wu.gen + 1) * wu.spec.steps_per_wu,
                )
            )
        except ResultError as e:
            claim = Claim(b"\0" * 32, b"\0" * 32, (), "", sane=False, problem=str(e)[:500])
        self._apply([ResultReturned(replica, volunteer_key.hex(), claim, self.clock())])

    def submit_spot_check(self, volunteer_key: bytes, result: SpotCheckResult) -> None:
        result.verify()
        if result.worker_key != volunteer_key:
            raise ProtocolError("spot check signed by another key than the volunteer's")
        self._apply(
            [
                SpotCheckReturned(
                    result.check,
                    volunteer_key.hex(),
                    result.end_digests,
                    det_class_key(result.determinism),
                    self.clock(),
                )
            ]
        )

    def fail(self, volunteer_key: bytes, replica: int, reason: str) -> None:
        self._apply([ReplicaFailed(replica, volunteer_key.hex(), reason[:500], self.clock())])

    def node_lost(self, volunteer_key: bytes) -> None:
        self._apply([NodeLost(volunteer_key.hex(), self.clock())])

    def tick(self) -> SignedCheckpoint | None:
        """Deadlines; and when unreplicated results wait for randomness, a new checkpoint
        whose root is the beacon their spot-checks are drawn from."""
        now = self.clock()
        deadline = self.scheduler.next_deadline
        if deadline is not None and deadline <= now:  # a tick before any deadline is a no-op
            self._apply([Tick(now)])
        if self.scheduler.awaiting_beacon and now - self._last_beacon >= self.beacon_interval_s:
            self._last_beacon = now
            cp = self.log.publish_checkpoint()
            beacon = cp.checkpoint.root_hash + cp.checkpoint.size.to_bytes(8, "big")
            self._apply([BeaconPublished(beacon)])
            return cp
        return None

    # -- helpers ---------------------------------------------------------------------------

    def _system(self, digest: bytes) -> SystemDefinition:
        system = self._systems.get(digest)
        if system is None:
            system = self._systems[digest] = decode_system(self.store.system(digest))
        return system

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
