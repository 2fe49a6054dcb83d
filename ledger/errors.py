"""The one exception tree of ``ledger``.

Every error a caller can act on is a :class:`LedgerError`. Foreign exceptions (sqlite3's,
cryptography's, ``binascii``'s, ``OSError``) are translated where they enter, with
``raise X(...) from e``, so a user reads what was wrong and what was expected instead of a
library traceback. Verification functions (``verify_*``) return ``None`` on success and raise
one of these on failure; they never return a boolean to be forgotten.

A subtree of :mod:`foldnet.errors`; the kind of each class (and so its HTTP status and exit
status) is on the right::

    FoldnetError (foldnet.errors)
    └── LedgerError
        ├── ProofError                  a Merkle proof does not verify (RFC 9162 §2.1.3.2, §2.1.4.2)
        │   ├── InclusionProofError     leaf, index, size, proof and root do not fit together
        │   └── ConsistencyProofError   the two tree heads are not one append-only history
        ├── FormatError                 bytes or text that are not what they claim; nothing appended
        │   ├── EntryFormatError        unknown entry type or version, truncated, trailing bytes
        │   │   └── EntryTooLargeError  over the 65,535-byte limit of a tlog-tiles entry bundle
        │   ├── NoteFormatError         not a C2SP signed note or checkpoint (truncated, garbage)
        │   └── TileFormatError         a tile directory that is incomplete or malformed
        ├── SignatureError              a signature that does not verify
        │   └── UnknownKeyError         no signature from a trusted key (wrong name or key id)
        ├── KeyFileError                a key file or key string that cannot be used
        ├── ConfigError                 a parameter that cannot be used (checkpoint_every < 1)
        ├── NotInLogError               no checkpoint, entry or tile of that size or index
        ├── InconsistentCheckpointError refusing to sign or cosign a fork or a rollback
        ├── EntryRejectedError          a well-formed entry the ledger's rules refuse to append
        ├── CreditError                 the credit formula cannot price these parameters
        ├── PolicyError                 a verifier policy (k of n witnesses) is not met
        ├── StorageError                a database that cannot be opened, read or written
        └── RemoteError                 a log server that cannot be reached or answers off-protocol
"""

from __future__ import annotations

from foldnet.errors import BadRequest, Finding, FoldnetError, Invalid, NotFound, Unavailable


class LedgerError(FoldnetError):
    """Base class of every error raised by ``ledger``."""


class ProofError(LedgerError, Finding):
    """A Merkle inclusion or consistency proof does not verify."""

    code = "invalid_proof"


class InclusionProofError(ProofError):
    """An inclusion proof does not lead from the leaf hash to the root."""


class ConsistencyProofError(ProofError):
    """A consistency proof does not show that one tree extends the other."""


class FormatError(LedgerError, Invalid):
    """Input bytes or text are malformed; nothing was appended or signed."""

    code = "invalid_format"


class EntryFormatError(FormatError):
    """An entry is not a canonical encoding of a known entry type and version."""


class EntryTooLargeError(EntryFormatError):
    """An entry is larger than an entry bundle can carry (65,535 bytes)."""


class NoteFormatError(FormatError):
    """Text that is not a well-formed C2SP signed note or tlog checkpoint."""


class TileFormatError(FormatError):
    """A tlog-tiles directory is incomplete or a tile is malformed."""


class SignatureError(LedgerError, Finding):
    """A signature does not verify under the key it names."""

    code = "bad_signature"


class UnknownKeyError(SignatureError):
    """No signature from a trusted key: the key name or key id does not match."""


class KeyFileError(LedgerError, BadRequest):
    """A key file or key string is missing, unreadable or not the expected kind of key."""

    code = "bad_key_file"


class ConfigError(LedgerError, BadRequest):
    """A parameter of the log or witness that cannot be used."""

    code = "bad_config"


class NotInLogError(LedgerError, NotFound):
    """The log has no checkpoint, entry or tile of that size or index."""

    code = "not_found"


class InconsistentCheckpointError(LedgerError, Finding):
    """A checkpoint that is not an append-only extension of one signed before (a fork)."""

    status = 409
    code = "inconsistent_checkpoint"


class EntryRejectedError(LedgerError, Invalid):
    """A well-formed entry that the ledger's rules refuse (for example an unbacked credit)."""

    code = "entry_rejected"


class CreditError(LedgerError, Invalid):
    """The credit formula cannot price a work unit (unknown version or engine, bad values)."""

    code = "unpriceable"


class PolicyError(LedgerError, Finding):
    """A verification policy is not satisfied (for example too few witness cosignatures)."""

    code = "policy_not_met"


class StorageError(LedgerError, Unavailable):
    """A ledger or witness database cannot be opened, read or written."""

    code = "storage_error"


class RemoteError(LedgerError, Unavailable):
    """A log server (HTTP) cannot be reached, or answers outside the protocol.

    Deliberately not a :class:`StorageError` nor a :class:`FormatError`: the auditor turns
    those into discrepancies (a missing tile is evidence), whereas an unreachable server or
    a 5xx answer says nothing about the log and must stop the audit instead.
    """

    code = "remote_error"
