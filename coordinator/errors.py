"""The coordinator's exception tree.

::

    CoordinatorError
    ├── SubmissionError        a job spec that cannot be accepted; nothing was stored
    └── ProtocolError          an event that contradicts the scheduler's state
                               (unknown replica, result from the wrong volunteer, ...)
"""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base class of every error raised by ``coordinator``."""


class SubmissionError(CoordinatorError):
    """A job submission is invalid: the message says what was wrong and what is expected."""


class ProtocolError(CoordinatorError):
    """An event that the scheduler's state does not allow."""
