"""The volunteer's side of the Ray transport: one actor per volunteer node.

The actor is pinned to its volunteer's node by the node's ``vol:<id>`` resource, loads that
volunteer's key on the node itself (private keys never cross Ray), and returns plain data:
:class:`~worker.result.WorkerResult` and :class:`~worker.tasks.SpotCheckResult`, which the
coordinator verifies before anything counts.
"""

from __future__ import annotations

import os
import time

from worker.adversary import BEHAVIOURS, HONEST
from worker.errors import SetupError
from worker.identity import Identity
from worker.result import WorkerResult
from worker.systems import EngineCache, SystemDefinition
from worker.tasks import ComputeTask, SpotCheckResult, SpotCheckTask, TaskFailed, spot_check


class VolunteerWorker:
    """Plain class; :func:`ray.remote` turns it into the actor (see coordinator.raypool)."""

    def __init__(self, *, key_path: str | None = None, behaviour: str = HONEST) -> None:
        if behaviour not in BEHAVIOURS:
            raise SetupError(f"unknown behaviour {behaviour!r}: expected one of {list(BEHAVIOURS)}")
        self.identity = Identity.load_or_create(key_path)
        self.engines = EngineCache()
        self._behaviour = BEHAVIOURS[behaviour]

    def hello(self) -> tuple[bytes, int]:
        """Public key and process id (the coordinator logs which process serves whom)."""
        return self.identity.public_key, os.getpid()

    def determinism_class(self, system: SystemDefinition) -> str:
        return self.engines.get(system).determinism_class().canonical().decode()

    def compute(self, task: ComputeTask) -> WorkerResult:
        return self._behaviour(task, self.engines, self.identity)

    def spot_check(self, task: SpotCheckTask) -> SpotCheckResult:
        return spot_check(task, engines=self.engines, identity=self.identity)

    def run_batch(
        self, tasks: list[ComputeTask | SpotCheckTask]
    ) -> tuple[list[WorkerResult | SpotCheckResult | TaskFailed], float]:
        """Several tasks in one call (one Ray round trip for many tiny WUs), and the seconds
        spent computing them, from which the coordinator sizes the next batch. A task that
        raises becomes a :class:`TaskFailed`; the rest of the batch is unaffected."""
        t0 = time.perf_counter()
        out: list[WorkerResult | SpotCheckResult | TaskFailed] = []
        for task in tasks:
            try:
                out.append(
                    self.compute(task) if isinstance(task, ComputeTask) else self.spot_check(task)
                )
            except Exception as e:  # reported to the coordinator as that replica's failure
                out.append(TaskFailed(f"{type(e).__name__}: {e}"[:500]))
        return out, time.perf_counter() - t0
