"""Philox4x32-10 against the Random123 known-answer vectors (kat_vectors, 10 rounds)."""

from __future__ import annotations

import numpy as np
import pytest

from sims.errors import ParameterError
from sims.go.philox import philox, philox4x32_10, symmetric_uniform

# Random123 kat_vectors: counter (4 words), key (2 words), expected output (4 words).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_known_answers(counter, key, expected):
    assert philox(counter, key) == expected


def test_outputs_are_32_bit_words_and_depend_on_every_input():
    base = philox((1, 2, 3, 4), (5, 6))
    assert all(0 <= w <= 0xFFFFFFFF for w in base)
    for pos in range(6):
        words = [1, 2, 3, 4, 5, 6]
        words[pos] ^= 1
        assert philox(tuple(words[:4]), tuple(words[4:])) != base


def test_rejects_words_wider_than_32_bits():
    with pytest.raises(ParameterError, match="32-bit"):
        philox((2**32, 0, 0, 0), (0, 0))


def test_symmetric_uniform_is_centred_with_unit_variance_after_scaling():
    words = np.array(
        [w for c in range(20_000) for w in philox((c, 0, 0, 0), (7, 9))], dtype=np.uint64
    )
    u = np.array([symmetric_uniform(np.uint64(w)) for w in words[:40_000]])
    assert u.min() > -1.0 and u.max() < 1.0
    assert abs(u.mean()) < 0.01
    assert abs(3.0 * u.var() - 1.0) < 0.02
    # the extreme words map exactly to the symmetric ends of the open interval
    assert symmetric_uniform(np.uint64(0)) == -symmetric_uniform(np.uint64(0xFFFFFFFF))


def test_numba_and_plain_front_end_agree():
    raw = philox4x32_10(*(np.uint64(v) for v in (9, 8, 7, 6)), np.uint64(5), np.uint64(4))
    assert tuple(int(v) for v in raw) == philox((9, 8, 7, 6), (5, 4))


def test_engine_noise_is_sqrt3_times_the_symmetric_uniform_of_each_word():
    """The engine's kick (sims.go.kernels.philox_noise, which builds the doubles from their
    bits) must be the documented map of the Philox words, bit for bit, at any counter."""
    from sims.go.kernels import philox_noise

    for step in (0, 5, 2**32 + 7):
        lo, hi = step & 0xFFFFFFFF, step >> 32
        out = np.zeros((3, 37))
        philox_noise(out, np.uint64(lo), np.uint64(hi), np.uint64(0xDEADBEEF), np.uint64(42))
        for p in (0, 1, 17, 36):
            words = philox((lo, hi, p, 0), (0xDEADBEEF, 42))
            want = [np.sqrt(3.0) * symmetric_uniform(np.uint64(w)) for w in words[:3]]
            assert out[:, p].tobytes() == np.array(want).tobytes()
