"""The credit ledger: RFC 6962 Merkle log, signed checkpoints, witnesses, proofs, auditor.

Pure verification functions (:func:`verify_inclusion`, :func:`verify_consistency`) return
``None`` on success and raise a :class:`LedgerError` subclass on failure. ``ledger`` imports
nothing else of foldnet, so an auditor needs only this package.
"""

from ledger.audit import AuditReport, VolunteerReport, run_audit
from ledger.checkpoint import Checkpoint, CheckpointSigner, SignedCheckpoint, open_checkpoint
from ledger.cosignature import CosignatureV1Signer, CosignatureV1Verifier
from ledger.credit import CURRENT_FORMULA_VERSION, credit_for
from ledger.entries import (
    Attestation,
    CheckpointPublished,
    CreditGranted,
    CreditRevoked,
    Entry,
    JobSubmitted,
    PriceInputs,
    Record,
    ResultValidated,
    VolunteerRegistered,
    WitnessCosigned,
    attestation_message,
    decode_record,
    encode_record,
)
from ledger.errors import (
    ConfigError,
    ConsistencyProofError,
    CreditError,
    EntryFormatError,
    EntryRejectedError,
    EntryTooLargeError,
    FormatError,
    InclusionProofError,
    InconsistentCheckpointError,
    KeyFileError,
    LedgerError,
    NoteFormatError,
    NotInLogError,
    PolicyError,
    ProofError,
    RemoteError,
    SignatureError,
    StorageError,
    TileFormatError,
    UnknownKeyError,
)
from ledger.keys import (
    generate_private_key,
    load_or_create_private_key,
    load_private_key,
    load_public_key,
    parse_vkey,
    public_key_bytes,
    write_private_key,
)
from ledger.log import Appended, CheckRules, Log, UnsafeAdmitAll
from ledger.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from ledger.note import Ed25519NoteSigner, Ed25519NoteVerifier, Note, parse_note
from ledger.rules import Discrepancy, LedgerState
from ledger.signatures import VerifiedSignatures
from ledger.store import Store
from ledger.tiles import TileReader, export_tiles
from ledger.witness import UnsafeNoWitnessPolicy, Witness, WitnessPolicy

__all__ = [
    "CURRENT_FORMULA_VERSION",
    "Appended",
    "Attestation",
    "AuditReport",
    "CheckRules",
    "Checkpoint",
    "CheckpointPublished",
    "CheckpointSigner",
    "ConfigError",
    "ConsistencyProofError",
    "CosignatureV1Signer",
    "CosignatureV1Verifier",
    "CreditError",
    "CreditGranted",
    "CreditRevoked",
    "Discrepancy",
    "Ed25519NoteSigner",
    "Ed25519NoteVerifier",
    "Entry",
    "EntryFormatError",
    "EntryRejectedError",
    "EntryTooLargeError",
    "FormatError",
    "InclusionProofError",
    "InconsistentCheckpointError",
    "JobSubmitted",
    "KeyFileError",
    "LedgerError",
    "LedgerState",
    "Log",
    "MerkleTree",
    "NotInLogError",
    "Note",
    "NoteFormatError",
    "PolicyError",
    "PriceInputs",
    "ProofError",
    "Record",
    "RemoteError",
    "ResultValidated",
    "SignatureError",
    "SignedCheckpoint",
    "StorageError",
    "Store",
    "TileFormatError",
    "TileReader",
    "UnknownKeyError",
    "UnsafeAdmitAll",
    "UnsafeNoWitnessPolicy",
    "VerifiedSignatures",
    "VolunteerRegistered",
    "VolunteerReport",
    "Witness",
    "WitnessCosigned",
    "WitnessPolicy",
    "attestation_message",
    "credit_for",
    "decode_record",
    "encode_record",
    "export_tiles",
    "generate_private_key",
    "leaf_hash",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "open_checkpoint",
    "parse_note",
    "parse_vkey",
    "public_key_bytes",
    "run_audit",
    "verify_consistency",
    "verify_inclusion",
    "write_private_key",
]
