"""The coordinator's side of adaptive sampling: gather a job's validated data, run its policy
(:mod:`coordinator.adaptive`, pure), draw the restart state, and answer the scheduler's
:class:`~coordinator.messages.ChooseSeed` with a :class:`~coordinator.messages.GenerationSeeded`.

Validated data is read from the store once per WU and cached; a WU that is retracted or waits
for a re-check later simply drops out of the basis of later choices (the scheduler says which
WUs are validated now). Nothing here decides anything the event log does not record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from coordinator.adaptive import Cell, Decision, WUData, cell_of, choose, explore, restart_seed
from coordinator.messages import ChooseSeed, GenerationSeeded
from coordinator.scheduler import Scheduler
from coordinator.store import Store
from sims.state import State
from worker.systems import EngineCache, SystemDefinition

__all__ = ["Seeder", "columns_for"]


def columns_for(engine: str) -> tuple[str, str]:
    """The observables the policy clusters on: Q and the (C-alpha) RMSD to the reference."""
    return ("q", "rmsd") if engine == "go" else ("q", "rmsd_ca")


class Seeder:
    """Answers :class:`ChooseSeed` instructions for one coordinator."""

    def __init__(
        self,
        *,
        store: Store,
        system: Callable[[bytes], SystemDefinition],
        engines: EngineCache,
        put_state: Callable[[State], bytes],
    ) -> None:
        self._store = store
        self._system = system
        self._engines = engines
        self._put_state = put_state
        self._data: dict[bytes, WUData] = {}  # validated WU -> what the policy reads of it

    def forget(self) -> None:
        """Drop the cache (the scheduler was rebuilt: replica ids may name other results)."""
        self._data.clear()

    def decide(
        self, scheduler: Scheduler, ins: ChooseSeed, now: float
    ) -> tuple[GenerationSeeded, Decision]:
        """The start of generation ``ins.gen``: the policy's decision and the event that
        carries it out (the restart state is stored first)."""
        spec = scheduler.jobs[ins.job].spec
        q_name, rmsd_name = columns_for(spec.engine)
        data: dict[bytes, WUData] = {}
        for w in scheduler.wus.values():
            if (
                w.unit.job != ins.job
                or w.state != "validated"
                or w.retracted
                or w.reverify is not None
            ):
                continue
            d = self._data.get(w.unit.id)
            if d is None:
                replica, claim = scheduler.canonical(w.unit.id)
                obs = self._store.frame_observables(replica, (q_name, rmsd_name))
                d = self._data[w.unit.id] = WUData(
                    wu=w.unit.id,
                    boundary_digests=claim.boundary_digests,
                    first_step=w.unit.gen * spec.steps_per_wu,
                    segment_steps=spec.segment_steps,
                    frame_steps=np.asarray(obs["frame_steps"]),
                    q=np.asarray(obs[q_name]),
                    rmsd=np.asarray(obs[rmsd_name]),
                )
            data[w.unit.id] = d
        starts: Counter[Cell] = Counter()
        for w in scheduler.wus.values():
            if w.unit.job == ins.job and w.parent is not None and not w.retracted:
                parent = data.get(w.parent[0])
                seen = parent.at_boundary(w.parent[1]) if parent is not None else None
                if seen is not None:
                    starts[cell_of(*seen)] += 1
        decision = choose(
            spec.adaptive,
            explore(data.values()),
            starts=starts,
            beacon=scheduler.beacon,
            job=ins.job,
            run=ins.run,
            clone=ins.clone,
            gen=ins.gen,
        )
        replica, _claim = scheduler.canonical(decision.parent_wu)
        (parent_state,) = self._store.boundary_states(replica, [decision.boundary])
        engine = self._engines.get(self._system(spec.system_digest))
        restart = engine.thermalized(
            parent_state,
            temperature=spec.temperature,
            seed=restart_seed(ins.job, ins.run, ins.clone, ins.gen, decision.parent_state),
            step=ins.gen * spec.steps_per_wu,
        )
        digest = self._put_state(restart)
        event = GenerationSeeded(
            ins.job,
            ins.run,
            ins.clone,
            ins.gen,
            decision.parent_wu,
            decision.boundary,
            decision.parent_state,
            digest,
            decision.digest(),
            now,
        )
        return event, decision
