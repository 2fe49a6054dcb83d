"""The limits and settings of one HTTP service (``foldnet serve``; some as its options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.errors import UsageError
from coordinator.plan import PlanLimits
from coordinator.policy import NetworkPolicy

#: The range of ``ServiceConfig.session_ttl_s``: longer than a few signature windows (a
#: session is reopened before it ends), at most a day (a key in use that long is enough).
MIN_SESSION_TTL_S = 60.0
MAX_SESSION_TTL_S = 86_400.0


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Limits of one service; the defaults suit a public deployment on a small machine."""

    max_json_bytes: int = 1 << 20
    max_job_bytes: int = 16 << 20  # a PDB upload
    max_result_bytes: int = 64 << 20  # the ceiling; each upload is held to its WU's size
    body_timeout_s: float = 30.0  # a body must arrive within this
    min_upload_rate: float = 64 << 10  # ... plus its limit at this many bytes per second
    max_requests_per_address: int = 64  # in flight at once from one IPv4 address or IPv6 /64
    max_job_steps: int = 5 * 10**8  # steps of one job in all (runs x clones x gens x steps)
    max_job_wus: int = 100_000  # WUs of one job (runs x clones x gens)
    min_steps_per_wu: int = 100  # a WU costs the service the same whatever its steps
    max_residues: int = 2_000  # amino acids of one system
    max_atoms: int = 50_000  # atoms of one system as uploaded, and particles once prepared
    max_queued_wus_per_lab: int = 200_000  # WUs of a lab's jobs not yet done, in all
    max_slots: int = 8  # WUs in one pull
    page_max: int = 100
    lab_rate: float = 20.0
    lab_burst: float = 60.0
    volunteer_rate: float = 50.0
    volunteer_burst: float = 200.0
    register_rate: float = 5.0  # per client address (an IPv6 /64 counts as one)
    register_burst: float = 50.0
    register_global_rate: float = 10.0  # all addresses together
    register_global_burst: float = 500.0
    signature_window_s: float = 300.0
    #: How long a volunteer's session (one signed request, then MACs) lasts; the client
    #: opens the next before it ends (coordinator/http/sessions.py).
    session_ttl_s: float = 3600.0
    idle_retry_s: float = 5.0  # what a volunteer is told to wait when there is no work
    tick_s: float = 0.2
    beacon_interval_s: float = 0.5
    checkpoint_every: int = 1000
    #: Volunteer keys of the operator's own machines, established from the start (trust
    #: has to start somewhere: fresh keys never validate a WU among themselves).
    trusted_keys: tuple[bytes, ...] = ()
    #: The network's verification floor, probation and draw settings.
    policy: NetworkPolicy = field(default_factory=NetworkPolicy)
    #: This service's public origin (``scheme://host:port``, as volunteers reach it); every
    #: signed request must name it. ``None`` takes it from each request's Host header, which
    #: does not stop a replay from one coordinator to another: set it in a deployment
    #: (``foldnet serve`` sets it to ``http://HOST:PORT`` unless ``--origin`` says otherwise).
    origin: str | None = None
    #: Answer the volunteers' hot routes (work, results, spot checks) without FastAPI's
    #: per-request machinery (:mod:`coordinator.http.hot`); the same handlers either way.
    hot_routes: bool = True
    #: Once started, load what verifying the first upload needs (numba's kernels), then
    #: freeze the process's objects out of garbage collection and make young collections
    #: rarer (:mod:`coordinator.http.heap`); ``foldnet serve`` sets it.
    settle_heap: bool = False

    def __post_init__(self) -> None:
        if not MIN_SESSION_TTL_S <= self.session_ttl_s <= MAX_SESSION_TTL_S:
            raise UsageError(
                f"session_ttl_s must be from {MIN_SESSION_TTL_S:g} to {MAX_SESSION_TTL_S:g} s "
                f"(a session's key is used for that long), got {self.session_ttl_s:g}"
            )

    @property
    def limits(self) -> PlanLimits:
        """The limits on one job that a plan and its preparation are held to."""
        return PlanLimits(
            max_job_steps=self.max_job_steps,
            max_job_wus=self.max_job_wus,
            min_steps_per_wu=self.min_steps_per_wu,
            max_residues=self.max_residues,
            max_atoms=self.max_atoms,
        )
