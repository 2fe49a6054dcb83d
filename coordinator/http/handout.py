"""Work handed out, as the HTTP side sees it: what each replica and spot check must return,
and the systems results are checked against.

The coordinator's core decides. In ``foldnet serve`` its tables are read directly; a
front-end of its own (``foldnet serve --workers N``) keeps a memory of what it handed out
(hints, refreshed from the core when they do not fit), so that an upload is checked where it
arrives without a round trip per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from coordinator.clock import Clock
from coordinator.http.core import Core
from coordinator.http.link import command
from coordinator.http.wire import (
    FORGET_AFTER_S,
    PRUNE_EVERY_S,
    Assignment,
    HandOut,
    encode_handout,
)
from coordinator.service import Coordinator
from foldnet.errors import NotFound
from worker.systems import EngineCache, SystemDefinition, decode_system

#: ``call(command, *args, request=...)``: run a command on the coordinator (Service.call).
Call = Callable[..., Awaitable[Any]]


@command
def _assignment_of(core: Core, _c: Coordinator, replica: int) -> Assignment | None:
    return core.assignments.get(replica)


@command
def _check_of(core: Core, _c: Coordinator, check: int) -> tuple[bytes, bytes, float] | None:
    return core.checks.get(check)


@command
def _system_of(core: Core, _c: Coordinator, digest: str) -> bytes | None:
    """A system of work handed out (None for any other digest)."""
    return core.systems.get(digest)


class HandedOut:
    """What one HTTP process knows of the work handed out: ``core`` when the coordinator
    runs in this process, else a memory of its own kept with ``call``."""

    def __init__(self, core: Core | None, call: Call, clock: Clock) -> None:
        self.core = core
        self._call = call
        self.clock = clock
        self._assignments: dict[int, Assignment] = {}
        self._checks: dict[int, tuple[bytes, bytes, float]] = {}
        self._systems: dict[str, bytes] = {}
        self._decoded: dict[str, SystemDefinition] = {}
        self._pruned = float("-inf")
        self.engines = EngineCache()  # the physical sanity checks of results

    def __len__(self) -> int:
        """How many replicas and spot checks handed out this process remembers."""
        if self.core is not None:
            return len(self.core.assignments) + len(self.core.checks)
        return len(self._assignments) + len(self._checks)

    def encode(self, got: list[HandOut]) -> list[dict[str, Any]]:
        """Encode work the core handed out for the wire (a front-end of its own remembers
        what each result must look like, so that its upload is checked here)."""
        if self.core is None:
            self._prune()
            for h in got:
                if h.assignment is not None:
                    self._assignments[h.number] = h.assignment
                elif h.check is not None:
                    self._checks[h.number] = h.check
        return [encode_handout(h) for h in got]

    def _prune(self) -> None:
        """Forget work long past its deadline (every PRUNE_EVERY_S at most), as the core
        does: what was handed out here and never came back here (its key walked away, or
        uploaded through another front-end) would otherwise be remembered for ever."""
        now = self.clock.now()
        if now - self._pruned < PRUNE_EVERY_S:
            return
        self._pruned = now
        horizon = now - FORGET_AFTER_S
        self._assignments = {r: a for r, a in self._assignments.items() if a.deadline >= horizon}
        self._checks = {c: o for c, o in self._checks.items() if o[2] >= horizon}

    async def assignment(self, replica: int, key: bytes) -> Assignment | None:
        """What replica ``replica`` handed to ``key`` must return (None: not ``key``'s)."""
        if self.core is not None:
            a = self.core.assignments.get(replica)
        else:
            a = self._assignments.get(replica)
            if a is None or a.volunteer != key or a.deadline <= self.clock.now():
                self._prune()
                a = await self._call(_assignment_of, replica)  # the core's word
                if a is not None:
                    self._assignments[replica] = a
        return a if a is not None and a.volunteer == key else None

    async def check(self, check: int, key: bytes) -> bytes | None:
        """The WU of spot check ``check`` handed to ``key`` (None: not ``key``'s)."""
        if self.core is not None:
            owner = self.core.checks.get(check)
        else:
            owner = self._checks.get(check)
            if owner is None or owner[0] != key or owner[2] <= self.clock.now():
                self._prune()
                owner = await self._call(_check_of, check)
                if owner is not None:
                    self._checks[check] = owner
        return owner[1] if owner is not None and owner[0] == key else None

    def forget(self, replica: int | None = None, check: int | None = None) -> None:
        """Drop the memory of a replica or check that came back (or was refused)."""
        if replica is not None:
            self._assignments.pop(replica, None)
        if check is not None:
            self._checks.pop(check, None)

    async def system_blob(self, digest: str, *, request: Request | None = None) -> bytes | None:
        """An encoded system of work handed out (None for any other digest). ``request``: a
        volunteer's, admitted by the coordinator (its nonce spent there) in a front-end of
        its own, even when the system is known here."""
        if self.core is not None:
            return self.core.systems.get(digest)
        data = self._systems.get(digest)
        if data is None or request is not None:
            data = await self._call(_system_of, digest, request=request)
            if data is not None:
                self._systems[digest] = data
        return data

    async def system(self, digest: bytes) -> SystemDefinition:
        """The decoded system of work handed out (what results are checked against)."""
        got = self._decoded.get(digest.hex())
        if got is None:
            data = await self.system_blob(digest.hex())
            if data is None:
                raise NotFound(f"no system {digest.hex()[:16]} in work handed out")
            got = self._decoded[digest.hex()] = decode_system(data)
        return got
