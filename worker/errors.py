"""The worker's exception tree (a subtree of :mod:`foldnet.errors`).

::

    FoldnetError (foldnet.errors)
    └── WorkerError
        ├── SetupError                 an option or local setup that cannot be used  BadRequest
        ├── IdentityError              the volunteer key cannot be read or created   BadRequest
        ├── JoinError                  the Ray cluster cannot be joined or left      Unavailable
        ├── SlotError                  a slot's process cannot start or keeps dying  Internal
        ├── ResultError                a result is malformed, inconsistent            Invalid
        │   └── ResultSignatureError   the signature does not verify
        ├── WireError                  data that is not what the HTTP protocol expects  Invalid
        ├── ProgressError              saved progress that cannot be resumed         Internal
        └── PicklingRefusedError       an object that must never be pickled (a key)   Internal

A server's error answer reaches the worker as the :mod:`foldnet.errors` class of its status
(raised by :mod:`foldnet.httpclient`), not as a worker error.
"""

from __future__ import annotations

from foldnet.errors import BadRequest, FoldnetError, Internal, Invalid, Unavailable


class WorkerError(FoldnetError):
    """Base class of every error raised by ``worker``."""


class SetupError(WorkerError, BadRequest):
    """A command-line option or local setup (a missing program) that cannot be used."""

    code = "bad_usage"


class JoinError(WorkerError, Unavailable):
    """The Ray cluster could not be joined or left; the message has Ray's own words."""

    code = "unavailable"


class SlotError(WorkerError, Internal):
    """A slot's process did not start, or died again and again (its error is on stderr)."""

    code = "slot_failed"


class IdentityError(WorkerError, BadRequest):
    """The volunteer's key file is missing, unreadable, too open, or not an Ed25519 key."""

    code = "bad_identity"


class ResultError(WorkerError, Invalid):
    """A result does not match its WU, its own digests, or the expected shapes."""

    code = "invalid_result"


class ResultSignatureError(ResultError):
    """The result's Ed25519 signature does not verify under the claimed worker key."""


class WireError(WorkerError, Invalid):
    """A request or response body does not follow the HTTP wire format (worker.wire)."""

    code = "invalid_body"


class ProgressError(WorkerError, Internal):
    """A replica's saved progress that cannot be resumed (another WU or class, damaged): the
    slot discards it and starts the replica again."""

    code = "progress_unusable"


class PicklingRefusedError(WorkerError, Internal, TypeError):
    """An object holding a secret was about to be pickled: a bug. Also a :class:`TypeError`,
    which is what pickle raises for what it cannot pickle."""

    code = "not_picklable"
