"""The packed-array container the coordinator stores results in: round trips, partial reads,
and a clear error (never a crash, never code execution) for every malformed blob."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.arrays import MAGIC, pack_arrays, unpack_arrays
from worker.errors import WireError


def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "positions": rng.normal(size=(3, 5, 3)),
        "frame_steps": np.arange(4, dtype=np.int64),
        "flags": np.array([True, False]),
        "empty": np.zeros((0, 3)),
    }


def test_round_trip_is_exact_and_partial_reads_skip_the_rest():
    arrays = sample()
    blob = pack_arrays(arrays)
    back = unpack_arrays(blob)
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    assert list(unpack_arrays(blob, ["frame_steps"])) == ["frame_steps"]


def test_big_endian_input_is_stored_little_endian():
    a = np.arange(3, dtype=">f8")
    back = unpack_arrays(pack_arrays({"a": a}))["a"]
    assert back.dtype.str == "<f8"
    np.testing.assert_array_equal(back, a)


def test_object_arrays_are_refused():
    with pytest.raises(WireError, match="dtype"):
        pack_arrays({"x": np.array([object()], dtype=object)})


def _blob(index: bytes, tail: bytes = b"") -> bytes:
    return MAGIC + struct.pack("<I", len(index)) + index + tail


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "expected a foldnet array container"),
        (b"PK\x03\x04garbage", "expected a foldnet array container"),
        (MAGIC + struct.pack("<I", 10**9), "does not fit"),
        (_blob(b"{not json"), "not JSON"),
        (_blob(b'{"arrays": [["a", "|O", [1]]]}', b"\0" * 8), "dtype must be"),
        (_blob(b'{"arrays": [["a", "<f8", [-1]]]}'), "non-negative"),
        (_blob(b'{"arrays": [["a", "<f8", [4]]]}', b"\0" * 8), "too short"),
        (_blob(b'{"arrays": [["a", "<f8", [1]]]}', b"\0" * 9), "after the last array"),
        (_blob(b'{"arrays": [["a"]]}'), "expected \\[name, dtype, shape\\]"),
        (_blob(b'[["a", "<f8", [1]]]', b"\0" * 8), "expected an object"),
        (_blob(b'{"arrays": [["a", "<f8", [1]], ["a", "<f8", [1]]]}', b"\0" * 16), "twice"),
        (_blob(b'{"arrays": [["no such", "<f8", [1]]]}', b"\0" * 8), "identifier"),
    ],
)
def test_malformed_blobs_are_refused_with_a_reason(blob, message):
    with pytest.raises(WireError, match=message):
        unpack_arrays(blob)


def test_asking_for_a_missing_array_says_which():
    with pytest.raises(WireError, match="lacks"):
        unpack_arrays(pack_arrays(sample()), ["velocities"])


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data):
    for blob in (data, _blob(data[:100], data[100:])):
        try:
            out = unpack_arrays(blob)
        except WireError:
            continue
        assert all(isinstance(v, np.ndarray) for v in out.values())


def _packed_the_plain_way(arrays: dict[str, object]) -> bytes:
    """The container as pack_arrays wrote it before its fast path: every array converted."""
    import json

    specs, chunks = [], []
    for name, a in arrays.items():
        arr = np.asarray(a)
        le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        specs.append([name, le.dtype.str, list(le.shape)])
        chunks.append(le.tobytes())
    manifest = json.dumps({"arrays": specs}, separators=(",", ":")).encode()
    return MAGIC + len(manifest).to_bytes(4, "little") + manifest + b"".join(chunks)


@pytest.mark.parametrize(
    "value",
    [
        np.arange(24.0).reshape(4, 6)[:, ::2],  # not contiguous
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.arange(5, dtype=">i8"),
        np.arange(4, dtype=">f4")[::-1],
        np.array([True, False]),
        np.arange(3, dtype=np.uint8),
        [1.0, 2.5],
        np.float64(3.0),
        np.zeros((0, 3)),
    ],
    ids=[
        "strided",
        "fortran",
        "big-i8",
        "big-f4-reversed",
        "bool",
        "u1",
        "list",
        "scalar",
        "empty",
    ],
)
def test_the_fast_path_writes_the_bytes_the_plain_conversion_writes(value):
    assert pack_arrays({"a": value}) == _packed_the_plain_way({"a": value})
