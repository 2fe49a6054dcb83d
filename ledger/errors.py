"""The one exception tree of ``ledger``.

Every error a caller can act on is a :class:`LedgerError`. Foreign exceptions (sqlite3's,
cryptography's, ``binascii``'s, ``OSError``) are translated where they enter, with
``raise X(...) from e``, so a user reads what was wrong and what was expected instead of a
library traceback. Verification functions (``verify_*``) return ``None`` on success and raise
one of these on failure; they never return a boolean to be forgotten.

::

    LedgerError
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
    ├── InconsistentCheckpointError refusing to sign or cosign a fork or a rollback
    ├── EntryRejectedError          a well-formed entry the ledger's rules refuse to append
    ├── CreditError                 the credit formula cannot price these parameters
    ├── PolicyError                 a verifier policy (k of n witnesses) is not met
    ├── StorageError                a database that cannot be opened, read or written
    └── RemoteError                 a log server that cannot be reached or answers off-protocol
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error raised by ``ledger``."""


class ProofError(LedgerError):
    """A Merkle inclusion or consistency proof does not verify."""


class InclusionProofError(ProofError):
    """An inclusion proof does not lead from the leaf hash to the root."""


class ConsistencyProofError(ProofError):
    """A consistency proof does not show that one tree extends the other."""


class FormatError(LedgerError):
    """Input bytes or text are malformed; nothing was appended or signed."""


class EntryFormatError(FormatError):
    """An entry is not a canonical encoding of a known entry type and version."""


class EntryTooLargeError(EntryFormatError):
    """An entry is larger than an entry bundle can carry (65,535 bytes)."""


class NoteFormatError(FormatError):
    """Text that is not a well-formed C2SP signed note or tlog checkpoint."""


class TileFormatError(FormatError):
    """A tlog-tiles directory is incomplete or a tile is malformed."""


class SignatureError(LedgerError):
    """A signature does not verify under the key it names."""


class UnknownKeyError(SignatureError):
    """No signature from a trusted key: the key name or key id does not match."""


class KeyFileError(LedgerError):
    """A key file or key string is missing, unreadable or not the expected kind of key."""


class InconsistentCheckpointError(LedgerError):
    """A checkpoint that is not an append-only extension of one signed before (a fork)."""


class EntryRejectedError(LedgerError):
    """A well-formed entry that the ledger's rules refuse (for example an unbacked credit)."""


class CreditError(LedgerError):
    """The credit formula cannot price a work unit (unknown version or engine, bad values)."""


class PolicyError(LedgerError):
    """A verification policy is not satisfied (for example too few witness cosignatures)."""


class StorageError(LedgerError):
    """A ledger or witness database cannot be opened, read or written."""


class RemoteError(LedgerError):
    """A log server (HTTP) cannot be reached, or answers outside the protocol.

    Deliberately not a :class:`StorageError` nor a :class:`FormatError`: the auditor turns
    those into discrepancies (a missing tile is evidence), whereas an unreachable server or
    a 5xx answer says nothing about the log and must stop the audit instead.
    """
