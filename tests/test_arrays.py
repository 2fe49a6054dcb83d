"""The packed-array container the coordinator stores results in: round trips, partial reads,
and a clear error (never a crash, never code execution) for every malformed blob."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.arrays import MAGIC, pack_arrays, unpack_arrays
from worker.errors import ResultError


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
    with pytest.raises(ResultError, match="dtype"):
        pack_arrays({"x": np.array([object()], dtype=object)})


def _blob(index: bytes, tail: bytes = b"") -> bytes:
    return MAGIC + struct.pack("<I", len(index)) + index + tail


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "not a packed-array blob"),
        (b"PK\x03\x04garbage", "not a packed-array blob"),
        (MAGIC + struct.pack("<I", 10**9), "does not fit"),
        (_blob(b"{not json"), "index is not"),
        (_blob(b'[["a", "|O", [1]]]', b"\0" * 8), "bad dtype"),
        (_blob(b'[["a", "<f8", [-1]]]'), "bad dtype"),
        (_blob(b'[["a", "<f8", [4]]]', b"\0" * 8), "runs past the end"),
        (_blob(b'[["a", "<f8", [1]]]', b"\0" * 9), "unexpected bytes"),
        (_blob(b'[["a"]]'), "index is not"),
    ],
)
def test_malformed_blobs_are_refused_with_a_reason(blob, message):
    with pytest.raises(ResultError, match=message):
        unpack_arrays(blob)


def test_asking_for_a_missing_array_says_which():
    with pytest.raises(ResultError, match="lack"):
        unpack_arrays(pack_arrays(sample()), ["velocities"])


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data):
    for blob in (data, _blob(data[:100], data[100:])):
        try:
            out = unpack_arrays(blob)
        except ResultError:
            continue
        assert all(isinstance(v, np.ndarray) for v in out.values())
