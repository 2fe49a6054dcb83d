"""The coordinator's exception tree (a subtree of :mod:`foldnet.errors`).

::

    FoldnetError (foldnet.errors)
    └── CoordinatorError
        ├── UsageError             an option, folder or name that cannot be used    BadRequest
        ├── MissingError           no such job, lab, stored state or result           NotFound
        ├── SubmissionError        a job spec that cannot be accepted; nothing stored   Invalid
        ├── ProtocolError          a request that contradicts the current state       Conflict
        │                          (unknown replica, wrong volunteer, a duplicate name)
        ├── CorruptionError        stored data that does not decode: damaged database Internal
        ├── ClassRefusedError      a determinism class the server does not accept       Invalid
        ├── AnalysisError          results that cannot be analysed (too little data,   Invalid
        │                          NaN, a lag longer than the trajectories)
        ├── CoordinatorUnavailableError  not running, not open yet                Unavailable
        │   └── CommitFailedError  a request the coordinator could not commit;
        │                          nothing of it was kept, the caller retries
        └── ResultsVerificationError  verify-results found a bundle false        Finding
            ├── BundleIncompleteError        a file the bundle needs is absent or unreadable
            ├── BadCheckpointSignatureError  the checkpoint does not verify under the log key
            ├── BadCosignatureError          a named witness's cosignature does not verify
            ├── WitnessQuorumError           fewer named witnesses cosigned than the threshold
            ├── EntryNotInLogError           an inclusion proof fails: not in the log
            ├── NotCoveredError              an entry after the checkpoint: nothing proves it
            ├── NotAttestedError             a result header the entry's workers did not sign
            ├── DataMismatchError            full-precision data that is not what was signed
            ├── WUMislabelledError           a validated WU shown in another WU's place
            ├── WUMissingError               a generation of a trajectory without its WU
            ├── ChainBrokenError             a generation not started from the one before
            ├── FrameMismatchError           an XTC frame that is not the signed frame
            │   └── TrajectorySwappedError   ... because it is another trajectory's file
            ├── ObservableMismatchError      a CSV value that is not the signed observable
            ├── StructureMismatchError       a PDB that is not the signed positions
            ├── SummaryMismatchError         summary.json says what the signed data does not
            └── UnexpectedFileError          a data file, link or zip member not the bundle's
"""

from __future__ import annotations

from foldnet.errors import (
    BadRequest,
    Conflict,
    Finding,
    FoldnetError,
    Internal,
    Invalid,
    NotFound,
    Unavailable,
)


class CoordinatorError(FoldnetError):
    """Base class of every error raised by ``coordinator``."""


class UsageError(CoordinatorError, BadRequest):
    """A command-line option, folder or name that cannot be used as given."""

    code = "bad_usage"


class MissingError(CoordinatorError, NotFound):
    """No such job, lab, stored state or result."""

    code = "not_found"


class CorruptionError(CoordinatorError, Internal):
    """Stored data that does not decode: the database is damaged (or a bug wrote it)."""

    code = "corrupt"


class SubmissionError(CoordinatorError, Invalid):
    """A job submission is invalid: the message says what was wrong and what is expected."""

    code = "invalid_job"


class ProtocolError(CoordinatorError, Conflict):
    """A request or event that the current state does not allow."""

    code = "conflict"


class ClassRefusedError(CoordinatorError, Invalid):
    """A determinism class this server does not accept (or one key's class budget spent)."""

    code = "unknown_class"


class AnalysisError(CoordinatorError, Invalid):
    """Results that cannot make a Markov state model: the message says what is missing."""

    code = "invalid_analysis"


class CoordinatorUnavailableError(CoordinatorError, Unavailable):
    """The coordinator (its database, its thread, its volunteers) is not there now; retry."""

    code = "unavailable"


class CommitFailedError(CoordinatorUnavailableError):
    """The coordinator could not commit a request: nothing of it was kept; retry."""

    code = "unavailable"


class ResultsVerificationError(CoordinatorError, Finding):
    """``foldnet verify-results`` found a results bundle false (exit 1); ``code`` names why."""

    code = "results_false"


class BundleIncompleteError(ResultsVerificationError):
    code = "bundle_incomplete"


class BadCheckpointSignatureError(ResultsVerificationError):
    code = "bad_checkpoint_signature"


class BadCosignatureError(ResultsVerificationError):
    """A named witness's cosignature does not verify over the bundle's checkpoint."""

    code = "bad_cosignature"


class WitnessQuorumError(ResultsVerificationError):
    """Fewer of the named witnesses cosigned the checkpoint than the threshold asks."""

    code = "witness_quorum"


class EntryNotInLogError(ResultsVerificationError):
    code = "entry_not_in_log"


class NotCoveredError(ResultsVerificationError):
    code = "not_covered"


class NotAttestedError(ResultsVerificationError):
    code = "not_attested"


class DataMismatchError(ResultsVerificationError):
    code = "data_mismatch"


class WUMislabelledError(ResultsVerificationError):
    """A validated WU of the job shown as another run, clone or generation: its id is not
    the content id of the place the bundle gives it."""

    code = "wu_mislabelled"


class WUMissingError(ResultsVerificationError):
    code = "wu_missing"


class ChainBrokenError(ResultsVerificationError):
    code = "chain_broken"


class FrameMismatchError(ResultsVerificationError):
    code = "frame_mismatch"


class TrajectorySwappedError(FrameMismatchError):
    code = "trajectory_swapped"


class ObservableMismatchError(ResultsVerificationError):
    code = "observable_mismatch"


class StructureMismatchError(ResultsVerificationError):
    code = "structure_mismatch"


class SummaryMismatchError(ResultsVerificationError):
    """summary.json states the job or its trajectories otherwise than the signed data."""

    code = "summary_mismatch"


class UnexpectedFileError(ResultsVerificationError):
    """A file with a bundle's data name that the provenance does not account for, a link,
    or a zip member whose name is unsafe or given twice."""

    code = "unexpected_file"
