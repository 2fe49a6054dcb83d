"""The coordinator thread: group commits, answers only after the commit, one failing
command fails alone, a failed commit fails the whole batch."""

from __future__ import annotations

import contextlib
import threading

import pytest
from http_helpers import FakeClock

from coordinator.errors import CommitFailedError
from coordinator.http.loop import CoordinatorThread


class FakeCoordinator:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.fail_commit = False
        self.gate = threading.Event()
        self.ticks = 0
        self.ticked = threading.Event()

    @contextlib.contextmanager
    def batch(self):
        self.log.append("begin")
        yield
        if self.fail_commit:
            self.log.append("rollback")
            raise RuntimeError("disk full")
        self.log.append("commit")

    def tick(self) -> None:
        self.ticks += 1
        self.ticked.set()

    def close(self) -> None:
        self.log.append("closed")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def running(clock):
    fake = FakeCoordinator()
    th = CoordinatorThread(lambda: fake, tick_s=0.05, clock=clock)
    th.start()
    yield th, fake
    th.stop()
    assert fake.log[-1] == "closed"


def test_commands_queued_together_share_one_commit_and_answer_after_it(running):
    th, fake = running
    blocker = th.submit(lambda c: c.gate.wait(5))  # holds the thread while more queue up
    futures = [th.submit(lambda c, i=i: (c.log.append(f"cmd{i}"), i)[1]) for i in range(5)]
    seen_at_answer: list[list[str]] = []
    for f in futures:
        f.add_done_callback(lambda _f: seen_at_answer.append(list(fake.log)))
    fake.gate.set()
    assert blocker.result(5) is True
    assert [f.result(5) for f in futures] == list(range(5))
    cmds = [i for i, x in enumerate(fake.log) if x.startswith("cmd")]
    assert cmds == list(range(cmds[0], cmds[0] + 5))  # one batch, nothing between them
    assert fake.log[cmds[-1] + 1] == "commit"
    for log in seen_at_answer:  # every answer came after that commit
        assert "commit" in log[log.index("cmd4") :]


def test_a_failing_command_fails_alone(running):
    th, fake = running
    fake.gate.clear()
    blocker = th.submit(lambda c: c.gate.wait(5))
    bad = th.submit(lambda c: 1 / 0)
    good = th.submit(lambda c: "fine")
    fake.gate.set()
    blocker.result(5)
    assert good.result(5) == "fine"
    with pytest.raises(ZeroDivisionError):
        bad.result(5)


def test_a_failed_commit_fails_every_command_of_its_batch(running):
    th, fake = running
    fake.fail_commit = True
    futures = [th.submit(lambda c: "done") for _ in range(3)]
    for f in futures:
        with pytest.raises(CommitFailedError, match="disk full"):
            f.result(5)
    fake.fail_commit = False
    assert th.call_sync(lambda c: "again") == "again"
    assert th.alive


def test_it_ticks_when_its_clock_says_a_tick_is_due(running, clock):
    th, fake = running
    th.call_sync(lambda c: None)
    assert fake.ticks == 0  # its clock has not moved
    clock.advance(0.05)
    th.call_sync(lambda c: None)  # (the thread may have ticked by itself just before)
    assert fake.ticks == 1
    th.call_sync(lambda c: None)
    assert fake.ticks == 1  # not again before tick_s more
    fake.ticked.clear()
    clock.advance(0.05)
    assert fake.ticked.wait(30)  # nothing queued: it wakes up to tick on its own
    assert th.call_sync(lambda c: c.ticks) == 2


def test_an_answer_the_link_cannot_carry_fails_alone():
    """A command that answers with something the link cannot carry (a bug) fails its own
    call; the other answers of the same committed batch still reach the front-end."""
    import socket

    from coordinator.http.link import Deframer, Failure, Hub, Port, Reply

    ours, theirs = socket.socketpair()
    hub = Hub()
    try:
        port = Port(ours, worker=0)
        hub.reply(port, [(1, True, "kept"), (2, True, object()), (3, False, KeyError("x"))])
        theirs.settimeout(5)
        (reply,) = list(Deframer().feed(theirs.recv(1 << 16)))
    finally:
        hub.close()
        ours.close()
        theirs.close()
    assert isinstance(reply, Reply)
    first, second, third = reply.answers
    assert first == (1, True, "kept")
    assert second[:2] == (2, False) and isinstance(second[2], Failure)
    assert second[2].status == 500 and second[2].code == "link_codec"
    assert third[:2] == (3, False) and third[2].status == 500
