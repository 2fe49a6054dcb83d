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
        └── CoordinatorUnavailableError  not running, not open yet                Unavailable
            └── CommitFailedError  a request the coordinator could not commit;
                                   nothing of it was kept, the caller retries
"""

from __future__ import annotations

from foldnet.errors import (
    BadRequest,
    Conflict,
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
