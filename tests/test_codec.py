"""The event log's per-type encoders write exactly what the generic encoder writes (the log's
definition: old logs keep replaying, and logs written now stay readable by older decoders),
for every event type and awkward values; every event reads back as itself."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import codec
from coordinator.codec import _TYPES, _encode_generic, decode_event, encode_event
from coordinator.errors import CorruptionError
from coordinator.jobs import ADAPTIVE_POLICIES, ENGINES, JobSpec
from coordinator.scheduler import (
    Abandoned,
    BeaconPublished,
    Claim,
    Dispatch,
    Event,
    GenerationSeeded,
    JobPrepared,
    JobSubmitted,
    ReplicaFailed,
    ResultReturned,
    SpotCheckReturned,
    Tick,
    WorkRequested,
)

AWKWARD_TEXT = [
    "",
    "plain",
    'quote " and backslash \\ and slash /',
    "control \x00\x01\x1f\x7f tab \t newline \n cr \r",
    "non-ASCII: \u0394E \u2264 1e3, caf\u00e9, \u4e2d\u6587",
    "astral \U0001f600 (a surrogate pair in JSON)",
    "lone surrogate \ud800 and \udfff",
    "%s %d %% {} {0}",  # the encoders' templates are %-formats
    "\u2028\u2029 line separators",
    "x" * 500,
]
AWKWARD_FLOATS = [0.0, -0.0, 0.1, 1 / 3, 1e16, 1e-7, 5e-324, 1.7976931348623157e308,
                  math.inf, -math.inf, math.nan, 1_718_000_123.456789, 3, -2**53]  # fmt: skip
AWKWARD_INTS = [0, -1, 2**31, 2**63, 2**80, -(2**100), 10**300]


def _same(a: Any, b: Any) -> bool:
    """``a == b``, but NaN equals NaN (the log keeps a NaN; NaN != NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _check(ev: Event) -> None:
    text = encode_event(ev)
    assert text == _encode_generic(ev)
    back = decode_event(text)
    assert _same(back, ev), (back, ev)


# -- every event type, generated ------------------------------------------------------------

_text = st.text(max_size=40) | st.sampled_from(AWKWARD_TEXT)
_digests = st.lists(st.binary(max_size=40), max_size=8).map(tuple)


@st.composite
def _specs(draw: st.DrawFn) -> JobSpec:
    """A valid job spec (its checks bound every field), ints where floats are declared too."""
    report = draw(st.integers(1, 1000))
    segment = report * draw(st.integers(1, 10_000))
    quorum = draw(st.integers(1, 10))
    return JobSpec(
        engine=draw(st.sampled_from(ENGINES)),
        system_digest=draw(st.binary(min_size=32, max_size=32)),
        runs=draw(st.integers(1, 30)),
        clones=draw(st.integers(1, 30)),
        gens=draw(st.integers(1, 100)),
        steps_per_wu=segment * draw(st.integers(1, 10)),
        segment_steps=segment,
        report_steps=report,
        temperature=draw(st.floats(1e-300, 1e300) | st.integers(1, 10**6)),
        min_quorum=quorum,
        max_error_results=draw(st.integers(1, 100)),
        max_total_results=draw(st.integers(quorum, 100)),
        deadline_s=draw(st.floats(1, 86400) | st.integers(1, 86400)),
        spot_check_segments=draw(st.integers(1, 1000)),
        audit_rate=draw(st.floats(0, 1) | st.sampled_from([0, 1])),
        adaptive=draw(st.sampled_from(ADAPTIVE_POLICIES)),
    )


#: A value of each field type the events declare (a field of a new type fails the test
#: until it is added here).
_BY_ANNOTATION: dict[str, st.SearchStrategy[Any]] = {
    "str": _text,
    "int": st.integers() | st.sampled_from(AWKWARD_INTS),
    # floats (NaN and infinities included) and ints, as a clock might give (within 2**53: a
    # decoder that takes float(now) reads a larger one back rounded)
    "float": st.floats() | st.sampled_from(AWKWARD_FLOATS) | st.integers(-(2**53), 2**53),
    "bool": st.booleans(),
    "bool | None": st.none() | st.booleans(),
    "bytes": st.binary(max_size=40),
    "tuple[bytes, ...]": _digests,
    "JobSpec": _specs(),
}


def _of(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{f.name: _BY_ANNOTATION[str(f.type)] for f in dataclasses.fields(cls)})


_BY_ANNOTATION["Claim"] = _of(Claim)


@pytest.mark.parametrize("kind", sorted(_TYPES))
def test_every_event_type_is_written_as_the_generic_encoder_writes_it(kind: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(_of(_TYPES[kind]))
    def check(ev: Event) -> None:
        _check(ev)

    check()


# -- awkward values, by hand ----------------------------------------------------------------

_SPEC = JobSpec("go", b"\x07" * 32, 2, 3, 4, 100, 50, 10, 0.75)


def _awkward() -> list[Event]:
    d = bytes(range(32))
    out: list[Event] = [Tick(f) for f in AWKWARD_FLOATS]
    out += [WorkRequested(s, s[::-1], 2, 1.5, s) for s in AWKWARD_TEXT]
    out += [ReplicaFailed(i, "v", "r", 0.0) for i in AWKWARD_INTS]
    out += [
        Abandoned(math.nan),
        BeaconPublished(b""),
        BeaconPublished(d, 7),  # an int now reads back as 7.0, which equals it
        ResultReturned(1, "v", Claim(b"", b"", (), ""), 2.0),  # empty everything
        ResultReturned(1, "v", Claim(d, d, (d,) * 6, "c", True, "", d, d, (d,) * 5), 2.0),
        *(
            ResultReturned(2, "v", Claim(b"\0" * 32, b"\0" * 32, (), "", False, p), 3.0)
            for p in AWKWARD_TEXT
        ),
        *(SpotCheckReturned(3, "v", (d,), "c", 4.0, a, (d, d)) for a in (None, True, False)),
        SpotCheckReturned(3, "v", (), "c", 4.0),
        JobSubmitted('lab/\u00e9"job\\', _SPEC, ()),
        JobSubmitted("j", dataclasses.replace(_SPEC, temperature=2, audit_rate=1), (d, d)),
        JobPrepared("j", dataclasses.replace(_SPEC, temperature=1e-300), (d,), math.inf),
        GenerationSeeded("j", 0, 2**40, 5, d, 1, d, d, b"", 0.0),
    ]
    return out


@pytest.mark.parametrize("ev", _awkward(), ids=lambda e: type(e).__name__)
def test_awkward_values_are_written_as_the_generic_encoder_writes_them(ev: Event) -> None:
    _check(ev)


def test_every_event_type_has_its_encoder_and_json_s_spellings() -> None:
    assert set(codec._EVENT_ENC) == set(_TYPES.values())
    assert "\\u" in encode_event(WorkRequested("caf\u00e9", "c", 1, 0.0))  # ensure_ascii
    assert encode_event(Tick(math.nan)) == '{"body":{"now":NaN},"type":"Tick"}'
    assert encode_event(Tick(-math.inf)) == '{"body":{"now":-Infinity},"type":"Tick"}'


# -- values of other types: the generic path, with its text or its error --------------------


class _Str(str):
    pass


class _Bytes(bytes):
    pass


class _Int(enum.IntEnum):
    TWO = 2


def _outcome(encode: Any, ev: Any) -> tuple[str, Any]:
    try:
        return "text", encode(ev)
    except Exception as e:
        return "raises", type(e)


_loop: list[Any] = []
_loop.append(_loop)


_OTHER_TYPES = {
    "str subclass": WorkRequested(_Str("v"), "c", 1, 0.0),
    "bool for an int": WorkRequested("v", "c", True, 0.0),
    "IntEnum": WorkRequested("v", "c", _Int.TWO, 0.0),
    "numpy float64": WorkRequested("v", "c", 1, np.float64(0.1)),
    "numpy int64 (json cannot write it)": WorkRequested("v", "c", np.int64(1), 0.0),
    "bytes subclass": BeaconPublished(_Bytes(b"\x01\x02")),
    "bytearray": BeaconPublished(bytearray(b"\x01")),
    "list of digests": SpotCheckReturned(1, "v", [b"\x01", b"\x02"], "c", 0.0),
    "bytes subclass in a tuple": SpotCheckReturned(1, "v", (b"\x01", _Bytes(b"\x02")), "c", 0.0),
    "str in digests": SpotCheckReturned(1, "v", (b"\x01", "02"), "c", 0.0),
    "bytearray in digests": SpotCheckReturned(1, "v", (b"\x01", bytearray(2)), "c", 0.0),
    "dict (keys sorted)": SpotCheckReturned(1, "v", (), "c", 0.0, {"b": 1, "a": [1.5, None]}),
    "nested event": SpotCheckReturned(1, "v", (), "c", 0.0, Tick(1.0)),
    "a class": SpotCheckReturned(1, "v", (), "c", 0.0, Tick),
    "object": SpotCheckReturned(1, "v", (), "c", 0.0, object()),
    "circular list": SpotCheckReturned(1, "v", (), "c", 0.0, _loop),
    "nested tuple": ResultReturned(1, "v", Claim(b"", b"", ((b"\x01",),), ""), 0.0),
    "str for a claim": ResultReturned(1, "v", "not a claim", 0.0),
}


@pytest.mark.parametrize("ev", list(_OTHER_TYPES.values()), ids=list(_OTHER_TYPES))
def test_values_of_other_types_take_the_generic_path(ev: Event) -> None:
    assert _outcome(encode_event, ev) == _outcome(_encode_generic, ev)


def test_only_the_log_s_event_types_are_encoded() -> None:
    class Tick2(Tick):
        pass

    for ev in (Tick2(1.0), Dispatch(1, None, "v", 0.0), "Tick"):  # type: ignore[arg-type]
        with pytest.raises(CorruptionError, match="cannot encode"):
            encode_event(ev)  # type: ignore[arg-type]


# -- decoding -------------------------------------------------------------------------------


def test_a_number_too_large_for_a_float_is_a_corrupt_event() -> None:
    huge = "1" + "0" * 400
    line = f'{{"body":{{"now":{huge},"value":{{"hex":"00"}}}},"type":"BeaconPublished"}}'
    with pytest.raises(CorruptionError, match="corrupt event"):
        decode_event(line)
