"""Prepared systems as workers receive them, their digests, and engines built from them.

A system is prepared once, by the coordinator, and shipped as data: a :class:`GoModel`
(parameter arrays) or an OpenMM :class:`PreparedSystem` (serialized System + minimized
start). Workers never re-derive parameters, since numpy's or OpenMM's floating-point results
may differ in the last bit between machines, and a WU must mean the same bits everywhere.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from sims.allatom import AllAtomEngine
from sims.allatom.prepare import PreparedSystem
from sims.engine import Engine
from sims.go import GoEngine, GoModel
from worker.errors import WorkerError

SystemDefinition = GoModel | PreparedSystem


def system_digest(system: SystemDefinition) -> bytes:
    if isinstance(system, GoModel):
        return system.digest()
    if isinstance(system, PreparedSystem):
        h = hashlib.sha256(b"foldnet/openmm-system/v1\x00")
        h.update(system.system_xml.encode())
        h.update(np.ascontiguousarray(system.positions, dtype="<f8").tobytes())
        return h.digest()
    raise WorkerError(f"not a prepared system: {type(system).__name__}")


def engine_name(system: SystemDefinition) -> str:
    return "go" if isinstance(system, GoModel) else "openmm"


class EngineCache:
    """Engines by system digest; building an OpenMM Context is slow, so keep a few."""

    def __init__(self, capacity: int = 4, *, threads: int = 1, platform: str = "CPU") -> None:
        self._engines: OrderedDict[bytes, Engine] = OrderedDict()
        self._capacity = capacity
        self._threads = threads
        self._platform = platform

    def get(self, system: SystemDefinition) -> Engine:
        key = system_digest(system)
        engine = self._engines.get(key)
        if engine is None:
            if isinstance(system, GoModel):
                engine = GoEngine(system)
            else:
                engine = AllAtomEngine(system, platform=self._platform, threads=self._threads)
            self._engines[key] = engine
            while len(self._engines) > self._capacity:
                self._engines.popitem(last=False)
        self._engines.move_to_end(key)
        return engine
