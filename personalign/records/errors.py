"""Errors that point at the offending input: file, line (or row) and field."""
from __future__ import annotations

from personalign.errors import UserError


class RecordError(UserError, ValueError):
    """A record that does not fit its format. `line` is 1-based (a row index for tabular sources)."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str, raw: str | None = None):
        super().__init__(message, file=file, line=line, field=field)
        self.raw = raw

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.message}"
