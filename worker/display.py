"""A volunteer's slots on the terminal: live bars while ``foldnet worker run`` computes, and
the table ``foldnet worker status`` prints from the status file."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from worker.status import SlotStatus, WorkerStatus


def _clock(t: float | None) -> str:
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _what(slot: SlotStatus) -> str:
    if not slot.wu:
        return ""
    return f"{slot.engine} WU {slot.wu[:12]} ({slot.task})"


class SlotBars:
    """One bar per slot (segments done of its WU) under the worker's log lines; only on a
    terminal: written to a file or a pipe, the log lines alone say the same."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.fields[slot]:<5}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[state]:<10} {task.fields[what]}"),
            console=console,
            disable=not console.is_terminal,
        )
        self._bars: dict[str, TaskID] = {}

    def __enter__(self) -> SlotBars:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, status: WorkerStatus) -> None:
        for slot in status.slots:
            bar = self._bars.get(slot.name)
            if bar is None:
                bar = self._progress.add_task("", total=1, slot=slot.name, state="", what="")
                self._bars[slot.name] = bar
            self._progress.update(
                bar,
                completed=slot.segments_done,
                total=slot.segments or 1,
                slot=slot.name,
                state=slot.state,
                what=_what(slot) or slot.note,
            )


def render_status(console: Console, home: Path, status: WorkerStatus | None) -> None:
    """Print what the worker of ``home`` is doing, or that none is running."""
    if status is None:
        console.print(f"not running: no worker has run from {home}")
        return
    alive = status.alive()
    if alive:
        head = (
            f"running: worker pid {status.pid} since {_clock(status.started_at)}, volunteer "
            f"{status.volunteer}, server {status.server}"
        )
        if status.stopping:
            head += "; stopping: the WUs in flight finish, nothing new is pulled"
    elif not status.running:
        head = f"not running: the worker of {home} stopped at {_clock(status.updated_at)}"
    else:
        head = (
            f"not running: the worker of {home} (pid {status.pid}) is gone without stopping "
            f"(killed, or the machine went down); last seen {_clock(status.updated_at)}. Its "
            "WUs resume from their last segment on the next foldnet worker run"
        )
    console.print(head, highlight=False)
    if alive:
        table = Table()
        for column in ("slot", "pid", "platform", "state", "WU", "progress"):
            table.add_column(column)
        for slot in status.slots:
            progress = (
                f"{slot.segments_done}/{slot.segments} segments ({slot.percent:.0f}%)"
                if slot.segments
                else ""
            )
            pid = str(slot.pid) if slot.pid else ""
            what = _what(slot) or slot.note
            table.add_row(slot.name, pid, slot.platform, slot.state, what, progress)
        console.print(table)
    validated = "unknown" if status.validated is None else f"{status.validated:,}"
    credit = "unknown" if status.credit is None else f"{status.credit:,}"
    console.print(
        f"WUs computed {status.computed:,}, returned {status.returned:,}, accepted "
        f"{status.accepted:,}; spot checks {status.spot_checks:,}; validated {validated}, "
        f"credit {credit} (from the server at {_clock(status.credit_at)})",
        highlight=False,
    )
