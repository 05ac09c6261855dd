"""The canonical dataset every model reads: dense item ids, text views, time-ordered user sequences.

On disk (one folder): ``items.parquet`` (item_id, raw_id, one string column per view),
``sequences.parquet`` (user_id, raw_user_id, item_ids, timestamps) and ``manifest.json``
(schema version, source checksums and text encodings, counts, skips, warnings about raw ids that are awkward on a
command line). Item ids run 1..N in natural order of the raw ids
(numeric when every raw id is an integer, else lexicographic); 0 is padding. Users are numbered
0..U-1 the same way.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from semrec import __version__
from semrec.artifacts import DatasetFolder
from semrec.data.splits import LeaveLastOutSplit, leave_last_out
from semrec.errors import DataFormatError, SemrecError
from semrec.io import atomic_path, read_json, require_artifact, sha256_file, sha256_text, write_json

SCHEMA_VERSION = 1
ALL_VIEW = "all"  # derived view: the non-empty views of an item joined with a space
_INT = re.compile(r"^-?\d+$")


@dataclass
class SourceData:
    """What a source module hands to :func:`build_dataset` (raw ids, cleaned texts).

    ``interactions`` has columns ``user``, ``item`` (raw ids as str) and ``timestamp`` (float, NaN when
    the source has none); its row order is the tie-breaker for equal timestamps. ``items`` has a
    ``raw_id`` column plus one column per view.
    """

    name: str
    format: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    views: list[str]
    files: list[Path]
    skips: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    encodings: dict[str, str] = field(default_factory=dict)  # file name -> how its text was decoded


def natural_order(raw_ids: list[str]) -> list[str]:
    """Sort raw ids numerically when all are integers, else as strings (deterministic, never hash order)."""
    unique = sorted(set(raw_ids))
    if unique and all(_INT.match(r) for r in unique):
        return sorted(unique, key=int)
    return unique


class CanonicalDataset:
    """Items, users and sequences of one prepared dataset. Build with :func:`build_dataset`."""

    def __init__(self, items: pd.DataFrame, users: pd.DataFrame, sequences: list[np.ndarray],
                 timestamps: list[np.ndarray] | None, manifest: dict[str, Any]):
        self.items = items.reset_index(drop=True)
        self.users = users.reset_index(drop=True)
        self.sequences = sequences
        self.timestamps = timestamps
        self.manifest = manifest
        self._item_index: dict[str, int] | None = None

    # ----- basic facts -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def views(self) -> list[str]:
        return list(self.manifest["views"])

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def item_index(self) -> dict[str, int]:
        """Raw item id -> dense item id (1..N)."""
        if self._item_index is None:
            self._item_index = dict(zip(self.items["raw_id"], self.items["item_id"].astype(int)))
        return self._item_index

    def raw_item_ids(self, item_ids: np.ndarray) -> list[str]:
        """Dense ids -> raw ids."""
        raw = self.items["raw_id"].to_numpy()
        return [raw[i - 1] for i in np.asarray(item_ids)]

    def view_texts(self, view: str) -> list[str]:
        """Texts of one view (or the derived view ``all``), ordered by item id 1..N."""
        if view == ALL_VIEW:
            columns = [self.items[v].tolist() for v in self.views]
            return [" ".join(t for t in parts if t) for parts in zip(*columns)]
        if view not in self.views:
            raise SemrecError(f"dataset '{self.name}' has no text view '{view}' (views: {', '.join(self.views)})")
        return self.items[view].tolist()

    def split(self) -> LeaveLastOutSplit:
        """The leave-last-out split of the user sequences (see :mod:`semrec.data.splits`)."""
        return leave_last_out(self.sequences)

    def content_fingerprint(self) -> str:
        """sha256 of what models and the serving layer read: item raw ids and view texts, user raw ids and the item
        sequences (not timestamps, nor the manifest's dates: re-preparing the same source gives the same value)."""
        def strings(values: pd.Series) -> str:
            encoded = [v.encode("utf-8") for v in values.astype(str).tolist()]
            sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            return hashlib.sha256(sizes.tobytes() + b"".join(encoded)).hexdigest()

        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        flat = np.concatenate(self.sequences).astype(np.int64) if self.sequences else np.zeros(0, np.int64)
        sequences = hashlib.sha256(lengths.tobytes() + flat.tobytes()).hexdigest()
        return sha256_text(strings(self.items["raw_id"]), *[strings(self.items[v]) for v in self.views],
                           strings(self.users["raw_id"]), sequences)

    def train_items(self) -> np.ndarray:
        """Sorted ids of the items that occur in training sequences (the fit set of VQ-Rec's tokenizer)."""
        return train_items(self.sequences)

    # ----- statistics --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Users, items, interactions, sparsity, sequence lengths and the empty-field rate per view."""
        lengths = np.array([len(s) for s in self.sequences])
        n_inter = int(lengths.sum())
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "sparsity": 1.0 - n_inter / max(1, self.n_users * self.n_items),
            "avg_length": float(lengths.mean()) if len(lengths) else 0.0,
            "min_length": int(lengths.min()) if len(lengths) else 0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "empty_rate": {v: float((self.items[v] == "").mean()) for v in self.views},
        }

    # ----- persistence -------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write parquet files and the manifest (manifest last, every file atomically)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / DatasetFolder.ITEMS) as tmp:
            self.items.to_parquet(tmp, index=False)
        table = pa.table({
            "user_id": pa.array(self.users["user_id"].to_numpy(), pa.int32()),
            "raw_user_id": pa.array(self.users["raw_id"].tolist(), pa.string()),
            "item_ids": _list_array(self.sequences, pa.int32()),
            "timestamps": (_list_array(self.timestamps, pa.int64()) if self.timestamps is not None
                           else pa.nulls(self.n_users, pa.list_(pa.int64()))),
        })
        with atomic_path(out / DatasetFolder.SEQUENCES) as tmp:
            pq.write_table(table, tmp)
        write_json(DatasetFolder(out).manifest, self.manifest)
        return out

    @classmethod
    def load(cls, path: str | Path) -> CanonicalDataset:
        """Load a prepared dataset; a folder written by another schema version is refused clearly.

        Raises SemrecError naming the file when ``manifest.json``, ``items.parquet`` or ``sequences.parquet`` is
        missing or unreadable."""
        folder = Path(path)
        manifest, fix = _checked_manifest(folder)
        reading = folder / DatasetFolder.ITEMS
        try:
            items = pd.read_parquet(reading)
            reading = folder / DatasetFolder.SEQUENCES
            table = pq.read_table(reading)
            users = pd.DataFrame({
                "user_id": table.column("user_id").to_numpy().astype(np.int64),
                "raw_id": table.column("raw_user_id").to_pylist(),
            })
            sequences = _split_list_column(table.column("item_ids"), reading, "item_ids", fix)
            ts_column = table.column("timestamps")
            timestamps = (None if ts_column.null_count == len(ts_column)
                          else _split_list_column(ts_column, reading, "timestamps", fix))
        except (OSError, KeyError, pa.ArrowException) as exc:  # truncated, foreign or hand-edited file
            raise SemrecError(f"{reading}: cannot read ({type(exc).__name__}: {exc}); {fix}") from None
        return cls(items, users, sequences, timestamps, manifest)


def _list_array(rows: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    """One Arrow list per row from numpy arrays, through one flat buffer and its offsets (no Python int per value:
    10^7 interactions took ~1 GB as Python lists)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(rows) if len(rows) else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                    pa.array(flat, value_type))  # a checked cast: overflow raises


def _split_list_column(column: pa.ChunkedArray, path: Path, field: str, fix: str) -> list[np.ndarray]:
    """The rows of a list column as int64 arrays (views into one flat array); SemrecError naming the file and field
    when a row is null."""
    if column.null_count:
        raise SemrecError(f"{path}: {column.null_count} row(s) of '{field}' are empty (null); {fix}")
    lists = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if len(lists) == 0:
        return []
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    values = np.asarray(lists.values, dtype=np.int64)[offsets[0]:offsets[-1]]
    return np.split(values, offsets[1:-1] - offsets[0])


def _checked_manifest(folder: Path) -> tuple[dict, str]:
    """The manifest of a prepared dataset folder and the fix to name in errors, after the checks every reader makes:
    SemrecError when ``manifest.json`` is missing, of another schema version, or ``items.parquet`` /
    ``sequences.parquet`` is missing."""
    manifest_path = DatasetFolder(folder).manifest
    if not manifest_path.is_file():
        raise SemrecError(f"{folder}: not a prepared dataset (no manifest.json); run 'semrec prepare' first")
    manifest = read_json(manifest_path)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SemrecError(
            f"{manifest_path}: dataset schema version {version} is not supported by this semrec "
            f"(reads version {SCHEMA_VERSION}); re-run 'semrec prepare' to rebuild it"
        )
    fix = "re-run 'semrec prepare' to rebuild it"
    for name in (DatasetFolder.ITEMS, DatasetFolder.SEQUENCES):
        require_artifact(folder / name, "dataset", fix)
    return manifest, fix


def train_items(sequences: list[np.ndarray]) -> np.ndarray:
    """Sorted ids of the items that occur in the training part of ``sequences`` (leave-last-out)."""
    train = leave_last_out(sequences).train
    return np.unique(np.concatenate(train)) if train else np.zeros(0, dtype=np.int64)


def load_sequences(path: str | Path) -> list[np.ndarray]:
    """The users' item sequences of a prepared dataset (``int64`` arrays, user id order) without its texts, users and
    timestamps: what `semrec codes` reads for ``fit_on: train`` (10^6 items: the texts alone are ~0.5 GB). Raises
    SemrecError as :meth:`CanonicalDataset.load` does."""
    folder = Path(path)
    _, fix = _checked_manifest(folder)
    reading = folder / DatasetFolder.SEQUENCES
    try:
        column = pq.read_table(reading, columns=["item_ids"]).column("item_ids")
    except (OSError, KeyError, pa.ArrowException) as exc:  # truncated, foreign or hand-edited file
        raise SemrecError(f"{reading}: cannot read ({type(exc).__name__}: {exc}); {fix}") from None
    return _split_list_column(column, reading, "item_ids", fix)


def peek_dataset(path: str | Path) -> tuple[list[str], int]:
    """``(text views, number of items)`` of a prepared dataset without loading it: the manifest and the row count in
    ``items.parquet``'s footer (a catalogue of 10^6 items loads ~1.3 GB of texts and sequences; this reads a few
    KB). Raises SemrecError as :meth:`CanonicalDataset.load` does."""
    folder = Path(path)
    manifest, fix = _checked_manifest(folder)
    reading = folder / DatasetFolder.ITEMS
    try:
        n_items = pq.read_metadata(reading).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise SemrecError(f"{reading}: cannot read ({type(exc).__name__}: {exc}); {fix}") from None
    return list(manifest["views"]), int(n_items)


def _check_timestamps(source: SourceData, stamps: pd.Series) -> None:
    """Timestamps are all absent (NaN) or all finite and within int64; anything else would silently reorder
    sequences or drop every timestamp, so it is refused naming the first bad interaction."""
    where = source.files[0] if source.files else source.name
    try:
        values = stamps.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(where, f"timestamps must be numbers ({exc})", field="timestamp") from None
    missing = np.isnan(values)
    if missing.all():
        return
    bad = np.flatnonzero(missing | ~np.isfinite(values) | (np.abs(values) >= 2.0**63))
    if bad.size:
        row = source.interactions.iloc[int(bad[0])]
        raise DataFormatError(where, f"{bad.size} of {len(values)} interaction(s) have no usable timestamp "
                              f"(first: user {row['user']!r}, item {row['item']!r}: {values[bad[0]]}); "
                              "timestamps must be all finite or all absent", field="timestamp")


ID_CHECKS = {
    "comma": lambda raw: "," in raw,
    "outer_whitespace": lambda raw: raw != raw.strip(),
    "unprintable": lambda raw: not raw.isprintable(),
    "empty": lambda raw: raw == "",
}


def id_warnings(raw_ids: list[str], examples: int = 3) -> dict[str, dict[str, Any]]:
    """Raw ids that are awkward on a command line, by kind (``ID_CHECKS``): ``{kind: {count, examples}}``.

    A comma splits ``semrec recommend --history a,b``; outer whitespace is lost by shells and by the readers
    that strip fields; unprintable characters (tabs, newlines, zero-width and other control or format
    characters) cannot be typed. Such ids still work through ``recommend --item ID`` / ``--history-file`` and
    the HTTP API (JSON lists). Only kinds that occur are listed.
    """
    out: dict[str, dict[str, Any]] = {}
    for kind, check in ID_CHECKS.items():
        hits = [raw for raw in raw_ids if check(raw)]
        if hits:
            out[kind] = {"count": len(hits), "examples": hits[:examples]}
    return out


def build_dataset(source: SourceData, missing_meta: str = "drop") -> CanonicalDataset:
    """Turn raw interactions and item texts into a :class:`CanonicalDataset`.

    Per user, interactions are sorted by timestamp (stable: input order breaks ties) and repeated
    items are dropped (first kept). Interactions on items with no metadata are dropped and counted
    (``missing_meta='drop'``) or kept with empty texts (``'keep'``).
    """
    if missing_meta not in ("drop", "keep"):
        raise SemrecError(f"missing_meta must be 'drop' or 'keep', got {missing_meta!r}")
    skips = dict(source.skips)
    inter = source.interactions[["user", "item", "timestamp"]]  # pandas 3 copies these rows only when written
    _check_timestamps(source, inter["timestamp"])
    n_source_users = inter["user"].nunique()
    inter["order"] = np.arange(len(inter))
    meta = source.items.drop_duplicates("raw_id", keep="first")
    skips["duplicate_metadata_rows"] = skips.get("duplicate_metadata_rows", 0) + len(source.items) - len(meta)

    known = inter["item"].isin(set(meta["raw_id"]))
    n_unknown = int((~known).sum())
    if missing_meta == "drop":
        skips["interactions_on_items_without_metadata"] = n_unknown
        inter = inter[known]
    else:
        skips["items_without_metadata_kept_with_empty_text"] = int(inter.loc[~known, "item"].nunique())
    if inter.empty:
        raise DataFormatError(source.files[0], "no interactions left (does the metadata cover the interaction items?)")

    user_order = natural_order(inter["user"].unique().tolist())
    # as plain integers: mapping a categorical column (a streaming reader's) keeps it categorical, ordered by category
    inter["uid"] = inter["user"].map({raw: i for i, raw in enumerate(user_order)}).astype(np.int64)
    inter = inter.sort_values(["uid", "timestamp", "order"], kind="stable", na_position="last")
    before = len(inter)
    inter = inter.drop_duplicates(["uid", "item"], keep="first")
    skips["duplicate_interactions"] = skips.get("duplicate_interactions", 0) + before - len(inter)

    item_order = natural_order(inter["item"].unique().tolist())
    item_ids = {raw: i + 1 for i, raw in enumerate(item_order)}
    # a reader may have left such items out already (and counted them in source.skips)
    skips["metadata_items_without_interactions"] = (skips.get("metadata_items_without_interactions", 0)
                                                    + int((~meta["raw_id"].isin(item_ids)).sum()))
    skips["users_without_interactions_left"] = int(n_source_users - len(user_order))
    meta = meta.set_index("raw_id").reindex(item_order).fillna("")
    items = pd.DataFrame({"item_id": np.arange(1, len(item_order) + 1, dtype=np.int64), "raw_id": item_order})
    for view in source.views:  # kept as pandas' (pyarrow-backed) strings: no Python str per text
        items[view] = meta[view].astype(str).reset_index(drop=True)
    if source.views and all((items[v] == "").all() for v in source.views):
        raise DataFormatError(source.files[-1], "every text field of every item is empty; check the metadata file")

    bounds = np.flatnonzero(np.diff(inter["uid"].to_numpy())) + 1
    sequences = np.split(inter["item"].map(item_ids).to_numpy(np.int64), bounds)
    has_time = inter["timestamp"].notna().all()
    timestamps = np.split(inter["timestamp"].to_numpy().astype(np.int64), bounds) if has_time else None
    users = pd.DataFrame({"user_id": np.arange(len(user_order), dtype=np.int64), "raw_id": user_order})

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "semrec_version": __version__,
        "name": source.name,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "format": source.format,
            "options": source.options,
            "files": [{"name": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in source.files],
            "encodings": dict(source.encodings),
        },
        "views": list(source.views),
        "id_rule": "items 1..N and users 0..U-1 in natural order of raw ids; 0 = padding item",
        "sequence_rule": "per user: stable sort by timestamp (input order breaks ties), repeats dropped (first kept)",
        "missing_meta": missing_meta,
        "skips": {k: int(v) for k, v in skips.items()},
        "id_warnings": {"item": id_warnings(items["raw_id"].tolist()), "user": id_warnings(user_order)},
    }
    dataset = CanonicalDataset(items, users, sequences, timestamps, manifest)
    manifest["counts"] = {k: v for k, v in dataset.stats().items() if k in ("users", "items", "interactions")}
    return dataset
