"""Low-level readers shared by the source modules: gzip-aware, strict decoding, line numbers in errors."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semrec.errors import DataFormatError

csv.field_size_limit(1 << 30)


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise a clear error if it does not exist."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, f"{what} not found")
    return path


def read_bytes(path: str | Path) -> bytes:
    path = require_file(path)
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError) as exc:
            raise DataFormatError(path, f"not a readable gzip file ({exc})") from None
    return path.read_bytes()


def decode(path: str | Path, data: bytes, encoding: str = "utf-8") -> str:
    """Decode ``data``; a bad byte becomes an error naming its line and column."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataFormatError(
            path, f"invalid {encoding} byte 0x{data[exc.start]:02x} at column {col}", line=line
        ) from None


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    text = decode(path, read_bytes(path), encoding)
    return text[1:] if text.startswith("\ufeff") else text


def iter_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` pairs (1-based, without the line ending)."""
    yield from enumerate(read_text(path, encoding).splitlines(), start=1)


def iter_csv(path: str | Path, delimiter: str = ",", encoding: str = "utf-8") -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each CSV record (quoted multi-line fields supported)."""
    text = read_text(path, encoding)
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter, strict=True)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise DataFormatError(path, f"malformed CSV ({exc})", line=reader.line_num) from None


def read_json(path: str | Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"malformed JSON ({exc.msg}, column {exc.colno})", line=exc.lineno) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-empty JSON line."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, f"malformed JSON line ({exc.msg}, column {exc.colno})", line=number) from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, f"expected a JSON object, got {type(obj).__name__}", line=number)
        yield number, obj


def header_index(path: str | Path, header: list[str], required: list[str], line: int = 1) -> dict[str, int]:
    """Map column names to positions, raising a clear error naming any missing required column."""
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in required if name not in index]
    if missing:
        raise DataFormatError(
            path, f"missing column(s) {', '.join(missing)} in header {header!r}", line=line, field=missing[0]
        )
    return index
