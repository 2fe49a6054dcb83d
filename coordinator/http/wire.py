"""The server's side of the wire: what it remembers about work it handed out, the checks an
upload must pass before it reaches the coordinator, and the work handed out as the
coordinator answers a pull (:class:`HandOut`, plain data that crosses to a front-end
process).

An upload that is not even shaped like the WU it answers (wrong sizes, NaN or inf, another
WU's id or another key's) is refused with a 4xx and nothing is stored: it is a malformed
request, not a result. A well-formed result whose signature or digests do not hold goes on
to the coordinator, which records it as invalid against its volunteer (docs/architecture.md §6.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from foldnet.errors import Internal, Invalid
from ledger.entries import PriceInputs
from sims.spec import RunSpec
from sims.state import State, all_finite
from worker.result import Expected, WorkerResult
from worker.wire import task_document

#: How long after its deadline a replica or spot check handed out is remembered, by the
#: core and by each front-end: an upload that late finds its replica reissued (and the
#: coordinator, not what is remembered, decides whether an upload counts).
FORGET_AFTER_S = 60.0
#: How often, at most, what is remembered is pruned of work past FORGET_AFTER_S.
PRUNE_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class Assignment:
    """A replica handed to a volunteer over HTTP, with the sizes its result must have and
    what verifying it takes (:func:`coordinator.service.verify_upload`)."""

    volunteer: bytes
    wu_id: bytes
    n_segments: int
    n_atoms: int
    n_frames: int
    deadline: float
    steps: int
    input_digest: bytes = b""
    segment_steps: int = 0
    report_steps: int = 0
    temperature: float = 0.0
    system: bytes = b""  # the system's digest
    price: PriceInputs | None = None

    def expected(self) -> Expected:
        """What its result must be (:func:`worker.result.verify_result`)."""
        if self.price is None:
            raise Internal(
                f"a replica of WU {self.wu_id.hex()[:16]} was handed out without its price; "
                "expected every compute assignment to carry one"
            )
        return Expected(
            wu_id=self.wu_id,
            worker_key=self.volunteer,
            input_digest=self.input_digest,
            n_segments=self.n_segments,
            n_atoms=self.n_atoms,
            n_frames=self.n_frames,
            segment_steps=self.segment_steps,
            report_steps=self.report_steps,
            price=self.price,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HandOut:
    """One task handed out: a compute task (``assignment``: what its result must be) or a
    spot check (``check``: its volunteer, WU and deadline). No system: the volunteer fetches
    it by its digest."""

    wu_id: bytes
    number: int  # the replica, or the spot check
    system: str  # digest, hex
    engine: str
    spec: RunSpec
    deadline: float
    states: tuple[State, ...]  # the input state, or each checked segment's start
    price: PriceInputs | None = None
    segments: tuple[int, ...] = ()
    assignment: Assignment | None = None
    check: tuple[bytes, bytes, float] | None = None


def encode_handout(h: HandOut) -> dict[str, Any]:
    """The task as the volunteer reads it (:func:`worker.wire.decode_task`), with its
    deadline."""
    doc = task_document(
        wu_id=h.wu_id,
        system=h.system,
        engine=h.engine,
        spec=h.spec,
        number=h.number,
        states=h.states,
        price=h.price if h.assignment is not None else None,
        segments=h.segments,
    )
    doc["deadline"] = h.deadline
    return doc


#: Most observables a result may carry (each one float64 per frame).
MAX_OBSERVABLES = 16


def upload_limit(a: Assignment) -> int:
    """The most bytes an honest result of ``a`` can take: its arrays at their exact sizes,
    16 observables, and a manifest (header, signature, array list) of generous size."""
    states = 2 * (a.n_segments + 1) * a.n_atoms * 3 * 8  # positions and velocities, f8
    frames = a.n_frames * a.n_atoms * 3 * 4 + a.n_frames * 8  # f4 frames, i8 steps
    observables = MAX_OBSERVABLES * a.n_frames * 8
    manifest = (64 << 10) + 70 * (a.n_segments + 1)  # 64 hex + quotes + comma per digest
    return 8 + manifest + states + frames + observables


def precheck(result: WorkerResult, a: Assignment, key: bytes) -> None:
    """Raise 422 unless ``result`` has the WU's id, the sender's key, the WU's shapes and
    only finite numbers."""
    h = result.header
    if h.wu_id != a.wu_id:
        raise Invalid(
            f"the result is for WU {h.wu_id.hex()[:16]}; this replica is WU {a.wu_id.hex()[:16]}",
            code="invalid_result",
        )
    if h.worker_key != key:
        raise Invalid("the result is signed by another key than yours", code="invalid_result")
    if len(h.boundary_digests) != a.n_segments + 1:
        raise Invalid(
            f"header.boundary_digests: expected {a.n_segments + 1} (one per segment boundary), "
            f"got {len(h.boundary_digests)}",
            code="invalid_result",
        )
    if h.n_atoms != a.n_atoms:
        raise Invalid(
            f"header.n_atoms: expected {a.n_atoms}, got {h.n_atoms}", code="invalid_result"
        )
    shapes = {
        "positions": (result.positions, (a.n_segments + 1, a.n_atoms, 3)),
        "velocities": (result.velocities, (a.n_segments + 1, a.n_atoms, 3)),
        "frames": (result.frames, (a.n_frames, a.n_atoms, 3)),
        "frame_steps": (result.frame_steps, (a.n_frames,)),
    }
    shapes |= {f"obs_{k}": (v, (a.n_frames,)) for k, v in result.observables.items()}
    if len(result.observables) > MAX_OBSERVABLES:
        raise Invalid(f"at most {MAX_OBSERVABLES} observables per result", code="invalid_result")
    for name, (arr, want) in shapes.items():
        if arr.shape != want:
            raise Invalid(
                f"{name}: expected shape {want}, got {tuple(arr.shape)}", code="invalid_result"
            )
        if arr.dtype.kind == "f" and not all_finite(arr):
            raise Invalid(f"{name}: contains NaN or inf", code="invalid_result")
    if not bool((np.diff(result.frame_steps) > 0).all()):
        raise Invalid("frame_steps must increase", code="invalid_result")
