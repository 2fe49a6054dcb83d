"""benchmarks.proccpu: CPU seconds by group of processes (this one, its actors, the rest of
its descendants, everyone else)."""

from __future__ import annotations

import os

from benchmarks import proccpu


def test_split_groups_by_descent():
    me = os.getpid()
    # me -> 10 (Ray's GCS) -> 11 (raylet) -> 12, 13 (actors); 20 is someone else's
    before = {me: (1.0, 1), 10: (0.5, me), 11: (0.0, 10), 12: (2.0, 11), 20: (5.0, 1)}
    after = {
        me: (4.0, 1), 10: (1.0, me), 11: (0.25, 10), 12: (3.0, 11), 13: (1.5, 11), 20: (7.0, 1),
    }  # fmt: skip
    s = proccpu.split(before, after, actors={12, 13})
    assert (s.coordinator, s.actors, s.ray, s.others) == (3.0, 2.5, 0.75, 2.0)
    assert s.per_unit_ms(1000) == {"coordinator": 3.0, "actors": 2.5, "ray": 0.75, "others": 2.0}


def test_a_snapshot_sees_this_process_spend_cpu():
    before = proccpu.snapshot()
    sum(i * i for i in range(2_000_000))
    after = proccpu.snapshot()
    assert before is not None and after is not None
    s = proccpu.split(before, after, actors=set())
    assert s.coordinator > 0 and after[os.getpid()][1] == os.getppid()
