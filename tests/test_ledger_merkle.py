"""RFC 6962 / 9162 proofs: the transparency-dev conformance vectors, and property tests."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import ConsistencyProofError, InclusionProofError, ProofError, Store
from ledger.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    consistency_proof_ranges,
    inclusion_proof,
    inclusion_proof_ranges,
    leaf_hash,
    perfect_subtrees,
    verify_consistency,
    verify_inclusion,
)

#: Vendored from transparency-dev/merkle (Apache-2.0); source and licence in tests/data/.
RFC6962 = Path(__file__).resolve().parent / "data" / "rfc6962"
#: How many vectors of each kind were vendored: a lost file is a failure, never a skip.
VECTOR_COUNTS = {"inclusion": 80, "consistency": 77}
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
REFERENCE_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _vector_files(kind: str) -> list[object]:
    folder = RFC6962 / kind
    files = sorted(folder.rglob("*.json"))
    if not files:  # an empty parameter list would be skipped: fail on the missing folder
        return [pytest.param(folder, id="vectors-absent")]
    return [pytest.param(f, id=str(f.relative_to(folder))) for f in files]


def test_the_vendored_vectors_are_all_there() -> None:
    for kind, count in VECTOR_COUNTS.items():
        assert len(list((RFC6962 / kind).rglob("*.json"))) == count, kind
    assert "Apache License" in (RFC6962 / "LICENSE").read_text()


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(value: list[str] | None) -> list[bytes]:
    return [_b64(h) for h in value or []]


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The vectors' reference 8-leaf tree, appended to a real log store."""
    with Store.open(tmp_path_factory.mktemp("ref") / "ref.db") as store:
        with store.transaction():
            store.append_leaves([(d, leaf_hash(d)) for d in REFERENCE_LEAVES])
        yield store


def test_reference_tree_roots(reference_store: Store) -> None:
    for size, want in enumerate(REFERENCE_ROOTS):
        assert reference_store.root(size).hex() == want
    assert reference_store.root(0) == EMPTY_ROOT


@pytest.mark.parametrize("path", _vector_files("inclusion"))
def test_inclusion_vector(path: Path, reference_store: Store) -> None:
    v = json.loads(path.read_text())
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v["proof"]), _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(InclusionProofError):
            verify_inclusion(*args)
        return
    assert verify_inclusion(*args) is None
    size, index = v["treeSize"], v["leafIdx"]
    if size <= len(REFERENCE_LEAVES) and _b64(v["root"]).hex() == REFERENCE_ROOTS[size]:
        assert inclusion_proof(index, size, reference_store.read_nodes) == _proof(v["proof"])


@pytest.mark.parametrize("path", _vector_files("consistency"))
def test_consistency_vector(path: Path, reference_store: Store) -> None:
    v = json.loads(path.read_text())
    s1, s2 = v["size1"], v["size2"]
    args = (s1, s2, _proof(v["proof"]), _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ConsistencyProofError):
            verify_consistency(*args)
        return
    assert verify_consistency(*args) is None
    if (
        0 < s1 <= s2 <= len(REFERENCE_LEAVES)
        and _b64(v["root2"]).hex() == REFERENCE_ROOTS[s2]
        and _b64(v["root1"]).hex() == REFERENCE_ROOTS[s1]
    ):
        assert consistency_proof(s1, s2, reference_store.read_nodes) == _proof(v["proof"])


def test_vectors_cover_the_reference_tree_proofs() -> None:
    """At least the happy paths of groups 1-3 use the reference tree (so the test above bites)."""
    hits = 0
    for f in RFC6962.rglob("*.json"):
        v = json.loads(f.read_text())
        if v["wantErr"] or not v["proof"]:
            continue
        size = v.get("treeSize", v.get("size2"))
        root = v.get("root", v.get("root2"))
        if size <= 8 and _b64(root).hex() == REFERENCE_ROOTS[size]:
            hits += 1
    assert hits >= 4


def test_both_extra_rules() -> None:
    """Non-32-byte leaf hashes, and consistency from size 0 (even to 0), are errors."""
    with pytest.raises(InclusionProofError, match="32"):
        verify_inclusion(b"short", 0, 1, [], b"short")
    with pytest.raises(ConsistencyProofError, match="empty tree"):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)


def test_type_errors_are_ledger_errors() -> None:
    with pytest.raises(ProofError):
        verify_inclusion(b"\x00" * 32, -1, 1, [], b"\x00" * 32)
    with pytest.raises(ProofError):
        verify_inclusion(b"\x00" * 32, 0, 1, "not a list", b"\x00" * 32)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        verify_consistency(1, 2, [b"\x00" * 31], b"\x00" * 32, b"\x00" * 32)


def test_ranges_and_perfect_subtrees() -> None:
    assert inclusion_proof_ranges(5, 8) == [(4, 5), (6, 8), (0, 4)]
    assert consistency_proof_ranges(6, 8) == [(4, 6), (6, 8), (0, 4)]
    assert perfect_subtrees(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert perfect_subtrees(8, 11) == [(1, 4), (0, 10)]


# --------------------------------------------------------------------------- properties


def _tree(seed: int, n: int) -> MerkleTree:
    return MerkleTree(
        hashlib.sha256(seed.to_bytes(8, "big") + i.to_bytes(8, "big")).digest() for i in range(n)
    )


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 3000),
    pick=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 255),
    ibit=st.integers(0, 11),
)
def test_inclusion_proofs_verify_and_any_flip_fails(
    seed: int, n: int, pick: float, bit: int, ibit: int
) -> None:
    tree = _tree(seed, n)
    index = int(pick * n)
    root = tree.root()
    proof = tree.inclusion_proof(index)
    assert verify_inclusion(tree.leaf(index), index, n, proof, root) is None
    with pytest.raises(InclusionProofError):
        verify_inclusion(tree.leaf(index), index, n, proof, _flip(root, bit))
    with pytest.raises(InclusionProofError):
        verify_inclusion(tree.leaf(index), index ^ (1 << ibit), n, proof, root)
    for k in range(len(proof)):
        bad = [*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]]
        with pytest.raises(InclusionProofError):
            verify_inclusion(tree.leaf(index), index, n, bad, root)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 3000),
    a=st.floats(0, 1),
    b=st.floats(0, 1),
    bit=st.integers(0, 255),
)
def test_consistency_proofs_verify_and_any_flip_fails(
    seed: int, n: int, a: float, b: float, bit: int
) -> None:
    tree = _tree(seed, n)
    s1, s2 = sorted((max(1, round(a * n)), max(1, round(b * n))))
    r1, r2 = tree.root(s1), tree.root(s2)
    proof = tree.consistency_proof(s1, s2)
    assert verify_consistency(s1, s2, proof, r1, r2) is None
    with pytest.raises(ConsistencyProofError):
        verify_consistency(s1, s2, proof, _flip(r1, bit), r2)
    with pytest.raises(ConsistencyProofError):
        verify_consistency(s1, s2, proof, r1, _flip(r2, bit))
    for k in range(len(proof)):
        bad = [*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]]
        with pytest.raises(ConsistencyProofError):
            verify_consistency(s1, s2, bad, r1, r2)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 600), data=st.data())
def test_store_proofs_equal_in_memory_proofs(
    n: int, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Proofs read from SQLite's stored subtrees equal the in-memory reference tree's."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    tree = MerkleTree(leaves)
    store = Store.open(tmp_path_factory.mktemp("p") / "p.db")
    with store:
        cut = data.draw(st.integers(0, n))
        for part in (leaves[:cut], leaves[cut:]):  # two batches: the frontier carries over
            with store.transaction():
                store.append_leaves([(h, h) for h in part])
        store.refresh()
        assert store.root() == tree.root()
        size = data.draw(st.integers(1, n))
        index = data.draw(st.integers(0, size - 1))
        assert inclusion_proof(index, size, store.read_nodes) == tree.inclusion_proof(index, size)
        s1 = data.draw(st.integers(1, size))
        assert consistency_proof(s1, size, store.read_nodes) == tree.consistency_proof(s1, size)
