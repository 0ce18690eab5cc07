"""Errors that point at the offending input: file, line (or row) and field."""
from __future__ import annotations


class RecordError(ValueError):
    """A record that does not fit its format. `line` is 1-based (a row index for tabular sources)."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str, raw: str | None = None):
        self.file, self.line, self.field, self.message, self.raw = file, line, field, message, raw
        where = file + (f":{line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")
