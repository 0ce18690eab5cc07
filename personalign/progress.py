"""Progress of long work, one way everywhere: a rich bar (count, total, rate, ETA) on a terminal, and
plain periodic lines on stderr when stderr is not a terminal (batch jobs, CI logs), every
`$PERSONALIGN_LOG_EVERY` seconds (default 30) and once at the end.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LOG_EVERY_ENV = "PERSONALIGN_LOG_EVERY"


def log_every() -> float:
    try:
        return max(0.0, float(os.environ.get(LOG_EVERY_ENV, "30")))
    except ValueError:
        return 30.0


class WorkProgress(Progress):
    """A rich `Progress` that, when its console is not a terminal, draws nothing and logs plain lines instead."""

    def __init__(self, *columns: ProgressColumn | str, console: Console | None = None, disable: bool = False,
                 transient: bool = True, **kwargs: Any):
        console = console or Console(stderr=True)
        self.plain = not disable and not console.is_terminal
        self.enabled = not disable
        self.every = log_every()
        self._last: dict[TaskID, float] = {}
        self._started: dict[TaskID, float] = {}
        self._logged: dict[TaskID, float] = {}
        super().__init__(*columns, console=console, disable=disable or self.plain, transient=transient, **kwargs)

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task = super().add_task(description, *args, **kwargs)
        self._last[task] = self._started[task] = time.monotonic()
        return task

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._maybe_log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_log(task_id)

    def stop(self) -> None:
        if self.plain:  # a closing line for work that moved since its last line (none for work that failed at once)
            for task_id in list(self._last):
                if self._tasks[task_id].completed != self._logged.get(task_id, 0):
                    self._log(task_id)
            self._last.clear()
        super().stop()

    def _maybe_log(self, task_id: TaskID) -> None:
        if self.plain and task_id in self._last and time.monotonic() - self._last[task_id] >= self.every:
            self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        self._last[task_id] = now = time.monotonic()
        elapsed = max(now - self._started[task_id], 1e-9)
        done = self._logged[task_id] = task.completed
        line = f"{task.description}: {done:,.0f}"
        if task.total:
            line += f"/{task.total:,.0f} ({100 * done / task.total:.0f}%)"
        line += f", {done / elapsed:,.1f}/s, {elapsed:,.0f} s elapsed"
        if task.total and done and done < task.total:
            line += f", ETA {(task.total - done) * elapsed / done:,.0f} s"
        fields = " ".join(str(v) for v in task.fields.values() if v)
        print(line + (f", {fields}" if fields else ""), file=sys.stderr, flush=True)


def work_progress(description_column: str = "[bold]{task.description}", *, total_known: bool = True,
                  enabled: bool = True, console: Console | None = None, transient: bool = True,
                  extra: tuple[ProgressColumn, ...] = ()) -> WorkProgress:
    """The standard bar: description, bar, count/total, extra columns, elapsed and ETA (a spinner and
    elapsed time when the total is unknown)."""
    if total_known:
        columns: tuple = (TextColumn(description_column), BarColumn(), MofNCompleteColumn(), *extra,
                          TimeElapsedColumn(), TimeRemainingColumn())
    else:
        columns = (SpinnerColumn(), TextColumn(description_column), MofNCompleteColumn(), *extra, TimeElapsedColumn())
    return WorkProgress(*columns, console=console, disable=not enabled, transient=transient)
