"""Signed results: what verify_result catches before any recomputation is needed."""

from __future__ import annotations

import dataclasses
import os
import pickle
import stat

import numpy as np
import pytest

from ledger.entries import PriceInputs
from sims.go import GoEngine
from sims.spec import RunSpec
from worker.errors import IdentityError, ResultError, ResultSignatureError
from worker.identity import Identity
from worker.result import (
    Expected,
    ResultHeader,
    WorkerResult,
    segment_root,
    sign_result,
    verify_result,
)

WU = bytes(range(32))
SPEC = RunSpec(steps=2000, segment_steps=500, report_steps=500, temperature=0.8, seed=4)
#: What the coordinator's task says the WU is priced with (villin's Go model: 36 beads).
PRICE = PriceInputs(
    engine="go", n_particles=36, steps=2000, deadline_s=600, issued_at_ms=1_700_000_000_000
)


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
    return sign_result(run, wu_id=WU, identity=me, price=PRICE)


def check(result: WorkerResult, run, key: bytes, price: PriceInputs = PRICE) -> None:
    verify_result(result, Expected(
        wu_id=WU, worker_key=key, input_digest=run.boundaries[0].digest(),
        n_segments=SPEC.n_segments, n_atoms=36, n_frames=4, segment_steps=500,
        report_steps=500, price=price,
    ))  # fmt: skip


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
    resigned = thief.sign(stolen.message())
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


# --------------------------------------------------------------------------- signed prices


def test_the_signature_covers_the_price_inputs(signed, run, me):
    """The header states the price it was signed with; changing it breaks the signature."""
    assert signed.header.price == PRICE
    for change in ({"n_particles": 36_000}, {"steps": 10**9}, {"issued_at_ms": 1}):
        header = dataclasses.replace(signed.header, price=dataclasses.replace(PRICE, **change))
        with pytest.raises(ResultSignatureError, match="does not verify"):
            check(_with(signed, header=header), run, me.public_key)


@pytest.mark.parametrize(
    "change",
    [
        {"n_particles": 36_000},
        {"steps": 2_000_000},
        {"engine": "openmm"},
        {"deadline_s": 86_400},
        {"issued_at_ms": 1_600_000_000_000},
    ],
    ids=["n_particles", "steps", "engine", "deadline", "issue-time"],
)
def test_a_result_signed_over_other_prices_is_refused(run, me, change):
    """A worker (or a client bug) that signs inflated pricing inputs: the signature is
    valid, but the inputs are not the WU's, so the result is refused, saying which."""
    inflated = dataclasses.replace(PRICE, **change)
    result = sign_result(run, wu_id=WU, identity=me, price=inflated)
    (field,) = change
    expected = f"{field}: expected {getattr(PRICE, field)!r}, got {change[field]!r}"
    with pytest.raises(ResultError, match="signed price inputs are not the WU's") as err:
        check(result, run, me.public_key)
    assert expected in str(err.value)
    assert not isinstance(err.value, ResultSignatureError)
    check(result, run, me.public_key, price=inflated)  # well formed otherwise


def test_price_inputs_encoding_round_trips():
    raw = PRICE.encode()
    assert raw.startswith(b"foldnet/price/v1\n")
    assert PriceInputs.decode(raw) == PRICE
    assert len(PRICE.digest()) == 32
    assert PRICE.digest() != dataclasses.replace(PRICE, steps=2001).digest()
    from ledger.errors import EntryFormatError

    with pytest.raises(EntryFormatError, match="expected"):
        PriceInputs.decode(raw + b"\x00")
    with pytest.raises(EntryFormatError, match="must start with"):
        PriceInputs.decode(b"foldnet/price/v0\n" + raw[17:])


def test_result_and_task_wire_round_trips_keep_the_price(signed, run, me, engine):
    from worker.errors import WireError
    from worker.tasks import ComputeTask
    from worker.wire import decode_result, decode_task, encode_result, encode_task

    back = decode_result(encode_result(signed), max_bytes=1 << 30)
    assert back.header == signed.header and back.header.price == PRICE
    check(back, run, me.public_key)
    model = engine.model
    task = ComputeTask(WU, 1, model, SPEC, run.boundaries[0], PRICE)
    doc = encode_task(task, "00" * 32, "go")
    assert doc["price"]["n_particles"] == 36
    assert decode_task(doc, model).price == PRICE
    doc["deadline"] = (PRICE.issued_at_ms + 600_000) / 1000  # as the service sends it
    assert decode_task(doc, model).price == PRICE
    late = {**doc, "deadline": doc["deadline"] + 3600}
    with pytest.raises(WireError, match="must be the task's deadline"):
        decode_task(late, model)
    doc["price"]["n_particles"] = 36_000
    with pytest.raises(WireError, match="n_particles: expected 36, got 36000"):
        decode_task(doc, model)


_AWKWARD_TEXT = [
    "",
    '{"cpu":"x86_64","engine":"go"}',
    'quotes " and back\\slashes',
    "control \x00\x01\x1f\t\n and DEL \x7f",
    "non-ASCII: é, ß, 中文, emoji \U0001f9ec",
    "a lone surrogate \ud800 and \udfff",
    "</script> & <b>",
]
_AWKWARD_FLOATS = [0.0, -0.0, 1e-300, 1e300, 0.1, 123456.789, float("nan"), float("inf"), -1.5]


def _header(rng: np.random.Generator, **changes: object) -> ResultHeader:
    def digests(n: int) -> tuple[bytes, ...]:
        return tuple(bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(n))

    one = digests(6)
    fields: dict[str, object] = {
        "wu_id": one[0],
        "worker_key": one[1],
        "determinism": _AWKWARD_TEXT[int(rng.integers(len(_AWKWARD_TEXT)))],
        "boundary_digests": digests(int(rng.integers(0, 5))),
        "segment_root": one[2],
        "final_digest": one[3],
        "frames_digest": one[4],
        "observables_digest": one[5],
        "n_atoms": int(rng.integers(0, 2**40)),
        "wall_time_s": _AWKWARD_FLOATS[int(rng.integers(len(_AWKWARD_FLOATS)))],
        "price": PriceInputs(
            engine=["go", "openmm", 'é"\\'][int(rng.integers(3))],
            n_particles=int(rng.integers(0, 2**32)),
            steps=int(rng.integers(0, 2**63)),
            deadline_s=int(rng.integers(0, 2**32)),
            issued_at_ms=int(rng.integers(0, 2**63)),
        ),
        "version": int(rng.integers(1, 5)),
        "segment_data": digests(int(rng.integers(0, 5))),
    }
    fields.update(changes)
    return ResultHeader(**fields)  # type: ignore[arg-type]


def test_the_direct_canonical_encoding_is_the_json_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The header's signed bytes, written directly, equal ``json.dumps``'s byte for byte: over
    random headers with awkward strings (quotes, control characters, non-ASCII, lone
    surrogates), floats (NaN, infinities, -0.0, extremes) and empty digest lists."""
    rng = np.random.default_rng(11)
    headers = [_header(rng) for _ in range(2000)]
    expected = [h._canonical_json() for h in headers]

    def not_used(self: ResultHeader) -> bytes:
        raise AssertionError("a header of plain types took the json path")

    monkeypatch.setattr(ResultHeader, "_canonical_json", not_used)
    for h, want in zip(headers, expected, strict=True):
        assert h.canonical() == want


@pytest.mark.parametrize(
    "changes",
    [
        {"n_atoms": True},
        {"version": np.int64(3)},
        {"wall_time_s": np.float32(0.1)},
        {"wall_time_s": 2},
    ],
    ids=["bool", "numpy-int", "float32", "int-time"],
)
def test_headers_with_other_types_encode_as_json_does(changes: dict[str, object]) -> None:
    """A field of another type than the plain one takes the ``json`` path: the same bytes, or
    the same refusal (json cannot write a numpy integer)."""
    h = _header(np.random.default_rng(5), **changes)
    try:
        expected = h._canonical_json()
    except TypeError:
        with pytest.raises(TypeError):
            h.canonical()
        return
    assert h.canonical() == expected
