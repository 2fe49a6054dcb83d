"""Ed25519 keys: private key files (mode 0600), public keys, and C2SP verifier-key strings.

A private key file is PKCS#8 PEM, written atomically with mode 0600; loading refuses a file
that group or others can read (as OpenSSH does). A public key can be given as 64 hex digits,
as a file holding hex or a PEM public key, or as a private key file (its public half).

Verifier keys (``vkey``) follow c2sp.org/signed-note: ``<name>+<hex key id>+<base64(type ||
key)>``, type 0x01 for a log's Ed25519 key and 0x04 for a witness's cosignature key.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from foldnet.files import atomic_write
from ledger.cosignature import CosignatureV1Verifier
from ledger.errors import KeyFileError, LedgerError
from ledger.note import (
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Ed25519NoteVerifier,
    public_key_bytes,
)

__all__ = [
    "generate_private_key",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "parse_log_vkey",
    "parse_vkey",
    "public_key_bytes",
    "write_private_key",
]


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_private_key(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
    """Write ``key`` as PKCS#8 PEM with mode 0600, atomically; refuses to overwrite a key."""
    target = Path(path)
    if target.exists():
        raise KeyFileError(f"{target} already exists; refusing to overwrite a key")
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    atomic_write(target, pem, mode=0o600)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an Ed25519 private key file; refuses files readable by group or others."""
    target = Path(path)
    try:
        st = target.stat()
        data = target.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {target}: {e.strerror or e}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {target} is accessible by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {target}"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{target} is not an unencrypted PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{target} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_or_create_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the key at ``path``, generating and writing a new one (mode 0600) if absent."""
    target = Path(path)
    if not target.exists():
        write_private_key(target, generate_private_key())
    return load_private_key(target)


def load_public_key(spec: str | os.PathLike[str]) -> bytes:
    """A 32-byte Ed25519 public key from hex, a vkey, or a file (hex, PEM public or private)."""
    text = os.fspath(spec).strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if "+" in text and not Path(text).is_file():
        try:
            return parse_vkey(text).public_key
        except LedgerError:
            pass
    target = Path(text)
    if not target.is_file():
        raise KeyFileError(f"{text!r} is neither 64 hex digits, a vkey, nor a key file")
    try:
        data = target.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read {target}: {e.strerror or e}") from e
    stripped = data.strip()
    if len(stripped) == 64:
        try:
            return bytes.fromhex(stripped.decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise KeyFileError(f"{target} is not a hex public key") from e
    if b"PRIVATE KEY" in data:
        return public_key_bytes(load_private_key(target))
    if b"+" in stripped and b"\n" not in stripped:
        return parse_vkey(stripped.decode(errors="replace")).public_key
    try:
        pub = load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{target} is not a public key (hex, vkey or PEM)") from e
    if not isinstance(pub, Ed25519PublicKey):
        raise KeyFileError(f"{target} holds a {type(pub).__name__}, not an Ed25519 key")
    return public_key_bytes(pub)


def parse_vkey(vkey: str) -> Ed25519NoteVerifier | CosignatureV1Verifier:
    """Parse a verifier key string; the key id in it must match the name and key."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise KeyFileError(f"{vkey!r} is not a verifier key '<name>+<keyid>+<base64>'")
    name, hex_id, blob = parts
    try:
        want_id = bytes.fromhex(hex_id)
        raw = base64.b64decode(blob, validate=True)
    except (ValueError, binascii.Error) as e:
        raise KeyFileError(f"verifier key {vkey!r}: bad hex key id or base64 key") from e
    if len(want_id) != 4 or len(raw) != 33:
        raise KeyFileError(f"verifier key {vkey!r}: expected a 4-byte id and a 1+32-byte key")
    verifier: Ed25519NoteVerifier | CosignatureV1Verifier
    try:
        if raw[0] == SIG_TYPE_ED25519:
            verifier = Ed25519NoteVerifier(name, raw[1:])
        elif raw[0] == SIG_TYPE_COSIGNATURE_V1:
            verifier = CosignatureV1Verifier(name, raw[1:])
        else:
            raise KeyFileError(f"verifier key {vkey!r}: unsupported signature type {raw[0]:#04x}")
    except LedgerError as e:
        raise KeyFileError(f"verifier key {vkey!r}: {e}") from e
    if verifier.key_id != want_id:
        raise KeyFileError(
            f"verifier key {vkey!r}: key id {hex_id} does not match the name and key "
            f"(expected {verifier.key_id.hex()})"
        )
    return verifier


def parse_log_vkey(vkey: str) -> Ed25519NoteVerifier:
    """A log's verifier key: :func:`parse_vkey`, refusing a witness's (cosignature) key."""
    verifier = parse_vkey(vkey)
    if not isinstance(verifier, Ed25519NoteVerifier):
        raise KeyFileError(
            f"{vkey.strip()!r} is a witness key, not a log key: expected an Ed25519 log key "
            "(signature type 0x01), as the log publishes at /log.vkey"
        )
    return verifier
