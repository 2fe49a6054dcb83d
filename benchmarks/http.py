"""The HTTP service under load: many simulated volunteers pulling tiny WUs and uploading
signed results concurrently, against ``foldnet serve`` on loopback: one process
(``--workers 1``) and the coordinator with two HTTP front-end processes (``--workers 2``),
one after the other in the same run.

``python -m benchmarks.http [--quick] [--volunteers N] [--seconds S] [--workers 1,2]
[--auth session|signed]``

The volunteers authenticate as ``foldnet worker run`` does: one signed request opens a
session, every later request carries its ticket and an HMAC (``--auth session``, the
default; opened in the warm-up, as a session lasts an hour); ``--auth signed`` signs every
request with Ed25519 instead, to compare the two.

Then, against the same service, ``rss_growth_mb_slow_uploads``: 24 unauthenticated clients
(in another process) each trickle a 62 MiB body at ``/v1/results/...`` (and start over
when answered), while a few volunteers keep working; reported are the service's peak RSS
growth meanwhile (goal <= 100 MiB: nothing is read before it is authenticated) and the
volunteers' p99 latency during the attack.

Where the CPU went is measured per process from ``/proc``: the coordinator's process, the
front-end processes (with ``--workers N``; also the job preparer's, idle during the load),
the simulated volunteers (this process), and everything else on the machine (other
people's work on a shared machine), so the split shows what the service could have had.

The service runs in its own processes (``foldnet serve``), the volunteers in this one, as
asyncio tasks over a minimal HTTP/1.1 keep-alive client (one connection per volunteer), so
the measurement is the service's, not a client library's. Each service first serves 3 s of
the same load unmeasured (its processes load their engines, fill their caches, open their
connections), then the measured seconds. Every result is real: computed by
the Go engine (tiny WUs: one 10-step segment), signed by the volunteer's own key, verified
and validated by the coordinator, credited in the ledger. A cycle is one pull plus one
upload (a WU's result or a spot check); each upload carries ``?next=1``, so the next WU
comes back with its answer and a busy volunteer needs one round trip per cycle. At the end
the service's own count of returned results is compared with the uploads it acknowledged:
nothing lost, nothing counted twice.

Ends with one JSON line: the keys without a suffix are ``--workers 1``'s, those ending in
``_workersN`` the service with N front-ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.common import print_table
from coordinator.accounts import Accounts
from sims.examples import VILLIN_PDB
from sims.result import RunResult
from worker.identity import Identity
from worker.result import sign_result
from worker.session import Opening, Session, mac_headers
from worker.systems import EngineCache, SystemDefinition, decode_system
from worker.tasks import ComputeTask, spot_check
from worker.wire import (
    RESULT_CONTENT_TYPE,
    decode_task,
    encode_result,
    encode_spot_check,
    sign_headers,
)


class Conn:
    """One HTTP/1.1 keep-alive connection, just enough for JSON and binary bodies."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


@dataclass
class LoadReport:
    seconds: float = 0.0
    cycles: int = 0
    requests: int = 0
    errors: int = 0  # any answer other than 2xx, and connection failures
    server_errors: int = 0  # 5xx
    spot_checks: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    uploaded: list[int] = field(default_factory=list)  # replica ids acknowledged
    statuses: dict[int, int] = field(default_factory=dict)
    client_cpu_s: float = 0.0  # CPU the simulated volunteers used (this process)

    @property
    def cycles_per_s(self) -> float:
        """Pull + upload cycles per second: results and spot checks both count."""
        return (self.cycles + self.spot_checks) / self.seconds if self.seconds else 0.0

    @property
    def results_per_s(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0


class _Shared:
    """What all simulated volunteers share in this process: systems and computed runs (the
    replicas of one WU compute the same thing; each volunteer still signs its own)."""

    def __init__(self) -> None:
        self.systems: dict[str, SystemDefinition] = {}
        self.runs: dict[bytes, RunResult] = {}
        self.engines = EngineCache()
        self.det_class = ""
        #: Each volunteer's session, kept from one load to the next against one service.
        self.sessions: dict[int, Session] = {}


def sim_identity(i: int) -> Identity:
    """Simulated volunteer ``i``'s key, the same in every run (so the service can be told
    in advance which of them are the operator's own, trusted machines)."""
    raw = hashlib.sha256(b"foldnet/bench-volunteer/%d" % i).digest()
    key = Ed25519PrivateKey.from_private_bytes(raw)
    return Identity(key, key.public_key().public_bytes_raw())


#: Share of the simulated volunteers that are the operator's own (established from the
#: start); the others start on probation and are established as their results agree.
TRUSTED_SHARE = 0.1


async def _volunteer(
    i: int,
    host: str,
    port: int,
    shared: _Shared,
    report: LoadReport,
    stop_at: float,
    auth: str = "session",
) -> None:
    me = sim_identity(i)
    conn = Conn(host, port)
    origin = f"http://{host}:{port}"
    session: Session | None = None

    async def call(method: str, path: str, body: bytes = b"", ctype: str = "") -> tuple[int, bytes]:
        if session is not None:
            headers = mac_headers(session, method, path, body)
        else:
            headers = sign_headers(me, method, path, body, origin=origin)
        if ctype:
            headers["Content-Type"] = ctype
        t0 = time.perf_counter()
        try:
            status, data = await conn.request(method, path, body, headers)
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            report.errors += 1
            await conn.close()
            return 0, b""
        report.latencies_ms.append((time.perf_counter() - t0) * 1000)
        report.requests += 1
        report.statuses[status] = report.statuses.get(status, 0) + 1
        if status >= 400:
            report.errors += 1
            if status >= 500:
                report.server_errors += 1
        return status, data

    reg = json.dumps({"public_key": me.public_key.hex(), "name": f"load{i}"}).encode()
    await call("POST", "/v1/volunteers", reg, "application/json")
    if auth == "session":  # one signed request, then every request MAC'd
        session = shared.sessions.get(i)  # opened in the warm-up: a session lasts an hour
        if session is None:
            opening = Opening.new(me.public_key, origin=origin)
            st, data = await call(
                "POST", "/v1/sessions", json.dumps(opening.request).encode(), "application/json"
            )
            if st == 201:
                session = shared.sessions[i] = opening.session(json.loads(data))
    pull = json.dumps({"det_class": shared.det_class, "slots": 1}).encode()
    queue: list[dict[str, Any]] = []
    while time.monotonic() < stop_at:
        if not queue:
            status, data = await call("POST", "/v1/work", pull, "application/json")
            if status != 200:
                await asyncio.sleep(0.05)
                continue
            queue = json.loads(data)["tasks"]
            if not queue:
                await asyncio.sleep(0.02)
                continue
        doc = queue.pop(0)
        digest = doc["system"]
        if digest not in shared.systems:
            st, blob = await call("GET", f"/v1/systems/{digest}")
            if st != 200:
                continue
            shared.systems[digest] = decode_system(blob)
        task = decode_task(doc, shared.systems[digest])
        # Each upload also pulls the next WU (?next=1): one round trip per cycle.
        if isinstance(task, ComputeTask):
            run = shared.runs.pop(task.wu_id, None)
            if run is None:
                engine = shared.engines.get(task.system)
                run = shared.runs[task.wu_id] = engine.run(task.input_state, task.spec)
            body = encode_result(sign_result(run, wu_id=task.wu_id, identity=me, price=task.price))
            st, data = await call(
                "POST", f"/v1/results/{task.replica}?next=1", body, RESULT_CONTENT_TYPE
            )
            if st == 200:
                report.cycles += 1
                report.uploaded.append(task.replica)
        else:
            res = spot_check(task, engines=shared.engines, identity=me)
            body = json.dumps(encode_spot_check(res)).encode()
            st, data = await call(
                "POST", f"/v1/checks/{task.check}?next=1", body, "application/json"
            )
            if st == 200:
                report.spot_checks += 1
        if st == 200:
            queue += json.loads(data)["tasks"]
    await conn.close()


async def _load(
    host: str,
    port: int,
    volunteers: int,
    seconds: float,
    auth: str = "session",
    sessions: dict[int, Session] | None = None,
) -> LoadReport:
    shared = _Shared()
    if sessions is not None:
        shared.sessions = sessions
    from sims.go import GoModel

    shared.det_class = (
        shared.engines.get(GoModel.from_pdb(VILLIN_PDB)).determinism_class().canonical().decode()
    )
    report = LoadReport()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    stop_at = t0 + seconds
    await asyncio.gather(
        *(_volunteer(i, host, port, shared, report, stop_at, auth) for i in range(volunteers))
    )
    report.seconds = time.monotonic() - t0
    report.client_cpu_s = time.process_time() - cpu0
    return report


def run_load(
    url: str,
    volunteers: int,
    seconds: float,
    auth: str = "session",
    sessions: dict[int, Session] | None = None,
) -> LoadReport:
    """Drive ``volunteers`` simulated volunteers against ``url`` for ``seconds``; ``auth``:
    ``session`` (each opens a session, then MACs) or ``signed`` (each request signed);
    ``sessions``: those opened by an earlier load against the same service (kept, as a
    volunteer keeps its session for an hour)."""
    host, _, port = url.removeprefix("http://").partition(":")
    return asyncio.run(_load(host, int(port), volunteers, seconds, auth, sessions))


SLOW_CLIENTS = 24
SLOW_BODY = 62 << 20


async def _slow_upload(host: str, port: int, stop_at: float, stats: dict[str, int]) -> None:
    """One unauthenticated client trickling a 62 MiB body (64 KiB every 10 ms), again and
    again: signed by a key the service never registered."""
    me = Identity.ephemeral()
    chunk = b"\0" * (64 << 10)
    while time.monotonic() < stop_at:
        path = "/v1/results/1"
        headers = sign_headers(me, "POST", path, b"", origin=f"http://{host}:{port}")
        head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {SLOW_BODY}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            sent = 0
            while sent < SLOW_BODY and time.monotonic() < stop_at:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                stats["bytes"] += len(chunk)
                await asyncio.sleep(0.01)
                if reader.at_eof():
                    break
            stats["attempts"] += 1
        except (OSError, ConnectionError):
            stats["dropped"] += 1
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()


def _slow_uploads_main(host: str, port: int, seconds: float) -> None:
    """The attackers' process (so their CPU is not the measuring volunteers')."""

    async def main() -> None:
        stop_at = time.monotonic() + seconds
        stats = {"bytes": 0, "attempts": 0, "dropped": 0}
        await asyncio.gather(
            *(_slow_upload(host, port, stop_at, stats) for _ in range(SLOW_CLIENTS))
        )
        print(json.dumps(stats), flush=True)

    asyncio.run(main())


def _rss_mb(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone or not on Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """Live child processes of ``pid``, and theirs (Linux /proc), else none."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores of this machine spent busy so far (Linux /proc/stat), else 0."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def slow_uploads(server: ServeProcess, seconds: float, volunteers: int) -> dict[str, Any]:
    """RSS growth of the service while 24 clients trickle 62 MiB bodies, and the p99 of
    ``volunteers`` volunteers working meanwhile."""
    import multiprocessing

    host, port = "127.0.0.1", server.port
    before = server.rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], server.rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    attack = multiprocessing.get_context("spawn").Process(
        target=_slow_uploads_main, args=(host, port, seconds)
    )
    attack.start()
    try:
        report = run_load(server.url, volunteers, seconds)
    finally:
        attack.join(seconds + 30)
        if attack.is_alive():
            attack.kill()
        done.set()
        sampler.join()
    return {
        "rss_before_mb": before,
        "rss_peak_mb": peak[0],
        "rss_growth_mb": peak[0] - before,
        "report": report,
    }


def tiny_job(clones: int) -> dict[str, Any]:
    return {
        "engine": "go",
        "pdb": VILLIN_PDB.read_text(),
        "runs": 1,
        "clones": clones,
        "gens": 1,
        "steps_per_wu": 10,
        "segment_steps": 10,
        "report_steps": 10,
        "temperature": 0.8,
        "name": "load",
    }


class ServeProcess:
    """``foldnet serve`` in a subprocess on a free loopback port."""

    def __init__(
        self, workdir: Path, *, cpus: list[int] | None = None, trusted: int = 0, workers: int = 1
    ) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-c",
            "from coordinator.cli import main; main()",
            "serve",
            str(workdir),
            "--port",
            str(self.port),
            "--register-burst",
            "100000",
            "--register-global-burst",
            "100000",
            "--max-requests-per-address",
            "100000",  # every simulated volunteer comes from 127.0.0.1
            "--min-steps-per-wu",
            "10",  # tiny WUs on purpose: the benchmark measures the per-WU cost
        ]
        for i in range(trusted):
            cmd += ["--trust", sim_identity(i).public_key.hex()]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        self.log = workdir.parent / "serve.log"  # a file, not a pipe nobody drains
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.proc.pid, cpus)
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"foldnet serve did not start: {tail}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the service's processes so far (Linux), else 0."""
        main, children = self.cpu_split()
        return main + children

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds of the service's main process (the coordinator's) and of its live
        child processes (front-ends, the job preparer) so far (Linux), else zeros."""
        main = _proc_cpu(self.proc.pid)
        children = sum(_proc_cpu(pid) for pid in _descendants(self.proc.pid))
        return main, children

    def rss_mb(self) -> float:
        """Resident memory of the service's processes together."""
        return sum(_rss_mb(pid) for pid in [self.proc.pid, *_descendants(self.proc.pid)])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench(
    volunteers: int,
    seconds: float,
    clones: int,
    workdir: Path,
    *,
    slow_seconds: float = 0.0,
    slow_volunteers: int = 20,
    workers: int = 1,
    warmup: float = 0.0,
    auth: str = "session",
) -> dict[str, Any]:
    import httpx

    accounts = Accounts.in_folder(workdir)
    key = accounts.add_lab("bench")
    accounts.close()
    server = ServeProcess(workdir, trusted=max(1, int(volunteers * TRUSTED_SHARE)), workers=workers)
    try:
        lab = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )
        job = lab.post("/v1/jobs", json=tiny_job(clones)).json()["job"]
        deadline = time.monotonic() + 300  # prepared in the service's preparation process
        while lab.get(f"/v1/jobs/{job}").json()["state"] == "preparing":
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's job did not get prepared in 300 s")
            time.sleep(0.1)
        warm = LoadReport()
        sessions: dict[int, Session] = {}  # opened in the warm-up, used in the measured load
        if warmup > 0:  # every process has its engines, caches and connections by then
            warm = run_load(server.url, volunteers, warmup, auth, sessions)
        main0, children0 = server.cpu_split()
        busy0 = machine_busy_seconds()
        report = run_load(server.url, volunteers, seconds, auth, sessions)
        main1, children1 = server.cpu_split()
        busy = machine_busy_seconds() - busy0
        server_cpu = (main1 - main0) + (children1 - children0)
        progress = lab.get(f"/v1/jobs/{job}").json()
        slow = slow_uploads(server, slow_seconds, slow_volunteers) if slow_seconds > 0 else None
        metrics = lab.get("/metrics").text
        lab.close()
    finally:
        server.stop()
    returned = progress["wus"]["results_returned"]
    gauges = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("foldnet_coordinator_")
    }
    return {
        "workers": workers,
        "warmup": warm,
        "server_cpu_s": server_cpu,
        "coordinator_cpu_s": main1 - main0,
        "front_end_cpu_s": children1 - children0,
        "machine_busy_s": busy,
        "coordinator": gauges,
        "report": report,
        "progress": progress,
        "lost_or_duplicated": abs(returned - len(warm.uploaded) - len(report.uploaded))
        + (len(acked := warm.uploaded + report.uploaded) - len(set(acked))),
        "slow": slow,
    }


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """One service's numbers for the JSON line."""
    r: LoadReport = out["report"]
    cycles = max(1, r.cycles + r.spot_checks)
    others = out["machine_busy_s"] - out["server_cpu_s"] - r.client_cpu_s
    return {
        "http_cycles_per_s": round(r.cycles_per_s, 1),
        "http_results_per_s": round(r.results_per_s, 1),
        "http_requests_per_s": round(r.requests / r.seconds, 1),
        "p50_ms": round(r.percentile(50), 2),
        "p99_ms": round(r.percentile(99), 2),
        "service_cpu_ms_per_cycle": round(1000 * out["server_cpu_s"] / cycles, 3),
        "coordinator_cpu_ms_per_cycle": round(1000 * out["coordinator_cpu_s"] / cycles, 3),
        "front_end_cpu_ms_per_cycle": round(1000 * out["front_end_cpu_s"] / cycles, 3),
        "volunteer_cpu_ms_per_cycle": round(1000 * r.client_cpu_s / cycles, 3),
        "cores_service": round(out["server_cpu_s"] / r.seconds, 2),
        "cores_volunteers": round(r.client_cpu_s / r.seconds, 2),
        "cores_others": round(max(0.0, others) / r.seconds, 2),
        "errors": r.errors,
        "server_errors": r.server_errors,
        "lost_or_duplicated": out["lost_or_duplicated"],
        "wus_validated": out["progress"]["wus"]["validated"],
        "seconds": round(r.seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 s of load per service")
    ap.add_argument("--volunteers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument(
        "--slow-seconds", type=float, default=None, help="length of the slow-upload attack"
    )
    ap.add_argument(
        "--auth",
        choices=("session", "signed"),
        default="session",
        help="how the simulated volunteers authenticate: open a session and MAC each request "
        "(as foldnet worker run does), or sign each request with Ed25519",
    )
    ap.add_argument(
        "--workers",
        default="1,2",
        help="front-end processes of the services to measure, one after the other "
        "(comma-separated; 1: one process does everything)",
    )
    ns = ap.parse_args()
    try:
        runs = [int(w) for w in ns.workers.split(",")]
    except ValueError:
        ap.error(f"--workers expects numbers separated by commas, got {ns.workers!r}")
    if not runs or any(w < 1 for w in runs):
        ap.error(f"--workers expects numbers >= 1, got {ns.workers!r}")
    seconds = ns.seconds or (10.0 if ns.quick else 30.0)
    slow_seconds = ns.slow_seconds or (8.0 if ns.quick else 20.0)
    clones = int(min(100_000, max(2000, 1500 * (seconds + slow_seconds + 3.0))))
    outs = []
    for i, workers in enumerate(runs):
        d = Path(tempfile.mkdtemp(prefix="fnhttp-"))
        try:  # the slow-upload attack once, against the first service
            outs.append(
                bench(
                    ns.volunteers,
                    seconds,
                    clones,
                    d / "c",
                    slow_seconds=slow_seconds if i == 0 else 0.0,
                    workers=workers,
                    warmup=3.0,
                    auth=ns.auth,
                )
            )
        finally:
            shutil.rmtree(d, ignore_errors=True)
    rows = []
    for out in outs:
        r: LoadReport = out["report"]
        one = summary(out)
        rows.append(
            [
                str(out["workers"]),
                f"{r.cycles_per_s:,.0f}",
                f"{r.requests / r.seconds:,.0f}",
                f"{r.percentile(50):.1f}",
                f"{r.percentile(99):.1f}",
                f"{one['service_cpu_ms_per_cycle']:.2f}",
                f"{one['coordinator_cpu_ms_per_cycle']:.2f} / "
                f"{one['front_end_cpu_ms_per_cycle']:.2f}",
                f"{one['volunteer_cpu_ms_per_cycle']:.2f}",
                f"{one['cores_service']:.2f} / {one['cores_volunteers']:.2f} / "
                f"{one['cores_others']:.2f}",
                f"{r.errors} / {r.server_errors} / {out['lost_or_duplicated']}",
            ]
        )
    print_table(
        f"HTTP pull + upload cycles: {ns.volunteers} volunteers ({ns.auth} requests), "
        f"{seconds:.0f} s each, "
        f"{os.cpu_count()} cores (service, volunteers and anything else share them)",
        [
            "workers",
            "cycles/s",
            "requests/s",
            "p50 (ms)",
            "p99 (ms)",
            "service CPU/cycle (ms)",
            "coordinator / front-ends",
            "volunteers CPU/cycle",
            "cores: service / volunteers / others",
            "errors / 5xx / lost",
        ],
        rows,
    )
    for out in outs:
        r = out["report"]
        wus = out["progress"]["wus"]
        g = out["coordinator"]
        batches = g.get("foldnet_coordinator_batches_total", 0)
        print(
            f"workers {out['workers']}: results acknowledged {len(r.uploaded):,} (and "
            f"{len(out['warmup'].uploaded):,} in the warm-up), returned per the service "
            f"{wus['results_returned']:,}; spot checks {r.spot_checks}; statuses "
            f"{dict(sorted(r.statuses.items()))}; {batches:,.0f} group commits, "
            f"{g.get('foldnet_coordinator_commands_total', 0) / max(1, batches):.1f} commands "
            f"each, coordinator thread busy "
            f"{g.get('foldnet_coordinator_busy_seconds_total', 0):.1f} s"
        )
    slow = outs[0]["slow"]
    sr: LoadReport = slow["report"]
    print_table(
        f"{SLOW_CLIENTS} unauthenticated clients trickling {SLOW_BODY >> 20} MiB bodies for "
        f"{sr.seconds:.1f} s, 20 volunteers working meanwhile (workers {outs[0]['workers']})",
        ["service RSS before (MiB)", "peak (MiB)", "growth (MiB)", "volunteers p50 (ms)",
         "p99 (ms)", "cycles", "errors"],
        [[f"{slow['rss_before_mb']:.0f}", f"{slow['rss_peak_mb']:.0f}",
          f"{slow['rss_growth_mb']:.0f}", f"{sr.percentile(50):.1f}", f"{sr.percentile(99):.1f}",
          str(sr.cycles + sr.spot_checks), str(sr.errors)]],
    )  # fmt: skip
    result: dict[str, Any] = {
        "rss_growth_mb_slow_uploads": round(slow["rss_growth_mb"], 1),
        "p99_ms_volunteers_during_slow_uploads": round(sr.percentile(99), 2),
        "volunteer_cycles_during_slow_uploads": sr.cycles + sr.spot_checks,
    }
    for out in outs:
        suffix = "" if out["workers"] == 1 else f"_workers{out['workers']}"
        result |= {f"{k}{suffix}": v for k, v in summary(out).items()}
    result |= {
        "volunteers": ns.volunteers,
        "auth": ns.auth,
        "quick": ns.quick,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
