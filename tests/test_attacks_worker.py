"""A hostile coordinator against ``foldnet worker run``: each attack written first, as a test.

A volunteer lends its machine to a server it does not control. That server (or whoever
answers in its name) must not be able to run code on the volunteer's machine, corrupt its
memory, exhaust its memory or disk, hang it for ever, crash it with a traceback, or make its
saved work collide. The coordinator here is a small raw HTTP/1.1 server on 127.0.0.1 written
for these tests (:class:`Hostile`): it answers whatever each test makes it answer, at the
pace the test chooses. The worker is the real one (:class:`worker.client.HttpVolunteer`, its
real key, real Go WUs of villin), computing in the test's process, or ``foldnet worker run``
itself where what a user sees is the point.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import io
import json
import pickle
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import run_foldnet

from foldnet.errors import ClientError, FoldnetError, ServerFault
from foldnet.httpclient import InvalidAnswerError, UnreachableError
from ledger.entries import PriceInputs
from sims.examples import VILLIN_PDB
from sims.go import GoModel
from sims.spec import RunSpec
from sims.state import State
from worker.client import MAX_CACHED_SYSTEMS, HttpVolunteer
from worker.errors import WireError
from worker.systems import decode_system, encode_system, system_digest
from worker.wire import task_document

# -- the hostile coordinator ------------------------------------------------------------------


@dataclass
class Reply:
    """One answer: ``body`` whole, or ``chunks`` streamed (chunked) with ``every_s`` between
    them; ``raw``: bytes written as they are (status line and headers included), one byte
    every ``every_s``."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterator[bytes] | None = None
    raw: bytes | None = None
    every_s: float = 0.0


def js(doc: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(doc).encode(), {"content-type": "application/json"})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Request], Reply | None]


class Hostile:
    """A coordinator that answers as ``handler`` says (None: the well-behaved default), one
    request per connection, on 127.0.0.1. ``requests`` lists what it was sent; ``left`` is
    set once a client went away while it was still answering."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.left = threading.Event()
        self.finished_streaming = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> Hostile:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self, method: str = "") -> list[str]:
        return [r.path for r in self.requests if not method or r.method == method]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            req = Request(method, path, headers, body)
            self.requests.append(req)
            reply = self.handler(req) or default(req)
            await self._answer(reply, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.left.set()
        finally:
            writer.close()

    async def _answer(
        self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        gone = asyncio.ensure_future(reader.read(1))  # EOF: the client left
        try:
            if reply.raw is not None:
                for i in range(len(reply.raw)):
                    if gone.done():
                        self.left.set()
                        return
                    writer.write(reply.raw[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(reply.every_s)
                self.finished_streaming.set()
                return
            reason = {200: "OK", 201: "Created", 404: "Not Found"}.get(reply.status, "X")
            head = f"HTTP/1.1 {reply.status} {reason}\r\nconnection: close\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            if reply.chunks is None:
                head += f"content-length: {len(reply.body)}\r\n\r\n"
                writer.write(head.encode() + reply.body)
                await writer.drain()
                return
            writer.write((head + "transfer-encoding: chunked\r\n\r\n").encode())
            for chunk in reply.chunks:
                if gone.done():
                    self.left.set()
                    return
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
                await asyncio.sleep(reply.every_s)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.finished_streaming.set()
        except ConnectionError:
            self.left.set()
        finally:
            gone.cancel()


def default(req: Request) -> Reply:
    """What an ordinary coordinator without sessions answers, with no work to give."""
    if req.path == "/v1/sessions":
        return js({"error": "not_found", "detail": "no sessions here"}, 404)
    if req.path == "/v1/volunteers/me":
        return js({"credit": 0, "results_validated": 0})
    if req.path == "/v1/work":
        return js({"tasks": [], "retry_after_s": 0})
    if req.path.startswith("/v1/results/") or req.path.startswith("/v1/checks/"):
        return js({"accepted": True, "state": "pending", "tasks": []})
    return js({}, 201)


# -- what it hands out ------------------------------------------------------------------------

MODEL = GoModel.from_pdb(VILLIN_PDB)
SPEC = RunSpec(steps=20, segment_steps=10, report_steps=10, temperature=0.7, seed=7)


def system_bytes(model: GoModel = MODEL) -> tuple[str, bytes]:
    return system_digest(model).hex(), encode_system(model)


def compute_task(
    system: str,
    *,
    replica: int = 1,
    wu: bytes = b"\x11" * 32,
    spec: RunSpec = SPEC,
    n: int = 36,
    positions: np.ndarray | None = None,
) -> dict[str, Any]:
    start = State(
        positions=MODEL.native if positions is None else positions,
        velocities=np.zeros((n, 3)),
        step=0,
    )
    return task_document(
        wu_id=wu,
        system=system,
        engine="go",
        spec=spec,
        number=replica,
        states=(start,),
        price=PriceInputs("go", n, spec.steps, 3600, int(time.time() * 1000)),
    )


def work_once(tasks: list[dict[str, Any]], system: tuple[str, bytes] | None = None) -> Handler:
    """A coordinator that hands out ``tasks`` on the first pull, serves ``system``."""
    given = threading.Event()

    def handle(req: Request) -> Reply | None:
        if req.path == "/v1/work" and not given.is_set():
            given.set()
            return js({"tasks": tasks})
        if system is not None and req.path == f"/v1/systems/{system[0]}":
            return Reply(200, system[1], {"content-type": "application/octet-stream"})
        return None

    return handle


def run_once(
    server: Hostile, home: Path, *, max_tasks: int | None = 1, **kw: Any
) -> tuple[list[str], FoldnetError | None]:
    """Run a volunteer of ``home`` against ``server`` until it is idle: what it said, and
    the error it stopped with (None: it finished). Anything but a FoldnetError escapes."""
    said: list[str] = []
    v = HttpVolunteer(
        server.url,
        home=home / "home",
        key_path=home / "v.key",
        report=said.append,
        max_backoff_s=0.01,
        sleep=lambda _s: None,
        **kw,
    )
    try:
        v.run(max_tasks=max_tasks, exit_when_idle=True)
    except FoldnetError as e:
        return said, e
    finally:
        v.close()
    return said, None


# -- answers outside the protocol: a clear error or a dropped task, never a traceback ----------


def _session(**changes: Any) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    server_key = X25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    doc = {"ticket": "t" * 40, "x25519": server_key, "expires": time.time() + 3600}
    return {**doc, "mac": "hmac-sha256", **changes}


#: A spot check's fields up to its segments.
SPOT_CHECK = {
    "kind": "spot_check",
    "system": "ab" * 32,
    "spec": {"steps": 20, "segment_steps": 10},
    "check": 1,
    "wu_id": "11" * 32,
    "engine": "go",
}
NESTED = b"[" * 100_000 + b"]" * 100_000

#: (what the server does, the route it does it on, its answer, what the volunteer must say
#: or stop with: "" for finishing quietly)
OUTSIDE = {
    "work is a list": ("/v1/work", js([]), "expected a JSON object"),
    "tasks is a number": ("/v1/work", js({"tasks": 5}), "expected a list of tasks"),
    "work nested past the parser": ("/v1/work", Reply(200, NESTED), "nested too deeply"),
    "session nested past the parser": ("/v1/sessions", Reply(201, NESTED), "nested too deeply"),
    "a ticket that cannot be a header": (
        "/v1/sessions",
        js(_session(ticket="t\u00e9\r\nx-foldnet-key: 00"), 201),
        "ticket: expected",
    ),
    "a Date no clock has": (
        "/v1/sessions",
        Reply(
            201,
            json.dumps(_session()).encode(),
            {"date": "Mon, 99999999999999999999 Jan 2020 00:00:00 GMT"},
        ),
        "",
    ),
    "an infinite credit": ("/v1/volunteers/me", Reply(200, b'{"credit": Infinity}'), ""),
    "a retry hint no float holds": (
        "/v1/work",
        Reply(200, b'{"tasks": [], "retry_after_s": 1' + b"0" * 400 + b"}"),
        "",
    ),
    "a session end no float holds": (
        "/v1/sessions",
        Reply(201, json.dumps(_session(expires=10**400)).encode()),
        "expires: expected a number a float can hold",
    ),
    "a spot check whose segments are a number": (
        "/v1/work",
        js({"tasks": [{**SPOT_CHECK, "segments": 5}]}),
        "unreadable and was dropped: segments: expected a list",
    ),
}


@pytest.mark.parametrize("case", OUTSIDE)
def test_answers_outside_the_protocol_are_a_clear_error_never_a_traceback(tmp_path, case):
    route, answer, expected = OUTSIDE[case]

    def handle(req: Request) -> Reply | None:
        return answer if req.path == route else None

    with Hostile(handle) as server:
        said, error = run_once(server, tmp_path)
    assert route in server.paths()
    if not expected:
        assert error is None, error
        return
    told = str(error) if error is not None else "\n".join(said)
    assert expected in told, (told, said)
    if error is not None:  # the server's fault: exit 3, or its refusal of what we sent: 2
        assert "Traceback" not in told


def test_a_task_for_an_engine_it_was_not_asked_for_is_given_back_not_held_for_ever(tmp_path):
    """Held, such a task would wait for a slot of its engine for ever, and keep one free slot
    from asking for anything else."""
    digest, _ = system_bytes()
    odd = {**compute_task(digest), "engine": "[/x]"}
    with Hostile(work_once([odd])) as server:
        _said, error = run_once(server, tmp_path)
    assert error is None, error
    failures = [r for r in server.requests if r.path == "/v1/results/1/failure"]
    assert len(failures) == 1, server.paths()
    assert "go" in json.loads(failures[0].body)["reason"]
    assert f"/v1/systems/{digest}" not in server.paths()  # nothing fetched for it


def test_server_text_reaches_the_terminal_as_text_not_markup_or_escapes(tmp_path):
    """Rich markup in a refusal's detail (an unmatched closing tag) would end the worker with
    a traceback; terminal escapes (set the title, clear the screen) would reach the user's
    terminal."""
    detail = "[/x] [bold]x \x1b]0;owned\x07\x1b[2J\u202eclass refused"

    def handle(req: Request) -> Reply | None:
        if req.path == "/v1/work":
            return js({"error": "unknown_class", "detail": detail}, 422)
        return None

    home = tmp_path / "h"
    home.mkdir()
    with Hostile(handle) as server:
        done = run_foldnet(
            "worker",
            "run",
            server.url,
            "--engine",
            "go",
            "--exit-when-idle",
            home=home,
            env={"FOLDNET_HOME": str(home)},
            timeout=300,
        )
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    assert done.returncode == 2, out  # the coordinator refused what this worker computes
    assert "[/x] [bold]x" in out, out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, repr(out)
    assert "\\x1b]0;owned" in out, out  # shown, escaped, for what it is


def test_names_the_server_sends_never_become_paths(tmp_path):
    """Held: every file the worker writes is named by numbers and hex digests it parsed
    itself, so none of these tasks is taken (each is dropped, saying why), and nothing is
    written outside its home."""
    digest, _ = system_bytes()
    good = compute_task(digest)
    hostile = [
        {**good, "replica": "../../../outside"},
        {**good, "replica": -1},
        {**good, "replica": 2**63},
        {**good, "system": "../../../outside/x"},
        {**good, "system": "/etc/passwd\x00" + "a" * 51},
        {**good, "system": "ab" * 31 + "/."},
        {**good, "wu_id": "../" * 21 + "x"},
        {**good, "wu_id": "a" * 10_000},
    ]
    before = sorted(tmp_path.rglob("*"))
    with Hostile(work_once(hostile)) as server:
        said, error = run_once(server, tmp_path)
    assert error is None, error
    dropped = [line for line in said if "unreadable and was dropped" in line]
    assert len(dropped) == len(hostile), said
    assert not any(p.startswith("/v1/systems/") for p in server.paths())
    made = {p for p in tmp_path.rglob("*") if p not in before}
    assert all(p.is_relative_to(tmp_path / "home") or p == tmp_path / "v.key" for p in made)
    assert not list((tmp_path / "home").glob("work/*"))


# -- code: nothing the server sends runs on the volunteer's machine ----------------------------


class _Payload:
    """What a pickle of this runs: writing a file (here, the proof that it ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        code = f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('ran')"
        return (builtins.exec, (code,))


@pytest.fixture(scope="module")
def alanine() -> Any:
    from worker.slot import reference_system

    return reference_system("openmm")


def openmm_task(prepared: Any, system: str, *, engine: str = "openmm") -> dict[str, Any]:
    spec = RunSpec(steps=4, segment_steps=2, report_steps=2, temperature=300.0, seed=3)
    n = prepared.n_atoms
    start = State(positions=prepared.positions, velocities=np.zeros((n, 3)), step=0)
    return task_document(
        wu_id=b"\x22" * 32,
        system=system,
        engine=engine,
        spec=spec,
        number=1,
        states=(start,),
        price=PriceInputs("openmm", n, spec.steps, 3600, int(time.time() * 1000)),
    )


def test_an_openmm_system_cannot_carry_python_code(tmp_path, alanine):
    """OpenMM registers its PythonForce with the XML serializer on import, and reading one
    unpickles its function: a System XML was a way to run any code on every volunteer."""
    marker = tmp_path / "ran"
    function = pickle.dumps(_Payload(marker)).hex()
    force = (
        f'<Force forceGroup="0" function="{function}" name="PythonForce" type="PythonForce" '
        'usesPeriodic="0" version="2"><GlobalParameters/><Particles/></Force>'
    )
    hostile = dataclasses.replace(
        alanine, system_xml=alanine.system_xml.replace("</Forces>", force + "</Forces>")
    )
    digest = system_digest(hostile).hex()
    with Hostile(work_once([openmm_task(hostile, digest)], (digest, encode_system(hostile)))) as s:
        _said, error = run_once(s, tmp_path, engines=("openmm",))
    assert not marker.exists(), "the server's code ran on the volunteer's machine"
    assert error is None, error
    (failure,) = [r for r in s.requests if r.path == "/v1/results/1/failure"]
    assert "PythonForce" in json.loads(failure.body)["reason"]
    assert "/v1/results/1" not in s.paths()


def test_the_system_decides_no_engine_the_volunteer_did_not_choose(tmp_path, alanine):
    """A volunteer that runs only Go WUs (``--engine go``) was sent an OpenMM system under a
    task that said "go": its CPU slot for Go built an OpenMM context and ran it."""
    digest = system_digest(alanine).hex()
    task = openmm_task(alanine, digest, engine="go")
    with Hostile(work_once([task], (digest, encode_system(alanine)))) as server:
        said, error = run_once(server, tmp_path, engines=("go",))
    assert error is None, error
    assert not any("segment 1/" in line for line in said), said
    (failure,) = [r for r in server.requests if r.path == "/v1/results/1/failure"]
    assert "its system is one of 'openmm'" in json.loads(failure.body)["reason"]


# -- systems: what the server's bytes can make the worker allocate, or index ------------------


def _npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return out.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def _npy(a: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, a, allow_pickle=False)
    return out.getvalue()


def _declaring(shape: tuple[int, ...]) -> bytes:
    """A .npy member whose header declares ``shape`` of float64, with 64 bytes of data."""
    out = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + b"\0" * 64


@pytest.mark.parametrize("how", ["an array header declaring terabytes", "deflated members"])
def test_a_system_whose_arrays_would_outgrow_its_bytes_is_refused(tmp_path, how):
    """numpy allocates what a .npy header declares before it reads (a MemoryError then
    ended the worker with a traceback), and a deflated member inflates up to 1,000-fold."""
    digest, good = system_bytes()
    members = _members(good)
    if how == "deflated members":
        data = _npz(members, zipfile.ZIP_DEFLATED)
    else:
        data = _npz({**members, "native.npy": _declaring((10**12, 3))})
    with Hostile(work_once([compute_task(digest)], (digest, data))) as server:
        said, error = run_once(server, tmp_path)
    assert isinstance(error, WireError), (error, said)
    assert "/v1/results/1" not in server.paths()
    expected = "expected the stored arrays" if how == "deflated members" else "but holds 64"
    assert expected in str(error), error


def _meta(data: bytes, **changes: Any) -> bytes:
    members = _members(data)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = {**json.loads(npz["meta"].tobytes()), **changes}
    raw = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return _npz({**members, "meta.npy": _npy(raw)})


def _with(data: bytes, **arrays: np.ndarray) -> bytes:
    return _npz({**_members(data), **{f"{k}.npy": _npy(v) for k, v in arrays.items()}})


_N = MODEL.n_beads
_S2 = np.zeros((_N + 8, _N + 8))
_S2[0, _N + 7] = _S2[_N + 7, 0] = 25.0
#: Go models whose parts do not fit their beads: the kernels index them without bounds
#: checks, so each would read, or write forces, outside the arrays of its run.
UNFIT = {
    "native_s2 of more beads": lambda d: _with(d, native_s2=_S2),
    "bond_r0 of fewer bonds": lambda d: _with(d, bond_r0=MODEL.bond_r0[:-5].copy()),
    "a contact with a bead it lacks": lambda d: _with(
        d, contact_pairs=np.array([[0, 10**6]]), contact_d=np.array([5.0])
    ),
    "a force constant that is text": lambda d: _meta(d, scalars=["x", 1, 1, 1, 1, 1]),
}


@pytest.mark.parametrize("case", UNFIT)
def test_a_go_model_that_does_not_fit_its_beads_is_not_a_system(case):
    with pytest.raises(WireError, match="Go model"):
        decode_system(UNFIT[case](encode_system(MODEL)))


def test_an_openmm_system_of_the_wrong_kinds_is_not_a_system(alanine):
    """(Its digest took the worker down with an AttributeError.)"""
    with pytest.raises(WireError, match="XML, source and sequence must be text"):
        decode_system(_meta(encode_system(alanine), system_xml=5))


# -- memory and disk: what the tasks can make the worker keep ---------------------------------

#: 10^8 frames of 36 beads: 43 GB of frames, in a WU of the largest size a spec allows.
HUGE = RunSpec(steps=10**8, segment_steps=10**4, report_steps=1, temperature=0.7, seed=1)


def _spot_check(system: str, spec: RunSpec) -> dict[str, Any]:
    start = State(positions=MODEL.native, velocities=np.zeros((36, 3)), step=0)
    return task_document(
        wu_id=b"\x44" * 32,
        system=system,
        engine="go",
        spec=spec,
        number=5,
        states=(start,),
        price=None,
        segments=(0,),
    )


@pytest.mark.parametrize("kind", ["compute", "spot_check"])
def test_a_task_whose_result_would_not_fit_in_memory_is_given_back_unrun(tmp_path, kind):
    system = system_bytes()
    if kind == "compute":
        task = compute_task(system[0], spec=HUGE)
    else:  # one segment of the whole WU, a frame every step
        task = _spot_check(system[0], dataclasses.replace(HUGE, segment_steps=10**8))
    with Hostile(work_once([task], system)) as server:
        said, error = run_once(server, tmp_path)
    assert error is None, error
    assert not any("segment 1/" in line for line in said), said
    if kind == "compute":
        (failure,) = [r for r in server.requests if r.path == "/v1/results/1/failure"]
        reason = json.loads(failure.body)["reason"]
    else:
        (reason,) = [line for line in said if "spot check 5 could not be computed" in line]
    assert "GiB of memory" in reason, reason


def test_the_systems_a_server_sends_take_a_bounded_part_of_the_disk(tmp_path):
    """Every task may name a system of its own (any perturbed model is one): kept for ever,
    each up to the largest answer, they filled the volunteer's disk."""
    systems = []
    for i in range(12):
        native = MODEL.native.copy()
        native[0, 0] += 1e-3 * (i + 1)
        native.setflags(write=False)
        systems.append(system_bytes(dataclasses.replace(MODEL, native=native)))
    tasks = [compute_task(d, replica=i + 1) for i, (d, _) in enumerate(systems)]
    served = dict(systems)

    def handle(req: Request) -> Reply | None:
        digest = req.path.removeprefix("/v1/systems/")
        if digest in served:
            return Reply(200, served[digest])
        return None

    given = work_once(tasks)
    with Hostile(lambda r: given(r) or handle(r)) as server:
        _said, error = run_once(server, tmp_path, max_tasks=12)
    assert error is None, error
    assert len([p for p in server.paths() if p.startswith("/v1/results/")]) == 12
    kept = list((tmp_path / "home" / "systems").glob("*.npz"))
    assert 0 < len(kept) <= MAX_CACHED_SYSTEMS, len(kept)


# -- saved work: a task's files are its own -------------------------------------------------


def _busy_results(handler: Handler) -> Handler:
    """``handler``, but every upload answered 503 (the volunteer keeps its work for later)."""

    def handle(req: Request) -> Reply | None:
        if req.path.startswith("/v1/results/"):
            return js({"error": "busy", "detail": "try later"}, 503)
        return handler(req)

    return handle


def _uploads(server: Hostile) -> list[bytes]:
    return [r.body for r in server.requests if r.path.split("?")[0] == "/v1/results/1"]


def test_saved_work_is_resumed_only_at_the_coordinator_it_came_from(tmp_path):
    """A volunteer that moved to another coordinator sent it the WUs it had saved for the
    first (their inputs, its results), and the second's replica 1 shared the first's files."""
    system = system_bytes()
    x_wu, y_wu = b"\x11" * 32, b"\x33" * 32
    give_x = work_once([compute_task(system[0], wu=x_wu)], system)
    with Hostile(_busy_results(give_x)) as a:
        _said, error = run_once(a, tmp_path)
        assert isinstance(error, ServerFault), error  # X is saved, not uploaded
        with Hostile(work_once([compute_task(system[0], wu=y_wu)], system)) as b:
            _said, error = run_once(b, tmp_path)
        assert error is None, error
        assert not any(x_wu.hex() in r.path or x_wu.hex().encode() in r.body for r in b.requests)
        (upload,) = _uploads(b)
        assert y_wu.hex().encode() in upload
        a.handler = give_x
        said, error = run_once(a, tmp_path)
    assert error is None, error
    assert any("resuming after segment 2" in line for line in said), said
    (upload,) = _uploads(a)[-1:]
    assert x_wu.hex().encode() in upload


def test_saved_progress_is_resumed_only_for_the_task_it_was_saved_for(tmp_path):
    """Progress left without its task (a worker killed between removing the two) was resumed
    for any task of the same WU and replica: the result then joined segments of one run to
    another's, under the volunteer's signature."""
    system = system_bytes()
    first = compute_task(system[0])
    other_seed = RunSpec(steps=20, segment_steps=10, report_steps=10, temperature=0.7, seed=8)
    second = compute_task(system[0], spec=other_seed)  # same WU id and replica
    with Hostile(_busy_results(work_once([first], system))) as server:
        _said, error = run_once(server, tmp_path)
        assert isinstance(error, ServerFault), error
        (task_file,) = (tmp_path / "home" / "work").glob("*.task.json")
        task_file.unlink()
        assert list((tmp_path / "home" / "work").glob("*.progress.npz"))
        server.handler = work_once([second], system)
        said, error = run_once(server, tmp_path)
    assert error is None, error
    assert not any("resuming" in line for line in said), said
    assert any("saved progress of replica 1 is unusable" in line for line in said), said


def test_work_saved_before_files_were_named_by_coordinator_is_still_resumed(tmp_path):
    system = system_bytes()
    with Hostile(_busy_results(work_once([compute_task(system[0])], system))) as server:
        run_once(server, tmp_path)
        work = tmp_path / "home" / "work"
        for p in list(work.iterdir()):  # as an earlier version named them: 1.task.json
            p.rename(work / p.name.split("-", 1)[1])
        server.handler = default
        said, error = run_once(server, tmp_path)
    assert error is None, error
    assert any("resuming after segment 2" in line for line in said), said
    assert len(_uploads(server)) == 9 and not list(work.iterdir())  # (8 tries refused)


# -- memory and time: answers that never end, or end too slowly ------------------------------


def _endless(status: int) -> Handler:
    """/v1/work answered with 64 MiB of blanks before ``{}`` (valid JSON, at the end)."""

    def chunks() -> Iterator[bytes]:
        for _ in range(1024):
            yield b" " * 65536
        yield b"{}"

    def handle(req: Request) -> Reply | None:
        if req.path == "/v1/work":
            return Reply(status, chunks=chunks(), headers={"content-type": "application/json"})
        return None

    return handle


@pytest.mark.parametrize("status", [200, 400])
def test_an_answer_that_does_not_end_is_read_only_up_to_a_limit(tmp_path, status):
    with Hostile(_endless(status)) as server:
        _said, error = run_once(server, tmp_path, max_answer_bytes=1 << 20)
        assert server.left.wait(60), "the volunteer read the whole answer"
    assert not server.finished_streaming.is_set()
    if status == 200:
        assert isinstance(error, InvalidAnswerError), error
        assert "1,048,576 bytes" in str(error)
    else:
        assert isinstance(error, ClientError), error


def test_a_server_that_answers_a_byte_at_a_time_is_given_up_on(tmp_path):
    """Each byte comes well within the read timeout, so only a limit on the whole answer
    ends it (a trickle of 66 s here; of days, for a patient server)."""
    head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + "x-pad: pad\r\n" * 300
    slow = Reply(raw=(head + "content-length: 2\r\n\r\n{}").encode(), every_s=0.02)

    def handle(req: Request) -> Reply | None:
        return slow if req.path == "/v1/work" else None

    with Hostile(handle) as server:
        _said, error = run_once(server, tmp_path, timeout_s=1.0, deadline_s=3.0)
        assert server.left.wait(60), "the volunteer waited for the whole answer"
    assert not server.finished_streaming.is_set()
    assert isinstance(error, UnreachableError), error
    assert "POST /v1/work: no complete answer within 3 s" in str(error)
