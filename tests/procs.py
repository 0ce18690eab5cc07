"""Processes a test starts: OS-assigned ports, a process group of their own, and a `finally` that kills
the whole tree, whatever happened.

torchrun's elastic agent starts each worker in a session of its own, so killing the launcher's group
is not enough: `kill_tree` collects the launcher's descendants (by parent pid, from /proc) before it
kills anything, then kills the group and each of them. Nothing is found by command line.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ADDRESS_IN_USE = ("Address already in use", "EADDRINUSE", "address already in use")


def free_port() -> int:
    """A loopback port the OS picked as free. It is released before the child binds it: callers that
    cannot keep it bound retry on conflict (`retry_on_port_conflict`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children first."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with `start_new_session=True`, its group and every descendant."""
    below = descendants(proc.pid)
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), *(lambda p=p: os.kill(p, signal.SIGKILL) for p in below)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


@contextmanager
def launched(command: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """`subprocess.Popen` in a new session, killed with its whole tree on the way out."""
    proc = subprocess.Popen(command, start_new_session=True, **kwargs)
    try:
        yield proc
    finally:
        kill_tree(proc)


def run(command: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(capture_output=True, text=True)`, but a timeout (or any error) kills the whole tree."""
    with launched(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as proc:
        stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def retry_on_port_conflict(start: Callable[[int], subprocess.CompletedProcess],
                           tries: int = 3) -> subprocess.CompletedProcess:
    """Run `start(port)` on a fresh free port; start again on another if the port was taken meanwhile."""
    for _ in range(tries):
        result = start(free_port())
        if result.returncode == 0 or not any(s in (result.stderr or "") + (result.stdout or "")
                                             for s in ADDRESS_IN_USE):
            return result
    return result


def wait_for(path: Path, proc: subprocess.Popen | None = None, *, timeout: float = 120,
             ready: Callable[[], bool] | None = None) -> None:
    """Wait until `path` exists (a "parked" marker a child writes) or `ready()` holds; fail if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while not (ready() if ready else path.exists()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the child exited ({proc.returncode}) before {path.name}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path.name} after {timeout:.0f} s")
        time.sleep(0.02)
