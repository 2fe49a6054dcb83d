"""What a session saves per request (issue 14): a volunteer's request MAC'd in a session
(``coordinator/http/sessions.py``) against one signed with Ed25519.

``python -m benchmarks.sessions [--quick]``

1. In isolation, CPU per request (``time.process_time``, best of 5 rounds): the server's
   whole check (``VolunteerAuth.check_headers`` + ``check_signature``: form, window,
   registration, nonce, then the signature, or the ticket and the MAC), with the ticket
   remembered (the service's case) and read afresh each time (AES-GCM); the volunteer's
   headers (``sign_headers`` against ``mac_headers``); opening a session (the server's
   side, without the signature over its request).
2. Through the HTTP stack: ``foldnet serve`` (one process) answering ``POST
   /v1/checks/{n}`` from 20 concurrent keep-alive clients of 200 registered volunteers: fully
   authenticated, then 404 (no such check), so little but authentication and the framework
   is left. The service's CPU per request from ``/proc``, in rounds that alternate signed and
   session requests against the same service (the machine's noise falls on both).

``benchmarks.http --auth session|signed`` measures whole pull + upload cycles; there a
cycle is about 1.2 requests (an upload pulls the next WU with ``?next=1``), so the saving
per request here is about what a cycle saves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import best_cpu_us, print_table
from benchmarks.http import Conn, ServeProcess, sim_identity
from coordinator.http.auth import VolunteerAuth
from coordinator.http.sessions import Tickets
from worker.identity import Identity
from worker.session import Opening, Session, mac_headers
from worker.wire import body_digest, origin_of, sign_headers

ORIGIN = "http://127.0.0.1:8000"
TARGET = "/v1/results/123456?next=1"


def _best_us(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    return best_cpu_us(fn, n, rounds)


def isolated(n: int) -> dict[str, float]:
    """Microseconds per request of each way, in this process."""
    me = Identity.ephemeral()
    tickets = Tickets(ticket_key=os.urandom(32), ttl_s=3600)
    auth = VolunteerAuth(window_s=300, tickets=tickets, max_nonces_per_key=10**8)
    auth.registered.add(me.public_key)
    opening = Opening.new(me.public_key, origin=ORIGIN)
    client = bytes.fromhex(opening.request["x25519"])
    opened = tickets.open(volunteer=me.public_key, client_x25519=client, origin=origin_of(ORIGIN))
    session = opening.session(opened.answer())
    body = b"x" * 4096
    digest = body_digest(body)

    def server(make: Callable[[], dict[str, str]], forget: bool) -> float:
        pending = [make() for _ in range(5 * n)]
        it = iter(pending)

        def one() -> None:
            if forget:
                tickets._memo.clear()  # the case of a ticket not read before
            req = auth.check_headers("POST", TARGET, next(it), origin=ORIGIN)
            auth.check_signature(req, digest)

        return _best_us(one, n)

    def signed() -> dict[str, str]:
        return sign_headers(me, "POST", TARGET, body, origin=ORIGIN)

    def maced() -> dict[str, str]:
        return mac_headers(session, "POST", TARGET, body)

    return {
        "server_signed_us": server(signed, False),
        "server_session_us": server(maced, False),
        "server_session_unremembered_us": server(maced, True),
        "volunteer_signed_us": _best_us(signed, n),
        "volunteer_session_us": _best_us(maced, n),
        "open_session_server_us": _best_us(
            lambda: tickets.open(volunteer=me.public_key, client_x25519=client, origin=ORIGIN),
            max(10, n // 10),
        ),
    }


async def _round(
    host: str, port: int, clients: list[tuple[Identity, Session]], per_client: int, mode: str
) -> int:
    """``per_client`` authenticated requests from each client (in parallel); the answers
    that were not the expected 404 (none, unless the machine stalls a key past its rate)."""
    origin = f"http://{host}:{port}"
    body = json.dumps({"check": 1}).encode()
    path = f"/v1/checks/{2**62}"

    async def one(me: Identity, session: Session) -> int:
        conn = Conn(host, port)
        refused = 0
        for _ in range(per_client):
            if mode == "session":
                headers = mac_headers(session, "POST", path, body)
            else:
                headers = sign_headers(me, "POST", path, body, origin=origin)
            headers["Content-Type"] = "application/json"
            status, data = await conn.request("POST", path, body, headers)
            if status != 404 or json.loads(data)["error"] != "not_assigned":
                refused += 1
        await conn.close()
        return refused

    got = await asyncio.gather(*(one(me, s) for me, s in clients))
    return sum(got)


def through_http(
    rounds: int, per_client: int, volunteers: int = 200, concurrent: int = 20
) -> tuple[dict[str, list[float]], int]:
    """Service CPU microseconds per request, by mode, from alternating rounds."""
    import httpx

    d = Path(tempfile.mkdtemp(prefix="fnsess-"))
    server = ServeProcess(d / "c")
    try:
        host, port = "127.0.0.1", server.port
        sessions: list[tuple[Identity, Session]] = []
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(volunteers):
                me = sim_identity(10_000 + i)
                reg = json.dumps({"public_key": me.public_key.hex(), "name": f"s{i}"}).encode()
                h = sign_headers(me, "POST", "/v1/volunteers", reg, origin=server.url)
                assert c.post("/v1/volunteers", content=reg, headers=h).status_code in (200, 201)
                opening = Opening.new(me.public_key, origin=server.url)
                body = json.dumps(opening.request).encode()
                h = sign_headers(me, "POST", "/v1/sessions", body, origin=server.url)
                answer = c.post("/v1/sessions", content=body, headers=h)
                assert answer.status_code == 201, answer.text
                sessions.append((me, opening.session(answer.json())))
        per: dict[str, list[float]] = {"signed": [], "session": []}
        errors = 0
        asyncio.run(_round(host, port, sessions[:concurrent], 20, "session"))  # warm
        asyncio.run(_round(host, port, sessions[:concurrent], 20, "signed"))
        turn = 0
        for r in range(rounds):
            order = ("signed", "session") if r % 2 == 0 else ("session", "signed")
            for mode in order:  # other keys each turn: within every key's rate (50/s, 200)
                chosen = [sessions[(turn * concurrent + k) % volunteers] for k in range(concurrent)]
                turn += 1
                cpu0 = server.cpu_seconds()
                errors += asyncio.run(_round(host, port, chosen, per_client, mode))
                n = per_client * concurrent
                per[mode].append((server.cpu_seconds() - cpu0) / n * 1e6)
        return per, errors
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    ns = ap.parse_args()
    n = 500 if ns.quick else 3000
    iso = isolated(n)
    print_table(
        f"Authentication of one request, in isolation (us of CPU, best of 5 rounds of {n})",
        ["", "signed (Ed25519)", "session (HMAC)", "saved"],
        [
            [
                "server: headers + signature or ticket + MAC",
                f"{iso['server_signed_us']:.1f}",
                f"{iso['server_session_us']:.1f} "
                f"({iso['server_session_unremembered_us']:.1f} ticket read afresh)",
                f"{iso['server_signed_us'] - iso['server_session_us']:.1f}",
            ],
            [
                "volunteer: the request's headers",
                f"{iso['volunteer_signed_us']:.1f}",
                f"{iso['volunteer_session_us']:.1f}",
                f"{iso['volunteer_signed_us'] - iso['volunteer_session_us']:.1f}",
            ],
            ["server: opening a session (once an hour)", "",
             f"{iso['open_session_server_us']:.0f}", ""],
        ],
    )  # fmt: skip
    rounds, per_client = (4, 50) if ns.quick else (8, 150)
    per, errors = through_http(rounds, per_client)
    med = {m: statistics.median(v) for m, v in per.items()}
    print_table(
        f"Service CPU per request through HTTP (us): POST /v1/checks/N authenticated, then 404; "
        f"20 concurrent clients, {rounds} alternating rounds of {20 * per_client} per mode",
        ["mode", "each round", "median"],
        [
            [m, ", ".join(f"{x:.0f}" for x in per[m]), f"{med[m]:.0f}"]
            for m in ("signed", "session")
        ],
    )
    result: dict[str, Any] = {k: round(v, 1) for k, v in iso.items()}
    result |= {
        "http_service_us_per_request_signed": round(med["signed"], 1),
        "http_service_us_per_request_session": round(med["session"], 1),
        "http_service_us_saved_per_request": round(med["signed"] - med["session"], 1),
        "http_errors": errors,
        "quick": ns.quick,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
