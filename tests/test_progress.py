"""Progress off a terminal: plain periodic lines with count, total, rate and ETA, and a last line at the end."""
from __future__ import annotations

import io

from rich.console import Console

from personalign.progress import work_progress


def test_plain_lines_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("PERSONALIGN_LOG_EVERY", "0")
    bar = work_progress(console=Console(file=io.StringIO(), force_terminal=False))
    with bar:
        task = bar.add_task("scoring", total=4)
        for _ in range(4):
            bar.advance(task, 1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("scoring: 1/4 (25%)") and "ETA" in lines[0]
    assert lines[-1].startswith("scoring: 4/4 (100%)") and "ETA" not in lines[-1]
    assert len(lines) == 4  # one per advance; the closing line is not repeated


def test_quiet_between_periods_and_silent_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("PERSONALIGN_LOG_EVERY", "3600")
    with work_progress(console=Console(file=io.StringIO(), force_terminal=False)) as bar:
        task = bar.add_task("tokenizing", total=None)
        bar.update(task, completed=10)
    (line,) = capsys.readouterr().err.splitlines()  # only the closing line: no total, so no percentage or ETA
    assert line.startswith("tokenizing: 10, ") and "%" not in line and "ETA" not in line
    out = io.StringIO()
    with work_progress(console=Console(file=out, force_terminal=True)) as bar:
        bar.advance(bar.add_task("train", total=2), 2)
    assert "train" not in capsys.readouterr().err
