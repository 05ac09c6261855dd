"""Amazon Reviews 2023 benchmark files.

Two layouts are read, both with item metadata from ``meta_{D}.jsonl[.gz]`` (or a CSV export of it
whose ``details`` column is a Python-literal dict):

* ``last_out_w_his``: ``{D}.train/valid/test.csv[.gz]`` with header
  ``user_id,parent_asin,rating,timestamp,history``. Each user's sequence is the longest row's history
  plus its target; every other row of the user must agree with it (checked, error names the line).
* rating-only 5-core: one CSV ``user_id,parent_asin,rating,timestamp``; the sequence is rebuilt by the
  published rule (stable sort by timestamp, repeats dropped), see :func:`semrec.data.splits.last_out_w_his`.

Views: title, brand (``details['Brand']``), features, categories, description, cleaned as in the
CCFRec preprocessing; a CSV meta file provides only the views it has columns for.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd

from semrec.data.dataset import SourceData
from semrec.data.sources._read import (
    NotFastPath,
    TextColumns,
    fast_csv_batches,
    header_index,
    iter_csv,
    iter_jsonl,
    parse_number,
    plain_ids,
    plain_numbers,
    require_file,
)
from semrec.data.spool import InteractionSpool
from semrec.errors import DataFormatError, SemrecError
from semrec.text.clean import clean_text, clean_title

VIEWS = ["title", "brand", "features", "categories", "description"]
RATING_HEADER = ["user_id", "parent_asin", "rating", "timestamp"]
SPLIT_HEADER = RATING_HEADER + ["history"]
_CSV = re.compile(r"\.csv(\.gz)?$")


def _csv_header(path: Path) -> list[str]:
    for _, row in iter_csv(path):
        return [c.strip() for c in row]
    raise DataFormatError(path, "empty file", line=1)


def detect(path: Path) -> bool:
    """True when ``path`` holds last_out_w_his split files or a rating-only Amazon 2023 CSV."""
    return _find_splits(path) is not None or _find_ratings(path) is not None


def _find_splits(path: Path) -> dict[str, Path] | None:
    if not path.is_dir():
        return None
    for train in sorted(path.glob("*.train.csv*")):
        prefix = train.name[: train.name.index(".train.csv")]
        found = {s: next(iter(sorted(path.glob(f"{prefix}.{s}.csv*"))), None) for s in ("train", "valid", "test")}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _find_ratings(path: Path) -> Path | None:
    candidates = [path] if path.is_file() else sorted(p for p in path.iterdir() if _CSV.search(p.name))
    for candidate in candidates:
        try:
            if _csv_header(candidate) == RATING_HEADER:
                return candidate
        except DataFormatError:
            continue
    return None


def _find_meta(path: Path, prefix: str | None) -> Path:
    folder = path if path.is_dir() else path.parent
    patterns = ([f"meta_{prefix}.jsonl*"] if prefix else []) + ["meta_*.jsonl*", "*.jsonl*"]
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    for candidate in sorted(p for p in folder.iterdir() if _CSV.search(p.name)):
        try:
            header = _csv_header(candidate)
        except DataFormatError:
            continue
        if "parent_asin" in header and "title" in header:
            return candidate
    raise SemrecError(f"{folder}: no item metadata found (meta_*.jsonl[.gz] or a CSV with parent_asin,title); "
                      "pass --meta PATH")


def _timestamp(path: Path, line: int, value: str) -> float:
    """A timestamp cell as a whole number (a fraction is cut off); not finite or not a number is an error."""
    return float(int(parse_number(path, line, "timestamp", value, timestamp=True)))


def _read_ratings_fast(path: Path) -> InteractionSpool:
    """:func:`read_ratings` for a clean UTF-8 file with the exact header, vectorised (pyarrow's CSV reader and
    compute functions); :class:`NotFastPath` when any value is not plainly valid (the line reader then decides)."""
    spool = InteractionSpool(path)
    try:
        for batch in fast_csv_batches(path, RATING_HEADER):
            users, items = plain_ids(batch.column(0)), plain_ids(batch.column(1))
            plain_numbers(batch.column(2))  # ratings are checked, not kept
            stamps = np.trunc(plain_numbers(batch.column(3), timestamp=True))  # a fraction is cut off
            spool.add_arrays(users, items, stamps)
    except NotFastPath:
        spool.cleanup()
        raise
    return spool.finish()


def read_ratings(path: Path) -> InteractionSpool:
    """Read a rating-only CSV into ``user, item, timestamp`` interactions, validating every line (ratings are checked
    and not kept). The file is streamed and the rows go to an :class:`InteractionSpool` on disk: memory does not grow
    with the file."""
    try:
        return _read_ratings_fast(path)
    except NotFastPath:
        pass
    spool = InteractionSpool(path)
    rows = iter_csv(path)
    _, header = next(rows, (1, []))
    col = header_index(path, header, RATING_HEADER)
    for line, row in rows:
        if not row:
            continue
        if len(row) != len(header):
            raise DataFormatError(path, f"expected {len(header)} fields, got {len(row)}", line=line)
        user, item = row[col["user_id"]].strip(), row[col["parent_asin"]].strip()
        if not user or not item:
            raise DataFormatError(path, "empty id", line=line, field="user_id" if not user else "parent_asin")
        stamp = _timestamp(path, line, row[col["timestamp"]])
        parse_number(path, line, "rating", row[col["rating"]])
        spool.add(user, item, stamp)
    return spool.finish()


def read_splits(files: dict[str, Path]) -> pd.DataFrame:
    """Rebuild per-user sequences from last_out_w_his files and check every row against them."""
    rows: dict[str, list[tuple[str, int, list[str], str, float]]] = {}
    for path in files.values():
        it = iter_csv(path)
        _, header = next(it, (1, []))
        col = header_index(path, header, SPLIT_HEADER)
        for line, row in it:
            if not row:
                continue
            if len(row) != len(header):
                raise DataFormatError(path, f"expected {len(header)} fields, got {len(row)}", line=line)
            user, target = row[col["user_id"]].strip(), row[col["parent_asin"]].strip()
            if not user or not target:
                raise DataFormatError(path, "empty id", line=line, field="user_id" if not user else "parent_asin")
            history = row[col["history"]].split()
            stamp = _timestamp(path, line, row[col["timestamp"]])
            parse_number(path, line, "rating", row[col["rating"]])
            rows.setdefault(user, []).append((str(path), line, history, target, stamp))
    users, items, stamps = [], [], []
    for user, user_rows in rows.items():
        longest = max(user_rows, key=lambda r: len(r[2]))
        sequence = longest[2] + [longest[3]]
        targets = {r[3] for r in user_rows}
        unknown = next((h for h in longest[2][1:] if h not in targets), None)
        if unknown is not None:
            raise DataFormatError(longest[0], f"user {user}: unknown item {unknown!r} in the history "
                                  "(no row of this user has it as target)", line=longest[1], field="history")
        times = [np.nan] * len(sequence)
        for path, line, history, target, stamp in user_rows:
            n = len(history)
            if history != sequence[:n] or sequence[n] != target:
                raise DataFormatError(path, f"user {user}: history and target disagree with the user's "
                                      f"longest history ({longest[0]}:{longest[1]})", line=line, field="history")
            times[n] = stamp
        # a position with no row of its own (e.g. dropped empty-history rows) borrows the next known time,
        # which keeps the sequence order under the stable timestamp sort
        known = [t for t in times if not np.isnan(t)]
        for k in range(len(times) - 1, -1, -1):
            if np.isnan(times[k]) and known:
                later = times[k + 1] if k + 1 < len(times) else known[-1]
                times[k] = later
        users.extend([user] * len(sequence))
        items.extend(sequence)
        stamps.extend(times)
    return pd.DataFrame({"user": users, "item": items, "timestamp": stamps})


def _literal(path: Path, line: int, field: str, value: str):
    """Parse a CSV cell that may hold a Python literal: ``details`` must be a dict literal (or empty);
    list-valued fields are parsed when they look like a list and kept as text otherwise."""
    text = value.strip()
    if field == "details":
        if not text:
            return {}
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise DataFormatError(path, "not a valid Python dict literal", line=line, field=field) from None
        if not isinstance(parsed, dict):
            raise DataFormatError(path, "expected a dict", line=line, field=field)
        return parsed
    if field in ("description", "features", "categories") and text.startswith("[") and text.endswith("]"):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return text


def _meta_record(get, has_details: bool) -> dict[str, str]:
    details = get("details")
    brand = details.get("Brand", "") if isinstance(details, dict) else ""
    return {
        "title": clean_title(get("title")),
        "brand": clean_text(brand if has_details else get("brand")),
        "features": clean_text(get("features")),
        "categories": clean_text(get("categories")),
        "description": clean_text(get("description")),
    }


def read_meta(path: Path, keep: set[str]) -> tuple[pd.DataFrame, list[str], int]:
    """Read item metadata (jsonl or CSV) for the items in ``keep``.

    Returns the texts (``raw_id`` + one column per view), the available views, and how many distinct items
    of the file were left out because they are not in ``keep`` (items without interactions).
    """
    records = TextColumns(["raw_id", *VIEWS])
    left_out: set[str] = set()
    if _CSV.search(path.name):
        it = iter_csv(path)
        _, header = next(it, (1, []))
        col = header_index(path, header, ["parent_asin"])
        has = {name for name in col}
        views = [v for v in VIEWS if v in has or (v == "brand" and "details" in has)]
        for line, row in it:
            if not row:
                continue
            if len(row) != len(header):
                raise DataFormatError(path, f"expected {len(header)} fields, got {len(row)}", line=line)
            asin = row[col["parent_asin"]].strip()
            if not asin:
                raise DataFormatError(path, "missing parent_asin", line=line, field="parent_asin")
            if asin not in keep:
                left_out.add(asin)
                continue
            get = lambda name, row=row, line=line: (  # noqa: E731
                _literal(path, line, name, row[col[name]]) if name in col else None)
            records.append({"raw_id": asin, **_meta_record(get, "details" in col)})
    else:
        views = list(VIEWS)
        for line, obj in iter_jsonl(path):
            asin = obj.get("parent_asin")
            if not isinstance(asin, str) or not asin:
                raise DataFormatError(path, "missing parent_asin", line=line, field="parent_asin")
            if asin not in keep:
                left_out.add(asin)
                continue
            if "details" in obj and obj["details"] is not None and not isinstance(obj["details"], dict):
                raise DataFormatError(path, "expected an object", line=line, field="details")
            records.append({"raw_id": asin, **_meta_record(obj.get, True)})
    frame = records.frame()
    return frame[["raw_id", *views]], views, len(left_out)


def load(path: str | Path, name: str | None = None, meta: str | Path | None = None) -> SourceData:
    """Read either Amazon 2023 layout from a folder (or a rating CSV file) plus its metadata."""
    path = Path(path)
    if not path.exists():
        raise SemrecError(f"{path}: not found")
    splits = _find_splits(path)
    if splits is not None:
        prefix = splits["train"].name[: splits["train"].name.index(".train.csv")]
        interactions = read_splits(splits)
        files = list(splits.values())
        layout = "last_out_w_his"
    else:
        ratings = _find_ratings(path)
        if ratings is None:
            raise SemrecError(f"{path}: no Amazon 2023 files found ({{D}}.train/valid/test.csv[.gz] or a CSV "
                              f"with header {','.join(RATING_HEADER)})")
        prefix = re.sub(r"\(\d+\)$", "", _CSV.sub("", ratings.name))
        interactions = read_ratings(ratings)
        files = [ratings]
        layout = "rating_only"
    meta_path = require_file(meta, "metadata file") if meta else _find_meta(path, prefix)
    keep = interactions.items if isinstance(interactions, InteractionSpool) else set(interactions["item"])
    items, views, without_interactions = read_meta(meta_path, keep)
    return SourceData(
        name=name or prefix, format="amazon2023", interactions=interactions, items=items, views=views,
        files=[*files, meta_path], options={"layout": layout},
        skips={"metadata_items_without_interactions": without_interactions},
    )
