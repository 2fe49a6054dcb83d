"""CPU seconds by group of processes, from Linux's ``/proc``: where a benchmark's time went
on a machine it shares (this process, its Ray actors, Ray's own processes, everyone else)."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuSplit:
    """CPU seconds (user + system) spent between two snapshots."""

    coordinator: float  # this process (the driver: coordinator, scheduler, store, ledger)
    actors: float  # the given processes (the volunteer actors)
    ray: float  # this process's other descendants: Ray's GCS, raylet, idle workers...
    others: float  # every other process on the machine

    def per_unit_ms(self, n: int) -> dict[str, float]:
        return {
            "coordinator": round(1000 * self.coordinator / n, 3),
            "actors": round(1000 * self.actors / n, 3),
            "ray": round(1000 * self.ray / n, 3),
            "others": round(1000 * self.others / n, 3),
        }


Snapshot = dict[int, tuple[float, int]]  # pid -> (CPU seconds, parent pid)


def snapshot() -> Snapshot | None:
    """Every process's CPU seconds and parent, or None where there is no ``/proc``."""
    if not (_PROC / "self" / "stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    out: Snapshot = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rpartition(")")[2].split()  # (the name may hold spaces)
        out[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[1]))
    return out


def split(before: Snapshot, after: Snapshot, *, actors: Collection[int]) -> CpuSplit:
    """What each group spent from ``before`` to ``after`` (processes that ended between
    them are not counted)."""
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid) in after.items():
        children.setdefault(ppid, []).append(pid)
    mine: set[int] = set()
    todo = [me]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in mine:
                mine.add(child)
                todo.append(child)
    sums = {"coordinator": 0.0, "actors": 0.0, "ray": 0.0, "others": 0.0}
    for pid, (cpu, _) in after.items():
        spent = cpu - before.get(pid, (0.0, 0))[0]
        if pid == me:
            sums["coordinator"] += spent
        elif pid in actors:
            sums["actors"] += spent
        elif pid in mine:
            sums["ray"] += spent
        else:
            sums["others"] += spent
    return CpuSplit(**sums)
