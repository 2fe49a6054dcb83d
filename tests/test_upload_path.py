"""The upload path made cheaper gives the same answers: the memo of verified signatures
never admits a forgery and stays bounded; the faster digests, finiteness checks and Go
sanity checks agree with the straightforward code they replace (kept here as oracles);
benchmarks.upload_path measures real, accepted results."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from benchmarks.upload_path import CASES, measure, prepare, validated_entry
from ledger.entries import Attestation, Record, ResultValidated
from ledger.errors import ConfigError, EntryRejectedError, SignatureError
from ledger.log import CheckRules
from ledger.merkle import MerkleTree, merkle_root
from ledger.signatures import VerifiedSignatures
from sims.errors import StateError
from sims.go import GoEngine, kernels
from sims.spec import RunSpec
from sims.state import State, all_finite, state_digest, state_digests
from worker.identity import Identity
from worker.result import arrays_digest, segment_data_digests, segment_digest, verify_result
from worker.wire import decode_result

# -- the memo of verified signatures ------------------------------------------------------


@pytest.fixture(scope="module")
def me() -> Identity:
    return Identity.ephemeral()


def _forged(sig: bytes) -> bytes:
    return bytes([sig[0] ^ 1]) + sig[1:]


def test_a_forged_signature_is_refused_after_the_genuine_one_was_verified(me):
    memo = VerifiedSignatures(capacity=16)
    msg = b"result of WU 7"
    sig = me.sign(msg)
    memo.verify(me.public_key, sig, msg)
    assert (me.public_key, sig, msg) in memo and len(memo) == 1
    memo.verify(me.public_key, sig, msg)  # remembered: no error, still one entry
    assert len(memo) == 1
    other = Identity.ephemeral()
    for key, s, m in [
        (me.public_key, _forged(sig), msg),  # a forged signature
        (me.public_key, sig, msg + b"!"),  # another message
        (other.public_key, sig, msg),  # another key
        (me.public_key[:31], me.public_key[31:] + sig[:63], sig[63:] + msg),  # same bytes
    ]:
        with pytest.raises(SignatureError, match="does not verify"):
            memo.verify(key, s, m)
        assert (key, s, m) not in memo
    assert len(memo) == 1  # a failure is never remembered


def test_the_memo_is_bounded_and_forgets_the_oldest(me):
    memo = VerifiedSignatures(capacity=3)
    msgs = [f"m{i}".encode() for i in range(5)]
    sigs = [me.sign(m) for m in msgs]
    for m, s in zip(msgs, sigs, strict=True):
        memo.verify(me.public_key, s, m)
    assert len(memo) == 3 and memo.capacity == 3
    assert [(me.public_key, s, m) in memo for m, s in zip(msgs, sigs, strict=True)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    memo.verify(me.public_key, sigs[0], msgs[0])  # forgotten: verified again, remembered
    assert (me.public_key, sigs[0], msgs[0]) in memo and len(memo) == 3
    with pytest.raises(ConfigError, match="positive integer"):
        VerifiedSignatures(capacity=0)


def _entry(attestations: tuple[Attestation, ...]) -> Record:
    return Record(
        timestamp_ms=1,
        entry=ResultValidated(
            wu_id=bytes(32),
            job_id=bytes(32),
            engine="go",
            n_particles=36,
            steps=10,
            deadline_s=600,
            attestations=attestations,
            spec_digest=bytes(32),
        ),
    )


def test_the_ledger_refuses_a_forged_attestation_whatever_the_memo_holds():
    p = prepare(CASES["villin_1seg"])
    results = tuple(decode_result(b, max_bytes=1 << 30) for b in p.bodies)
    memo = VerifiedSignatures()
    for r, a in zip(results, p.assignments, strict=True):
        verify_result(r, a.expected(), verified=memo)
    assert len(memo) == 2  # both attestations verified at upload
    record = validated_entry(results)
    CheckRules(verified=memo).check(None, 0, record)
    CheckRules().check(None, 0, record)  # and without the memo: the same answer
    genuine = record.entry.attestations
    forged = (genuine[0], Attestation(**{
        **{f: getattr(genuine[1], f) for f in Attestation.__dataclass_fields__},
        "signature": _forged(genuine[1].signature),
    }))  # fmt: skip
    for rules in (CheckRules(verified=memo), CheckRules()):
        with pytest.raises(EntryRejectedError, match="does not verify"):
            rules.check(None, 0, _entry(forged))
    assert len(memo) == 2


def test_the_coordinator_remembers_what_it_verified_for_its_ledger(tmp_path, villin_pdb):
    """Every attestation the coordinator's ledger admitted was one its own upload check had
    verified, so its log (opened with the same memo) verified none of them again."""
    from test_coordinator import Volunteer, run_until_done, small_job

    from coordinator.service import Coordinator
    from ledger.entries import decode_record
    from sims.go import GoModel

    model = GoModel.from_pdb(villin_pdb)
    coord = Coordinator.local(tmp_path / "c", beacon_interval_s=0)
    try:
        job = small_job(coord, model, audit_rate=0.0, clones=1, gens=1)
        run_until_done(coord, job, model, [Volunteer(), Volunteer()])
        entries = [decode_record(coord.log.entry(i)).entry for i in range(coord.log.size)]
        validated = [e for e in entries if isinstance(e, ResultValidated)]
        assert validated
        for entry in validated:
            for triple in entry.signed_messages():
                assert triple in coord.signatures
    finally:
        coord.close()


# -- the faster code against the code it replaces ------------------------------------------


def _arrays_digest_reference(arrays: Mapping[str, np.ndarray]) -> bytes:
    h = hashlib.sha256(b"foldnet/arrays/v1\x00")
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        le = a.astype(a.dtype.newbyteorder("<"), copy=False)
        raw = name.encode()
        h.update(struct.pack("<Q", len(raw)) + raw)
        h.update(struct.pack(f"<Q{a.ndim}Q", a.ndim, *a.shape))
        h.update(le.dtype.str.encode())
        h.update(np.ascontiguousarray(le).tobytes())
    return h.digest()


def test_arrays_digest_is_the_documented_layout_for_every_kind_of_array():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 3))
    cases = [
        {"frames": x.astype(np.float32), "steps": np.arange(4, dtype=np.int64)},
        {"big_endian": x.astype(">f8"), "strided": x[:, ::2], "transposed": x.T},
        {"bool": x > 0, "u1": (x * 10).astype(np.uint8), "i4": np.arange(3, dtype=np.int32)},
        {"empty": np.zeros((0, 36, 3), np.float32), "scalar": np.float64(2.5), "list": [1.0]},
        {"text": np.array(["ab", "c"]), "text_big_endian": np.array(["ab"]).astype(">U2")},
        {},
    ]
    for arrays in cases:
        assert arrays_digest(arrays) == _arrays_digest_reference(arrays)


def _segment_data_reference(frames, steps, observables, *, n_segments, segment_steps, report):
    seg = (np.arange(1, len(frames) + 1, dtype=np.int64) * report - 1) // segment_steps
    return tuple(
        segment_digest(
            frames[seg == k],
            steps[seg == k],
            {n: np.asarray(v)[seg == k] for n, v in observables.items()},
        )
        for k in range(n_segments)
    )  # fmt: skip


@pytest.mark.parametrize(
    ("n_frames", "n_segments", "segment_steps", "report_steps"),
    [(1, 1, 10, 10), (40, 4, 100, 10), (8, 4, 10, 5), (2, 5, 10, 25), (3, 2, 10, 10),
     (0, 3, 10, 10), (7, 3, 9, 4)],
)  # fmt: skip
def test_segment_digests_by_slices_are_those_by_masks(
    n_frames, n_segments, segment_steps, report_steps
):
    rng = np.random.default_rng(n_frames)
    frames = rng.normal(size=(n_frames, 6, 3)).astype(np.float32)
    steps = np.arange(1, n_frames + 1, dtype=np.int64) * report_steps
    obs = {"energy": rng.normal(size=n_frames), "q": rng.random(n_frames)}
    args = {"n_segments": n_segments, "segment_steps": segment_steps}
    got = segment_data_digests(frames, steps, obs, report_steps=report_steps, **args)
    assert got == _segment_data_reference(frames, steps, obs, report=report_steps, **args)


def test_the_merkle_root_by_recursion_is_the_trees():
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(40)]
    for n in range(41):
        assert merkle_root(leaves[:n]) == MerkleTree(leaves[:n]).root()


def test_state_digests_of_stacked_states_are_each_states_digest():
    rng = np.random.default_rng(2)
    pos, vel = rng.normal(size=(5, 36, 3)), rng.normal(size=(5, 36, 3))
    assert state_digests(pos, vel) == tuple(
        state_digest(p, v) for p, v in zip(pos, vel, strict=True)
    )
    assert state_digests(pos[:, :, :].astype(">f8"), vel) == state_digests(pos, vel)


def test_all_finite_agrees_with_the_element_wise_check():
    big = np.finfo(np.float64).max
    arrays = [
        np.zeros(0), np.ones((3, 4)), np.array([np.nan, 1.0]), np.array([1.0, np.inf]),
        np.array([-np.inf, 1.0]), np.array([np.inf, -np.inf]), np.array([big, big]),
        np.array([big, big, -big]), np.array([3e38, 3e38], np.float32),
        np.array([np.nan], np.float32), np.full((2, 36, 3), 1e-300),
    ]  # fmt: skip
    for a in arrays:
        assert all_finite(a) == bool(np.all(np.isfinite(a))), a


# -- the Go sanity of all boundary states at once -------------------------------------------


@pytest.fixture(scope="module")
def villin(villin_pdb) -> GoEngine:
    return GoEngine.from_pdb(villin_pdb)


@pytest.fixture(scope="module")
def boundaries(villin) -> tuple[np.ndarray, np.ndarray]:
    spec = RunSpec(steps=400, segment_steps=100, report_steps=100, temperature=0.8, seed=3)
    run = villin.run(villin.initial_state(temperature=0.8, seed=1), spec)
    return (
        np.stack([b.positions for b in run.boundaries]),
        np.stack([b.velocities for b in run.boundaries]),
    )


def _one_by_one(engine: GoEngine, pos, vel, temperature):
    for k in range(1, len(pos)):
        state = State(positions=pos[k], velocities=vel[k])
        problems = engine.sanity_problems(state, temperature=temperature)
        if problems:
            return k, problems
    return None


def _answer(fn):
    """What ``fn`` returns, or ("raised", its message) for a StateError."""
    try:
        return fn()
    except StateError as e:
        return "raised", str(e)


def test_first_insane_state_answers_as_each_state_checked_alone(villin, boundaries):
    pos, vel = boundaries
    dof = villin.degrees_of_freedom
    factor = 5.0 * (1.0 + 8.0 * np.sqrt(2.0 / dof))
    t3 = float(np.sum(vel[3] * vel[3]) / dof)
    cases = {"honest": (pos, vel, 0.8)}
    hot = vel.copy()
    hot[2] *= 5
    cases["hot"] = (pos, hot, 0.8)
    torn = pos.copy()
    torn[3, 10:] += 5.0
    cases["torn bond"] = (torn, vel, 0.8)
    straight = pos.copy()  # the last three beads on a line: a dihedral without a plane
    r0 = villin.model.bond_r0
    straight[2, -2] = straight[2, -3] + [r0[-2], 0.0, 0.0]
    straight[2, -1] = straight[2, -2] + [r0[-1], 0.0, 0.0]
    cases["straight end"] = (straight, vel, 0.8)
    # right at the temperature bounds, where summing in another order could matter
    cases["at the upper bound"] = (pos, vel, t3 / factor)
    cases["at the lower bound"] = (pos, vel, t3 * factor)
    cases["cold run"] = (pos, vel, 0.01)
    nan = pos.copy()
    nan[4, 0, 1] = np.nan
    cases["NaN"] = (nan, vel, 0.8)
    cases["wrong size"] = (pos[:, :30], vel[:, :30], 0.8)
    answers = {}
    for name, (p, v, t) in cases.items():
        got = _answer(lambda p=p, v=v, t=t: villin.first_insane_state(p, v, temperature=t))
        assert got == _answer(lambda p=p, v=v, t=t: _one_by_one(villin, p, v, t)), name
        answers[name] = got
    assert answers["honest"] is None
    assert answers["hot"][0] == 2 and "kinetic temperature" in answers["hot"][1][0]
    assert answers["torn bond"] == (3, [answers["torn bond"][1][0]])
    assert answers["torn bond"][1][0].startswith("bond 9-10")
    assert answers["straight end"] == (2, ["potential energy nan is not finite"])
    assert answers["NaN"][0] == "raised" and "non-finite" in answers["NaN"][1]  # as State()
    assert answers["wrong size"][0] == 1


def test_potential_energy_is_the_energy_of_energy_forces_bit_for_bit(villin, bhl_pdb, boundaries):
    bhl = GoEngine.from_pdb(bhl_pdb)
    conformations = [(villin, x) for x in boundaries[0]]
    conformations += [(villin, villin.model.native), (bhl, bhl.model.native)]
    conformations += [(bhl, bhl.model.extended_chain())]
    for engine, x in conformations:
        want, _ = engine.model.energy_forces(x, args=engine.kernel_args)
        xt = np.ascontiguousarray(np.asarray(x).T)
        got = kernels.potential_energy(xt, *engine.kernel_args, engine.model.REP_CUTOFF + 1.0)
        assert got == want


# -- the benchmark -------------------------------------------------------------------------


def test_the_benchmark_measures_accepted_results(capsys):
    m = measure(["villin_1seg"], rounds=1, seconds=0.001)
    out = capsys.readouterr().out
    steps = {"decode_result", "precheck", "verify_result", "sanity", "admission", "total"}
    assert set(m["us"]["villin_1seg"]) == steps | {"volunteer"}
    assert all(v > 0 for v in m["us"]["villin_1seg"].values())
    assert m["memo"] is True and m["body_bytes"]["villin_1seg"] > 5000
    assert "verify_result" in out and "villin_1seg" in out


def test_the_command_ends_with_one_json_line():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.upload_path", "--quick", "--cases", "villin_1seg"],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["quick"] is True and list(last["us"]) == ["villin_1seg"]
