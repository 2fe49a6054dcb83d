"""A WU's run so far, saved after every segment, so that a worker killed mid-WU resumes.

The file holds the boundary states, frames and observables of the finished segments (raw
arrays in an ``.npz``, never a pickle) and the determinism class they were computed in.
A run resumed from it is bit-identical to an uninterrupted one, since each segment depends
only on its starting boundary state and its own seed; but only in the same class: segments
computed on a GPU continued on a CPU would be a result of no class at all, so progress of
another class is not used (the WU restarts from its input state). Nor is progress of another
task (:func:`task_key`: the WU, replica, system, input state, run settings and price): one
run's segments continued under another's seed or settings would be a result of no run at
all, signed by the volunteer.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from foldnet.files import atomic_write
from sims.engine import PartialRun
from sims.errors import SimsError
from sims.state import State
from worker.errors import ProgressError
from worker.tasks import ComputeTask


def task_key(task: ComputeTask, system: bytes) -> str:
    """What a saved run belongs to: SHA-256 of everything that decides the numbers of the
    WU's run (``system``: its system's digest)."""
    s = task.spec
    h = hashlib.sha256(b"foldnet/saved-run/v1\x00")
    h.update(task.wu_id + task.replica.to_bytes(8, "little") + system)
    h.update(struct.pack("<QQQdQ", s.steps, s.segment_steps, s.report_steps, s.temperature, s.seed))
    h.update(task.input_state.digest() + task.price.digest())
    return h.hexdigest()


def save_progress(
    path: Path, task: ComputeTask, p: PartialRun, *, det_class: str, key: str
) -> None:
    """Write ``p`` atomically (a reader sees the previous segment's file or this one);
    ``key``: the task's :func:`task_key`."""
    names = sorted(p.rows[0]) if p.rows else []
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(
            json.dumps(
                {
                    "replica": task.replica,
                    "wu_id": task.wu_id.hex(),
                    "task": key,
                    "det_class": det_class,
                    "segments_done": p.segments_done,
                    "digests": [b.digest().hex() for b in p.boundaries],
                    "steps": [b.step for b in p.boundaries],
                    "wall_time_s": p.wall_time_s,
                    "observables": names,
                }
            ).encode(),
            dtype=np.uint8,
        ),
        "positions": np.stack([b.positions for b in p.boundaries]),
        "velocities": np.stack([b.velocities for b in p.boundaries]),
        "frames": (
            np.stack(p.frames) if p.frames else np.zeros((0, task.input_state.n_atoms, 3), "<f4")
        ),
        "frame_steps": np.asarray(p.frame_steps, dtype=np.int64),
    }
    arrays |= {f"obs_{n}": np.array([r[n] for r in p.rows], dtype=np.float64) for n in names}
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    atomic_write(path, buf.getvalue())


def load_progress(
    path: Path, task: ComputeTask, *, det_class: str, key: str, report: Callable[[str], None]
) -> PartialRun | None:
    """The saved run of ``task`` (its :func:`task_key` ``key``) at ``path``, or None (nothing
    saved, or nothing usable: then the file is removed and ``report`` says why)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if meta["wu_id"] != task.wu_id.hex():
            raise ProgressError(f"it is the progress of WU {str(meta['wu_id'])[:16]}, not this one")
        if meta.get("task") != key:
            raise ProgressError(
                "it was saved for another task of this WU and replica (another system, input "
                "state or run settings), or by a version that did not record its task"
            )
        # Files saved before classes were recorded come from a CPU slot (the only kind then).
        saved_class = meta.get("det_class", det_class)
        if saved_class != det_class:
            raise ProgressError(
                "it was computed in another determinism class (another platform): expected "
                "this slot's class"
            )
        boundaries = tuple(
            State(positions=arrays["positions"][i], velocities=arrays["velocities"][i], step=s)
            for i, s in enumerate(meta["steps"])
        )
        if [b.digest().hex() for b in boundaries] != meta["digests"]:
            raise ProgressError("saved boundary states do not match their digests (damaged)")
        frames = tuple(arrays["frames"])
        rows = tuple(
            {n: float(arrays[f"obs_{n}"][i]) for n in meta["observables"]}
            for i in range(len(frames))
        )
        return PartialRun(
            int(meta["segments_done"]),
            boundaries,
            frames,
            tuple(int(s) for s in arrays["frame_steps"]),
            rows,
            float(meta["wall_time_s"]),
        )
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        RecursionError,
        SimsError,
        ProgressError,
    ) as e:
        report(f"saved progress of replica {task.replica} is unusable ({e}); restarting it")
        path.unlink(missing_ok=True)
        return None
