"""No bare builtin error crosses a package boundary.

Every error a caller of foldnet can meet is a :class:`~foldnet.errors.FoldnetError` of the
package that raised it (``foldnet.errors`` says why: the kind fixes the HTTP and exit status).
Two checks hold that line:

- statically, no product module raises ``ValueError``, ``RuntimeError``, ``KeyError``,
  ``TypeError``, ``IndexError`` or ``Exception`` itself (a package's own class may subclass
  one of them; a bare ``raise`` re-raising what was caught is fine);
- dynamically, every public entry point that parses or decodes outside input (PDB text,
  wire bodies, array containers, ledger entries, notes and checkpoints, result headers,
  event logs, job plans) answers garbage with its package's error root and nothing else:
  a ``json.JSONDecodeError``, ``struct.error``, ``IndexError`` or ``AttributeError`` from
  inside would be a leak.
"""

from __future__ import annotations

import ast
import io
import json
import random
import shutil
import struct
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger_helpers import build_ledger, export

import coordinator
import foldnet
import ledger
import sims
import worker
from coordinator.analysis import load_results
from coordinator.classes import parse_class
from coordinator.codec import decode_event
from coordinator.errors import CoordinatorError
from coordinator.plan import JobPlan
from coordinator.provenance import read_bundle, verify_results
from coordinator.service import _stored_plan
from coordinator.store import _decode_header
from coordinator.trajfiles import pdb_positions, read_xtc
from foldnet.errors import FoldnetError
from foldnet.httpclient import parse_error
from ledger.audit import run_audit
from ledger.checkpoint import Checkpoint
from ledger.cosignature import cosignature_timestamp
from ledger.entries import _TYPES as ENTRY_TYPES
from ledger.entries import PriceInputs, Record, VolunteerRegistered, decode_record
from ledger.errors import LedgerError
from ledger.keys import parse_vkey
from ledger.note import Ed25519NoteSigner, parse_note
from ledger.rules import revocation_evidence
from ledger.tiles import parse_tile_path
from ledger.witness import Witness
from sims.errors import SimsError
from sims.examples import VILLIN_PDB
from sims.go.model import GoModel
from sims.spec import RunSpec
from sims.state import State
from sims.structure import parse_pdb, parse_sequence, read_pdb
from worker.arrays import pack_arrays, read_container
from worker.errors import WorkerError
from worker.status import WorkerStatus
from worker.systems import decode_system
from worker.wire import (
    decode_array,
    decode_header,
    decode_price,
    decode_result,
    decode_spot_check,
    decode_state,
    decode_task,
    loads_json,
    parse_json_object,
    task_header,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (foldnet, sims, worker, coordinator, ledger)

# -- the static check --------------------------------------------------------------------------

#: Builtin classes a product module must not raise itself: a caller cannot tell one from
#: the same class thrown by a library underneath, and it has no kind (status, exit code).
BANNED = frozenset({"ValueError", "RuntimeError", "KeyError", "TypeError", "IndexError"}) | {
    "Exception"
}


def bare_raises(source: str, where: str) -> list[str]:
    """``where:line: text`` of each ``raise`` of a :data:`BANNED` builtin in ``source``."""
    tree = ast.parse(source)
    # A module that defines or imports a class under a banned name raises its own class.
    shadowed = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom | ast.Import):
            shadowed |= {a.asname or a.name for a in node.names}
    banned = BANNED - shadowed
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(target, ast.Name) and target.id in banned:
            hits.append((node.lineno, f"{where}:{node.lineno}: {ast.unparse(node)[:100]}"))
    return [text for _, text in sorted(hits)]


def product_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in Path(pkg.__path__[0]).rglob("*.py"))


def test_the_static_check_sees_a_bare_raise():
    """The scanner itself: it must flag what it exists to flag, and only that."""
    source = (
        "from worker.errors import WireError\n"
        "def f(x):\n"
        "    if x:\n"
        "        raise ValueError('no')\n"
        "    try:\n"
        "        g()\n"
        "    except KeyError:\n"
        "        raise\n"
        "    raise WireError('fine')\n"
        "def h():\n"
        "    raise RuntimeError\n"
        "def k():\n"
        "    raise KeyError('x') from None\n"
    )
    assert bare_raises(source, "m.py") == [
        "m.py:4: raise ValueError('no')",
        "m.py:11: raise RuntimeError",
        "m.py:13: raise KeyError('x') from None",
    ]
    shadowing = "class ValueError(Exception):\n    pass\ndef f():\n    raise ValueError('x')\n"
    assert bare_raises(shadowing, "m.py") == []


def test_no_product_module_raises_a_bare_builtin_error():
    modules = product_modules()
    assert len(modules) > 100  # the walk found the packages
    hits = [
        hit
        for path in modules
        for hit in bare_raises(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert hits == [], "raise the package's own error class (its errors module) instead"


# -- the dynamic check -------------------------------------------------------------------------

ROOTS: dict[str, type[FoldnetError]] = {
    "sims": SimsError,
    "worker": WorkerError,
    "coordinator": CoordinatorError,
    "ledger": LedgerError,
}


def _truncations(data: bytes, step: int = 1) -> list[bytes]:
    return [data[:n] for n in range(0, len(data), step)]


def _flips(data: bytes, count: int, seed: int) -> list[bytes]:
    """``count`` copies of ``data`` with one byte changed at a seeded random place."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        b = bytearray(data)
        i = rng.randrange(len(b))
        b[i] = (b[i] + rng.randrange(1, 256)) % 256
        out.append(bytes(b))
    return out


DEEP_JSON = "[" * 100_000 + "]" * 100_000
#: Text no JSON parser takes (or only one too trusting: nesting past the stack).
INVALID_JSON_TEXT = ["", "{", "nul", "[1,]", DEEP_JSON, '{"a": 1', "{" * 50 + "}" * 50]
INVALID_JSON_BYTES = [t.encode() for t in INVALID_JSON_TEXT] + [
    b"\xff\xfe\x00",
    b"\x00" * 16,
]
#: JSON, but not the object any decoder here wants.
WRONG_JSON_TEXT = ["[]", "1", '"text"', "null", '{"a": 1}', '{"a": NaN}', "[" * 500 + "]" * 500]
BAD_JSON_TEXT = INVALID_JSON_TEXT + WRONG_JSON_TEXT
BAD_JSON_BYTES = INVALID_JSON_BYTES + [t.encode() for t in WRONG_JSON_TEXT]
NOT_OBJECT_BYTES = [t for t in BAD_JSON_BYTES if not t.startswith(b"{")]
#: JSON values of every type, as a decoded body may hold anywhere.
JSON_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    float("nan"),
    float("inf"),
    "",
    "x" * 1000,
    [],
    [1, 2],
    {},
    {"a": None},
]

CASES: list[Any] = []


def cases(
    name: str,
    package: str,
    entry: Callable[[Any], object],
    inputs: Iterable[Any],
    *,
    may_parse: bool = False,
) -> None:
    """Garbage ``inputs`` for ``entry``; ``may_parse``: some may still be valid (a changed
    byte of a valid encoding), so those must raise the package's error or return."""
    CASES.append(pytest.param(entry, tuple(inputs), ROOTS[package], may_parse, id=name))


def _objects_with(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """``fields`` with each field in turn missing, or replaced by each of :data:`JSON_VALUES`."""
    out = [{}]
    for k in fields:
        out.append({n: v for n, v in fields.items() if n != k})
        out += [{**fields, k: v} for v in JSON_VALUES]
    return out


def variants(
    name: str,
    package: str,
    entry: Callable[[Any], object],
    valid: dict[str, Any],
    encode: Callable[[dict[str, Any]], Any] = lambda d: d,
) -> None:
    """Every one-field change of the ``valid`` object (an optional field may go, a value may
    fit): each must parse or raise the package's error."""
    cases(name, package, entry, [encode(d) for d in _objects_with(valid)], may_parse=True)


# ---- worker: array containers, wire bodies, systems, status files

_CONTAINER = pack_arrays(
    {"a": np.arange(6.0).reshape(2, 3), "b": np.arange(4, dtype="<i4")}, {"meta": 1}
)


def _container(manifest: object, tail: bytes = b"") -> bytes:
    m = json.dumps(manifest).encode()
    return b"FNA1" + len(m).to_bytes(4, "little") + m + tail


_CONTAINER_GARBAGE = [
    *_truncations(_CONTAINER),
    _CONTAINER + b"\0",
    b"FNA1" + (2**32 - 1).to_bytes(4, "little"),
    _container([]),
    _container({"arrays": [["a", "<f8", [2**31 - 1, 2**31 - 1]]]}),
    _container({"arrays": [["a", "<f8", [-1]]]}),
    _container({"arrays": [["a", "<f8", [True]]]}),
    _container({"arrays": [["a", "<f8", [1.5]]]}),
    _container({"arrays": [["a", "O", [1]]]}, b"\0" * 8),
    _container({"arrays": [["a", ["<f8"], [1]]]}, b"\0" * 8),
    _container({"arrays": [[["a"], "<f8", [1]]]}, b"\0" * 8),
    _container({"arrays": [["a", "<f8", [1]], ["a", "<f8", [1]]]}, b"\0" * 16),
    _container({"arrays": [["a", "<f8", 1]]}, b"\0" * 8),
    _container({"arrays": [["a", "<f8", [1, 1, 1, 1, 1]]]}, b"\0" * 8),
    _container({"arrays": "abc"}),
    _container({"arrays": [None]}),
    b"FNA1" + (5).to_bytes(4, "little") + DEEP_JSON.encode()[:5],
    b"FNA1" + len(DEEP_JSON).to_bytes(4, "little") + DEEP_JSON.encode(),
]
cases("read_container", "worker", read_container, _CONTAINER_GARBAGE)
_CONTAINER_FLIPS = _flips(_CONTAINER, 200, seed=1)
cases("read_container_flips", "worker", read_container, _CONTAINER_FLIPS, may_parse=True)
cases("read_container_names", "worker", lambda d: read_container(d, ["zz"]), [_CONTAINER])
cases("decode_result", "worker", lambda d: decode_result(d, max_bytes=1 << 20), _CONTAINER_GARBAGE)
_RESULT_META = {"header": "{}", "signature": "00" * 64}
cases(
    "decode_result_manifest",
    "worker",
    lambda d: decode_result(d, max_bytes=1 << 20),
    [
        pack_arrays({}, _RESULT_META),
        pack_arrays({"positions": np.zeros((2, 3))}, _RESULT_META),
        *(
            pack_arrays(
                {
                    "positions": np.zeros((1, 2, 3)),
                    "velocities": np.zeros((1, 2, 3)),
                    "frames": np.zeros((1, 2, 3), "<f4"),
                    "frame_steps": np.zeros(1, "<i8"),
                },
                {**_RESULT_META, **extra},
            )
            for extra in (
                {},
                {"header": 1},
                {"header": DEEP_JSON},
                {"signature": "zz"},
                {"signature": 5},
            )
        ),
        pack_arrays({"obs_": np.zeros(1)}, _RESULT_META),
    ],
)
cases("loads_json", "worker", loads_json, INVALID_JSON_TEXT + INVALID_JSON_BYTES)
cases("parse_json_object", "worker", parse_json_object, NOT_OBJECT_BYTES)
_ARRAY_DOC = {"dtype": "<f8", "shape": [2, 3], "data": "A" * 64}
cases(
    "decode_array",
    "worker",
    lambda d: decode_array(d, "x", "<f8", 2, 1 << 20),
    [
        *JSON_VALUES,
        {**_ARRAY_DOC, "shape": [2**40, 2**40]},
        {**_ARRAY_DOC, "shape": [2**31, 0]},
        {**_ARRAY_DOC, "shape": [-2, -3]},
        {**_ARRAY_DOC, "data": "A" * 63},
        {**_ARRAY_DOC, "data": "!" * 64},
    ],
)
_STATE_DOC = {"step": 0, "positions": _ARRAY_DOC, "velocities": _ARRAY_DOC}
_NAN_ARRAY = {
    "dtype": "<f8",
    "shape": [1, 3],
    "data": "AAAAAAAA+H8AAAAAAAD4fwAAAAAAAPh/",  # three NaN
}
variants(
    "decode_array_fields", "worker", lambda d: decode_array(d, "x", "<f8", 2, 1 << 20), _ARRAY_DOC
)
cases(
    "decode_state",
    "worker",
    lambda d: decode_state(d, "s", 1 << 20),
    [
        *JSON_VALUES,
        {**_STATE_DOC, "positions": _NAN_ARRAY, "velocities": _NAN_ARRAY},
        {**_STATE_DOC, "step": -1},
    ],
)
variants("decode_state_fields", "worker", lambda d: decode_state(d, "s", 1 << 20), _STATE_DOC)
_PRICE_DOC = {"engine": "go", "n_particles": 3, "steps": 10, "deadline_s": 5, "issued_at_ms": 1}
cases("decode_price", "worker", lambda d: decode_price(d, "p"), [*JSON_VALUES, {}])
variants("decode_price_fields", "worker", lambda d: decode_price(d, "p"), _PRICE_DOC)
_SPEC_DOC = {"steps": 10, "segment_steps": 5, "report_steps": 5, "temperature": 0.8, "seed": 1}
_TASK_DOC = {
    "kind": "compute",
    "wu_id": "00" * 32,
    "system": "00" * 32,
    "engine": "go",
    "spec": _SPEC_DOC,
    "replica": 1,
    "input_state": _STATE_DOC,
    "price": _PRICE_DOC,
    "deadline": 1.0,
}
_SPOT_DOC = {
    **_TASK_DOC,
    "kind": "spot_check",
    "check": 1,
    "segments": [0],
    "start_states": [_STATE_DOC],
}
cases("task_header", "worker", task_header, [*JSON_VALUES, {}, {"kind": "x"}, {"kind": "compute"}])
variants("task_header_fields", "worker", task_header, _TASK_DOC)
_SYSTEM = GoModel.from_pdb(VILLIN_PDB)
cases(
    "decode_task",
    "worker",
    lambda d: decode_task(d, _SYSTEM),
    [{}, {**_TASK_DOC, "spec": {}}, {**_SPOT_DOC, "segments": [0, 1]}],
)
variants("decode_task_fields", "worker", lambda d: decode_task(d, _SYSTEM), _TASK_DOC)
variants("decode_spot_task_fields", "worker", lambda d: decode_task(d, _SYSTEM), _SPOT_DOC)
variants(
    "decode_task_spec_fields",
    "worker",
    lambda d: decode_task({**_TASK_DOC, "spec": d}, _SYSTEM),
    _SPEC_DOC,
)
_HEADER_DOC = {
    "boundary_digests": ["00" * 32],
    "determinism": "{}",
    "final_digest": "00" * 32,
    "frames_digest": "00" * 32,
    "n_atoms": 3,
    "observables_digest": "00" * 32,
    "price": _PRICE_DOC,
    "segment_data": ["00" * 32],
    "segment_root": "00" * 32,
    "version": 1,
    "wall_time_s": "1.5",
    "worker_key": "00" * 32,
    "wu_id": "00" * 32,
}
cases(
    "decode_header",
    "worker",
    decode_header,
    [
        *BAD_JSON_BYTES,
        json.dumps({**_HEADER_DOC, "boundary_digests": [None, 5]}).encode(),
    ],
)
cases(  # a non-finite time decodes; verify_result refuses it
    "decode_header_times",
    "worker",
    decode_header,
    [json.dumps({**_HEADER_DOC, "wall_time_s": t}).encode() for t in ("nan", "-inf", "1e999")],
    may_parse=True,
)
variants(
    "decode_header_fields", "worker", decode_header, _HEADER_DOC, lambda d: json.dumps(d).encode()
)
_SPOT_RESULT_DOC = {
    "wu_id": "00" * 32,
    "check": 1,
    "segments": [0],
    "end_digests": ["00" * 32],
    "segment_data": ["00" * 32],
    "determinism": "{}",
    "worker_key": "00" * 32,
    "signature": "00" * 64,
    "end_states": [_STATE_DOC],
}
cases("decode_spot_check", "worker", decode_spot_check, [{}, {**_SPOT_RESULT_DOC, "segments": []}])
variants("decode_spot_check_fields", "worker", decode_spot_check, _SPOT_RESULT_DOC)


def _npz(meta: object, **arrays: Any) -> bytes:
    buf = io.BytesIO()
    m = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buf, meta=m, **arrays)
    return buf.getvalue()


def _pickled_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([{"a": 1}], dtype=object))
    return buf.getvalue()


_GO_META = {"kind": "go", "sequence": "AA", "source": "x", "gaps": [], "scalars": [1] * 6}
_SYSTEM_NPZ = _npz(_GO_META, contact_pairs=np.zeros((1, 2), "<i8"), contact_d=np.ones(1))
cases(
    "decode_system",
    "worker",
    decode_system,
    [
        b"",
        b"garbage",
        b"PK\x03\x04" + b"\0" * 40,
        *_truncations(_SYSTEM_NPZ, 97),
        _pickled_npz(),
        _npz([]),
        _npz(None),
        _npz({"kind": "nope"}),
        _npz({"kind": "go"}),
        _npz({"kind": "openmm"}),
        _npz({"kind": "openmm", "pdb": 5}),
        _npz({"kind": "openmm", "pdb": "garbage"}, positions=np.zeros((1, 3))),
        _npz({**_GO_META, "scalars": [1]}, contact_pairs=np.zeros((1, 2)), contact_d=np.ones(1)),
        _npz({**_GO_META, "gaps": 5}, contact_pairs=np.zeros((1, 2)), contact_d=np.ones(1)),
        _SYSTEM_NPZ,  # a go model with none of its arrays
        _npz(
            {**_GO_META, "scalars": [1] * 6},
            contact_pairs=np.zeros((1, 2)),
            contact_d=np.ones(1),
            native=np.zeros((2, 3)),
            unexpected=np.zeros(1),
        ),
    ],
)
_STATUS_DOC = json.loads(
    WorkerStatus(
        pid=1,
        process_start="1",
        server="http://s",
        volunteer="v",
        home="/h",
        started_at=1.0,
        updated_at=1.0,
        running=True,
        stopping=False,
        slots=(),
    ).to_json()
)
cases(
    "worker_status",
    "worker",
    lambda d: WorkerStatus.from_json(d, Path("status.json")),
    [
        *BAD_JSON_BYTES,
        json.dumps({**_STATUS_DOC, "slots": [None]}).encode(),
        json.dumps({**_STATUS_DOC, "slots": [[1]]}).encode(),
    ],
)

variants(
    "worker_status_fields",
    "worker",
    lambda d: WorkerStatus.from_json(d, Path("status.json")),
    _STATUS_DOC,
    lambda d: json.dumps(d).encode(),
)

# ---- sims: structures, sequences, states, run specs

_PDB_LINE = "ATOM      1  CA  ALA A   1      11.104   6.134  -6.504  1.00  0.00           C"
cases(
    "parse_pdb",
    "sims",
    parse_pdb,
    [
        "",
        "garbage\n",
        "\x00\x01",
        "ATOM",
        "ATOM  ",
        _PDB_LINE[:40],
        _PDB_LINE.replace("11.104", "  nan "),
        _PDB_LINE.replace("11.104", " 1e999"),
        _PDB_LINE.replace("   1  ", "  x1  "),
        _PDB_LINE.replace("ALA", "ZZZ"),
        "\n".join(_PDB_LINE[:n] for n in range(0, 80, 3)),
        "MODEL        1\nENDMDL\n",
    ],
)
cases(  # odd, but a structure: the engines judge whether they can build from it
    "parse_pdb_odd",
    "sims",
    parse_pdb,
    [_PDB_LINE + "\n" + _PDB_LINE, "HETATM" + _PDB_LINE[6:], "END\n" + _PDB_LINE],
    may_parse=True,
)
cases("parse_pdb_chain", "sims", lambda t: parse_pdb(t, chain="Q"), [_PDB_LINE])
cases("parse_sequence", "sims", parse_sequence, ["", " ", "A", "AZ", "1234", "\x00", "ÄÖ"])
cases(
    "state",
    "sims",
    lambda a: State(positions=a, velocities=np.zeros((1, 3))),
    [
        None,
        "abc",
        [],
        [[1, 2]],
        [[np.nan, 0, 0]],
        [[np.inf, 0, 0]],
        np.zeros((2, 3)),
        [[1, 2, 3], [4, 5]],
        {"a": 1},
        np.zeros((1, 3), dtype=complex) + 1j,
    ],
)
cases(
    "run_spec",
    "sims",
    lambda v: RunSpec(steps=v, segment_steps=1, report_steps=1, temperature=1.0, seed=1),
    [None, "10", 1.5, -1, 0, 2**80, float("nan"), True],
)
cases(
    "run_spec_temperature",
    "sims",
    lambda v: RunSpec(steps=10, segment_steps=5, report_steps=5, temperature=v, seed=1),
    [None, "1", float("nan"), float("inf"), -1.0, 0.0, [1.0]],
)

# ---- coordinator: event log, job plans, classes, trajectory files

_EVENTS = [
    "",
    "[]",
    "1",
    "null",
    '"Tick"',
    DEEP_JSON,
    '{"type": "Tick"}',
    '{"type": "Tick", "body": []}',
    '{"type": "Tick", "body": {"nope": 1}}',
    '{"type": "Nope", "body": {}}',
    '{"type": [], "body": {}}',
    '{"type": {}, "body": {}}',
    '{"type": "JobSubmitted", "body": {"spec": 1}}',
    '{"type": "JobSubmitted", "body": {"spec": {}, "start_digests": [], "job": "j"}}',
    '{"type": "JobSubmitted", "body": {"spec": {"system_digest": 5}}}',
    '{"type": "JobSubmitted", "body": {"spec": {"system_digest": {"hex": "zz"}}}}',
    '{"type": "JobSubmitted", "body": {"spec": [["a", 1]], "start_digests": []}}',
    '{"type": "ResultReturned", "body": {"claim": []}}',
    '{"type": "ResultReturned", "body": {"claim": {"final_digest": "ab"}}}',
    '{"type": "GenerationSeeded", "body": {"job": "j", "run": 0, "clone": 0, "gen": 1,'
    ' "parent_wu": {"hex": ""}, "boundary": 0, "parent_state": {"hex": ""},'
    ' "input_digest": {"hex": ""}, "decision": {"hex": ""}, "now": "soon"}}',
    '{"type": "BeaconPublished", "body": {"value": {"hex": "00"}, "now": []}}',
    '{"type": "BeaconPublished", "body": []}',
    '{"type": "SpotCheckReturned", "body": {"end_digests": 5}}',
]
cases("decode_event", "coordinator", decode_event, _EVENTS)
_PLAN = JobPlan.create(engine="go", pdb=_PDB_LINE + "\n").to_json()
cases(
    "job_plan_from_json",
    "coordinator",
    JobPlan.from_json,
    [
        {},
        {"engine": "go"},
        {**_PLAN, "nope": 1},
        *({**_PLAN, "engine": "openmm", "pdb": None, "sequence": s} for s in ("AZ", "", 5)),
        {**_PLAN, "runs": 10**30},
        {**_PLAN, "deadline_s": float("nan")},
        {**_PLAN, "audit_rate": float("nan")},
        {**_PLAN, "segment_steps": 3},
    ],
)
variants("job_plan_fields", "coordinator", JobPlan.from_json, _PLAN)
cases(
    "job_plan_create",
    "coordinator",
    lambda kw: JobPlan.create(**kw),
    [
        {"engine": None},
        {"engine": []},
        {"engine": "go"},
        {"engine": "go", "pdb": _PDB_LINE, "steps_per_wu": "many"},
        {"engine": "go", "pdb": _PDB_LINE, "temperature": "hot"},
        {"engine": "go", "pdb": _PDB_LINE, "temperature": float("nan")},
        {"engine": "go", "pdb": _PDB_LINE, "clones": 2**70},
        {"engine": "go", "pdb": _PDB_LINE, "clones": [1]},
        {"engine": "go", "pdb": _PDB_LINE, "min_quorum": {}},
        {"engine": "go", "pdb": _PDB_LINE, "deadline_s": "x"},
        {"engine": "go", "pdb": _PDB_LINE, "audit_rate": "x"},
        {"engine": "go", "pdb": _PDB_LINE, "name": 5},
        {"engine": "go", "pdb": _PDB_LINE, "adaptive": []},
        {"engine": "go", "pdb": _PDB_LINE, "seed": 1.5},
        {"engine": "go", "pdb": _PDB_LINE, "chain": 7},
        {"engine": "openmm", "sequence": ["A", "A"]},
        {"engine": "openmm", "sequence": "AA", "reference": 5},
        {"engine": "go", "pdb": _PDB_LINE, "wat": 1},
    ],
)
cases("stored_plan", "coordinator", lambda b: _stored_plan("j", b), BAD_JSON_TEXT)
cases("stored_header", "coordinator", _decode_header, BAD_JSON_TEXT)
variants(
    "stored_header_fields",
    "coordinator",
    _decode_header,
    {**_HEADER_DOC, "wall_time_s": 1.5},
    json.dumps,
)
cases(
    "parse_class",
    "coordinator",
    parse_class,
    [
        *BAD_JSON_TEXT,
        5,
        None,
        "x" * 5000,
        '{"engine": "go"}',
        '{"engine":"go","extra":5}',
        '{"engine":"go","extra":[[1]]}',
    ],
)
cases(
    "read_xtc",
    "coordinator",
    read_xtc,
    [b"", b"garbage", b"\x00\x00\x07\xcb" + b"\xff" * 100, b"\x00\x00\x07\xcb"],
)
cases(
    "pdb_positions",
    "coordinator",
    pdb_positions,
    ["ATOM  " + "x" * 60, _PDB_LINE.replace("11.104", "  nan ")[:50]],
)

# ---- ledger: entries, prices, notes, checkpoints, keys, tiles, cosignatures

_RECORD = Record(1, VolunteerRegistered(b"\x01" * 32, "volunteer")).encode()
_ENTRY_BODIES = [
    struct.pack(">BBQ", etype, version, 0) + body
    for (etype, version) in sorted(ENTRY_TYPES)
    for body in (b"", b"\x00" * 31, b"\xff" * 40, b"\x00" * 200, b"\xff" * 300, b"\x01" * 1000)
]
cases("decode_record_flips", "ledger", decode_record, _flips(_RECORD, 100, seed=2), may_parse=True)
cases(
    "decode_record",
    "ledger",
    decode_record,
    [
        "text",
        None,
        bytearray(_RECORD),
        *_truncations(_RECORD),
        _RECORD + b"\0",
        *_ENTRY_BODIES,
        b"\xff" * 70_000,
    ],
)
_PRICE = PriceInputs("go", 3, 10, 5, 1).encode()
cases(
    "price_decode",
    "ledger",
    PriceInputs.decode,
    [*_truncations(_PRICE), _PRICE + b"\0", b"\xff" * 200],
)
cases("price_flips", "ledger", PriceInputs.decode, _flips(_PRICE, 60, seed=3), may_parse=True)
_SIGNER = Ed25519NoteSigner("foldnet.test/log", Ed25519PrivateKey.from_private_bytes(b"\1" * 32))
_BODY = Checkpoint("foldnet.test/log", 5, b"\2" * 32).body()
_NOTE = (_BODY + "\n" + _SIGNER.sign(_BODY).line()).encode()
cases(
    "parse_note",
    "ledger",
    parse_note,
    [
        5,
        None,
        *_truncations(_NOTE),
        _NOTE + b"\xff",
        b"a\n\n" + "\u2014 x abc\n".encode() * 1000,
        b"x" * 2_000_000,
        "a\n\n\u2014 x " + "A" * 4 + "\n",
    ],
)
cases(
    "parse_note_flips",
    "ledger",
    parse_note,
    [t.decode("utf-8", "replace") for t in _flips(_NOTE, 100, seed=4)],
    may_parse=True,
)
cases(
    "checkpoint_from_body",
    "ledger",
    Checkpoint.from_body,
    [
        *(_BODY[:n] for n in range(len(_BODY))),
        "o\n99999999999999999999999999\n" + _BODY.split("\n")[2] + "\n",
        "o\n-1\nAA==\n",
        "o\n\u0661\nAA==\n",
    ],
)
cases(
    "checkpoint_flips",
    "ledger",
    Checkpoint.from_body,
    [t.decode("utf-8", "replace") for t in _flips(_BODY.encode(), 100, seed=5)],
    may_parse=True,
)
_VKEY = _SIGNER.verifier.vkey
cases(
    "parse_vkey",
    "ledger",
    parse_vkey,
    [
        "",
        "+",
        "a+b+c",
        *(_VKEY[:n] for n in range(0, len(_VKEY), 4)),
        _VKEY.replace("+", "\u2014+", 1),
        " +" + _VKEY.split("+", 1)[1],
        "x" * 100_000,
    ],
)
cases(
    "parse_tile_path",
    "ledger",
    parse_tile_path,
    [
        "",
        "tile",
        "tile/0",
        "tile/0/",
        "tile/x/000",
        "tile/64/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/",
        "tile/0/x000/001",
        "tile/0/" + "x001/" * 30 + "000",
        "tile/entries/\u0661\u0662\u0663",
        "tile/0/0000",
    ],
)
cases("cosignature_timestamp", "ledger", cosignature_timestamp, [b"", b"\0" * 71, b"\0" * 73])


def _show(garbage: object) -> str:
    return repr(garbage)[:60]


@pytest.mark.parametrize(("entry", "inputs", "root", "may_parse"), CASES)
def test_garbage_raises_only_the_package_error(entry, inputs, root, may_parse):
    """Fed garbage, an entry point answers with its package's error, and nothing else.

    Every input is tried, and every leak listed (the first one's traceback chained): each is
    to be translated where it enters (``raise XError(...) from e``)."""
    leaks: list[str] = []
    first: Exception | None = None
    accepted: list[str] = []
    for i, garbage in enumerate(inputs):
        try:
            entry(garbage)
        except root:
            continue
        except Exception as e:  # a foreign error crossing the boundary: what this looks for
            leaks.append(f"input {i} {_show(garbage)}: {type(e).__qualname__}: {str(e)[:120]}")
            first = first or e
            continue
        if not may_parse:
            accepted.append(f"input {i} {_show(garbage)}")
    if leaks:
        raise AssertionError(
            f"{len(leaks)} of {len(inputs)} inputs raised something other than "
            f"{root.__qualname__}:\n" + "\n".join(leaks)
        ) from first
    assert accepted == [], "garbage was accepted"


def test_every_package_has_garbage_cases():
    roots = {p.values[2] for p in CASES}
    assert roots == set(ROOTS.values())
    assert sum(len(p.values[1]) for p in CASES) > 3000


# ---- entry points that read files


def test_garbage_files_raise_only_the_package_error(tmp_path):
    garbage = {
        "empty.pdb": b"",
        "binary.pdb": b"\xff\xfe\x00garbage",
        "text.pdb": b"hello\n",
        "latin.pdb": "ATOM  \u00e9".encode("latin-1"),
    }
    for name, data in garbage.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SimsError):
            read_pdb(tmp_path / name)
    with pytest.raises(SimsError):
        read_pdb(tmp_path / "absent.pdb")
    with pytest.raises(SimsError):
        read_pdb(tmp_path)  # a folder


def test_garbage_bundles_raise_only_the_package_error(tmp_path):
    (tmp_path / "notzip.zip").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    (tmp_path / "text.zip").write_bytes(b"hello")
    for name in ("notzip.zip", "text.zip", "absent.zip"):
        with pytest.raises(CoordinatorError):
            read_bundle(tmp_path / name)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("summary.json", "{}")
    broken = bytearray(zipped.getvalue())
    broken[40:50] = b"\xff" * 10  # the member's data no longer matches its CRC
    (tmp_path / "crc.zip").write_bytes(bytes(broken))
    with pytest.raises(CoordinatorError):
        read_bundle(tmp_path / "crc.zip")


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"summary.json": b"garbage"},
        {"summary.json": b"[]"},
        {"summary.json": b"{}"},
        {"summary.json": b'{"engine": 5, "trajectories": 5}'},
        {"summary.json": b'{"engine": "go", "trajectories": [5]}'},
        {"summary.json": DEEP_JSON.encode()},
        {"trajectory_run0_clone0.xtc": b"garbage"},
        pytest.param(
            {"trajectory_run0_clone0.xtc": b"garbage", "topology.pdb": b"garbage"},
            # mdtraj's PDB reader leaves its file open when it fails: not ours to close
            marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
            id="garbage-topology",
        ),
        {"trajectory_run0_clone0.xtc": b"garbage", "topology.pdb": _PDB_LINE.encode()},
        {
            "trajectory_run0_clone0.xtc": b"\x00\x00\x07\xcb" + b"\xff" * 100,
            "topology.pdb": _PDB_LINE.encode(),
            "trajectory_run0_clone0.csv": b"garbage",
        },
    ],
    ids=lambda f: ",".join(f"{k}={v[:20]!r}" for k, v in f.items()) or "empty",
)
def test_garbage_results_folders_raise_only_the_package_error(tmp_path, files):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(CoordinatorError):
        load_results(tmp_path)


def _signed_note(size: int, root: bytes) -> bytes:
    body = Checkpoint("foldnet.test/log", size, root).body()
    return (body + "\n" + _SIGNER.sign(body).line()).encode()


def test_a_witness_answers_garbage_with_ledger_errors(tmp_path):
    """A witness cosigns what a log sends it: notes and proofs from outside."""
    key = Ed25519PrivateKey.from_private_bytes(b"\3" * 32)
    witness = Witness.open(tmp_path / "w.db", name="foldnet.test/witness", signing_key=key)
    try:
        witness.add_log(_VKEY)
        witness.cosign(_NOTE, proof=())  # size 5: what later checkpoints must extend
        bigger = _signed_note(9, b"\4" * 32)
        notes = [*_truncations(_NOTE, 3), *_flips(_NOTE, 60, seed=6), b"", b"\xff" * 10]
        proofs: list[list[bytes]] = [[], [b""], [b"\0" * 31], [b"\0" * 33], [b"\0" * 32] * 70]
        leaks = []
        for note, proof in [*((n, []) for n in notes), *((bigger, p) for p in proofs)]:
            try:
                witness.cosign(note, proof=proof)
            except LedgerError:
                continue
            except Exception as e:  # a foreign error crossing the boundary
                leaks.append(f"{_show(note)} {len(proof)} proof hashes: {type(e).__name__}: {e}")
                continue
            leaks.append(f"{_show(note)} {len(proof)} proof hashes: cosigned")
        assert leaks == []
    finally:
        witness.close()


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", DEEP_JSON.encode(), b"[" * 70_000, b'{"detail": ' + b"[" * 5000, b"\xff"],
    ids=["empty", "text", "deep", "deep-truncated", "deep-detail", "bad-utf8"],
)
def test_an_error_answer_of_garbage_is_read_as_its_text(body):
    """A client reads a server's error answer to raise its class; garbage there must not
    raise something else instead (a RecursionError out of the JSON parser did)."""
    code, detail = parse_error(httpx.Response(500, content=body))
    assert code is None
    assert detail == (body[:300].decode("utf-8", "replace").strip() or "Internal Server Error")


@pytest.mark.parametrize(
    "reason",
    ["{", '{"a": ' + DEEP_JSON, '{"evidence_wu": 5}', '{"evidence_wu": "zz"}', "[" * 5000],
)
def test_a_revocation_reason_of_garbage_cites_no_evidence(reason):
    assert revocation_evidence(reason) in (b"", None)


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"summary.json": b"{}"},
        {"provenance/provenance.json": DEEP_JSON.encode(), "summary.json": b"{}"},
        {"provenance/provenance.json": b"{}", "summary.json": DEEP_JSON.encode()},
        {"provenance/provenance.json": b"\xff", "summary.json": b"{}"},
        {"provenance/provenance.json": b"[]", "summary.json": b"{}"},
    ],
    ids=["empty", "no-provenance", "deep-provenance", "deep-summary", "bad-utf8", "a-list"],
)
def test_garbage_bundles_fail_verification_with_the_package_error(tmp_path, files):
    """verify-results reads a bundle anyone may have written."""
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    with pytest.raises(CoordinatorError):
        verify_results(tmp_path)


def test_an_audit_of_a_damaged_tile_export_reports_or_raises_ledger_errors(tmp_path):
    """An auditor reads tiles anyone may serve: every damaged file (a changed byte, or cut
    short) is a discrepancy in the report or a LedgerError, never a foreign error."""
    built = build_ledger(tmp_path / "ledger.db", n_wus=6, checkpoint_every=5)
    clean = tmp_path / "clean"
    export(built, clean)
    files = sorted(p.relative_to(clean) for p in clean.rglob("*") if p.is_file())
    rng = random.Random(7)
    leaks = []
    for trial in range(40):
        damaged = tmp_path / f"damaged{trial}"
        shutil.copytree(clean, damaged)
        target = damaged / rng.choice(files)
        data = bytearray(target.read_bytes())
        if trial % 2 and data:
            del data[rng.randrange(len(data)) :]
        elif data:
            i = rng.randrange(len(data))
            data[i] = (data[i] + rng.randrange(1, 256)) % 256
        target.write_bytes(bytes(data))
        try:
            run_audit(damaged, workers=1)
        except LedgerError:
            continue
        except Exception as e:  # a foreign error crossing the boundary
            leaks.append(f"{target.relative_to(damaged)}: {type(e).__qualname__}: {e}")
    assert leaks == []
