"""The worker's exception tree.

::

    WorkerError
    ├── IdentityError      the volunteer key cannot be read or created
    ├── ResultError        a result is malformed, inconsistent or wrongly signed
    │   └── ResultSignatureError   the signature does not verify
    └── WireError          data from the network is not what the HTTP protocol expects
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class of every error raised by ``worker``."""


class IdentityError(WorkerError):
    """The volunteer's key file is missing, unreadable, too open, or not an Ed25519 key."""


class ResultError(WorkerError):
    """A result does not match its WU, its own digests, or the expected shapes."""


class ResultSignatureError(ResultError):
    """The result's Ed25519 signature does not verify under the claimed worker key."""


class WireError(WorkerError):
    """A request or response body does not follow the HTTP wire format (worker.wire)."""
