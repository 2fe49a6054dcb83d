"""``foldnet worker run --server URL``: a volunteer on the open internet, over HTTP.

The loop: register the key, pull work, compute it with the same code the Ray actor runs
(:class:`worker.ray_actor.VolunteerWorker` and :func:`worker.tasks.compute`), upload the
signed result, repeat; back off (with jitter) when there is no work or the server is busy.

Resume: every pulled task and, after each finished segment, the run so far (boundary states,
frames, observables and the boundary digests) are written atomically under
``$FOLDNET_HOME/work``. A client killed mid-WU continues from its last segment on restart,
and the result is bit-identical to an uninterrupted run (each segment depends only on its
starting boundary state and its own seed).

Stopping: the first Ctrl-C (SIGINT or SIGTERM) finishes the current WU, uploads it and
stops; a second one stops at once (the saved progress is resumed next time).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np

from foldnet.errors import ClientError, FoldnetError
from foldnet.files import atomic_write
from foldnet.httpclient import HttpClient, RetryPolicy
from ledger.credit import credit_v1
from sims.engine import PartialRun
from sims.errors import SimsError
from sims.state import State
from worker.errors import SetupError, WireError
from worker.identity import default_key_path
from worker.ray_actor import VolunteerWorker
from worker.systems import (
    SystemDefinition,
    decode_system,
    engine_name,
    particle_count,
    system_digest,
)
from worker.tasks import ComputeTask, SpotCheckTask, compute, spot_check
from worker.wire import (
    RESULT_CONTENT_TYPE,
    decode_task,
    encode_result,
    encode_spot_check,
    sign_headers,
    task_header,
)

Report = Callable[[str], None]


def default_home() -> Path:
    return Path(os.environ.get("FOLDNET_HOME") or Path.home() / ".foldnet")


class StopFlag:
    """Set by the first Ctrl-C: finish the current WU, then stop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


def install_signal_handlers(stop: StopFlag, report: Report) -> None:
    """First SIGINT/SIGTERM: stop after this WU. Second: stop now (KeyboardInterrupt)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.set()
        report("stopping after the current work unit (Ctrl-C again to stop now)")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@dataclass(frozen=True, slots=True)
class ClientStats:
    computed: int
    uploaded: int
    accepted: int
    spot_checks: int
    credit: int | None


class HttpVolunteer:
    """One volunteer talking to one coordinator over HTTP."""

    def __init__(
        self,
        server: str,
        *,
        home: Path | None = None,
        key_path: Path | None = None,
        engines: tuple[str, ...] = ("go",),
        slots: int = 1,
        name: str = "",
        report: Report | None = None,
        max_backoff_s: float = 60.0,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server.rstrip("/")
        self.home = home or default_home()
        self.work_dir = self.home / "work"
        self.systems_dir = self.home / "systems"
        key = key_path or default_key_path()
        self.worker = VolunteerWorker(key_path=str(key))
        self.identity = self.worker.identity
        self.engines = engines
        self.slots = slots
        self.name = name
        self.report: Report = report or (lambda _m: None)
        self.max_backoff_s = max_backoff_s
        self.http = HttpClient(
            self.server,
            timeout_s=timeout_s,
            retry=RetryPolicy(attempts=8, backoff_s=0.5, max_backoff_s=max_backoff_s),
            transport=transport,
            sleep=sleep,
            report=self.report,
        )
        self._systems: dict[str, SystemDefinition] = {}
        self._classes: dict[str, str] = {}
        self.computed = self.uploaded = self.accepted = self.spot_checks = 0

    def close(self) -> None:
        self.http.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        return sign_headers(self.identity, method, path, body, origin=self.server)

    def _request(
        self, method: str, path: str, body: bytes = b"", *, content_type: str = ""
    ) -> httpx.Response:
        """A signed request (a fresh signature on every retry); an error answer raises."""
        headers = {"content-type": content_type} if content_type else None
        return self.http.request(method, path, content=body, headers=headers, sign=self._sign)

    def _json(self, method: str, path: str, doc: dict[str, Any] | None = None) -> Any:
        return self.http.json(method, path, doc, sign=self._sign)

    def register(self) -> None:
        self._json(
            "POST",
            "/v1/volunteers",
            {"public_key": self.identity.public_key.hex(), "name": self.name},
        )

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/v1/volunteers/me")
        return result

    # -- systems and classes ---------------------------------------------------------------

    def _system(self, digest: str) -> SystemDefinition:
        system = self._systems.get(digest)
        if system is not None:
            return system
        cached = self.systems_dir / f"{digest}.npz"
        if cached.is_file():
            data = cached.read_bytes()
        else:
            data = self._request("GET", f"/v1/systems/{digest}").content
        system = decode_system(data)
        if system_digest(system).hex() != digest:
            raise WireError(f"system {digest[:16]} does not match its digest")
        if not cached.is_file():
            atomic_write(cached, data)
        self._systems[digest] = system
        return system

    def det_class(self, engine: str) -> str:
        """The determinism class this machine computes ``engine`` WUs in."""
        if engine not in self._classes:
            system = next((s for s in self._systems.values() if engine_name(s) == engine), None)
            if system is None:
                system = _reference_system(engine)
            self._classes[engine] = self.worker.determinism_class(system)
        return self._classes[engine]

    # -- saved work ------------------------------------------------------------------------

    def _task_path(self, replica: int) -> Path:
        return self.work_dir / f"{replica}.task.json"

    def _progress_path(self, replica: int) -> Path:
        return self.work_dir / f"{replica}.progress.npz"

    def _forget(self, replica: int) -> None:
        self._task_path(replica).unlink(missing_ok=True)
        self._progress_path(replica).unlink(missing_ok=True)

    def saved_tasks(self) -> list[dict[str, Any]]:
        if not self.work_dir.is_dir():
            return []
        out = []
        for p in sorted(self.work_dir.glob("*.task.json")):
            try:
                doc = json.loads(p.read_text())
                if doc.get("volunteer") == self.identity.public_key.hex():
                    out.append(doc)
            except (OSError, ValueError):
                p.unlink(missing_ok=True)
        return out

    # -- one task --------------------------------------------------------------------------

    def run_task(self, doc: dict[str, Any], pull_next: int = 0) -> list[dict[str, Any]]:
        """Compute and upload one task; returns the tasks pulled with the upload
        (``pull_next`` of them at most: one round trip returns a result and fetches work)."""
        query = f"?next={pull_next}" if pull_next > 0 else ""
        kind, digest = task_header(doc)
        system = self._system(digest)
        task = decode_task(doc, system)
        if isinstance(task, SpotCheckTask):
            checked = spot_check(task, engines=self.worker.engines, identity=self.identity)
            try:
                r = self._request(
                    "POST",
                    f"/v1/checks/{task.check}{query}",
                    json.dumps(encode_spot_check(checked)).encode(),
                    content_type="application/json",
                )
            except ClientError as e:
                self.report(f"spot check {task.check} refused: {e}")
                return []
            self.spot_checks += 1
            self.report(f"spot check {task.check}: {r.status_code}")
            return list(r.json().get("tasks", []))
        assert isinstance(task, ComputeTask) and kind == "compute"
        if not self._task_path(task.replica).is_file():
            doc = {**doc, "volunteer": self.identity.public_key.hex()}
            atomic_write(self._task_path(task.replica), json.dumps(doc).encode())
        resume = self._load_progress(task)
        n = task.spec.n_segments
        t0 = time.perf_counter()
        first = resume.segments_done if resume else 0
        estimate = credit_v1(
            engine=engine_name(system),
            n_particles=particle_count(system),
            steps=task.spec.steps,
            deadline_s=0,
            issued_at_ms=0,
            validated_at_ms=0,
        )
        self.report(
            f"WU {task.wu_id.hex()[:12]} (replica {task.replica}): {task.spec.steps:,} steps in "
            f"{n} segments"
            + (f", resuming after segment {first}" if first else "")
            + f"; estimated credit {estimate:,}+"
        )

        def saved(p: PartialRun) -> None:
            self._save_progress(task, p)
            done = p.segments_done - first
            rate = (time.perf_counter() - t0) / max(1, done)
            self.report(
                f"  segment {p.segments_done}/{n} done; about {rate * (n - p.segments_done):.0f} s"
                " left"
            )

        try:
            result = compute(
                task,
                engines=self.worker.engines,
                identity=self.identity,
                resume=resume,
                on_segment=saved,
            )
        except SimsError as e:
            self._json("POST", f"/v1/results/{task.replica}/failure", {"reason": str(e)[:500]})
            self._forget(task.replica)
            self.report(f"WU {task.wu_id.hex()[:12]} failed here and was given back: {e}")
            return []
        self.computed += 1
        try:
            r = self._request(
                "POST",
                f"/v1/results/{task.replica}{query}",
                encode_result(result),
                content_type=RESULT_CONTENT_TYPE,
            )
        except ClientError as e:
            self._forget(task.replica)
            self.report(f"result of replica {task.replica} refused: {e}")
            return []
        self._forget(task.replica)
        self.uploaded += 1
        body = r.json()
        if body.get("accepted"):
            self.accepted += 1
        self.report(f"uploaded replica {task.replica}: {body.get('state')}")
        return list(body.get("tasks", []))

    def _save_progress(self, task: ComputeTask, p: PartialRun) -> None:
        names = sorted(p.rows[0]) if p.rows else []
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(
                json.dumps(
                    {
                        "replica": task.replica,
                        "wu_id": task.wu_id.hex(),
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
                np.stack(p.frames)
                if p.frames
                else np.zeros((0, task.input_state.n_atoms, 3), "<f4")
            ),
            "frame_steps": np.asarray(p.frame_steps, dtype=np.int64),
        }
        arrays |= {f"obs_{n}": np.array([r[n] for r in p.rows], dtype=np.float64) for n in names}
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        atomic_write(self._progress_path(task.replica), buf.getvalue())

    def _load_progress(self, task: ComputeTask) -> PartialRun | None:
        path = self._progress_path(task.replica)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: np.array(npz[k]) for k in npz.files}
            meta = json.loads(arrays.pop("meta").tobytes())
            if meta["wu_id"] != task.wu_id.hex():
                raise ValueError("progress of another WU")
            boundaries = tuple(
                State(positions=arrays["positions"][i], velocities=arrays["velocities"][i], step=s)
                for i, s in enumerate(meta["steps"])
            )
            if [b.digest().hex() for b in boundaries] != meta["digests"]:
                raise ValueError("saved boundary states do not match their digests")
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
        except (OSError, ValueError, KeyError, SimsError) as e:
            self.report(
                f"saved progress of replica {task.replica} is unusable ({e}); restarting it"
            )
            path.unlink(missing_ok=True)
            return None

    # -- the loop --------------------------------------------------------------------------

    def run(
        self,
        stop: StopFlag | None = None,
        *,
        max_tasks: int | None = None,
        exit_when_idle: bool = False,
    ) -> ClientStats:
        """Pull, compute, upload until stopped (or ``max_tasks`` done, or idle if asked)."""
        stop = stop or StopFlag()
        self.register()
        done = 0
        for doc in self.saved_tasks():  # an interrupted WU first
            if stop.requested:
                break
            self.run_task(doc)
            done += 1
        idle = 1.0
        queue: list[dict[str, Any]] = []

        def wanted() -> int:
            left = self.slots if max_tasks is None else min(self.slots, max_tasks - done)
            return 0 if stop.requested else max(0, left - len(queue))

        while not stop.requested and (max_tasks is None or done < max_tasks):
            if not queue:
                body: dict[str, Any] = {}
                for engine in self.engines:
                    body = self._json(
                        "POST",
                        "/v1/work",
                        {"det_class": self.det_class(engine), "slots": wanted()},
                    )
                    queue = list(body["tasks"])
                    if queue:
                        break
            if not queue:
                if exit_when_idle:
                    break
                wait = min(self.max_backoff_s, max(idle, float(body.get("retry_after_s") or 1)))
                self.report(f"no work; next try in {wait:.0f} s")
                stop.wait(wait * (0.75 + 0.5 * random.random()))
                idle = min(self.max_backoff_s, idle * 2)
                continue
            idle = 1.0
            doc = queue.pop(0)
            done += 1
            # a stop request still finishes (and uploads) what was pulled
            queue += self.run_task(doc, pull_next=wanted())
        # Work pulled but not started (only with --slots > 1) is reissued after its
        # deadline; reporting it as failed would count an error against the WU.
        credit = None
        with contextlib.suppress(FoldnetError, KeyError, ValueError, TypeError):
            credit = int(self.me()["credit"])
        return ClientStats(self.computed, self.uploaded, self.accepted, self.spot_checks, credit)


def _reference_system(engine: str) -> SystemDefinition:
    """A small system of ``engine`` that ships offline, to learn this machine's class."""
    from sims.examples import ALANINE_DIPEPTIDE_PDB, VILLIN_PDB

    if engine == "go":
        from sims.go import GoModel

        return GoModel.from_pdb(VILLIN_PDB)
    if engine == "openmm":
        from sims.allatom import AllAtomEngine

        return AllAtomEngine.from_pdb(ALANINE_DIPEPTIDE_PDB).prepared
    raise SetupError(f"unknown engine {engine!r}: expected go or openmm")
