"""Signed results: what verify_result catches before any recomputation is needed."""

from __future__ import annotations

import dataclasses
import os
import pickle
import stat

import numpy as np
import pytest

from ledger.entries import attestation_message
from sims.go import GoEngine
from sims.spec import RunSpec
from worker.errors import IdentityError, ResultError, ResultSignatureError
from worker.identity import Identity
from worker.result import WorkerResult, segment_root, sign_result, verify_result

WU = bytes(range(32))
SPEC = RunSpec(steps=2000, segment_steps=500, report_steps=500, temperature=0.8, seed=4)


@pytest.fixture(scope="module")
def engine(villin_pdb) -> GoEngine:
    return GoEngine.from_pdb(villin_pdb)


@pytest.fixture(scope="module")
def run(engine):
    return engine.run(engine.initial_state(temperature=0.8, seed=1), SPEC)


@pytest.fixture(scope="module")
def me() -> Identity:
    return Identity.ephemeral()


@pytest.fixture(scope="module")
def signed(run, me) -> WorkerResult:
    return sign_result(run, wu_id=WU, identity=me)


def check(result: WorkerResult, run, key: bytes) -> None:
    verify_result(
        result, wu_id=WU, worker_key=key, input_digest=run.boundaries[0].digest(),
        n_segments=SPEC.n_segments, n_atoms=36, n_frames=4,
        segment_steps=SPEC.segment_steps, report_steps=SPEC.report_steps,
    )  # fmt: skip


def test_an_honest_result_verifies_and_survives_pickling(signed, run, me):
    check(signed, run, me.public_key)
    check(pickle.loads(pickle.dumps(signed)), run, me.public_key)
    assert signed.header.segment_root == segment_root(tuple(run.boundary_digests()))
    assert len(signed.signature) == 64


def _with(result: WorkerResult, **changes) -> WorkerResult:
    return dataclasses.replace(result, **changes)


def test_perturbed_final_state_is_caught(signed, run, me):
    pos = signed.positions.copy()
    pos[-1, 0, 0] += 1e-9
    with pytest.raises(ResultError, match="boundary state 4 does not match its digest"):
        check(_with(signed, positions=pos), run, me.public_key)


def test_consistently_faked_digests_break_the_signature(signed, run, me):
    pos = signed.positions.copy()
    pos[-1, 0, 0] += 1e-9
    from sims.state import state_digest

    digests = (*signed.header.boundary_digests[:-1], state_digest(pos[-1], signed.velocities[-1]))
    header = dataclasses.replace(
        signed.header, boundary_digests=digests, final_digest=digests[-1],
        segment_root=segment_root(digests),
    )  # fmt: skip
    with pytest.raises(ResultSignatureError, match="does not verify"):
        check(_with(signed, positions=pos, header=header), run, me.public_key)


def test_copied_result_under_another_key_and_forged_signature(signed, run, me):
    thief = Identity.ephemeral()
    stolen = dataclasses.replace(signed.header, worker_key=thief.public_key)
    resigned = thief.sign(attestation_message(WU, stolen.digest(), stolen.final_digest))
    # Re-signing a copy is a valid signature over a copied result: only the quorum or a
    # spot-check (which replays the segments under the WU's seed) can tell; verify_result
    # accepts it as well formed, and the scheduler refuses it for any WU not sent to thief.
    check(_with(signed, header=stolen, signature=resigned), run, thief.public_key)
    with pytest.raises(ResultError, match="signed by another key"):
        check(_with(signed, header=stolen, signature=resigned), run, me.public_key)
    forged = bytes(64)
    with pytest.raises(ResultSignatureError):
        check(_with(signed, signature=forged), run, me.public_key)


def test_wrong_wu_shapes_nan_and_truncation(signed, run, me):
    other_wu = dataclasses.replace(signed.header, wu_id=bytes(32))
    with pytest.raises(ResultError, match="result is for WU"):
        check(_with(signed, header=other_wu), run, me.public_key)
    with pytest.raises(ResultError, match=r"positions must be float64 \(5, 36, 3\)"):
        check(_with(signed, positions=signed.positions[:3]), run, me.public_key)
    bad = signed.velocities.copy()
    bad[2, 5, 1] = np.nan
    with pytest.raises(ResultError, match="velocities contain NaN"):
        check(_with(signed, velocities=bad), run, me.public_key)
    frames = signed.frames.copy()
    frames[0, 0, 0] += 1.0
    with pytest.raises(ResultError, match="frames do not match"):
        check(_with(signed, frames=frames), run, me.public_key)


def test_identity_key_file_is_created_private_and_reloaded(tmp_path):
    path = tmp_path / "volunteer.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Identity.load_or_create(path).public_key == first.public_key
    assert len(first.fingerprint) == 16
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load_or_create(path)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(first)
