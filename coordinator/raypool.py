"""The Ray transport: drive one volunteer actor per volunteer node, feed results back.

Ray is only a transport here: every job, WU and ledger state lives in the coordinator's
store. A replica is placed on its volunteer's node through the node's ``vol:<id>`` resource
(the volunteer joined with it, and with a ``volunteer-id`` label), so the scheduler's rule
"distinct volunteers per WU" is a rule about distinct machines. The loop never blocks on one
volunteer: ``ray.wait`` with a short timeout, deadlines enforced by the scheduler's ticks,
and a node that dies is reported as lost so its replicas are reissued elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from coordinator.errors import (
    ClassRefusedError,
    CoordinatorUnavailableError,
    ProtocolError,
    UsageError,
)
from coordinator.service import Coordinator, Task
from worker.adversary import HONEST
from worker.ray_actor import VolunteerWorker
from worker.systems import SystemDefinition, system_digest
from worker.tasks import ComputeTask, SpotCheckTask, TaskFailed

log = logging.getLogger(__name__)

VOLUNTEER_RESOURCE_PREFIX = "vol:"


@dataclass(frozen=True, slots=True)
class VolunteerSpec:
    """One volunteer node as the pool sees it: its resource name and how its actor runs."""

    resource: str  # e.g. "vol:alice": the node's custom resource
    key_path: str | None = None  # on the volunteer's node; None: that node's default key
    behaviour: str = HONEST  # anything else only in demos and tests
    slots: int = 2  # WUs queued on the actor at once (one running, one waiting)
    num_cpus: float = 1.0
    #: The operator's own machine: established from the start (see
    #: ``coordinator.messages.VolunteerTrusted``); volunteers who joined are on probation.
    trusted: bool = False


#: Tiny tasks are sent in batches of about this much compute per Ray call, and a volunteer
#: is kept about two batches deep so that it never waits for a round trip.
BATCH_TARGET_S = 0.15
MAX_TASKS_PER_CALL = 64


def task_work(task: Task) -> float:
    """The size of a task in particle-steps: what its compute time is proportional to."""
    if isinstance(task, ComputeTask):
        return float(task.spec.steps * task.input_state.n_atoms)
    n_atoms = task.start_states[0].n_atoms if task.start_states else 0
    return float(len(task.segments) * task.spec.segment_steps * n_atoms)


def plan_calls(tasks: list[Task], seconds_per_work: float | None) -> list[list[Task]]:
    """Group a volunteer's new tasks into Ray calls: consecutive tasks share a call while
    their estimated compute stays under ``BATCH_TARGET_S``; a long task (or any task while
    the volunteer's speed is unknown) travels alone, so its result is back as soon as it
    is done."""
    if seconds_per_work is None:
        return [[t] for t in tasks]
    calls: list[list[Task]] = []
    current: list[Task] = []
    est = 0.0
    for t in tasks:
        cost = task_work(t) * seconds_per_work
        if current and (est + cost > BATCH_TARGET_S or len(current) >= MAX_TASKS_PER_CALL):
            calls.append(current)
            current, est = [], 0.0
        current.append(t)
        est += cost
    if current:
        calls.append(current)
    return calls


@dataclass(slots=True)
class _Member:
    spec: VolunteerSpec
    actor: Any
    key: bytes
    classes: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    in_flight: int = 0
    alive: bool = True
    #: running mean of compute seconds per particle-step, measured by the actor
    seconds_per_work: float | None = None
    queued_s: float = 0.0  # estimated compute of the tasks in flight

    def estimate(self, tasks: list[Task]) -> float:
        spw = self.seconds_per_work
        return 0.0 if spw is None else spw * sum(task_work(t) for t in tasks)

    def wants(self) -> int:
        """How many more tasks to ask for now: up to ``spec.slots`` in flight, and beyond
        that only while the queued work is short (tiny tasks), one probe at a time until
        their size is known, so a volunteer never hoards long WUs."""
        room = self.spec.slots - self.in_flight
        if room > 0:
            return room
        if self.seconds_per_work is None or self.queued_s >= 2 * BATCH_TARGET_S:
            return 0
        return 1


def discover_volunteers() -> list[VolunteerSpec]:
    """A spec per ``vol:<id>`` resource of the alive nodes of the connected cluster."""
    found = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        for res in node.get("Resources", {}):
            if res.startswith(VOLUNTEER_RESOURCE_PREFIX):
                found.append(VolunteerSpec(resource=res))
    return sorted(found, key=lambda s: s.resource)


class RayPool:
    """Volunteer actors and the loop that keeps them busy with the coordinator's work."""

    def __init__(self, coordinator: Coordinator, volunteers: list[VolunteerSpec]) -> None:
        if not ray.is_initialized():
            raise UsageError("Ray is not initialised: call ray.init(...) first")
        if len({v.resource for v in volunteers}) != len(volunteers):
            raise UsageError("two volunteers share one node resource")
        self.coordinator = coordinator
        remote = ray.remote(VolunteerWorker)
        self.members: list[_Member] = []
        for spec in volunteers:
            actor = remote.options(
                resources={spec.resource: 0.001}, num_cpus=spec.num_cpus, max_restarts=0,
                max_concurrency=1,
            ).remote(key_path=spec.key_path, behaviour=spec.behaviour)  # fmt: skip
            self.members.append(_Member(spec, actor, b""))
        hellos = ray.get([m.actor.hello.remote() for m in self.members], timeout=120)
        for m, (key, _pid) in zip(self.members, hellos, strict=True):
            m.key = key
            coordinator.register(key, name=m.spec.resource)
            if m.spec.trusted:
                coordinator.trust(key)
        self._pending: dict[Any, tuple[_Member, list[Task], float]] = {}
        self._turn = 0

    def _det_class(self, m: _Member, system: SystemDefinition) -> tuple[str, str]:
        """The (class key, engine) the member computes ``system`` in, if the coordinator
        accepts that class (:class:`~coordinator.classes.ClassRefusedError` otherwise)."""
        digest = system_digest(system)
        if digest not in m.classes:
            canonical = ray.get(m.actor.determinism_class.remote(system), timeout=300)
            accepted = self.coordinator.accept_class(canonical)
            m.classes[digest] = (accepted.key, accepted.engine)
        return m.classes[digest]

    def _request(self, m: _Member, systems: list[SystemDefinition], n: int) -> list[Task] | None:
        got: list[Task] = []
        for system in systems:
            if len(got) >= n:
                break
            try:
                det, engine = self._det_class(m, system)
            except (RayActorError, GetTimeoutError):
                self._lose(m)
                return None
            except ClassRefusedError as e:  # a class the coordinator does not know: no work
                if m.alive:
                    log.warning("volunteer %s refused: %s", m.spec.resource, e)
                    m.alive = False
                return None
            got.extend(self.coordinator.request_work(m.key, det, n - len(got), engine))
        return got

    def _feed(self, systems: list[SystemDefinition]) -> list[tuple[_Member, list[Task]]]:
        """Ask the coordinator for work for every volunteer with room; the calls to send."""
        calls: list[tuple[_Member, list[Task]]] = []
        # Rotate who asks first, so that no volunteer is starved by list order.
        self._turn = (self._turn + 1) % len(self.members)
        for m in self.members[self._turn :] + self.members[: self._turn]:
            got: list[Task] = []
            while m.alive and (n := m.wants()) > 0:
                if m.in_flight >= m.spec.slots and got:
                    # Beyond the slots: after a probe, take as many more as fit the target.
                    per = m.estimate(got[-1:])
                    n = max(
                        1,
                        min(
                            MAX_TASKS_PER_CALL,
                            int((2 * BATCH_TARGET_S - m.queued_s) / max(per, 1e-9)),
                        ),
                    )
                new = self._request(m, systems, n)
                if not new:
                    break
                got.extend(new)
                m.in_flight += len(new)
                m.queued_s += m.estimate(new)
                if m.in_flight >= MAX_TASKS_PER_CALL * 2:
                    break
            calls.extend((m, call) for call in plan_calls(got, m.seconds_per_work))
        return calls

    def _send(self, calls: list[tuple[_Member, list[Task]]]) -> None:
        for m, tasks in calls:
            self._pending[m.actor.run_batch.remote(tasks)] = (m, tasks, m.estimate(tasks))

    def _lose(self, m: _Member) -> None:
        if m.alive:
            log.warning("volunteer %s is gone; its work is reissued", m.spec.resource)
            m.alive = False
            self.coordinator.node_lost(m.key)

    def _collect(self, ref: Any) -> None:
        m, tasks, estimate = self._pending.pop(ref)
        m.in_flight -= len(tasks)
        m.queued_s = max(0.0, m.queued_s - estimate)
        try:
            results, busy_s = ray.get(ref)
        except RayActorError:
            self._lose(m)
            return
        except RayTaskError as e:  # the whole call failed: every task in it did
            results, busy_s = [TaskFailed(f"{type(e.cause).__name__}: {e.cause}")] * len(tasks), 0.0
        if len(results) != len(tasks):
            log.warning("volunteer %s answered %d tasks with %d results", m.spec.resource,
                        len(tasks), len(results))  # fmt: skip
            return  # the replicas time out and are reissued
        work = sum(task_work(t) for t in tasks)
        if work > 0 and busy_s > 0:
            spw = busy_s / work
            m.seconds_per_work = (
                spw if m.seconds_per_work is None else 0.8 * m.seconds_per_work + 0.2 * spw
            )
        for task, result in zip(tasks, results, strict=True):
            try:
                if isinstance(result, TaskFailed):
                    if isinstance(task, ComputeTask):
                        self.coordinator.fail(m.key, task.replica, result.reason)
                elif isinstance(task, SpotCheckTask):
                    self.coordinator.submit_spot_check(m.key, result)
                else:
                    self.coordinator.submit_result(m.key, task.replica, result)
            except (ProtocolError, ClassRefusedError) as e:
                log.info("late or unexpected result from %s ignored: %s", m.spec.resource, e)

    def run(
        self,
        systems: list[SystemDefinition],
        *,
        until: Callable[[], bool],
        timeout_s: float = 3600.0,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        """Keep every volunteer busy until ``until()`` holds (or ``timeout_s`` passes).

        Each turn of the loop takes every finished call, feeds the volunteers and ticks the
        coordinator inside one group commit; the new tasks leave only after it committed.
        """
        deadline = time.monotonic() + timeout_s
        while not until():
            if time.monotonic() > deadline:
                raise CoordinatorUnavailableError(f"work not finished after {timeout_s:.0f} s")
            if not any(m.alive for m in self.members):
                raise CoordinatorUnavailableError("every volunteer is gone")
            ready: list[Any] = []
            if self._pending:
                ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=0.25)
                if ready:  # take everything else that is already done, too
                    more, _ = ray.wait(
                        list(self._pending), num_returns=len(self._pending), timeout=0
                    )
                    ready = list(dict.fromkeys([*ready, *more]))
            with self.coordinator.batch():
                for ref in ready:
                    self._collect(ref)
                calls = self._feed(systems)
                self.coordinator.tick()
            self._send(calls)
            if not self._pending:
                time.sleep(0.05)  # nothing to do yet: wait for work, not a busy loop
            if on_progress is not None:
                on_progress()

    def shutdown(self) -> None:
        for m in self.members:
            if m.alive:
                ray.kill(m.actor)
        self._pending.clear()
