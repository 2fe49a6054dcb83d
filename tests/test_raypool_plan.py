"""How the Ray pool sizes its calls (pure logic, no Ray): tiny tasks share a call, long ones
travel alone, and a volunteer is never handed a pile of long WUs."""

from __future__ import annotations

import numpy as np

from coordinator.raypool import (
    BATCH_TARGET_S,
    MAX_TASKS_PER_CALL,
    VolunteerSpec,
    _Member,
    plan_calls,
    task_work,
)
from ledger.entries import PriceInputs
from sims.spec import RunSpec
from sims.state import State
from worker.tasks import ComputeTask, SpotCheckTask

START = State(positions=np.zeros((36, 3)), velocities=np.zeros((36, 3)))


def compute(steps: int, i: int = 0) -> ComputeTask:
    spec = RunSpec(steps=steps, segment_steps=steps, report_steps=steps, temperature=1.0, seed=i)
    price = PriceInputs("go", 36, steps, 600, 0)
    return ComputeTask(i.to_bytes(32, "big"), i, None, spec, START, price)  # type: ignore[arg-type]


def test_work_is_particle_steps_for_runs_and_checked_segments():
    assert task_work(compute(1000)) == 36_000
    spec = RunSpec(steps=1000, segment_steps=250, report_steps=250, temperature=1.0, seed=1)
    check = SpotCheckTask(b"\0" * 32, 1, None, spec, (0, 2), (START, START))  # type: ignore[arg-type]
    assert task_work(check) == 2 * 250 * 36


def test_tiny_tasks_share_calls_long_ones_travel_alone():
    spw = 1e-8  # seconds per particle-step: a 10-step task is 3.6 us, a 10^6-step one 0.36 s
    tiny = [compute(10, i) for i in range(200)]
    calls = plan_calls(tiny, spw)
    assert [len(c) for c in calls] == [MAX_TASKS_PER_CALL] * 3 + [200 - 3 * MAX_TASKS_PER_CALL]
    long = [compute(1_000_000, i) for i in range(3)]
    assert [len(c) for c in plan_calls(long, spw)] == [1, 1, 1]
    mixed = plan_calls([compute(10, 0), compute(10, 1), compute(1_000_000, 2), compute(10, 3)], spw)
    assert [len(c) for c in mixed] == [2, 1, 1]
    assert all(len(c) == 1 for c in plan_calls(tiny[:5], None))  # speed unknown: one by one


def test_a_volunteer_asks_beyond_its_slots_only_while_its_queue_is_short():
    m = _Member(VolunteerSpec(resource="vol:a", slots=2), actor=None, key=b"")
    assert m.wants() == 2
    m.in_flight = 2
    assert m.wants() == 0  # speed unknown: no more than the slots
    m.seconds_per_work = 1e-8
    m.queued_s = m.estimate([compute(10), compute(10)])
    assert m.wants() == 1  # tiny work queued: probe for more
    m.queued_s = m.estimate([compute(1_000_000)])
    assert m.queued_s > 2 * BATCH_TARGET_S and m.wants() == 0  # a long WU is queued: enough
