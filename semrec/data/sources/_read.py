"""Low-level readers shared by the source modules: gzip-aware, UTF-8 then latin-1 decoding (the choice recorded),
numbers that must be finite, line numbers and fields in errors."""

from __future__ import annotations

import contextlib
import contextvars
import csv
import gzip
import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semrec.errors import DataFormatError
from semrec.text.decode import TextDecodeError, decode_bytes

csv.field_size_limit(1 << 30)
_ENCODINGS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("semrec_encodings", default=None)


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


@contextlib.contextmanager
def recording_encodings() -> Iterator[dict[str, str]]:
    """Collect ``{file path: encoding}`` of every file decoded by :func:`read_text` inside the block."""
    record: dict[str, str] = {}
    token = _ENCODINGS.set(record)
    try:
        yield record
    finally:
        _ENCODINGS.reset(token)


def note_encoding(path: str | Path, used: str) -> None:
    """Record that ``path`` was decoded as ``used`` (see :func:`recording_encodings`)."""
    record = _ENCODINGS.get()
    if record is not None:
        record[str(path)] = used


def decode(path: str | Path, data: bytes, encoding: str | None = None) -> str:
    """Decode ``data``: with ``encoding`` strictly, else by :func:`semrec.text.decode.decode_bytes` (UTF-8, then
    latin-1, refusing mixed encodings). The encoding used is recorded (see :func:`recording_encodings`); a bad
    byte becomes a :class:`DataFormatError` naming its line and column."""
    try:
        if encoding is None:
            text, used = decode_bytes(data)
        else:
            text, used = data.decode(encoding), encoding
    except UnicodeDecodeError as exc:
        error = TextDecodeError(f"invalid {encoding} byte 0x{data[exc.start]:02x}", exc.start)
    except TextDecodeError as exc:
        error = exc
    else:
        note_encoding(path, used)
        return text
    line = data.count(b"\n", 0, error.offset) + 1
    col = error.offset - (data.rfind(b"\n", 0, error.offset) + 1) + 1
    raise DataFormatError(path, f"{error.reason} at column {col}{error.detail}", line=line)


def read_text(path: str | Path, encoding: str | None = None) -> str:
    """The text of a (possibly gzipped) file, decoded by :func:`decode`, without a leading BOM."""
    text = decode(path, read_bytes(path), encoding)
    return text[1:] if text.startswith("\ufeff") else text


def iter_lines(path: str | Path, encoding: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` pairs (1-based, without the line ending: ``\\n``, ``\\r\\n`` or ``\\r``),
    reading the file as a stream (:func:`stream_text`)."""
    for number, line in enumerate(stream_text(path, encoding), start=1):
        yield number, line.rstrip("\r\n")


STREAM_CHUNK = 1 << 22  # bytes per read when a file is streamed


def _open_raw(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _raw_chunks(path: Path) -> Iterator[bytes]:
    """The (gunzipped) bytes of ``path`` in pieces of :data:`STREAM_CHUNK`; a broken gzip is a DataFormatError."""
    try:
        with _open_raw(path) as fh:
            while chunk := fh.read(STREAM_CHUNK):
                yield chunk
    except (OSError, EOFError) as exc:
        raise DataFormatError(path, f"not a readable gzip file ({exc})") from None


def _position(path: Path, offset: int) -> tuple[int, int]:
    """(line, column) of byte ``offset`` of a file, both 1-based, read again in pieces."""
    line, last_newline, seen = 1, -1, 0
    for chunk in _raw_chunks(path):
        part = chunk[: max(0, offset - seen)]
        line += part.count(b"\n")
        where = part.rfind(b"\n")
        if where >= 0:
            last_newline = seen + where
        seen += len(chunk)
        if seen >= offset:
            break
    return line, offset - last_newline


def stream_text(path: str | Path, encoding: str | None = None) -> Iterator[str]:
    """The lines of a (possibly gzipped) text file, with their endings, decoded by the rule of :func:`decode` but
    in constant memory: a first pass over the bytes decides the encoding (:func:`semrec.text.decode.detect_encoding`;
    a bad byte is a DataFormatError naming its line and column), a second decodes while reading. Files with a
    UTF-16/32 byte-order mark are decoded whole (:func:`read_text`)."""
    from semrec.text.decode import bom_codec, detect_encoding

    path = require_file(path)
    with _open_raw(path) as fh:
        try:
            head = fh.read(4)
        except (OSError, EOFError) as exc:
            raise DataFormatError(path, f"not a readable gzip file ({exc})") from None
    if bom_codec(head) is not None:
        yield from read_text(path, encoding).splitlines(keepends=True)
        return
    used = encoding
    if used is None:
        try:
            used = detect_encoding(_raw_chunks(path))
        except TextDecodeError as exc:
            line, col = _position(path, exc.offset)
            raise DataFormatError(path, f"{exc.reason} at column {col}{exc.detail}", line=line) from None
    note_encoding(path, used)
    with _open_raw(path) as fh, io.TextIOWrapper(fh, encoding="utf-8-sig" if used == "utf-8" else used,
                                                 newline="") as text:
        try:
            yield from text
        except UnicodeDecodeError as exc:  # only with an explicit ``encoding`` that does not fit the bytes
            raise DataFormatError(path, f"invalid {used} byte 0x{exc.object[exc.start]:02x}") from None


def iter_csv(path: str | Path, delimiter: str = ",", encoding: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each CSV record (quoted multi-line fields supported), reading the file as
    a stream (:func:`stream_text`: memory does not grow with the file)."""
    reader = csv.reader(stream_text(path, encoding), delimiter=delimiter, strict=True)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise DataFormatError(path, f"malformed CSV ({exc})", line=reader.line_num) from None


class _NonFinite:
    """Stand-in for a JSON ``NaN``/``Infinity`` while a document is parsed (found again to name its field)."""

    def __init__(self, token: str):
        self.token = token


_JSON_STRING_OR_CONSTANT = re.compile(r'"(?:[^"\\]|\\.)*"|(NaN|-?Infinity)')


def _where(node: Any, target: _NonFinite, prefix: str = "") -> str | None:
    """Dotted path (keys and list positions) of ``target`` inside a parsed document."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        name = f"{prefix}.{key}" if prefix else str(key)
        found = name if value is target else _where(value, target, name)
        if found is not None:
            return found
    return None


def parse_json(path: str | Path, text: str, line: int | None = None) -> Any:
    """Parse one JSON document of ``path`` (starting at ``line`` when it is one line of a JSON-lines file).

    Refused with a :class:`DataFormatError` naming the line and field: malformed JSON, ``NaN``/``Infinity``
    (not JSON, and not a number any field can hold) and a key given twice in one object (a JSON reader would
    silently keep only the last value).
    """
    constants: list[_NonFinite] = []
    duplicates: list[str] = []

    def constant(token: str) -> _NonFinite:
        constants.append(_NonFinite(token))
        return constants[-1]

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items) and not duplicates:
            seen: set[str] = set()
            duplicates.append(next(k for k, _ in items if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
        return obj

    try:
        obj = json.loads(text, parse_constant=constant, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        what = "malformed JSON line" if line is not None else "malformed JSON"
        where = line if line is not None else exc.lineno
        raise DataFormatError(path, f"{what} ({exc.msg}, column {exc.colno})", line=where) from None
    if constants:
        if line is None:
            match = next(m for m in _JSON_STRING_OR_CONSTANT.finditer(text) if m.group(1))
            line = text.count("\n", 0, match.start()) + 1
        raise DataFormatError(path, f"not a number: {constants[0].token} (JSON has no NaN or Infinity)", line=line,
                              field=_where(obj, constants[0]))
    if duplicates:
        raise DataFormatError(path, "the same key appears twice in one object (only the last value would be kept)",
                              line=line, field=duplicates[0])
    return obj


def read_json(path: str | Path) -> Any:
    """Parse a JSON file (see :func:`parse_json` for what is refused)."""
    return parse_json(path, read_text(path))


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-empty JSON line (see :func:`parse_json`)."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        obj = parse_json(path, line, line=number)
        if not isinstance(obj, dict):
            raise DataFormatError(path, f"expected a JSON object, got {type(obj).__name__}", line=number)
        yield number, obj


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INT64 = 2.0**63


def parse_number(path: str | Path, line: int, field: str, value: str, integer: bool = False,
                 timestamp: bool = False) -> float:
    """``value`` (a text field) as a finite float, else a :class:`DataFormatError` naming file, line and field.

    Accepted: ASCII decimal numbers with an optional exponent, surrounding whitespace ignored. Refused with
    ``not a number``: anything else, including ``nan``, ``inf``, ``-inf`` and ``infinity`` (which Python's
    ``float`` would accept); with ``integer``, a fraction is ``not an integer``; with ``timestamp``, a value that
    does not fit a 64-bit integer is ``out of range``.
    """
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        raise DataFormatError(path, f"not a number: {value!r}", line=line, field=field)
    number = float(text)
    if integer and not number.is_integer():
        raise DataFormatError(path, f"not an integer: {value!r}", line=line, field=field)
    if (timestamp and abs(number) >= _INT64) or not math.isfinite(number):
        raise DataFormatError(path, f"out of range: {value!r}", line=line, field=field)
    return number


def header_index(path: str | Path, header: list[str], required: list[str], line: int = 1) -> dict[str, int]:
    """Map column names to positions, raising a clear error naming any missing required column."""
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in required if name not in index]
    if missing:
        raise DataFormatError(
            path, f"missing column(s) {', '.join(missing)} in header {header!r}", line=line, field=missing[0]
        )
    return index


class TextColumns:
    """Item text records collected column by column and packed into Arrow string arrays every :attr:`BLOCK` rows.

    A reader appends one dict per item (``raw_id`` and its views, strings); :meth:`frame` returns the DataFrame with
    those columns (pyarrow-backed strings). A list of dicts of Python strings took ~1 KB per item (1.4 GB peak while
    reading the metadata of 10^6 synthetic items); packed, an item costs about its text's bytes (issue 20).
    """

    BLOCK = 65536

    def __init__(self, columns: list[str]):
        self.columns = list(columns)
        self._pending: dict[str, list[Any]] = {c: [] for c in self.columns}
        self._chunks: dict[str, list[Any]] = {c: [] for c in self.columns}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, record: dict[str, Any]) -> None:
        for column in self.columns:
            self._pending[column].append(record.get(column))
        self._n += 1
        if len(self._pending[self.columns[0]]) >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        for column in self.columns:
            self._chunks[column].append(pa.array(self._pending[column], pa.string()))
            self._pending[column] = []

    def frame(self) -> Any:
        """A ``pandas.DataFrame`` of the collected rows, one string column per name given to the constructor."""
        import pyarrow as pa

        self._flush()
        return pa.table({c: pa.chunked_array(self._chunks[c], pa.string()) for c in self.columns}).to_pandas()


# ----- vectorised reading of large, clean delimited files ------------------------------------------------------------
_ARROW_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"  # _NUMBER, anchored, for Arrow's RE2
# printable non-space ASCII at both ends (str.strip() changes nothing), no NUL (the line reader refuses NUL bytes)
_ARROW_PLAIN_ID = r"(?s)^[!-~](?:[^\x00]*[!-~])?$"


class NotFastPath(Exception):
    """The file is not one the vectorised reader vouches for; read it with the line-by-line reader (which accepts it
    or names the bad line)."""


def fast_csv_batches(path: str | Path, header: list[str], delimiter: str = ",", quoting: bool = True) -> Iterator[Any]:
    """The rows of a valid UTF-8 delimited file whose header is exactly ``header`` (after stripping), as Arrow record
    batches of string columns, parsed by pyarrow's CSV reader (with ``quoting``, quoted multi-line fields as
    :func:`iter_csv` reads them; without, fields split at every delimiter as :func:`iter_lines` + ``split`` do).
    Raises :class:`NotFastPath` before the first batch when the file is not UTF-8 or has another header, and at any
    batch pyarrow cannot parse (the caller then reads the file line by line, which reports the line at fault). The
    encoding is recorded as :func:`stream_text` records it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from semrec.text.decode import bom_codec

    path = require_file(path)
    with _open_raw(path) as fh:
        try:
            head = fh.read(4)
        except (OSError, EOFError):
            raise NotFastPath from None
    if bom_codec(head) is not None:
        raise NotFastPath
    # no separate pass over the bytes to decide the encoding (detect_encoding): pyarrow checks that every string
    # column is valid UTF-8 (check_utf8) and a file that is not fails a batch and goes to the line reader, whose rule
    # (UTF-8, else cp1252 / latin-1) then decides; NUL bytes fail the callers' checks of every field
    try:
        stream = pa.input_stream(str(path), compression="gzip" if path.name.endswith(".gz") else None)
        reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=1 << 23, use_threads=False),
                                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=quoting,
                                                                 quote_char='"' if quoting else False),
                                convert_options=pacsv.ConvertOptions(check_utf8=True,
                                    column_types={name: pa.string() for name in header}, strings_can_be_null=False,
                                    quoted_strings_can_be_null=False))
    except (pa.ArrowException, OSError):
        raise NotFastPath from None
    if [name.lstrip("\ufeff").strip() for name in reader.schema.names] != header or len(set(header)) != len(header):
        raise NotFastPath
    note_encoding(path, "utf-8")
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowException, OSError):
            raise NotFastPath from None
        yield batch


def plain_ids(column: Any) -> Any:
    """``column`` (Arrow strings) when every value is an id that needs no stripping and is not empty; else
    :class:`NotFastPath`."""
    import pyarrow.compute as pc

    if column.null_count or not pc.all(pc.match_substring_regex(column, _ARROW_PLAIN_ID)).as_py():
        raise NotFastPath
    return column


def plain_numbers(column: Any, integer: bool = False, timestamp: bool = False) -> Any:
    """``column`` (Arrow strings) as float64 numpy values when every value is what :func:`parse_number` accepts with
    the same flags and without surrounding whitespace; else :class:`NotFastPath`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count or not pc.all(pc.match_substring_regex(column, _ARROW_NUMBER)).as_py():
        raise NotFastPath
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowException:
        raise NotFastPath from None
    if not np.isfinite(values).all() or (timestamp and (np.abs(values) >= _INT64).any()) or (
            integer and (values != np.trunc(values)).any()):
        raise NotFastPath
    return values
