"""Anticipated failures: errors a user can fix, each pointing at the file, line, field or option.

Every stage raises these (or `OSError`s with a file name) for bad input, bad options, unreadable
or corrupt files, unwritable outputs and unreachable backends; the command line turns each into
one line `error: <what> (<where>)` and exit code 2 (`personalign.cli._common`). Anything else
is a bug and is reported as one.
"""
from __future__ import annotations

import os


class UserError(Exception):
    """A failure the user can fix. `where()` names the file (with line and field) or the option."""

    def __init__(self, message: str, *, file: str | os.PathLike | None = None, line: int | None = None,
                 field: str | None = None, option: str | None = None):
        self.message = message
        self.file = None if file is None else os.fspath(file)
        self.line, self.field, self.option = line, field, option
        super().__init__(message)

    def where(self) -> str:
        """`[option: ]file[:line][: field]`, or the option, or ''."""
        if self.file is None:
            return self.option or ""
        where = self.file + (f":{self.line}" if self.line is not None else "") + (f": {self.field}" if self.field else "")
        return f"{self.option}: {where}" if self.option else where

    def __str__(self) -> str:
        where = self.where()
        return f"{self.message} ({where})" if where else self.message


class OutputError(UserError, ValueError):
    """An output that cannot or must not be written: it is an input, lies under a regular file, is
    not writable, or is a non-empty directory that is not this command's own earlier output."""


class CorruptFileError(UserError):
    """A file personalign wrote earlier (or a model file) that can no longer be read."""


class ModelError(UserError):
    """A model directory or name that does not hold a loadable model of the needed kind."""


class BackendError(UserError):
    """A generation backend (an OpenAI-compatible server) that cannot be reached or refuses the requests."""


class EmptyError(UserError):
    """A result that would be computed from zero valid records (after skips, truncation or filtering)."""


# Optional parts of personalign: extra -> the modules it installs.
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn"),
    "retrieval": ("sentence_transformers",),
    "report": ("matplotlib", "jinja2"),
    "deepspeed": ("deepspeed",),
    "memory": ("sqlalchemy",),
}


class MissingExtraError(UserError):
    """An optional part of personalign that is not installed."""


def require_extra(extra: str, what: str) -> None:
    """Fail with the pip command to run when a module of `extra` (see `EXTRAS`) is not installed."""
    import importlib.util

    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"{what} needs {', '.join(missing)}, which is not installed: "
                                f"pip install 'personalign[{extra}]'")
