"""The scheduler's vocabulary: immutable work units, claims, events in and instructions out.

Everything here is plain, frozen data (picklable, JSON-encodable by :mod:`coordinator.codec`),
so the I/O shell (Ray, HTTP, the database) and the state machine share nothing mutable.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.jobs import JobSpec

# -- immutable messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """What a worker needs to compute one WU (the prepared system is looked up by digest)."""

    id: bytes
    job: str
    run: int
    clone: int
    gen: int
    input_digest: bytes
    seed: int
    spec: JobSpec
    #: > 0 when a generation is computed again after its first validation was retracted
    #: (a key caught faking had vouched for it); part of the WU's id only then.
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    """The checkable part of a returned result; signatures are verified before this point.

    Replicas agree only when *everything a lab receives* is identical (docs/architecture.md §6.1):
    every boundary state (through the segment root), the final state, and the frames and
    observables of every segment (``segment_data``, one digest per segment, which also lets
    a spot-check compare the frames of the segments it recomputes).
    """

    final_digest: bytes
    segment_root: bytes
    boundary_digests: tuple[bytes, ...]
    det_class: str
    sane: bool = True
    problem: str = ""  # why a claim is not sane (verification failed before the scheduler)
    frames_digest: bytes = b""
    observables_digest: bytes = b""
    segment_data: tuple[bytes, ...] = ()

    @property
    def agreement(self) -> tuple[bytes, bytes, bytes, bytes]:
        """What replicas must share, bit for bit, to agree."""
        return (self.final_digest, self.segment_root, self.frames_digest, self.observables_digest)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    job: str
    spec: JobSpec
    start_digests: tuple[bytes, ...]  # one prepared start state per run


@dataclass(frozen=True, slots=True)
class JobAccepted:
    """A lab's job is taken and waits for its preparation, which runs in another process
    (:mod:`coordinator.preparer`); it becomes :class:`JobPrepared` or
    :class:`JobPreparationFailed`. A coordinator that restarts prepares it again."""

    job: str
    engine: str
    wus: int  # runs x clones x gens, for the lab's quota while it prepares
    now: float


@dataclass(frozen=True, slots=True)
class JobPrepared:
    """The preparation of an accepted job finished: its spec (with the prepared system's
    digest) and one start state per run, stored before this event. Its WUs are created."""

    job: str
    spec: JobSpec
    start_digests: tuple[bytes, ...]
    now: float


@dataclass(frozen=True, slots=True)
class JobPreparationFailed:
    """The preparation of an accepted job failed; ``reason`` is what its lab is told.
    Nothing of the job but its plan and this event is stored."""

    job: str
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class WorkRequested:
    """A volunteer asks for up to ``slots`` more tasks, computing in ``det_class``.

    The class is one the coordinator accepted (:mod:`coordinator.classes`): a volunteer never
    names a class of its own making, and it may use only a few.
    """

    volunteer: str
    det_class: str
    slots: int
    now: float
    #: Only WUs of this engine ("" = any). An HTTP volunteer declares one determinism class
    #: per engine; without the filter a class of one engine could claim another's fresh WU.
    engine: str = ""


@dataclass(frozen=True, slots=True)
class ResultReturned:
    replica: int
    volunteer: str
    claim: Claim
    now: float


@dataclass(frozen=True, slots=True)
class ReplicaFailed:
    replica: int
    volunteer: str
    reason: str
    now: float


@dataclass(frozen=True, slots=True)
class BeaconPublished:
    """Public randomness that did not exist when pending commitments were made."""

    value: bytes
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class SpotCheckReturned:
    check: int
    volunteer: str
    end_digests: tuple[bytes, ...]  # digest of the state at the end of each checked segment
    det_class: str
    now: float
    #: For a check from another determinism class: whether the coordinator found its end
    #: states (and frames) within the engine's tolerance of the claimed ones (None: same
    #: class, digests are compared bit for bit).
    agrees: bool | None = None
    #: Digest of the frames and observables of each checked segment (same class: compared
    #: bit for bit with the claim's ``segment_data``).
    segment_data: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Tick:
    now: float


@dataclass(frozen=True, slots=True)
class NodeLost:
    volunteer: str
    now: float


@dataclass(frozen=True, slots=True)
class JobCancelled:
    """The job's lab withdrew it: no WU of it is handed out, validated or credited again.

    Work already validated stays validated (and credited); results still in flight are
    refused when they come back. Cancelling twice is a no-op, so replaying a log is safe.
    """

    job: str
    now: float


@dataclass(frozen=True, slots=True)
class Abandoned:
    """Every replica and spot check in flight is lost (the coordinator restarted)."""

    now: float


@dataclass(frozen=True, slots=True)
class VolunteerTrusted:
    """The operator vouches for a key (its own machines): established from the start.

    Trust has to start somewhere: a network where nobody is established could only let
    fresh keys validate each other, which is exactly what a Sybil group wants.
    """

    volunteer: str
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class GenerationSeeded:
    """Where generation ``gen`` of an adaptive job's trajectory starts: boundary ``boundary``
    (1 = after the first segment) of validated WU ``parent_wu``, whose digest is
    ``parent_state``, with velocities redrawn; ``input_digest`` is that restart state (stored
    before this event). ``decision`` is the digest of the policy's whole decision
    (:class:`coordinator.adaptive.Decision`), which anyone can recompute from validated data
    and the beacon."""

    job: str
    run: int
    clone: int
    gen: int
    parent_wu: bytes
    boundary: int
    parent_state: bytes
    input_digest: bytes
    decision: bytes
    now: float = 0.0


Event = (
    JobSubmitted
    | JobAccepted
    | JobPrepared
    | JobPreparationFailed
    | WorkRequested
    | ResultReturned
    | ReplicaFailed
    | BeaconPublished
    | SpotCheckReturned
    | Tick
    | NodeLost
    | Abandoned
    | JobCancelled
    | VolunteerTrusted
    | GenerationSeeded
)


# -- instructions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispatch:
    replica: int
    wu: WorkUnit
    volunteer: str
    deadline: float


@dataclass(frozen=True, slots=True)
class Offered:
    """A replica or check drawn for a volunteer who is not asking right now; it becomes a
    :class:`Dispatch` (or :class:`DispatchSpotCheck`) when that volunteer next asks."""

    volunteer: str
    wu: bytes
    deadline: float


@dataclass(frozen=True, slots=True)
class DispatchSpotCheck:
    check: int
    wu: WorkUnit
    volunteer: str
    segments: tuple[int, ...]
    start_digests: tuple[bytes, ...]  # boundary digest at the start of each checked segment
    deadline: float


@dataclass(frozen=True, slots=True)
class Validated:
    wu: WorkUnit
    final_digest: bytes
    valid: tuple[tuple[int, str], ...]  # (replica, volunteer) whose results agreed
    invalid: tuple[tuple[int, str], ...]
    spot_checked: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class GrantCredit:
    volunteer: str
    wu: WorkUnit
    replica: int


@dataclass(frozen=True, slots=True)
class Invalidated:
    volunteer: str
    wu: WorkUnit
    replica: int
    reason: str


@dataclass(frozen=True, slots=True)
class Convicted:
    """A key was caught faking: banned, and every credit it earned is taken back."""

    volunteer: str
    evidence_wu: bytes  # the WU whose outcome contradicts the key's signed result
    evidence: tuple[str, ...]  # the volunteers whose agreeing results decided it
    reason: str


@dataclass(frozen=True, slots=True)
class RevokeCredit:
    """Take back the credit of one validated replica (``CreditRevoked`` on the ledger)."""

    volunteer: str
    wu: WorkUnit
    replica: int
    evidence_wu: bytes
    evidence: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Retracted:
    """A validated WU turned out to be a fake: its data (and its trajectory's later
    generations) no longer reach a lab; the generation is computed again."""

    wu: WorkUnit
    reason: str


@dataclass(frozen=True, slots=True)
class WUFailed:
    wu: WorkUnit
    reason: str


@dataclass(frozen=True, slots=True)
class JobCompleted:
    job: str


@dataclass(frozen=True, slots=True)
class ChooseSeed:
    """An adaptive job's trajectory needs the start of generation ``gen``: the coordinator
    runs the job's policy over its validated data and answers :class:`GenerationSeeded`."""

    job: str
    run: int
    clone: int
    gen: int


Instruction = (
    Dispatch
    | Offered
    | DispatchSpotCheck
    | Validated
    | GrantCredit
    | Invalidated
    | Convicted
    | RevokeCredit
    | Retracted
    | WUFailed
    | JobCompleted
    | ChooseSeed
)
