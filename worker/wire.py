"""The HTTP wire format shared by the coordinator's service and the volunteer's client.

It lives in ``worker`` because the client needs it and ``worker`` may not import
``coordinator`` (docs/architecture.md §2); the service imports it from here.

* Requests of a volunteer are signed: Ed25519 over :func:`signing_message`, i.e. the
  server's origin, the method, the path with its query, SHA-256 of the body, a timestamp,
  a nonce and the key. Naming the origin makes a signature for one coordinator worthless
  at another (a volunteer may use one key with several). Or, once a session is open
  (:mod:`worker.session`), MAC'd: HMAC-SHA256 over the same message under the session's key.
* Metadata is JSON. Arrays inside JSON are ``{"dtype": "<f8", "shape": [..], "data":
  base64}`` (raw little-endian bytes with a declared shape); whole results travel as one
  binary container (:mod:`worker.arrays`: a JSON manifest declaring each array's name, dtype
  and shape, then the raw little-endian bytes), read with ``np.frombuffer``: nothing to
  inflate, nothing to unpickle, and far cheaper to parse than an ``.npz``.
* Every decoder is strict and says what it expected and what it got.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
import sys
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ledger.entries import PriceInputs
from ledger.errors import EntryFormatError
from sims.errors import SimsError
from sims.spec import RunSpec
from sims.state import State
from worker.arrays import check_shape, pack_arrays, read_container
from worker.errors import WireError
from worker.identity import Identity
from worker.result import ResultHeader, WorkerResult, price_fields
from worker.systems import SystemDefinition, engine_name, particle_count
from worker.tasks import (
    ComputeTask,
    SegmentFrames,
    SpotCheckResult,
    SpotCheckTask,
    check_price,
    check_size,
)

PROTOCOL = "foldnet-http/v1"
KEY_HEADER = "x-foldnet-key"
TIMESTAMP_HEADER = "x-foldnet-timestamp"
NONCE_HEADER = "x-foldnet-nonce"
SIGNATURE_HEADER = "x-foldnet-signature"
SESSION_HEADER = "x-foldnet-session"  # a session's ticket (worker.session), instead of a signature
MAC_HEADER = "x-foldnet-mac"  # HMAC-SHA256 under the session's key of signing_message(...)
RESULT_CONTENT_TYPE = "application/x-foldnet-arrays"

#: Array kinds a result may hold, with their dtype and number of dimensions.
_RESULT_ARRAYS: dict[str, tuple[str, int]] = {
    "positions": ("<f8", 3),
    "velocities": ("<f8", 3),
    "frames": ("<f4", 3),
    "frame_steps": ("<i8", 1),
}
#: The dtype objects of those strings (comparing them is cheaper than building ``.str``).
_DTYPES = {s: np.dtype(s) for s in ("<f8", "<f4", "<i8")}


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def origin_of(url: str) -> str:
    """The origin a signature names: ``scheme://host:port`` of ``url``, lower-case, with the
    port always written (``http://Example.org/x`` -> ``http://example.org:80``)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise WireError(f"expected an http:// or https:// URL with a host, got {url[:80]!r}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as e:
        raise WireError(f"the URL's port is not a number: {url[:80]!r}") from e
    host = parts.hostname.lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def signing_message(
    method: str,
    target: str,
    body_sha256: str,
    timestamp: int,
    nonce: str,
    key_hex: str,
    origin: str,
) -> bytes:
    """The exact bytes a volunteer signs: one field per line, nothing ambiguous. ``origin``
    is the server's (:func:`origin_of`)."""
    return "\n".join(
        (PROTOCOL, origin, method.upper(), target, body_sha256, str(timestamp), nonce, key_hex)
    ).encode()


def sign_headers(
    identity: Identity,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    origin: str,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request to the server at ``origin`` (its URL; only the
    scheme, host and port count) for ``target`` (the path plus ``?query``)."""
    ts = int(time.time() if now is None else now)
    n = nonce if nonce is not None else secrets.token_hex(16)
    key = identity.public_key.hex()
    message = signing_message(method, target, body_digest(body), ts, n, key, origin_of(origin))
    sig = identity.sign(message)
    return {
        KEY_HEADER: key,
        TIMESTAMP_HEADER: str(ts),
        NONCE_HEADER: n,
        SIGNATURE_HEADER: sig.hex(),
    }


# -- small strict readers ------------------------------------------------------------------


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def get_int(doc: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    v = doc.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise WireError(f"{name}: expected an integer, got {_type_name(v)}")
    if not lo <= v <= hi:
        raise WireError(f"{name}: expected an integer in [{lo}, {hi}], got {v}")
    return v


def get_str(doc: Mapping[str, Any], name: str, max_len: int) -> str:
    v = doc.get(name)
    if not isinstance(v, str):
        raise WireError(f"{name}: expected a string, got {_type_name(v)}")
    if len(v) > max_len:
        raise WireError(f"{name}: expected at most {max_len} characters, got {len(v)}")
    if not _encodable(v):
        raise WireError(
            f"{name}: expected text that is valid Unicode; it holds a lone surrogate "
            "(a \\ud800-\\udfff escape without its pair)"
        )
    return v


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid UTF-8 once encoded (JSON admits lone surrogates, which no
    canonical encoder, database or log line can take)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def get_hex(doc: Mapping[str, Any], name: str, n_bytes: int) -> bytes:
    v = get_str(doc, name, 2 * n_bytes)
    try:
        raw = bytes.fromhex(v)
    except ValueError as e:
        raise WireError(f"{name}: expected {2 * n_bytes} hex digits, got {v[:20]!r}") from e
    if len(raw) != n_bytes:
        raise WireError(f"{name}: expected {2 * n_bytes} hex digits, got {len(v)}")
    return raw


#: The largest integer ``float()`` takes (about 1.8e308).
_FLOAT_INT_MAX = int(sys.float_info.max)


def get_float(doc: Mapping[str, Any], name: str) -> float:
    v = doc.get(name)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise WireError(f"{name}: expected a number, got {_type_name(v)}")
    if isinstance(v, int) and abs(v) > _FLOAT_INT_MAX:  # (float() would overflow)
        raise WireError(
            f"{name}: expected a number a float can hold, got an integer of {v.bit_length()} bits"
        )
    return float(v)


def get_list(doc: Mapping[str, Any], name: str, max_len: int) -> list[Any]:
    v = doc.get(name)
    if not isinstance(v, list):
        raise WireError(f"{name}: expected a list, got {_type_name(v)}")
    if len(v) > max_len:
        raise WireError(f"{name}: expected at most {max_len} items, got {len(v)}")
    return v


def get_object(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    v = doc.get(name)
    if not isinstance(v, dict):
        raise WireError(f"{name}: expected an object, got {_type_name(v)}")
    return v


def loads_json(data: bytes | str, what: str = "the body") -> Any:
    """``json.loads`` whose every failure is a :class:`WireError`: malformed text, bad
    UTF-8, and nesting too deep for the parser (``RecursionError``)."""
    try:
        return json.loads(data)
    except RecursionError as e:
        raise WireError(
            f"{what} is nested too deeply; expected JSON of a few levels of objects and lists"
        ) from e
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(f"{what} is not valid JSON: {e}") from e


def parse_json_object(body: bytes) -> dict[str, Any]:
    doc = loads_json(body)
    if not isinstance(doc, dict):
        raise WireError(f"the body must be a JSON object, got {_type_name(doc)}")
    return doc


# -- arrays inside JSON --------------------------------------------------------------------


def encode_array(a: np.ndarray, dtype: str) -> dict[str, Any]:
    arr = np.ascontiguousarray(a, dtype=dtype)
    return {
        "dtype": dtype,
        "shape": list(arr.shape),
        "data": base64.b64encode(arr.tobytes()).decode(),
    }


def decode_array(doc: object, name: str, dtype: str, ndim: int, max_bytes: int) -> np.ndarray:
    if not isinstance(doc, dict):
        raise WireError(f"{name}: expected an array object, got {_type_name(doc)}")
    if doc.get("dtype") != dtype:
        raise WireError(f"{name}: expected dtype {dtype}, got {doc.get('dtype')!r}")
    shape = get_list(doc, "shape", ndim)
    if len(shape) != ndim or any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
        raise WireError(f"{name}: expected a shape of {ndim} integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise WireError(f"{name}: negative dimension in shape {shape}")
    check_shape(name, shape)
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size > max_bytes:
        raise WireError(f"{name}: {size:,} bytes is over the limit of {max_bytes:,}")
    data = get_str(doc, "data", 4 * (max_bytes // 3 + 4))
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WireError(f"{name}: data is not base64: {e}") from e
    if len(raw) != size:
        raise WireError(f"{name}: shape {shape} needs {size} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def encode_state(s: State) -> dict[str, Any]:
    return {
        "step": s.step,
        "positions": encode_array(s.positions, "<f8"),
        "velocities": encode_array(s.velocities, "<f8"),
    }


def decode_state(doc: object, name: str, max_bytes: int) -> State:
    if not isinstance(doc, dict):
        raise WireError(f"{name}: expected a state object, got {_type_name(doc)}")
    step = get_int(doc, "step", 0, 2**62)
    pos = decode_array(doc.get("positions"), f"{name}.positions", "<f8", 2, max_bytes)
    vel = decode_array(doc.get("velocities"), f"{name}.velocities", "<f8", 2, max_bytes)
    try:
        return State(positions=pos, velocities=vel, step=step)
    except SimsError as e:
        raise WireError(f"{name}: {e}") from e


# -- tasks (coordinator -> volunteer) ------------------------------------------------------


def encode_spec(spec: RunSpec) -> dict[str, Any]:
    return {
        "steps": spec.steps,
        "segment_steps": spec.segment_steps,
        "report_steps": spec.report_steps,
        "temperature": spec.temperature,
        "seed": spec.seed,
    }


def encode_task(task: ComputeTask | SpotCheckTask, system: str, engine: str) -> dict[str, Any]:
    """``system`` is the hex digest the client fetches (and caches) the system by."""
    price: PriceInputs | None
    states: tuple[State, ...]
    segments: tuple[int, ...]
    if isinstance(task, ComputeTask):
        number, states, price, segments = task.replica, (task.input_state,), task.price, ()
    else:
        number, states, price, segments = task.check, task.start_states, None, task.segments
    return task_document(
        wu_id=task.wu_id,
        system=system,
        engine=engine,
        spec=task.spec,
        number=number,
        states=states,
        price=price,
        segments=segments,
    )


def task_document(
    *,
    wu_id: bytes,
    system: str,
    engine: str,
    spec: RunSpec,
    number: int,
    states: tuple[State, ...],
    price: PriceInputs | None,
    segments: tuple[int, ...] = (),
) -> dict[str, Any]:
    """A task as JSON from its parts, the one encoder of both kinds: a compute task when it
    has a ``price`` (``number`` its replica, ``states`` its one input state), else a spot
    check (``number`` the check, ``states`` the start state of each of ``segments``)."""
    base = {
        "wu_id": wu_id.hex(),
        "system": system,
        "engine": engine,
        "spec": encode_spec(spec),
    }
    if price is not None:
        (input_state,) = states
        return {
            "kind": "compute",
            "replica": number,
            "input_state": encode_state(input_state),
            "price": price_fields(price),
            **base,
        }
    return {
        "kind": "spot_check",
        "check": number,
        "segments": list(segments),
        "start_states": [encode_state(s) for s in states],
        **base,
    }


def task_header(doc: object) -> tuple[str, str]:
    """(kind, system digest hex) of a task, checked, before the system is fetched."""
    if not isinstance(doc, dict):
        raise WireError(f"task: expected an object, got {_type_name(doc)}")
    kind = doc.get("kind")
    if kind not in ("compute", "spot_check"):
        raise WireError(f"task.kind: expected 'compute' or 'spot_check', got {kind!r}")
    return kind, get_hex(doc, "system", 32).hex()


def decode_task(
    doc: dict[str, Any], system: SystemDefinition, max_bytes: int = 1 << 30
) -> ComputeTask | SpotCheckTask:
    kind, _ = task_header(doc)
    s = get_object(doc, "spec")
    try:
        spec = RunSpec(
            steps=get_int(s, "steps", 1, 10**9),
            segment_steps=get_int(s, "segment_steps", 1, 10**9),
            report_steps=get_int(s, "report_steps", 1, 10**9),
            temperature=get_float(s, "temperature"),
            seed=get_int(s, "seed", 0, 2**64 - 1),
        )
    except SimsError as e:
        raise WireError(f"task.spec: {e}") from e
    wu = get_hex(doc, "wu_id", 32)
    engine = get_str(doc, "engine", 64)
    if engine != engine_name(system):  # the lane it was pulled in: what the volunteer chose
        raise WireError(
            f"task.engine: the task says {engine!r}, but its system is one of "
            f"{engine_name(system)!r}; expected the engine of its system"
        )
    n_particles = particle_count(system)
    if kind == "compute":
        check_size(n_particles, spec)
        task = ComputeTask(
            wu,
            get_int(doc, "replica", 1, 2**62),
            system,
            spec,
            decode_state(doc.get("input_state"), "input_state", max_bytes),
            decode_price(doc.get("price"), "task.price"),
        )
        check_price(task)
        if "deadline" in doc:  # the issue time signed is the one the deadline implies
            deadline_ms = get_float(doc, "deadline") * 1000
            implied = task.price.issued_at_ms + task.price.deadline_s * 1000
            if not abs(deadline_ms - implied) <= 1000:
                raise WireError(
                    f"task.price: issued_at_ms + deadline_s must be the task's deadline: "
                    f"expected {deadline_ms:.0f} ms (within 1 s), got {implied} ms"
                )
        return task
    segments = tuple(get_int({"s": k}, "s", 0, 10**9) for k in get_list(doc, "segments", 10**4))
    check_size(n_particles, spec, len(segments))
    starts = tuple(
        decode_state(x, f"start_states[{i}]", max_bytes)
        for i, x in enumerate(get_list(doc, "start_states", 10**4))
    )
    if len(starts) != len(segments):
        raise WireError(f"{len(segments)} segments but {len(starts)} start states")
    return SpotCheckTask(wu, get_int(doc, "check", 1, 2**62), system, spec, segments, starts)


def decode_price(doc: object, name: str) -> PriceInputs:
    """A task's or a result header's ``price``: exactly the five priced fields."""
    if not isinstance(doc, dict):
        raise WireError(f"{name}: expected an object, got {_type_name(doc)}")
    if set(doc) != set(PriceInputs.FIELDS):
        raise WireError(
            f"{name}: expected the fields {sorted(PriceInputs.FIELDS)}, got {sorted(doc)[:10]}"
        )
    try:
        return PriceInputs(
            engine=get_str(doc, "engine", 64),
            n_particles=get_int(doc, "n_particles", 0, 2**32 - 1),
            steps=get_int(doc, "steps", 0, 2**64 - 1),
            deadline_s=get_int(doc, "deadline_s", 0, 2**32 - 1),
            issued_at_ms=get_int(doc, "issued_at_ms", 0, 2**64 - 1),
        )
    except EntryFormatError as e:
        raise WireError(f"{name}: {e}") from e


# -- results (volunteer -> coordinator) ----------------------------------------------------


def encode_result(result: WorkerResult) -> bytes:
    """A result upload: the header's canonical JSON and the signature in the manifest, then
    the arrays (boundary states, frames, frame steps, observables) raw."""
    arrays: dict[str, np.ndarray] = {
        "positions": np.asarray(result.positions, dtype="<f8"),
        "velocities": np.asarray(result.velocities, dtype="<f8"),
        "frames": np.asarray(result.frames, dtype="<f4"),
        "frame_steps": np.asarray(result.frame_steps, dtype="<i8"),
    }
    arrays |= {f"obs_{k}": np.asarray(v, dtype="<f8") for k, v in result.observables.items()}
    meta = {
        "header": result.header.canonical().decode(),
        "signature": result.signature.hex(),
    }
    return pack_arrays(arrays, meta)


def decode_result(data: bytes | bytearray, *, max_bytes: int) -> WorkerResult:
    """A result upload, checked for kinds, dtypes and dimensions (sizes are the WU's job)."""
    if len(data) > max_bytes:
        raise WireError(f"the upload is {len(data):,} bytes; the limit is {max_bytes:,}")
    manifest, arrays = read_container(data)
    if set(manifest) != {"header", "signature", "arrays"}:
        raise WireError(
            f"manifest: expected header, signature and arrays, got {sorted(manifest)[:10]}"
        )
    for name in _RESULT_ARRAYS:
        if name not in arrays:
            raise WireError(f"the upload has no {name!r} array")
    for name, arr in arrays.items():
        if name in _RESULT_ARRAYS:
            dtype, ndim = _RESULT_ARRAYS[name]
        elif name.startswith("obs_") and len(name) > 4:
            dtype, ndim = "<f8", 1
        else:
            raise WireError(f"unexpected array {name[:40]!r} in the upload")
        if arr.dtype != _DTYPES[dtype] or arr.ndim != ndim:
            raise WireError(
                f"{name}: expected {ndim}-D {dtype}, got {arr.ndim}-D {arr.dtype.str} "
                f"{tuple(arr.shape)}"
            )
    sig = get_hex(manifest, "signature", 64)
    text = get_str(manifest, "header", 1 << 20)
    # JSON text that starts with "{" and a second character other than NUL is read as UTF-8
    # (json.detect_encoding), and text that get_str accepted encodes and decodes to itself:
    # parsing it as it is gives what parsing its bytes gives, without the two conversions.
    header = decode_header(text if text[:1] == "{" and text[1:2] != "\0" else text.encode())
    return WorkerResult(
        header,
        sig,
        arrays["positions"],
        arrays["velocities"],
        arrays["frames"],
        arrays["frame_steps"],
        {k[4:]: v for k, v in arrays.items() if k.startswith("obs_")},
    )


def decode_header(raw: bytes | str) -> ResultHeader:
    doc = loads_json(raw)
    if not isinstance(doc, dict):
        raise WireError(f"the body must be a JSON object, got {_type_name(doc)}")
    expected = {
        "boundary_digests",
        "determinism",
        "final_digest",
        "frames_digest",
        "n_atoms",
        "observables_digest",
        "price",
        "segment_data",
        "segment_root",
        "version",
        "wall_time_s",
        "worker_key",
        "wu_id",
    }
    if set(doc) != expected:
        raise WireError(f"header: expected the fields {sorted(expected)}, got {sorted(doc)[:20]}")
    digests = get_list(doc, "boundary_digests", 100_000)
    wall = get_str(doc, "wall_time_s", 40)
    try:
        wall_s = float(wall)
    except ValueError as e:
        raise WireError(f"header.wall_time_s: expected a number, got {wall!r}") from e
    return ResultHeader(
        wu_id=get_hex(doc, "wu_id", 32),
        worker_key=get_hex(doc, "worker_key", 32),
        determinism=get_str(doc, "determinism", 4096),
        boundary_digests=tuple(_digest(d) for d in digests),
        segment_root=get_hex(doc, "segment_root", 32),
        final_digest=get_hex(doc, "final_digest", 32),
        frames_digest=get_hex(doc, "frames_digest", 32),
        observables_digest=get_hex(doc, "observables_digest", 32),
        n_atoms=get_int(doc, "n_atoms", 1, 10**8),
        wall_time_s=wall_s,
        price=decode_price(doc.get("price"), "header.price"),
        version=get_int(doc, "version", 0, 1000),
        segment_data=tuple(_digest(d) for d in get_list(doc, "segment_data", 100_000)),
    )


def _digest(d: object) -> bytes:
    """A 32-byte digest in hex from a list (``get_hex``, which names the item ``d``): 64 hex
    digits are read at once, anything else goes through ``get_hex`` for its error."""
    if type(d) is str and len(d) == 64:
        try:
            raw = bytes.fromhex(d)
        except ValueError:
            pass
        else:
            if len(raw) == 32:
                return raw
    return get_hex({"d": d}, "d", 32)


def encode_spot_check(r: SpotCheckResult) -> dict[str, Any]:
    return {
        "wu_id": r.wu_id.hex(),
        "check": r.check,
        "segments": list(r.segments),
        "end_digests": [d.hex() for d in r.end_digests],
        "segment_data": [d.hex() for d in r.segment_data],
        "determinism": r.determinism,
        "worker_key": r.worker_key.hex(),
        "signature": r.signature.hex(),
        "end_states": [encode_state(st) for st in r.end_states],
        "segment_frames": [
            {
                "frames": encode_array(f.frames, "<f4"),
                "steps": encode_array(f.steps, "<i8"),
                "observables": {k: encode_array(v, "<f8") for k, v in f.observables.items()},
            }
            for f in r.segment_frames
        ],
    }


def _decode_segment_frames(doc: object, name: str, max_bytes: int) -> SegmentFrames:
    if not isinstance(doc, dict):
        raise WireError(f"{name}: expected a segment's frames object, got {_type_name(doc)}")
    obs = doc.get("observables")
    if not isinstance(obs, dict) or len(obs) > 64 or any(len(k) > 64 for k in obs):
        raise WireError(
            f"{name}.observables: expected an object of at most 64 arrays, named in at most "
            "64 characters"
        )
    return SegmentFrames(
        decode_array(doc.get("frames"), f"{name}.frames", "<f4", 3, max_bytes),
        decode_array(doc.get("steps"), f"{name}.steps", "<i8", 1, max_bytes),
        {
            k: decode_array(v, f"{name}.observables.{k}", "<f8", 1, max_bytes)
            for k, v in obs.items()
        },
    )


def decode_spot_check(doc: dict[str, Any], *, max_state_bytes: int = 1 << 20) -> SpotCheckResult:
    segments = get_list(doc, "segments", 10**4)
    ends = get_list(doc, "end_digests", 10**4)
    states = get_list(doc, "end_states", 10**4) if "end_states" in doc else []
    if len(ends) != len(segments):
        raise WireError(
            f"end_digests: expected one digest per segment ({len(segments)}), got {len(ends)}"
        )
    if states and len(states) != len(segments):
        raise WireError(
            f"end_states: expected none or one per segment ({len(segments)}), got {len(states)}"
        )
    data = get_list(doc, "segment_data", 10**4) if "segment_data" in doc else []
    seg_frames = get_list(doc, "segment_frames", 10**4) if "segment_frames" in doc else []
    if seg_frames and len(seg_frames) != len(segments):
        raise WireError(
            f"segment_frames: expected none or one per segment ({len(segments)}), got "
            f"{len(seg_frames)}"
        )
    return SpotCheckResult(
        get_hex(doc, "wu_id", 32),
        get_int(doc, "check", 1, 2**62),
        tuple(get_int({"s": k}, "s", 0, 10**9) for k in segments),
        tuple(get_hex({"d": d}, "d", 32) for d in ends),
        get_str(doc, "determinism", 4096),
        get_hex(doc, "worker_key", 32),
        get_hex(doc, "signature", 64),
        tuple(decode_state(st, f"end_states[{i}]", max_state_bytes) for i, st in enumerate(states)),
        tuple(get_hex({"d": d}, "d", 32) for d in data),
        tuple(
            _decode_segment_frames(f, f"segment_frames[{i}]", max_state_bytes)
            for i, f in enumerate(seg_frames)
        ),
    )
