"""``foldnet worker run URL --cpus N``: one key, N slots each computing its own WU in a process
of its own, against a real service on loopback; killed and resumed per slot (the worker, or
one slot's process), stopped with SIGTERM after the WUs in flight; ``foldnet worker
status``; ``--gpu`` and refused classes."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import Lines, run_foldnet, start_foldnet
from http_helpers import (
    Served,
    add_lab,
    go_job,
    lab_client,
    post_job,
    running_service,
    trust,
    wait_for_job,
)
from rich.console import Console

from foldnet.errors import ClientError
from sims.allatom.engine import available_platforms
from worker.client import HttpVolunteer, StopFlag
from worker.display import render_status
from worker.errors import SetupError
from worker.identity import Identity
from worker.pool import SlotPlan, gpu_platform
from worker.status import home_lock, process_start, read_status, write_status

#: Two WUs of 12 segments: long enough (several seconds each, here) to be seen in flight.
JOB = go_job(clones=2, gens=1, steps_per_wu=480_000, segment_steps=40_000, report_steps=8000)


def _in_flight(s: Served, who: Identity) -> list[int]:
    """The replicas the service has assigned to ``who`` and not yet had back."""
    assert s.service.thread is not None
    return s.service.thread.call_sync(
        lambda c: sorted(c.scheduler.volunteers[who.public_key.hex()].in_flight)
    )


def _returned(s: Served, who: Identity) -> list[str]:
    assert s.service.thread is not None
    key = who.public_key.hex()
    return s.service.thread.call_sync(
        lambda c: sorted(r.state for r in c.scheduler.replicas.values() if r.volunteer == key)
    )


def _wait(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def _segment_done_in_both(lines: list[str]) -> bool:
    return all(any(f"cpu{i}:   segment" in line for line in lines) for i in range(2))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (not yet reaped by whoever adopted it) computes nothing either
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"


@pytest.mark.slow
def test_two_slots_compute_two_wus_at_once_resume_per_slot_and_finish_on_sigterm(tmp_path):
    key = add_lab(tmp_path / "c", "lab-a")
    home = tmp_path / "v"
    home.mkdir()
    args = ("worker", "run", "", "--cpus", "2", "--engine", "go")
    workers: list[Lines] = []
    partner_stop = StopFlag()
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        job = post_job(lab, JOB).json()["job"]
        me = Identity.load_or_create(home / "volunteer.key")
        trust(s, me, Identity.load_or_create(tmp_path / "o.key"))
        partner = HttpVolunteer(s.url, home=tmp_path / "o", key_path=tmp_path / "o.key")
        partner_run = threading.Thread(
            target=partner.run,
            args=(partner_stop,),
            kwargs={"max_tasks": 2, "exit_when_idle": True},
        )
        try:
            first = start_foldnet(*args[:2], s.url, *args[3:], home=home)
            workers.append(first)
            # the service's side: one key, two replicas assigned to it at the same time
            _wait(lambda: len(_in_flight(s, me)) == 2, "two replicas in flight for one key")
            partner_run.start()  # now it can only get the other replica of each WU
            first.wait_for(_segment_done_in_both, "a finished segment in each slot")
            # hold both slots mid-WU (however slow what follows, on a loaded machine, neither
            # may finish its WU before the kill: the resume is the point)
            slot_pids = [slot.pid for slot in read_status(home).slots]  # type: ignore[union-attr]
            for pid in slot_pids:
                os.kill(pid, signal.SIGSTOP)
            # the worker's side, while it runs: both slots computing their own WU
            seen = ""
            for _ in range(20):
                seen = run_foldnet("worker", "status", "--home", str(home), home=home).stdout
                if len(re.findall(r"cpu\d .* computing .* go WU", seen)) == 2:
                    break
            assert seen.startswith("running: worker pid"), seen
            assert len(re.findall(r"cpu\d .* computing .* go WU", seen)) == 2, seen
            assert "segments (" in seen, seen
            first.proc.send_signal(signal.SIGKILL)  # no chance to clean up
            first.finish()
            assert len(list((home / "work").glob("*.progress.npz"))) == 2
            # the slots' processes die with their parent: nothing keeps computing
            _wait(lambda: all(_gone(p) for p in slot_pids), "the slots' processes to end", 30)
            stale = run_foldnet("worker", "status", "--home", str(home), home=home).stdout
            assert stale.startswith("not running") and "gone without stopping" in stale, stale

            again = start_foldnet(*args[:2], s.url, *args[3:], home=home)
            workers.append(again)
            again.wait_for(
                lambda lines: sum("resuming after segment" in line for line in lines) == 2,
                "both WUs resumed",
            )
            # a slot's process that dies is replaced, and its WU resumed there
            os.kill(read_status(home).slots[0].pid, signal.SIGKILL)  # type: ignore[union-attr]
            again.wait_for(
                lambda lines: sum("resuming after segment" in line for line in lines) == 3,
                "the WU of the dead slot resumed",
            )
            assert "cpu0: the slot's process died (exit code -9)" in again.text
            assert len(_in_flight(s, me)) == 2  # still in flight when the stop comes
            again.proc.send_signal(signal.SIGTERM)  # first signal: finish both, then stop
            out = again.finish()
            partner_run.join(120)
        finally:
            partner_stop.set()
            for w in workers:
                w.finish(timeout=1)
            if partner_run.is_alive():
                partner_run.join(60)
            partner.close()
        assert again.proc.returncode == 0, out
        assert "stopping after the current work units" in out, out
        assert "done: 2 WUs computed, 2 accepted" in out, out
        assert "Traceback" not in out + first.text
        assert _in_flight(s, me) == [] and _returned(s, me) != []
        assert not list((home / "work").iterdir())
        after = run_foldnet("worker", "status", "--home", str(home), home=home).stdout
        assert after.startswith("not running") and "stopped at" in after, after
        assert "returned 2, accepted 2" in after, after
        progress = wait_for_job(lab, job)
        assert progress["state"] == "completed", progress
        assert progress["wus"]["validated"] == 2, progress
        assert _returned(s, me) == ["valid", "valid"]


@pytest.mark.slow
def test_a_class_the_coordinator_refuses_idles_its_slot_and_says_so(tmp_path):
    """An accelerator slot whose class the server does not know (OpenMM's Reference platform
    stands in for a GPU here) is refused loudly, with the class to add to classes.json;
    the CPU slot goes on. With no slot left to work, the refusal ends the run."""
    key = add_lab(tmp_path / "c", "lab-a")
    said: list[str] = []
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        post_job(lab, go_job(clones=1, gens=1))
        v = HttpVolunteer(
            s.url,
            home=tmp_path / "h",
            key_path=tmp_path / "v.key",
            engines=("go", "openmm"),
            slots=SlotPlan(cpus=1, accelerator="Reference"),
            report=said.append,
        )
        try:
            stats = v.run(max_tasks=2, exit_when_idle=True)
        finally:
            v.close()
        assert stats.computed == 1, said
        refusal = next(m for m in said if "refuses this machine's GPU class" in m)
        assert "openmm WUs" in refusal and "classes.json" in refusal, refusal
        cls = json.loads(refusal.rsplit("classes.json: ", 1)[1])
        assert (cls["engine"], cls["platform"]) == ("openmm", "Reference")
        status = read_status(tmp_path / "h")
        assert status is not None and not status.alive()
        assert [(x.name, x.note) for x in status.slots] == [
            ("cpu0", ""),
            ("gpu", "class not accepted for openmm"),
        ]

        only_gpu = HttpVolunteer(
            s.url,
            home=tmp_path / "g",
            key_path=tmp_path / "v.key",
            engines=("openmm",),
            slots=SlotPlan(cpus=0, accelerator="Reference"),
        )
        try:
            with pytest.raises(ClientError, match="unknown_class"):
                only_gpu.run(max_tasks=1)
        finally:
            only_gpu.close()


@pytest.mark.skipif("CUDA" in available_platforms(), reason="this machine has a GPU platform")
def test_gpu_without_a_gpu_platform_is_a_clear_error(tmp_path):
    r = run_foldnet("worker", "run", "http://127.0.0.1:9", "--gpu", home=tmp_path, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--gpu needs OpenMM's CUDA platform" in r.stderr, r.stderr
    assert all(p in r.stderr for p in available_platforms()), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / ".foldnet" / "worker-status.json").exists()  # nothing started


def test_the_gpu_platform_is_cuda_only_and_its_slot_takes_the_openmm_wus():
    assert gpu_platform(["Reference", "CPU", "CUDA", "OpenCL"]) == "CUDA"
    with pytest.raises(SetupError, match=r"only Reference, CPU, OpenCL; OpenCL is there"):
        gpu_platform(["Reference", "CPU", "OpenCL"])
    with pytest.raises(SetupError, match=r"only Reference, CPU\. Install"):
        gpu_platform(["Reference", "CPU"])
    specs = SlotPlan(cpus=2, accelerator="CUDA").specs(("go", "openmm"))
    assert [(x.name, x.platform, x.engines) for x in specs] == [
        ("cpu0", "CPU", ("go",)),
        ("cpu1", "CPU", ("go",)),
        ("gpu", "CUDA", ("openmm",)),
    ]
    only = SlotPlan(cpus=2, accelerator="CUDA").specs(("openmm",))
    assert [x.name for x in only] == ["gpu"]
    assert [x.engines for x in SlotPlan(cpus=2).specs(("go", "openmm"))] == [("go", "openmm")] * 2
    with pytest.raises(SetupError, match="add --engine openmm"):
        SlotPlan(cpus=1, accelerator="CUDA").specs(("go",))
    with pytest.raises(SetupError, match="nothing to compute with"):
        SlotPlan(cpus=0).specs(("go",))
    with pytest.raises(SetupError, match="--cpus must be between 0 and"):
        SlotPlan(cpus=(os.cpu_count() or 1) + 1).specs(("go",))


def test_status_of_a_home_whose_worker_is_gone_or_was_never_there(tmp_path):
    def shown(status) -> str:
        out = io.StringIO()
        render_status(Console(file=out, width=160), tmp_path, status)
        return out.getvalue()

    assert shown(read_status(tmp_path)).startswith("not running: no worker has run")
    v = HttpVolunteer("http://127.0.0.1:9", home=tmp_path, key_path=tmp_path / "v.key")
    running = v.status()
    assert running.alive() and running.process_start == process_start(os.getpid())
    assert shown(running).startswith("running: worker pid")
    # this process, but another start time: the pid was reused by someone else
    write_status(tmp_path, running.__class__(**{**_fields(running), "process_start": "1"}))
    reused = read_status(tmp_path)
    assert reused is not None and not reused.alive()
    assert "gone without stopping" in shown(reused)
    (tmp_path / "worker-status.json").write_text("{not json")
    with pytest.raises(SetupError, match="not a worker status file"):
        read_status(tmp_path)
    with home_lock(tmp_path), pytest.raises(SetupError, match="another foldnet worker"):
        v.run(max_tasks=0)  # the home is held: nothing is contacted
    v.close()


def _fields(status) -> dict:
    return {name: getattr(status, name) for name in status.__dataclass_fields__}
