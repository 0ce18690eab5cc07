"""Shared CLI plumbing: one console and one way to turn library errors into exit codes."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.text import Text

from personalign.config import ConfigError
from personalign.data.errors import RecordError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)

USER_ERRORS = (RecordError, ConfigError, FileNotFoundError)


def cli_errors(fn: F) -> F:
    """Print expected errors as one red line and exit with code 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            err_console.print(Text("error: ", style="bold red") + Text(str(e)), highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
