"""One slot: what computes one WU at a time, and the messages it exchanges with its volunteer.

A slot receives a :class:`Job` (a task as the server sent it, plain JSON, and where its
verified system and its saved progress live) and answers with events: :class:`Started`,
one :class:`SegmentDone` per segment, then :class:`Finished` (the signed upload, ready to
send) or :class:`Failed`. The same :func:`run_job` runs in a slot's own process
(:mod:`worker.pool`) and in the volunteer's process (one slot, for tests and embedding).

Results are signed here, in the slot, not by the process that uploads them: signing digests
every boundary state, frame and observable (work proportional to the WU), which would
otherwise queue up on the uploading process's one interpreter lock behind every other slot;
and it keeps one code path (:func:`worker.tasks.compute`, as the Ray actor runs it) from the
engine to the signature. A slot loads the volunteer's key from its 0600 file, as the Ray
actor does on its node: it is the same user's process on the same machine, started fresh.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foldnet.errors import FoldnetError
from sims.engine import PartialRun
from worker.identity import Identity
from worker.progress import load_progress, save_progress, task_key
from worker.systems import EngineCache, SystemDefinition, decode_system, system_digest
from worker.tasks import ComputeTask, SpotCheckTask, compute, spot_check
from worker.wire import RESULT_CONTENT_TYPE, decode_task, encode_result, encode_spot_check

# -- volunteer -> slot ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One task for a slot. ``doc`` is the task exactly as the server sent it."""

    doc: dict[str, Any] = field(hash=False)
    system_path: str  # the prepared system, verified against its digest and cached
    det_class: str  # the class it was pulled in: saved progress is resumed only in it
    progress_path: str = ""  # where a compute task's run so far is saved


@dataclass(frozen=True, slots=True, kw_only=True)
class Describe:
    """Ask a slot for the determinism class it computes each of ``engines`` in."""

    engines: tuple[str, ...]


# -- slot -> volunteer ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    slot: int
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Described:
    slot: int
    classes: tuple[tuple[str, str], ...]  # (engine, canonical class JSON)


@dataclass(frozen=True, slots=True, kw_only=True)
class Started:
    slot: int
    resumed_after: int  # segments already done (0: from the start)


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentDone:
    slot: int
    done: int
    total: int
    seconds_left: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """A signed result or spot check, encoded: the volunteer only has to send it."""

    slot: int
    path: str
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The job could not be done here (an engine error, a task this slot cannot read), or
    a :class:`Describe` could not be answered (a GPU platform without a usable device)."""

    slot: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Note:
    """Something the volunteer should be told (saved progress that could not be used)."""

    slot: int
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Died:
    """The slot's process ended without being asked to (killed, out of memory, a crash)."""

    slot: int
    exitcode: int | None


Event = Ready | Described | Started | SegmentDone | Finished | Failed | Note | Died
Emit = Callable[[Event], None]


# -- what a slot does -------------------------------------------------------------------------


class SystemCache:
    """Decoded systems by path; a slot gets the same few systems over and over."""

    def __init__(self, capacity: int = 4) -> None:
        self._systems: OrderedDict[str, SystemDefinition] = OrderedDict()
        self._capacity = capacity

    def get(self, path: str) -> SystemDefinition:
        system = self._systems.get(path)
        if system is None:
            system = decode_system(Path(path).read_bytes())
            self._systems[path] = system
            while len(self._systems) > self._capacity:
                self._systems.popitem(last=False)
        self._systems.move_to_end(path)
        return system


def reference_system(engine: str) -> SystemDefinition:
    """A small system of ``engine`` that ships offline, to learn this slot's class before any
    work arrives (a class names the engine, platform and machine, never the system)."""
    from sims.examples import ALANINE_DIPEPTIDE_PDB, VILLIN_PDB

    if engine == "go":
        from sims.go import GoModel

        return GoModel.from_pdb(VILLIN_PDB)
    from sims.allatom import AllAtomEngine

    return AllAtomEngine.from_pdb(ALANINE_DIPEPTIDE_PDB).prepared


def describe(slot: int, ask: Describe, engines: EngineCache) -> Described | Failed:
    try:
        classes = tuple(
            (e, engines.get(reference_system(e)).determinism_class().canonical().decode())
            for e in ask.engines
        )
    except FoldnetError as e:
        return Failed(slot=slot, reason=str(e))
    return Described(slot=slot, classes=classes)


def run_job(
    slot: int,
    job: Job,
    *,
    engines: EngineCache,
    identity: Identity,
    systems: SystemCache,
    emit: Emit,
) -> None:
    """Compute ``job`` and emit its events; whatever goes wrong ends as :class:`Failed`
    (given back to the server), as a failed task of a Ray batch does."""
    try:
        task = decode_task(job.doc, systems.get(job.system_path))
        if isinstance(task, SpotCheckTask):
            checked = spot_check(task, engines=engines, identity=identity)
            body = json.dumps(encode_spot_check(checked)).encode()
            emit(
                Finished(
                    slot=slot,
                    path=f"/v1/checks/{task.check}",
                    body=body,
                    content_type="application/json",
                )
            )
            return
        emit(_computed(slot, task, job, engines, identity, emit))
    except (FoldnetError, OSError) as e:
        emit(Failed(slot=slot, reason=str(e)[:500]))
    except Exception as e:  # a bug must not take the other slots down: give the WU back
        emit(Failed(slot=slot, reason=f"{type(e).__name__}: {e}"[:500]))


def _computed(
    slot: int, task: ComputeTask, job: Job, engines: EngineCache, identity: Identity, emit: Emit
) -> Finished:
    """Run the WU from its saved progress (if any, in this class), saving after each segment."""
    progress = Path(job.progress_path)

    def note(message: str) -> None:
        emit(Note(slot=slot, message=message))

    key = task_key(task, system_digest(task.system))
    resume = load_progress(progress, task, det_class=job.det_class, key=key, report=note)
    first = resume.segments_done if resume else 0
    emit(Started(slot=slot, resumed_after=first))
    t0 = time.perf_counter()
    n = task.spec.n_segments

    def saved(p: PartialRun) -> None:
        save_progress(progress, task, p, det_class=job.det_class, key=key)
        rate = (time.perf_counter() - t0) / max(1, p.segments_done - first)
        left = rate * (n - p.segments_done)
        emit(SegmentDone(slot=slot, done=p.segments_done, total=n, seconds_left=left))

    result = compute(task, engines=engines, identity=identity, resume=resume, on_segment=saved)
    return Finished(
        slot=slot,
        path=f"/v1/results/{task.replica}",
        body=encode_result(result),
        content_type=RESULT_CONTENT_TYPE,
    )
