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
import math
import re
from array import array
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
KEYS_PER_CHECK = 2**20  # history items looked up at once by read_splits' unknown-item check
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


def _split_rows(files: dict[str, Path]):
    """Yield ``(file index, path, line, user, target, history, timestamp)`` for every row of the split files, each
    field validated (DataFormatError naming the file, line and field)."""
    for index, path in enumerate(files.values()):
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
            yield index, path, line, user, target, history, stamp


def _split_rows_fast(files: dict[str, Path]):
    """:func:`_split_rows` for clean UTF-8 files with the exact header, parsed by pyarrow's CSV reader and checked
    by its compute functions (line numbers are not known: 0); :class:`NotFastPath` when any value is not plainly
    valid (the line reader then decides and names the line)."""
    for index, path in enumerate(files.values()):
        for batch in fast_csv_batches(path, SPLIT_HEADER):
            users, targets = plain_ids(batch.column(0)).to_pylist(), plain_ids(batch.column(1)).to_pylist()
            plain_numbers(batch.column(2))  # ratings are checked, not kept
            stamps = np.trunc(plain_numbers(batch.column(3), timestamp=True)).tolist()  # a fraction is cut off
            for user, target, history, stamp in zip(users, targets, batch.column(4).to_pylist(), stamps):
                yield index, path, 0, user, target, history.split(), stamp


def _check_history_items(longest: dict[str, tuple[list[str], int, int]], user_ids: dict[str, int],
                         item_ids: dict[str, int], row_users: array, row_targets: array, paths: list[str]) -> None:
    """Every item of a user's longest history after the first must be the target of one of that user's rows:
    DataFormatError naming the longest row and the first unknown item otherwise (users in first-seen order). Keys
    ``user * n_items + item`` are looked up in the sorted set of (user, target) keys, :data:`KEYS_PER_CHECK` at a
    time."""
    n_items = max(len(item_ids), 1)
    targets = np.unique(np.frombuffer(row_users, dtype=np.int64) * n_items + np.frombuffer(row_targets, np.int64))
    pending: list[str] = []
    keys = array("q")

    def check() -> None:
        if not keys:
            return
        wanted = np.frombuffer(keys, dtype=np.int64).copy()  # keys is cleared below: no view may remain
        at = np.minimum(np.searchsorted(targets, wanted), len(targets) - 1)
        missing = targets[at] != wanted
        if missing.any():
            key = int(wanted[np.argmax(missing)])
            user = next(u for u in pending if user_ids[u] == key // n_items)
            sequence, index, line = longest[user]
            unknown = next(h for h in sequence[1:-1] if item_ids[h] == key % n_items)
            raise DataFormatError(paths[index], f"user {user}: unknown item {unknown!r} in the history "
                                  "(no row of this user has it as target)", line=line, field="history")
        pending.clear()
        del keys[:]

    for user, (sequence, _, _) in longest.items():
        base = user_ids[user] * n_items
        keys.extend(base + item_ids[h] for h in sequence[1:-1])
        pending.append(user)
        if len(keys) >= KEYS_PER_CHECK:
            check()
    check()


def read_splits(files: dict[str, Path]) -> InteractionSpool:
    """Rebuild per-user sequences from last_out_w_his files and check every row against them.

    Each user's sequence is the longest row's history plus its target (the first such row in file order); every
    history item after the first must be some row's target of that user, and every row's history and target must
    be the sequence's prefix and next item (DataFormatError naming the row otherwise). A position with no row of its
    own (e.g. dropped empty-history rows) borrows the next known timestamp, which keeps the order under the stable
    timestamp sort. The files are streamed twice (find each user's longest row; check every row and take its
    timestamp) and the rows go to an :class:`InteractionSpool`: memory holds each user's sequence (references to one
    string per item), its timestamps and a (user, target) key per row, some 32 bytes per interaction, not the rows,
    whose histories repeat every earlier item (the files grow with the square of a user's length). Parsed by
    pyarrow's CSV reader; a file that is not plainly valid UTF-8, or breaks a rule, is read again line by line, whose
    error names the line at fault."""
    try:
        return _read_splits(files, _split_rows_fast)
    except (NotFastPath, DataFormatError):
        return _read_splits(files, _split_rows)


def _read_splits(files: dict[str, Path], rows) -> InteractionSpool:
    """:func:`read_splits` with ``rows`` (:func:`_split_rows_fast` or :func:`_split_rows`) reading the files."""
    paths = [str(p) for p in files.values()]
    item_ids: dict[str, int] = {}
    item_names: list[str] = []

    def canonical(item: str) -> str:  # one str object per item: sequences hold references (8 bytes each)
        number = item_ids.get(item)
        if number is None:
            item_ids[item] = len(item_names)
            item_names.append(item)
            return item
        return item_names[number]

    # pass 1: each user's longest row and every row's (user, target) pair
    longest: dict[str, tuple[list[str], int, int]] = {}  # user -> (sequence, file index, line), first seen first
    user_ids: dict[str, int] = {}
    row_users, row_targets = array("q"), array("q")
    for index, _, line, user, target, history, _ in rows(files):
        row_users.append(user_ids.setdefault(user, len(user_ids)))
        row_targets.append(item_ids[canonical(target)])
        known = longest.get(user)
        if known is None or len(history) + 1 > len(known[0]):
            longest[user] = ([canonical(h) for h in history] + [item_names[row_targets[-1]]], index, line)
    _check_history_items(longest, user_ids, item_ids, row_users, row_targets, paths)
    del row_users, row_targets
    # pass 2: every row agrees with its user's sequence; its timestamp goes to its position
    times = {user: array("d", [math.nan]) * len(sequence) for user, (sequence, _, _) in longest.items()}
    for _, path, line, user, target, history, stamp in rows(files):
        n = len(history)
        if user not in longest or n >= len(longest[user][0]):
            raise DataFormatError(path, f"user {user}: a row the first reading did not see (did the file change "
                                  "while it was read?)", line=line)
        sequence, index, first = longest[user]
        if sequence[n] != target or history != sequence[:n]:
            raise DataFormatError(path, f"user {user}: history and target disagree with the user's longest "
                                  f"history ({paths[index]}:{first})", line=line, field="history")
        times[user][n] = stamp
    spool = InteractionSpool(paths[0])
    try:
        for user, (sequence, _, _) in longest.items():
            stamps = times.pop(user)
            known = [t for t in stamps if not math.isnan(t)]
            for k in range(len(stamps) - 1, -1, -1):
                if math.isnan(stamps[k]) and known:
                    stamps[k] = stamps[k + 1] if k + 1 < len(stamps) else known[-1]
            for item, stamp in zip(sequence, stamps):
                spool.add(user, item, stamp)
        return spool.finish()
    except BaseException:
        spool.cleanup()
        raise


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
