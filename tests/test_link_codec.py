"""The coordinator link's codec (``coordinator.http.linkcodec``): every message the link
carries survives it with real arguments, and bytes on the link can build values, never run
code (the attacks pickle would have let through are refused by name)."""

from __future__ import annotations

import collections
import enum
import fractions
import json
import math
import pathlib
import random
import struct
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.http import linkcodec
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


# -- every kind of value ------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = (1, 2)


class Level(enum.IntEnum):
    LOW = 1


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float = 0.0
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.x, float):
            raise ValueError(f"x must be a float, got {self.x!r}")


@dataclass(frozen=True, kw_only=True)
class Named:
    name: str
    point: Point | None = None


@dataclass(frozen=True)
class Empty:
    pass


@dataclass(frozen=True)
class One:
    value: object


@dataclass
class Loose:
    value: int = 0


@dataclass(frozen=True)
class Derived:
    value: int = field(init=False, default=1)


@pytest.fixture
def ours(monkeypatch):
    """This module's classes count as foldnet's, for this test only (the codec's memo of the
    classes it met goes with it)."""
    monkeypatch.setattr(linkcodec, "PACKAGES", (*linkcodec.PACKAGES, __name__.partition(".")[0]))
    monkeypatch.setattr(linkcodec, "_ENCODERS", dict(linkcodec._ENCODERS))
    monkeypatch.setattr(linkcodec, "_DECODERS", dict(linkcodec._DECODERS))


_ARRAYS = [
    *(
        np.arange(6).astype(dt).reshape(2, 3)
        for dt in ("?", "i1", "<i8", ">i4", "u2", "<f4", ">f8")
    ),
    np.array([1 + 2j, np.nan, -np.inf], dtype="c8"),
    np.array([[1 - 1j]], dtype=">c16"),
    np.array(2.5),  # 0-d
    np.zeros((0, 3)),
    np.zeros((2, 0, 4), dtype="u2"),
    np.arange(12.0).reshape(3, 4).T,  # not contiguous
    np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    np.arange(20.0)[::3],
]

_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**100,
    1.5,
    float("nan"),
    float("inf"),
    -float("inf"),
    "",
    'é✓ \x00 "quoted" \\',
    "\ud800",  # a lone surrogate (JSON escapes it)
    "$t",
    [],
    [1, [2, "x"], (3,)],
    ["t", 1],  # lists that look like tags are still lists
    ["os:system", "true"],
    (),
    (1,),
    ((), [()], {}),
    {},
    {"$t": 1, "l": [1], "": None},
    {"a": {"b": (1, b"k")}},
    {1: 2, (1, 2): "x", b"k": None, None: 0.5},
    {"a": 1, 2: 3},
    set(),
    {1, "a", (2, 3)},
    frozenset({b"x", 1}),
    b"",
    b"x" * 64,
    b"y" * 65,
    bytes(range(256)),
    *_ARRAYS,
    {"arrays": _ARRAYS},
    np.bool_(True),
    np.int8(-3),
    np.uint64(2**64 - 1),
    np.float16(0.5),
    np.float64("nan"),
    np.complex128(1 + 2j),
    np.complex64(-1j),
    pathlib.Path("/tmp/foldnet/x.db"),
    SPEC,
    (PRICE, [PRICE], {"p": PRICE}),
]


@pytest.mark.parametrize("value", _VALUES, ids=lambda v: type(v).__name__)
def test_every_kind_of_value_survives_the_link(value):
    data = encode(value)
    back = decode(data)
    _same(value, back)
    if isinstance(value, np.ndarray):  # each decode its own copy, never a view of the message
        again = decode(data)
        assert back.flags.c_contiguous and not np.shares_memory(back, again)


def test_this_modules_dataclasses_and_enums_survive_once_they_are_foldnets(ours):
    values = [
        Colour.RED,
        Colour.BLUE,
        Level.LOW,
        Point(1.5),
        Point(2.0, -1.0, ("a", "b")),
        Named(name="n"),
        Named(name="m", point=Point(0.5)),
        Empty(),
        One(One(b"z" * 100)),
        One(np.arange(3)),
        [Colour.RED, (Level.LOW, {Level.LOW: Point(3.0)})],
    ]
    for value in values:
        back = decode(encode(value))
        _same(value, back)
        if isinstance(value, enum.Enum):
            assert back is value


def test_a_dataclass_is_built_through_its_constructor(ours):
    # RunSpec's constructor makes an integral temperature a float
    spec = decode(_frame_of(["sims.spec:RunSpec", 10, 10, 10, 1, 4]))
    assert spec == RunSpec(steps=10, segment_steps=10, report_steps=10, temperature=1.0, seed=4)
    assert type(spec.temperature) is float
    # and what a constructor refuses is refused
    with pytest.raises(LinkCodecError, match="x must be a float, got 1"):
        decode(_frame_of([f"{__name__}:Point", 1, 0.0, ["t"]]))
    with pytest.raises(LinkCodecError, match="refused"):
        decode(_frame_of(["ledger.entries:PriceInputs", "go", -1, 10, 600, 0]))
    with pytest.raises(LinkCodecError, match="does not decode"):
        decode(_frame_of([f"{__name__}:Colour", "green"]))


@pytest.fixture(scope="module")
def hot() -> dict[str, object]:
    from benchmarks.link_codec import messages

    return messages()


def test_the_hot_messages_survive_the_link(hot):
    assert set(hot) == {
        "call_result", "call_result_4seg", "reply_result", "call_work", "reply_work",
    }  # fmt: skip
    for message in hot.values():
        data = encode(message)
        back = _through_the_link(message)
        _same(message, back)
        assert encode(back) == data  # the same value, the same bytes


def test_flipped_bytes_decode_or_are_refused_never_anything_else(hot):
    data = encode(hot["call_result"])
    rng = random.Random(7)
    refused = 0
    for _ in range(400):
        garbled = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 5))):
            at = rng.randrange(min(len(garbled), 2000))  # mostly the header and its JSON
            garbled[at] = rng.randrange(256)
        try:
            decode(bytes(garbled))
        except LinkCodecError:
            refused += 1
    assert refused > 100  # most flips in the JSON break it


# -- what bytes on the link can build --------------------------------------------------------


def _frame_of(doc: object, *buffers: bytes) -> bytes:
    header = json.dumps(doc).encode()
    lengths = struct.pack(f"<{len(buffers)}Q", *(len(b) for b in buffers))
    return struct.pack("<II", len(header), len(buffers)) + lengths + header + b"".join(buffers)


@pytest.mark.parametrize(
    ("doc", "buffers", "why"),
    [
        (["os:system", "true"], (), "only foldnet's"),
        (["builtins:eval", "1"], (), "only foldnet's"),
        (["subprocess:Popen", ["l", "true"]], (), "only foldnet's"),
        (["posix:system", "true"], (), "only foldnet's"),
        (["foldnet.nope:X"], (), "no module"),
        # a foldnet module's import of a foreign class is not foldnet's class
        (["coordinator.http.linkcodec:np.ndarray", ["l", 1]], (), "no class"),
        (["coordinator:http.link.Call", 1, "x", ["t"], None], (), "no class"),
        (["coordinator.http.link:COMMANDS"], (), "no class"),
        (["coordinator.http.link:Failure.of", 1], (), "no class"),
        (["coordinator.http.link:command", "x"], (), "no class"),
        # a foldnet class that is not a frozen dataclass, or whose constructor does things
        (["coordinator.http.link:Hub"], (), "neither a dataclass"),
        (["foldnet.httpclient:HttpClient"], (), "not a frozen dataclass"),
        (["worker.identity:Identity", 1], (), "with 1 fields; it has 2"),
        (["coordinator.http.link:Ready", 1], (), "with 1 fields; it has 2"),
        (["coordinator.http.link:Ready", 1, 2, 3], (), "with 3 fields; it has 2"),
        (["ledger.entries:PriceInputs", "go", -1, 10, 600, 0], (), "refused"),
        (["a", 0, "|O", 1], (b"x" * 8,), "dtype"),
        (["a", 0, "<U2", 1], (b"x" * 8,), "dtype"),
        (["a", 0, "V8", 1], (b"x" * 8,), "dtype"),
        (["a", 0, "<M8[s]", 1], (b"x" * 8,), "dtype"),
        (["a", 0, "float64 and more", 1], (b"x" * 8,), "dtype"),
        (["a", 0, ["l"], 1], (b"x" * 8,), "does not decode"),
        (["a", 0, "<f8", 4], (b"x" * 8,), "in 8 bytes"),
        (["a", 0, "<f8"], (b"x" * 16,), "in 16 bytes"),
        (["a", 0, "<f8", -1], (b"",), "shape"),
        (["a", 0, "<f8", -1, -1], (b"x" * 8,), "shape"),
        (["a", 0, "<f8", True], (b"x" * 8,), "shape"),
        (["a", 0, "<f8", 1.0], (b"x" * 8,), "shape"),
        (["a", 1, "<f8", 1], (b"x" * 8,), "buffer index"),
        (["a"], (), "does not decode"),
        (["a", 0, "<f8", *([1] * 65)], (b"x" * 8,), "does not decode"),  # numpy's 64 at most
        (["b", -1], (b"x",), "buffer index"),
        (["b", 3], (b"x",), "buffer index"),
        (["b", True], (b"x",), "buffer index"),
        (["b", "0"], (b"x",), "buffer index"),
        (["x", "zz"], (), "does not decode"),
        (["x", 5], (), "does not decode"),
        (["x"], (), "does not decode"),
        (["n", "|O", 1], (), "dtype"),
        (["n", "<c16", 1], (), "does not decode"),
        (["n", "<c16", ["a", 1]], (), "numpy scalar"),
        (["n", "<f8", [1, 2]], (), "numpy scalar"),
        (["n", "<f8", "1.5"], (), "numpy scalar"),
        (["d", 1], (), "key without its value"),
        (["d", ["l"], 1], (), "does not decode"),
        (["s", ["l"]], (), "does not decode"),
        (["p", 1], (), "path that is not a string"),
        (["zz", 1], (), "unknown tag"),
        ([""], (), "unknown tag"),
        ([1], (), "unknown tag"),
        ([None, 1], (), "unknown tag"),
        ([["l"], 1], (), "does not decode"),
        ([], (), "does not decode"),
        ({"a": ["t", ["os:system", "x"]]}, (), "only foldnet's"),
    ],
)
def test_bytes_on_the_link_build_values_never_run_code(doc, buffers, why):
    with pytest.raises(LinkCodecError, match=why):
        decode(_frame_of(doc, *buffers))


def test_a_module_outside_foldnet_is_never_imported():
    for module in ("this", "antigravity", "xml.dom.minidom"):
        assert module not in sys.modules
        with pytest.raises(LinkCodecError, match="only foldnet's"):
            decode(_frame_of([f"{module}:X"]))
        assert module not in sys.modules


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
        struct.pack("<II", 2, 0) + b"[]",
        struct.pack("<II", 0, 0),
        struct.pack("<II", 2, 0) + b"{]",
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
        (np.array([(1, 2.0)], dtype="i4,f8"), "expected numbers"),
        (np.datetime64("2024-01-01"), "expected plain data"),
        (np.str_("a"), "expected plain data"),
        (np.ma.masked_array([1.0]), "expected plain data"),
        (Identity.ephemeral(), "Ed25519PrivateKey"),
        (fractions.Fraction(1, 3), "expected plain data"),
        (collections.OrderedDict(a=1), "expected plain data"),
        (bytearray(b"x"), "expected plain data"),
        ({"a": [1, {2: object()}]}, "expected plain data"),
        (Point(1.0), "only foldnet's own"),
        (Colour.RED, "only foldnet's own"),
        (RunSpec, "expected plain data"),  # a class is not a value
    ],
)
def test_what_the_link_cannot_carry_is_refused_when_sent(value, why):
    with pytest.raises(LinkCodecError, match=why):
        encode(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [(Loose(), "not a frozen dataclass"), (Derived(), "constructor takes every field")],
)
def test_a_dataclass_that_its_constructor_cannot_rebuild_is_refused_when_sent(ours, value, why):
    with pytest.raises(LinkCodecError, match=why):
        encode(value)


def test_a_value_nested_too_deeply_is_refused_both_ways():
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(LinkCodecError, match="nested too deeply"):
        encode(deep)
    with pytest.raises(LinkCodecError, match="does not decode"):
        decode(_frame_of_text('["l",' * 100_000 + "]" * 100_000))


def _frame_of_text(text: str) -> bytes:
    return struct.pack("<II", len(text), 0) + text.encode()


def test_an_oversized_length_prefix_is_refused_before_buffering():
    deframer = Deframer()
    with pytest.raises(LinkCodecError, match="bytes on the coordinator link"):
        list(deframer.feed(struct.pack("<Q", 1 << 40) + b"x"))


@pytest.mark.slow
def test_the_benchmark_measures_every_hot_message_against_another_codec():
    root = pathlib.Path(__file__).resolve().parents[1]
    codec = root / "coordinator" / "http" / "linkcodec.py"
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.link_codec", "--quick", "--against", str(codec)],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last.pop("quick") is True
    names = ("call_result", "call_result_4seg", "reply_result", "call_work", "reply_work")
    assert set(last) == {
        f"{codec}{name}_{what}"
        for codec in ("", "against_")
        for name in names
        for what in ("encode_us", "decode_us", "bytes")
    }
    assert all(v > 0 for v in last.values()), last
    assert last["call_result_bytes"] == last["against_call_result_bytes"]
