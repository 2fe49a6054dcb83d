"""JSON encoding of scheduler events, for the event log the coordinator replays on restart.

Plain JSON (bytes as hex), never pickle: the log must stay readable by other versions and
other tools, and nothing read back can run code.
"""

from __future__ import annotations

import dataclasses
import json
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


def _bytes(value: Any) -> bytes:
    return bytes.fromhex(value["hex"])


def encode_event(event: Event) -> str:
    kind = type(event).__name__
    if kind not in _TYPES:
        raise CorruptionError(f"cannot encode {kind}")
    return json.dumps({"type": kind, "body": _plain(event)}, sort_keys=True, separators=(",", ":"))


def decode_event(text: str) -> Event:
    try:
        doc = json.loads(text)
        kind, body = doc["type"], doc["body"]
        if kind in ("JobSubmitted", "JobPrepared"):
            spec = dict(body["spec"])
            spec["system_digest"] = _bytes(spec["system_digest"])
            starts = tuple(_bytes(d) for d in body["start_digests"])
            if kind == "JobPrepared":
                return JobPrepared(body["job"], JobSpec(**spec), starts, body["now"])
            return JobSubmitted(body["job"], JobSpec(**spec), starts)
        if kind == "ResultReturned":
            c = body["claim"]
            claim = Claim(
                _bytes(c["final_digest"]),
                _bytes(c["segment_root"]),
                tuple(_bytes(d) for d in c["boundary_digests"]),
                c["det_class"],
                c["sane"],
                c.get("problem", ""),
                _bytes(c["frames_digest"]) if "frames_digest" in c else b"",
                _bytes(c["observables_digest"]) if "observables_digest" in c else b"",
                tuple(_bytes(d) for d in c.get("segment_data", ())),
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
                tuple(_bytes(d) for d in body["end_digests"]),
                body["det_class"],
                body["now"],
                body.get("agrees"),
                tuple(_bytes(d) for d in body.get("segment_data", ())),
            )
        cls = _TYPES[kind]
        return cls(**body)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise CorruptionError(f"corrupt event in the coordinator's log: {e}") from e
