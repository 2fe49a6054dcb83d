"""JSON encoding of scheduler events, for the event log the coordinator replays on restart.

Plain JSON (bytes as hex), never pickle: the log must stay readable by other versions and
other tools, and nothing read back can run code.

A line is ``json.dumps({"type": name, "body": fields}, sort_keys=True, separators=(",", ":"))``
with dataclasses as objects and bytes as ``{"hex": ...}`` (:func:`_encode_generic`, the
definition). :func:`encode_event` writes the same text from per-type templates, 2-4x cheaper
(``python -m benchmarks.event_codec``), and falls back to the definition for any value of a
type the templates do not know; tests/test_codec.py holds the two to the same text.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Any

from coordinator.errors import CorruptionError
from coordinator.jobs import JobSpec
from coordinator.scheduler import (
    Abandoned,
    BeaconPublished,
    Claim,
    Event,
    GenerationSeeded,
    JobAccepted,
    JobCancelled,
    JobPreparationFailed,
    JobPrepared,
    JobSubmitted,
    NodeLost,
    ReplicaFailed,
    ResultReturned,
    SpotCheckReturned,
    Tick,
    VolunteerTrusted,
    WorkRequested,
)

_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (
        JobSubmitted,
        JobAccepted,
        JobPrepared,
        JobPreparationFailed,
        WorkRequested,
        ResultReturned,
        ReplicaFailed,
        BeaconPublished,
        SpotCheckReturned,
        Tick,
        NodeLost,
        Abandoned,
        JobCancelled,
        VolunteerTrusted,
        GenerationSeeded,
    )
}


#: Field names of each dataclass met so far (``dataclasses.fields`` costs more than the rest
#: of an event's encoding).
_FIELDS: dict[type, tuple[str, ...]] = {}


_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    kind = type(value)
    names = _FIELDS.get(kind)
    if names is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            return value
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    return {name: _plain(getattr(value, name)) for name in names}


def _encode_generic(event: Event) -> str:
    """The log's definition: what :func:`encode_event` writes, for any value, and its
    fallback for a value the per-type encoders do not know."""
    kind = type(event).__name__
    if kind not in _TYPES:
        raise CorruptionError(f"cannot encode {kind}")
    return json.dumps({"type": kind, "body": _plain(event)}, sort_keys=True, separators=(",", ":"))


# -- per-type encoders ------------------------------------------------------------------------
# The same text as _encode_generic, built directly: json.dumps builds an encoder per call and
# _plain a dict per dataclass, about 10% of the coordinator's serial time (every event the
# scheduler takes is logged). Each value is written by the function for its exact type, as
# json.dumps writes it (ensure_ascii, repr of numbers, NaN/Infinity, sorted keys); a value of
# any other type raises KeyError and the event takes the generic path.

_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _float(v: float) -> str:
    r = float.__repr__(v)
    return _NONFINITE.get(r, r)


def _hex(v: bytes) -> str:
    return '{"hex":"' + v.hex() + '"}'


def _array(v: tuple[Any, ...] | list[Any]) -> str:
    if not v:
        return "[]"
    try:  # the log's arrays are digests: joined in one pass
        return '[{"hex":"' + '"},{"hex":"'.join(map(bytes.hex, v)) + '"}]'
    except TypeError:  # not all bytes (a subclass of bytes is written as bytes, as by _plain)
        return "[" + ",".join([_ENC[type(x)](x) for x in v]) + "]"


_ENC: dict[type, Callable[[Any], str]] = {
    str: encode_basestring_ascii,
    int: int.__repr__,
    float: _float,
    bool: {True: "true", False: "false"}.__getitem__,
    type(None): lambda v: "null",
    bytes: _hex,
    tuple: _array,
    list: _array,
}


def _object_encoder(cls: type, head: str = "", tail: str = "") -> Callable[[Any], str]:
    """``head``, the JSON object of a dataclass ``cls``, then ``tail``: one %-template with its
    keys in sorted order (as sort_keys writes them), its values filled in by type."""
    names = sorted(f.name for f in dataclasses.fields(cls))
    # (field and type names are identifiers: no "%" to escape)
    template = head + "{" + ",".join(encode_basestring_ascii(n) + ":%s" for n in names) + "}" + tail
    if len(names) == 1:
        name = names[0]

        def one(v: Any) -> str:
            x = getattr(v, name)
            return template % _ENC[type(x)](x)

        return one
    get = operator.attrgetter(*names)

    def many(v: Any) -> str:
        return template % tuple([_ENC[type(x)](x) for x in get(v)])

    return many


_ENC[Claim] = _object_encoder(Claim)
_ENC[JobSpec] = _object_encoder(JobSpec)
#: Each event type's line: its body, then its name (sort_keys: ``"body" < "type"``).
_EVENT_ENC = {
    cls: _object_encoder(cls, '{"body":', ',"type":' + encode_basestring_ascii(name) + "}")
    for name, cls in _TYPES.items()
}


def encode_event(event: Event) -> str:
    """One line of the event log (exactly :func:`_encode_generic`'s text)."""
    enc = _EVENT_ENC.get(type(event))
    if enc is not None:
        try:
            return enc(event)
        except (KeyError, RecursionError):  # a value of a type the per-type encoders lack
            pass
    return _encode_generic(event)


def _bytes(value: Any) -> bytes:
    return bytes.fromhex(value["hex"])


def _digests(values: Any) -> tuple[bytes, ...]:
    # (a list, not a generator of _bytes calls: a result holds a dozen digests)
    return tuple([bytes.fromhex(d["hex"]) for d in values])


def decode_event(text: str) -> Event:
    """The event of one line of the log; anything malformed is a CorruptionError."""
    try:
        doc = json.loads(text)
        kind, body = doc["type"], doc["body"]
        if kind in ("JobSubmitted", "JobPrepared"):
            spec = dict(body["spec"])
            spec["system_digest"] = _bytes(spec["system_digest"])
            starts = _digests(body["start_digests"])
            if kind == "JobPrepared":
                return JobPrepared(body["job"], JobSpec(**spec), starts, body["now"])
            return JobSubmitted(body["job"], JobSpec(**spec), starts)
        if kind == "ResultReturned":
            c = body["claim"]
            claim = Claim(
                _bytes(c["final_digest"]),
                _bytes(c["segment_root"]),
                _digests(c["boundary_digests"]),
                c["det_class"],
                c["sane"],
                c.get("problem", ""),
                _bytes(c["frames_digest"]) if "frames_digest" in c else b"",
                _bytes(c["observables_digest"]) if "observables_digest" in c else b"",
                _digests(c.get("segment_data", ())),
            )
            return ResultReturned(body["replica"], body["volunteer"], claim, body["now"])
        if kind == "GenerationSeeded":
            return GenerationSeeded(
                body["job"],
                body["run"],
                body["clone"],
                body["gen"],
                _bytes(body["parent_wu"]),
                body["boundary"],
                _bytes(body["parent_state"]),
                _bytes(body["input_digest"]),
                _bytes(body["decision"]),
                float(body["now"]),
            )
        if kind == "BeaconPublished":
            return BeaconPublished(_bytes(body["value"]), float(body.get("now", 0.0)))
        if kind == "SpotCheckReturned":
            return SpotCheckReturned(
                body["check"],
                body["volunteer"],
                _digests(body["end_digests"]),
                body["det_class"],
                body["now"],
                body.get("agrees"),
                _digests(body.get("segment_data", ())),
            )
        cls = _TYPES[kind]
        return cls(**body)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as e:
        raise CorruptionError(f"corrupt event in the coordinator's log: {e}") from e
