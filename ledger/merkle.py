"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Pure functions, no I/O. Section numbers refer to RFC 9162 (Certificate Transparency 2.0),
which restates the tree of RFC 6962 §2.1 with verification algorithms:

* §2.1.1 Merkle Tree Hash: ``MTH({}) = SHA-256()``, ``MTH({d}) = SHA-256(0x00 || d)``,
  ``MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` with ``k`` the largest power of
  two smaller than ``n``.
* §2.1.3.1 inclusion proof ``PATH(m, D[n])`` and §2.1.3.2 its verification.
* §2.1.4.1 consistency proof ``PROOF(m, D[n])`` / ``SUBPROOF`` and §2.1.4.2 its verification.

Verification follows the iterative algorithm of transparency-dev/merkle (``proof/verify.go``),
also used by sigstore-python, with two rules beyond the RFC text that reference verifier
applies: a leaf hash that is not 32 bytes is an error, and a consistency proof from tree size
0 is an error (even to size 0).

Proof *generation* is split in two: :func:`inclusion_proof_ranges` and
:func:`consistency_proof_ranges` name the leaf ranges ``[start, end)`` whose Merkle Tree Hashes
form the proof (bottom-up, as the RFC orders them); every such range decomposes into at most
``log2(n)`` *perfect* subtrees (:func:`perfect_subtrees`), whose hashes any storage can serve
(a SQLite table, tlog tiles, or the in-memory :class:`MerkleTree`) through a
:data:`NodeReader`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence

from ledger.errors import ConsistencyProofError, InclusionProofError, ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "NodeReader",
    "consistency_proof",
    "consistency_proof_ranges",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_subtrees",
    "root_from_inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

#: Size in bytes of every hash in the tree (SHA-256).
HASH_SIZE = 32
#: ``MTH({})``: the root of the empty tree (§2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

#: Reads perfect-subtree hashes: given ``(level, index)`` pairs, where the pair names
#: ``MTH(D[index * 2**level : (index + 1) * 2**level])``, return their hashes in order.
NodeReader = Callable[[Sequence[tuple[int, int]]], Sequence[bytes]]


def leaf_hash(entry: bytes) -> bytes:
    """``MTH({d}) = SHA-256(0x00 || d)`` (§2.1.1)."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)`` (§2.1.1)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# --------------------------------------------------------------------------- verification


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ProofError(f"{name} must be >= 0, got {value}")
    return value


def _check_proof(proof: object, error: type[ProofError]) -> list[bytes]:
    if proof is None:
        return []
    if isinstance(proof, bytes | bytearray | str) or not isinstance(proof, Sequence):
        raise error(f"proof must be a list of {HASH_SIZE}-byte hashes, got {type(proof).__name__}")
    out: list[bytes] = []
    for i, h in enumerate(proof):
        if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
            raise error(f"proof[{i}] is not a {HASH_SIZE}-byte hash")
        out.append(bytes(h))
    return out


def _check_bytes(name: str, value: object, error: type[ProofError]) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise error(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _decomp_incl_proof(index: int, size: int) -> tuple[int, int]:
    """Split an inclusion proof into its inner part and its right-border part (§2.1.3.2)."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes] | None
) -> bytes:
    """The root that ``proof`` leads to from ``leaf_hash`` at ``index`` (§2.1.3.2).

    Raises :class:`InclusionProofError` when the arguments cannot form a proof at all (index
    outside the tree, a leaf hash that is not 32 bytes, a proof of the wrong length).
    """
    index = _check_size("index", index)
    tree_size = _check_size("tree_size", tree_size)
    leaf = _check_bytes("leaf_hash", leaf_hash, InclusionProofError)
    hashes = _check_proof(proof, InclusionProofError)
    if index >= tree_size:
        raise InclusionProofError(f"index {index} is outside a tree of size {tree_size}")
    if len(leaf) != HASH_SIZE:
        raise InclusionProofError(f"leaf hash is {len(leaf)} bytes, expected {HASH_SIZE}")
    inner, border = _decomp_incl_proof(index, tree_size)
    if len(hashes) != inner + border:
        raise InclusionProofError(
            f"inclusion proof for index {index} in a tree of size {tree_size} must have "
            f"{inner + border} hashes, got {len(hashes)}"
        )
    res = _chain_inner(leaf, hashes[:inner], index)
    return _chain_border_right(res, hashes[inner:])


def verify_inclusion(
    leaf_hash: bytes,
    index: int,
    tree_size: int,
    proof: Sequence[bytes] | None,
    root: bytes,
) -> None:
    """Verify that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` with ``root``.

    RFC 9162 §2.1.3.2. Returns ``None`` on success; raises :class:`InclusionProofError`.
    """
    expected = _check_bytes("root", root, InclusionProofError)
    calculated = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    if not hmac.compare_digest(calculated, expected):
        raise InclusionProofError(
            f"inclusion proof for index {index} leads to root {calculated.hex()}, "
            f"not the expected {expected.hex()}"
        )


def verify_consistency(
    size1: int,
    size2: int,
    proof: Sequence[bytes] | None,
    root1: bytes,
    root2: bytes,
) -> None:
    """Verify that the tree ``(size2, root2)`` is an append-only extension of ``(size1, root1)``.

    RFC 9162 §2.1.4.2. Returns ``None`` on success; raises :class:`ConsistencyProofError`.
    A proof from size 0 is refused (it proves nothing). When the sizes are equal the proof
    must be empty and the roots identical byte strings.
    """
    size1 = _check_size("size1", size1)
    size2 = _check_size("size2", size2)
    r1 = _check_bytes("root1", root1, ConsistencyProofError)
    r2 = _check_bytes("root2", root2, ConsistencyProofError)
    hashes = _check_proof(proof, ConsistencyProofError)
    if size2 < size1:
        raise ConsistencyProofError(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == 0:
        raise ConsistencyProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if hashes:
            raise ConsistencyProofError("size1 equals size2, but the proof is not empty")
        if not hmac.compare_digest(r1, r2):
            raise ConsistencyProofError(f"two different roots for the same size {size1}")
        return
    # Now 0 < size1 < size2.
    if not hashes:
        raise ConsistencyProofError(f"empty consistency proof from size {size1} to {size2}")
    inner, border = _decomp_incl_proof(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros of size1
    inner -= shift
    # The proof starts with the root of the subtree of size 2**shift, unless size1 is that
    # very subtree, whose root is root1.
    if size1 == 1 << shift:
        seed, rest = r1, hashes
    else:
        seed, rest = hashes[0], hashes[1:]
    if len(rest) != inner + border:
        want = inner + border + (0 if size1 == 1 << shift else 1)
        raise ConsistencyProofError(
            f"consistency proof from size {size1} to {size2} must have {want} hashes, "
            f"got {len(hashes)}"
        )
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if not hmac.compare_digest(hash1, r1):
        raise ConsistencyProofError(
            f"consistency proof does not reproduce root1 of size {size1}: "
            f"got {hash1.hex()}, expected {r1.hex()}"
        )
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if not hmac.compare_digest(hash2, r2):
        raise ConsistencyProofError(
            f"consistency proof does not reproduce root2 of size {size2}: "
            f"got {hash2.hex()}, expected {r2.hex()}"
        )


# --------------------------------------------------------------------------- generation


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``), the ``k`` of §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes make ``PATH(index, D[tree_size])`` (§2.1.3.1), bottom-up."""
    if not 0 <= index < tree_size:
        raise InclusionProofError(f"index {index} is outside a tree of size {tree_size}")
    out: list[tuple[int, int]] = []
    start, end, m = 0, tree_size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
            m -= k
    out.reverse()
    return out


def consistency_proof_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes make ``PROOF(size1, D[size2])`` (§2.1.4.1), bottom-up."""
    if not 0 < size1 <= size2:
        raise ConsistencyProofError(
            f"no consistency proof from size {size1} to size {size2} (need 0 < size1 <= size2)"
        )
    out: list[tuple[int, int]] = []
    start, end, m, complete = 0, size2, size1, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                out.append((start, end))
            break
        k = _split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
            m -= k
            complete = False
    out.reverse()
    return out


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Cover ``[start, end)`` with perfect subtrees ``(level, index)``, left to right.

    For every range that is a node of an RFC 6962 tree (``start`` is a multiple of a power of
    two at least ``end - start``) the sizes strictly decrease, so ``MTH(D[start:end])`` is the
    right fold of their hashes (:func:`_fold`).
    """
    out: list[tuple[int, int]] = []
    while start < end:
        size = start & -start if start else 1 << 62
        while size > end - start:
            size >>= 1
        level = size.bit_length() - 1
        out.append((level, start >> level))
        start += size
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _range_hashes(ranges: Sequence[tuple[int, int]], read: NodeReader) -> list[bytes]:
    decomps = [perfect_subtrees(s, e) for s, e in ranges]
    wanted = sorted({node for d in decomps for node in d})
    got = dict(zip(wanted, read(wanted), strict=True))
    return [_fold([got[node] for node in d]) for d in decomps]


def inclusion_proof(index: int, tree_size: int, read: NodeReader) -> list[bytes]:
    """``PATH(index, D[tree_size])`` (§2.1.3.1) built from perfect-subtree hashes."""
    return _range_hashes(inclusion_proof_ranges(index, tree_size), read)


def consistency_proof(size1: int, size2: int, read: NodeReader) -> list[bytes]:
    """``PROOF(size1, D[size2])`` (§2.1.4.1) built from perfect-subtree hashes."""
    return _range_hashes(consistency_proof_ranges(size1, size2), read)


def root_hash(tree_size: int, read: NodeReader) -> bytes:
    """``MTH(D[0:tree_size])`` (§2.1.1) built from perfect-subtree hashes."""
    if tree_size == 0:
        return EMPTY_ROOT
    return _range_hashes([(0, tree_size)], read)[0]


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH`` (§2.1.1) of a short list of leaf hashes, by the definition's own recursion:
    for a handful of leaves (a result's segment boundaries) this is a few hashes, without
    building a :class:`MerkleTree` and its proof machinery."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(merkle_root(leaf_hashes[:k]), merkle_root(leaf_hashes[k:]))


class MerkleTree:
    """An in-memory tree keeping every perfect-subtree hash (about ``2n`` hashes).

    Append is amortised O(1) hashes (O(log n) worst case); proofs for any earlier size are
    O(log n). Used by the auditor to recompute a log and by tests as a reference.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> None:
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        levels = self._levels
        levels[0].extend(leaf_hashes)
        sha = hashlib.sha256
        level = 0
        while len(levels[level]) >= 2:
            below = levels[level]
            if level + 1 == len(levels):
                levels.append([])
            above = levels[level + 1]
            first = 2 * len(above)
            last = len(below) - len(below) % 2
            if first < last:
                above.extend(
                    sha(b"\x01" + below[i] + below[i + 1]).digest() for i in range(first, last, 2)
                )
            level += 1

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def read(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """The :data:`NodeReader` of this tree."""
        return [self._levels[level][index] for level, index in nodes]

    def root(self, tree_size: int | None = None) -> bytes:
        size = self.size if tree_size is None else tree_size
        if not 0 <= size <= self.size:
            raise ProofError(f"tree size {size} is beyond the tree's {self.size} leaves")
        return root_hash(size, self.read)

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        size = self.size if tree_size is None else tree_size
        if size > self.size:
            raise InclusionProofError(f"tree size {size} is beyond the tree's {self.size} leaves")
        return inclusion_proof(index, size, self.read)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        size = self.size if size2 is None else size2
        if size > self.size:
            raise ConsistencyProofError(f"tree size {size} is beyond the tree's {self.size} leaves")
        return consistency_proof(size1, size, self.read)
