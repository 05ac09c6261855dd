"""The canonical dataset every model reads: dense item ids, text views, time-ordered user sequences.

On disk (one folder): ``items.parquet`` (item_id, raw_id, one string column per view),
``sequences.parquet`` (user_id, raw_user_id, item_ids, timestamps) and ``manifest.json``
(schema version, source checksums and text encodings, counts, skips, warnings about raw ids that are awkward on a
command line). Item ids run 1..N in natural order of the raw ids
(numeric when every raw id is an integer, else lexicographic); 0 is padding. Users are numbered
0..U-1 the same way.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from semrec.artifacts import DatasetFolder
from semrec.data.splits import LeaveLastOutSplit, leave_last_out
from semrec.errors import SemrecError
from semrec.io import atomic_path, read_json, require_artifact, sha256_text

SCHEMA_VERSION = 1
ALL_VIEW = "all"  # derived view: the non-empty views of an item joined with a space
_INT = re.compile(r"-?[0-9]+")


@dataclass
class SourceData:
    """What a source module hands to :func:`build_dataset` (raw ids, cleaned texts).

    ``interactions`` is an :class:`~semrec.data.spool.InteractionSpool` (what the readers stream to disk) or a
    DataFrame with columns ``user``, ``item`` (raw ids as str) and ``timestamp`` (float, NaN when the source has
    none); its row order is the tie-breaker for equal timestamps. ``items`` has a ``raw_id`` column plus one column
    per view.
    """

    name: str
    format: str
    interactions: Any
    items: pd.DataFrame
    views: list[str]
    files: list[Path]
    skips: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    encodings: dict[str, str] = field(default_factory=dict)  # file name -> how its text was decoded


def natural_order(raw_ids: list[str]) -> list[str]:
    """Sort raw ids numerically when all are integers (ASCII digits, optional minus; ties by the string), else as
    strings by code point (deterministic, never hash order). :func:`semrec.data.build.natural_key` is the SQL form."""
    unique = sorted(set(raw_ids))
    if unique and all(_INT.fullmatch(r) for r in unique):
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
        """Write parquet files and the manifest (manifest last, every file atomically; its ``stats`` and ``counts``
        recomputed from the data written)."""
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
        }, schema=sequences_schema())
        with atomic_path(out / DatasetFolder.SEQUENCES) as tmp:
            pq.write_table(table, tmp)
        stats = self.stats()  # what `semrec info` prints without loading: always the data being written
        self.manifest["stats"] = stats
        self.manifest["counts"] = {k: stats[k] for k in ("users", "items", "interactions")}
        DatasetFolder(out).write_manifest(self.manifest)
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


def sequences_schema() -> pa.Schema:
    """Columns of ``sequences.parquet``: ``user_id`` int32, ``raw_user_id`` string, ``item_ids`` list<int32> (time
    order), ``timestamps`` list<int64> (a null row per user when the source has no timestamps)."""
    return pa.schema([("user_id", pa.int32()), ("raw_user_id", pa.string()), ("item_ids", pa.list_(pa.int32())),
                      ("timestamps", pa.list_(pa.int64()))])


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
