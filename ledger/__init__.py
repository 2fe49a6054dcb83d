"""The credit ledger: RFC 6962 Merkle log, signed checkpoints, witnesses, proofs, auditor."""
