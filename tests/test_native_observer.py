"""The Go engine's observables come from :class:`NativeObserver`: bit for bit what the plain
functions give (replicas and spot checks compare observables exactly, and volunteers of
older versions compute them with the plain functions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sims.errors import StateError
from sims.examples import VILLIN_PDB
from sims.go import GoEngine, GoModel
from sims.observables import (
    NativeContacts,
    NativeObserver,
    fraction_native_contacts,
    kabsch_rmsd,
    radius_of_gyration,
)
from sims.spec import RunSpec


def plain(x: np.ndarray, model: GoModel) -> tuple[float, float, float]:
    return (
        fraction_native_contacts(x, model.contacts),
        kabsch_rmsd(x, model.native),
        radius_of_gyration(x),
    )


def same_bits(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return [math.copysign(1, v) for v in a] == [math.copysign(1, v) for v in b] and all(
        (math.isnan(u) and math.isnan(v)) or u.hex() == v.hex() for u, v in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def model() -> GoModel:
    return GoModel.from_pdb(VILLIN_PDB)


def test_random_and_mirrored_structures_give_the_plain_bits(model):
    obs = NativeObserver(model.native, model.contacts)
    rng = np.random.default_rng(7)
    reflected = 0
    for scale in (0.01, 0.5, 3.0, 30.0):
        for _ in range(100):
            x = model.native + rng.normal(scale=scale, size=model.native.shape)
            if rng.random() < 0.5:
                x = x * np.array([-1.0, 1.0, 1.0])  # a mirror image: the reflection branch
                reflected += 1
            got, want = obs.observe(x), plain(x, model)
            assert same_bits(got, want), (got, want)
    assert reflected > 100


class PlainGoEngine(GoEngine):
    def observe(self, state):  # type: ignore[no-untyped-def]
        q, rmsd, rg = plain(state.positions, self.model)
        return {"q": q, "rmsd": rmsd, "rg": rg}


def test_a_run_records_the_plain_observables_bit_for_bit(model):
    spec = RunSpec(steps=600, segment_steps=200, report_steps=20, temperature=0.8, seed=4)
    runs = []
    for engine in (GoEngine(model), PlainGoEngine(model)):
        runs.append(engine.run(engine.initial_state(temperature=0.8, seed=3), spec))
    fast, slow = runs
    assert len(fast.frames) == 30 and list(fast.observables) == list(slow.observables)
    for name in fast.observables:
        assert fast.observables[name].tobytes() == slow.observables[name].tobytes(), name
    assert fast.boundaries[-1].digest() == slow.boundaries[-1].digest()


def test_no_contacts_and_wrong_shapes(model):
    empty = NativeContacts(np.zeros((0, 2), np.int64), np.zeros(0))
    obs = NativeObserver(model.native, empty)
    q, rmsd, rg = obs.observe(model.native)
    assert math.isnan(q) and rmsd < 1e-6 and rg > 0
    with pytest.raises(StateError, match="shape"):
        NativeObserver(model.native, model.contacts).observe(model.native[:-1])
