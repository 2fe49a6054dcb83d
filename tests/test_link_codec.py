"""The coordinator link's codec (``coordinator.http.linkcodec``): every message the link
carries survives it with real arguments, and bytes on the link can build values, never run
code (the attacks pickle would have let through are refused by name)."""

from __future__ import annotations

import fractions
import json
import math
import pathlib
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.http.link import (
    Admission,
    Call,
    Deframer,
    Failure,
    Ready,
    Reply,
    frame,
)
from coordinator.http.linkcodec import LinkCodecError, decode, encode
from coordinator.http.wire import Assignment, HandOut
from coordinator.plan import JobPlan
from foldnet.errors import Conflict
from ledger.checkpoint import Checkpoint, CheckpointSigner
from ledger.entries import PriceInputs
from ledger.note import Ed25519NoteSigner
from sims.go import GoEngine
from sims.spec import RunSpec
from sims.state import State
from worker.identity import Identity
from worker.result import WorkerResult, sign_result

SPEC = RunSpec(steps=1000, segment_steps=500, report_steps=250, temperature=0.8, seed=4)
PRICE = PriceInputs(
    engine="go", n_particles=36, steps=1000, deadline_s=600, issued_at_ms=1_700_000_000_000
)


@pytest.fixture(scope="module")
def result(villin_pdb) -> WorkerResult:
    engine = GoEngine.from_pdb(villin_pdb)
    run = engine.run(engine.initial_state(temperature=0.8, seed=1), SPEC)
    return sign_result(run, wu_id=bytes(range(32)), identity=Identity.ephemeral(), price=PRICE)


def _same(a: object, b: object) -> None:
    """Equal, with arrays compared bit for bit and of the same dtype and shape."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
        assert b.flags.writeable
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    elif isinstance(a, tuple | list):
        assert isinstance(b, tuple | list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, State):
        assert isinstance(b, State) and a == b
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:  # type: ignore[attr-defined]
            _same(getattr(a, name), getattr(b, name))
    else:
        assert a == b


def _through_the_link(message: object) -> object:
    """``message`` framed, cut into awkward chunks and deframed, as a socket delivers it."""
    data = frame(message) + frame(Ready(worker=1, pid=2))
    deframer = Deframer()
    out: list[object] = []
    for at in range(0, len(data), 7):
        out.extend(deframer.feed(data[at : at + 7]))
    assert len(out) == 2 and out[1] == Ready(worker=1, pid=2)
    return out[0]


def test_every_message_type_survives_the_link_with_real_arguments(result, villin_pdb):
    state = State(positions=result.positions[0], velocities=result.velocities[0], step=0)
    assignment = Assignment(
        volunteer=b"k" * 32, wu_id=b"w" * 32, n_segments=2, n_atoms=36, n_frames=4,
        deadline=12.5, steps=1000, input_digest=state.digest(), segment_steps=500,
    )  # fmt: skip
    hand_out = HandOut(
        wu_id=b"w" * 32, number=3, system="ab" * 32, engine="go", spec=SPEC, deadline=99.0,
        states=(state,), price=PRICE,
    )  # fmt: skip
    plan = JobPlan.create(engine="go", pdb=villin_pdb.read_text(), temperature=0.7)
    signer = CheckpointSigner(Ed25519NoteSigner("foldnet.test", Ed25519PrivateKey.generate()))
    checkpoint = signer.sign(Checkpoint(origin="foldnet.test", size=0, root_hash=b"r" * 32))
    messages = [
        Call(id=1, name="coordinator.http.volunteers._result", args=(b"k" * 32, result, 0.5)),
        Call(
            id=2,
            name="coordinator.http.labs._accept",
            args=("lab1", plan),
            admit=Admission(volunteer=b"v" * 32, nonce="n1", lab="lab1", register_from="::1"),
        ),
        Reply(
            answers=(
                (1, True, [hand_out]),
                (2, True, assignment),
                (3, True, {"credit": 1.5, "by_job": {"j": 2}, 7: None, "nan": float("nan")}),
                (4, True, (checkpoint, pathlib.Path("/tmp/ledger.db"), {b"w" * 32: 5})),
                (5, False, Failure.of(Conflict("already done", code="conflict"))),
                (6, True, np.float32(0.25)),
            )
        ),
        Ready(worker=3, pid=4242),
    ]
    for message in messages:
        _same(message, _through_the_link(message))
    failure = _through_the_link(messages[2]).answers[4][2]  # type: ignore[attr-defined]
    error = failure.error()
    assert isinstance(error, Conflict) and error.detail == "already done"


def test_a_result_crossing_the_link_is_still_what_its_signature_covers(result):
    back = _through_the_link(Call(id=1, name="x", args=(result,))).args[0]  # type: ignore[attr-defined]
    assert isinstance(back, WorkerResult)
    assert back.header.digest() == result.header.digest()
    assert back.signature == result.signature
    assert back.positions.tobytes() == result.positions.tobytes()


def _frame_of(doc: object, *buffers: bytes) -> bytes:
    header = json.dumps(doc).encode()
    lengths = struct.pack(f"<{len(buffers)}Q", *(len(b) for b in buffers))
    return struct.pack("<II", len(header), len(buffers)) + lengths + header + b"".join(buffers)


@pytest.mark.parametrize(
    ("doc", "buffers", "why"),
    [
        ({"$c": ["os:system", {}]}, (), "only foldnet's"),
        ({"$c": ["builtins:eval", {}]}, (), "only foldnet's"),
        ({"$c": ["subprocess:Popen", {"args": "true"}]}, (), "only foldnet's"),
        # a foldnet module's import of a foreign class is not foldnet's class
        ({"$c": ["coordinator.http.linkcodec:np.ndarray", {}]}, (), "no class"),
        # a foldnet class that is not a frozen dataclass, or whose constructor does things
        ({"$c": ["coordinator.http.link:Hub", {}]}, (), "neither a dataclass"),
        ({"$c": ["foldnet.httpclient:HttpClient", {}]}, (), "not a frozen dataclass"),
        ({"$c": ["worker.identity:Identity", {}]}, (), "does not decode"),
        ({"$e": ["coordinator.http.link:Call", 1]}, (), "not an enum"),
        ({"$a": [0, "|O", [1]]}, (b"x" * 8,), "dtype"),
        ({"$a": [0, "<f8", [4]]}, (b"x" * 8,), "in 8 bytes"),
        ({"$a": [0, "<f8", [-1]]}, (b"",), "shape"),
        ({"$b": -1}, (b"x",), "buffer index"),
        ({"$b": 3}, (b"x",), "buffer index"),
        ({"$zz": 1}, (), "unknown tag"),
        ({"$c": ["coordinator.http.link:Ready", {"worker": 1}]}, (), "does not decode"),
        ({"$c": ["coordinator.http.link:Ready", {"worker": 1, "pid": 2, "x": 3}]}, (), "does not"),
    ],
)
def test_bytes_on_the_link_build_values_never_run_code(doc, buffers, why):
    with pytest.raises(LinkCodecError, match=why):
        decode(_frame_of(doc, *buffers))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00",
        struct.pack("<II", 100, 0) + b"1",
        struct.pack("<II", 1, 0) + b"1" + b"extra",
        struct.pack("<II", 2, 0) + b"[1",
        struct.pack("<II", 1, 1) + struct.pack("<Q", 5) + b"1" + b"abc",
        struct.pack("<II", 1, 0xFFFFFFFF) + b"1",
        struct.pack("<II", 3, 0) + b"\xff\xfe\x00",
        struct.pack("<II", 5, 0) + b"[1,]}",
    ],
)
def test_truncated_or_garbage_frames_are_refused(data):
    with pytest.raises(LinkCodecError):
        decode(data)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (object(), "expected plain data"),
        (lambda: 1, "expected plain data"),
        (np.array([object()], dtype=object), "dtype object"),
        (np.array(["a"]), "dtype <U1"),
        (Identity.ephemeral(), "Ed25519PrivateKey"),
        (fractions.Fraction(1, 3), "expected plain data"),
    ],
)
def test_what_the_link_cannot_carry_is_refused_when_sent(value, why):
    with pytest.raises(LinkCodecError, match=why):
        encode(value)


def test_an_oversized_length_prefix_is_refused_before_buffering():
    deframer = Deframer()
    with pytest.raises(LinkCodecError, match="bytes on the coordinator link"):
        list(deframer.feed(struct.pack("<Q", 1 << 40) + b"x"))
