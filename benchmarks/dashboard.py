"""How fast the web dashboard answers with a populated service: its pages and the JSON they
poll, against one ``foldnet serve`` on loopback holding a job of 10,000 WUs and 1,000
registered volunteers (who computed and were credited for part of it first, so the ledger,
the leaderboard and the per-volunteer pages have real rows).

``python -m benchmarks.dashboard [--quick] [--wus N] [--volunteers N]``

Each page and endpoint is asked ``--rounds`` times in turn (sequentially, one client, after
one warm-up round); reported are p50/p95 per path and ``dashboard_p95_ms`` over all of them
(goal: under 200 ms). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_table
from benchmarks.http import TRUSTED_SHARE, ServeProcess, run_load, tiny_job
from coordinator.accounts import Accounts


def bench(workdir: Path, *, wus: int, volunteers: int, load_s: float, rounds: int) -> dict:
    import httpx

    accounts = Accounts.in_folder(workdir)
    key = accounts.add_lab("bench")
    accounts.close()
    server = ServeProcess(workdir, trusted=max(1, int(volunteers * TRUSTED_SHARE)))
    try:
        lab = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )
        job = lab.post("/v1/jobs", json=tiny_job(wus)).json()["job"]
        load = run_load(server.url, volunteers, load_s)  # registers every volunteer
        public = httpx.Client(base_url=server.url, timeout=120)
        board = public.get("/v1/ledger/leaderboard", params={"limit": 1}).json()
        top = board["leaderboard"][0]["volunteer"]
        progress = lab.get(f"/v1/jobs/{job}").json()
        network = public.get("/v1/network").json()
        paths: list[tuple[str, httpx.Client]] = [
            ("/", public),
            ("/ledger", public),
            ("/leaderboard", public),
            (f"/volunteers/{top}", public),
            ("/jobs", public),
            (f"/jobs/{job}", public),
            ("/v1/network", public),
            ("/v1/ledger/records?start=0&limit=25", public),
            ("/v1/ledger/leaderboard?limit=50", public),
            (f"/v1/ledger/volunteers/{top}", public),
            (f"/v1/ledger/volunteers/{top}/entries?limit=20", public),
            ("/v1/ledger/checkpoint", public),
            ("/v1/jobs", lab),
            (f"/v1/jobs/{job}", lab),
            (f"/v1/jobs/{job}/series?limit=8", lab),
        ]
        times: dict[str, list[float]] = {p: [] for p, _ in paths}
        for r in range(rounds + 1):
            for p, client in paths:
                t0 = time.perf_counter()
                resp = client.get(p)
                dt = (time.perf_counter() - t0) * 1000
                if resp.status_code != 200:
                    raise RuntimeError(f"{p}: {resp.status_code} {resp.text[:200]}")
                if r:  # round 0 warms the caches
                    times[p].append(dt)
        lab.close()
        public.close()
    finally:
        server.stop()
    every = [t for ts in times.values() for t in ts]
    return {
        "wus": progress["wus"]["total"],
        "wus_validated": progress["wus"]["validated"],
        "volunteers": network["volunteers"]["known"],
        "ledger_entries": network["ledger"]["size"],
        "load_cycles": load.cycles,
        "per_path": {
            p: {"p50_ms": float(np.percentile(ts, 50)), "p95_ms": float(np.percentile(ts, 95))}
            for p, ts in times.items()
        },
        "dashboard_p95_ms": float(np.percentile(every, 95)),
        "dashboard_max_ms": float(max(every)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, a shorter load phase")
    ap.add_argument("--wus", type=int, default=10_000)
    ap.add_argument("--volunteers", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=None)
    ns = ap.parse_args()
    rounds = ns.rounds or (10 if ns.quick else 40)
    d = Path(tempfile.mkdtemp(prefix="fndash-"))
    try:
        out = bench(
            d / "c",
            wus=ns.wus,
            volunteers=ns.volunteers,
            load_s=5.0 if ns.quick else 15.0,
            rounds=rounds,
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    rows: list[list[Any]] = [
        [p, f"{v['p50_ms']:.1f}", f"{v['p95_ms']:.1f}"] for p, v in out["per_path"].items()
    ]
    print_table(
        f"Dashboard pages and JSON: {out['wus']:,} WUs ({out['wus_validated']:,} validated), "
        f"{out['volunteers']:,} volunteers, {out['ledger_entries']:,} ledger entries; "
        f"{rounds} rounds",
        ["path", "p50 (ms)", "p95 (ms)"],
        rows,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
