"""Exceptions that the CLI turns into one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class SemrecError(Exception):
    """Base class for user-facing errors (bad input, missing files, wrong versions)."""


class DataFormatError(SemrecError):
    """Bad input data: the message names the file, and the line and field when known."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path + (f":{line}" if line is not None else "")
        if field:
            where += f" (field '{field}')"
        super().__init__(f"{where}: {message}")
