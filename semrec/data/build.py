"""Build the canonical dataset from a source, out of core (issue 20, §3).

:func:`write_dataset` reads the interactions a source spooled to disk (:class:`semrec.data.spool.InteractionSpool`)
through DuckDB, whose sorts, joins and window functions spill to a temporary folder beyond ``memory_limit``; the
sequences are written to ``sequences.parquet`` batch by batch. What stays in Python memory is the catalogue (item ids
and texts), one batch of interactions and one int32 length per user, so the peak no longer grows with the number of
interactions (`bench/growth.py`, ``prepare`` rows). :func:`build_dataset` is the same build into a temporary folder,
loaded back: the in-memory form tests and small datasets use.

The rules (unchanged from the in-memory build they replace): interactions on items without metadata are dropped and
counted (``missing_meta='drop'``) or kept with empty texts (``'keep'``); per user, interactions are sorted by timestamp,
input order breaking ties, and repeated items dropped (first kept); items are numbered 1..N and users 0..U-1 in
natural order of their raw ids (:func:`natural_order`).
"""

from __future__ import annotations

import datetime as _dt
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from semrec import __version__
from semrec.artifacts import DatasetFolder
from semrec.data.dataset import ID_CHECKS, SCHEMA_VERSION, CanonicalDataset, SourceData, id_warnings, sequences_schema
from semrec.data.spool import InteractionSpool, temporary_folder
from semrec.errors import DataFormatError, SemrecError
from semrec.io import atomic_path, sha256_file

DEFAULT_MEMORY_LIMIT = "256MB"  # peak RSS flat in the file at 10^6 items (bench/results/growth_1e7.md)
BATCH_ROWS = 262_144


def natural_key(column: str) -> str:
    """SQL ``ORDER BY`` terms that sort integer strings (``-?[0-9]+``) by value, ties by the string itself: the order
    of :func:`semrec.data.dataset.natural_order` for all-integer ids, for integers of any length."""
    neg = f"starts_with({column}, '-')"
    digits = f"ltrim(CASE WHEN {neg} THEN substr({column}, 2) ELSE {column} END, '0')"
    return (f"{neg} DESC, CASE WHEN {neg} THEN -length({digits}) ELSE length({digits}) END, "
            f"CASE WHEN {neg} THEN NULL ELSE {digits} END, CASE WHEN {neg} THEN {digits} END DESC, {column}")


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|%)\s*", re.IGNORECASE)


def check_memory_limit(value: Any) -> str:
    """``value`` when it is a positive size DuckDB reads (``512MB``, ``4GB``, ``2GiB``, ``50%`` of the machine's
    memory); else SemrecError (DuckDB itself would read ``-5GB`` as no limit at all)."""
    match = _SIZE.fullmatch(str(value))
    if not match or float(match.group(1)) <= 0 or (match.group(2) == "%" and float(match.group(1)) > 100):
        raise SemrecError(f"memory_limit {value!r} is not a size DuckDB understands: a positive number with a unit, "
                          "e.g. '1GB', '512MB', '2GiB' or '50%'")
    return str(value).strip()


def _quoted(value: Any) -> str:
    """``value`` as an SQL string literal (a quote in a path or a setting doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def _connect(folder: Path, memory_limit: str):
    import duckdb

    con = duckdb.connect(str(folder / "build.duckdb"))
    try:
        con.execute(f"SET memory_limit = {_quoted(check_memory_limit(memory_limit))}")
    except duckdb.Error as exc:
        con.close()
        raise SemrecError(f"memory_limit {memory_limit!r} is not a size DuckDB understands: {exc}") from None
    con.execute(f"SET temp_directory = {_quoted(folder / 'spill')}")
    con.execute("SET preserve_insertion_order = false")
    return con


def _one(con, sql: str) -> Any:
    """The single value a query returns (fetched whole: DuckDB refuses new work while a result is unfinished)."""
    return con.execute(sql).fetchall()[0][0]


def _number(con, table: str, source: str, column: str, first: int) -> None:
    """``CREATE TABLE table(raw, id)``: the distinct values of ``source.column`` numbered from ``first`` in natural
    order (by value when every one is an integer string, else by code point, as Python sorts strings)."""
    con.execute(f"CREATE TABLE {table}_raw AS SELECT DISTINCT {column} AS raw FROM {source}")
    all_int = _one(con, f"SELECT coalesce(bool_and(regexp_full_match(raw, '-?[0-9]+')), false) "
                          f"FROM {table}_raw")
    order = natural_key("raw") if all_int else "raw"
    con.execute(f"CREATE TABLE {table} AS SELECT raw, row_number() OVER (ORDER BY {order}) - 1 + {first} AS id "
                f"FROM {table}_raw")
    con.execute(f"DROP TABLE {table}_raw")


def write_dataset(source: SourceData, out: str | Path, missing_meta: str = "drop",
                  memory_limit: str = DEFAULT_MEMORY_LIMIT) -> dict[str, Any]:
    """Build the canonical dataset of ``source`` into the folder ``out`` (``items.parquet``, ``sequences.parquet``,
    ``manifest.json`` last, each atomically) and return its manifest, which carries the statistics
    (``manifest['stats']``, as :meth:`CanonicalDataset.stats`).

    ``source.interactions`` is an :class:`InteractionSpool` (streamed readers) or a DataFrame (spooled here).
    ``memory_limit``: DuckDB's working memory before it spills to a temporary folder (under ``TMPDIR``).
    Raises SemrecError for a bad ``missing_meta`` or ``memory_limit``, DataFormatError (naming the source file) when
    no interaction is left, when every text is empty, or when timestamps are neither all absent nor all usable.
    """
    if missing_meta not in ("drop", "keep"):
        raise SemrecError(f"missing_meta must be 'drop' or 'keep', got {missing_meta!r}")
    check_memory_limit(memory_limit)
    where = source.files[0] if source.files else source.name
    spool = source.interactions
    owned = not isinstance(spool, InteractionSpool)
    if owned:
        spool = InteractionSpool.from_frame(spool, where)
    spool.finish()
    import duckdb

    work = temporary_folder("semrec-build-", "the out-of-core sort")
    try:
        con = _connect(work, memory_limit)
        try:
            return _build(con, source, spool, Path(out), missing_meta, where)
        except duckdb.Error as exc:  # out of memory or disk while sorting
            raise SemrecError(f"building the dataset failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                              f"the sort works in memory_limit {memory_limit} and spills to {work.parent}: raise "
                              "--memory-limit, or free space there (or set TMPDIR to a folder with room)") from None
        finally:
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if owned:
            spool.cleanup()


def _build(con, source: SourceData, spool: InteractionSpool, out: Path, missing_meta: str, where) -> dict[str, Any]:
    skips = dict(source.skips)
    con.execute(f"CREATE VIEW inter AS SELECT * FROM read_parquet({_quoted(spool.path)})")
    n_source_users = _one(con, "SELECT count(DISTINCT user) FROM inter")
    meta = source.items.drop_duplicates("raw_id", keep="first")
    skips["duplicate_metadata_rows"] = skips.get("duplicate_metadata_rows", 0) + len(source.items) - len(meta)
    meta = meta.assign(raw_id=meta["raw_id"].astype(str))
    con.register("meta_source", pa.table({"raw": pa.array(meta["raw_id"].tolist(), pa.string())}))
    con.execute("CREATE TABLE meta_ids AS SELECT raw FROM meta_source")
    con.unregister("meta_source")

    unknown = "item NOT IN (SELECT raw FROM meta_ids)"
    if missing_meta == "drop":
        skips["interactions_on_items_without_metadata"] = _one(con, f"SELECT count(*) FROM inter WHERE {unknown}")
        con.execute(f"CREATE VIEW kept AS SELECT * FROM inter WHERE NOT ({unknown})")
    else:
        skips["items_without_metadata_kept_with_empty_text"] = _one(
            con, f"SELECT count(DISTINCT item) FROM inter WHERE {unknown}")
        con.execute("CREATE VIEW kept AS SELECT * FROM inter")
    n_kept = _one(con, "SELECT count(*) FROM kept")
    if n_kept == 0:
        raise DataFormatError(where, "no interactions left (does the metadata cover the interaction items?)")

    _number(con, "users", "kept", "user", 0)
    time_order = '"timestamp", "order"' if spool.has_time else '"order"'
    con.execute(f"""CREATE TABLE seq AS SELECT uid, item, "timestamp", "order" FROM (
        SELECT u.id AS uid, k.item, k."timestamp", k."order",
               row_number() OVER (PARTITION BY u.id, k.item ORDER BY {time_order}) AS nth
        FROM kept k JOIN users u ON k.user = u.raw) WHERE nth = 1""")
    n_seq = _one(con, "SELECT count(*) FROM seq")
    skips["duplicate_interactions"] = skips.get("duplicate_interactions", 0) + n_kept - n_seq

    _number(con, "item_ids", "seq", "item", 1)
    item_order = con.sql("SELECT raw FROM item_ids ORDER BY id").to_arrow_table().column(0).to_pylist()
    # a reader may have left such items out already (and counted them in source.skips)
    skips["metadata_items_without_interactions"] = (
        skips.get("metadata_items_without_interactions", 0)
        + _one(con, "SELECT count(*) FROM meta_ids WHERE raw NOT IN (SELECT raw FROM item_ids)"))
    n_users = _one(con, "SELECT count(*) FROM users")
    skips["users_without_interactions_left"] = int(n_source_users - n_users)

    meta = meta.set_index("raw_id").reindex(item_order).fillna("")
    items = pd.DataFrame({"item_id": np.arange(1, len(item_order) + 1, dtype=np.int64), "raw_id": item_order})
    for view in source.views:  # kept as pandas' (pyarrow-backed) strings: no Python str per text
        items[view] = meta[view].astype(str).reset_index(drop=True)
    if source.views and all((items[v] == "").all() for v in source.views):
        raise DataFormatError(source.files[-1] if source.files else source.name,
                              "every text field of every item is empty; check the metadata file")

    out.mkdir(parents=True, exist_ok=True)
    lengths, user_warnings = _write_sequences(con, out / DatasetFolder.SEQUENCES, spool.has_time)
    with atomic_path(out / DatasetFolder.ITEMS) as tmp:
        items.to_parquet(tmp, index=False)
    n_inter = int(lengths.sum())
    stats = {
        "users": int(n_users), "items": len(items), "interactions": n_inter,
        "sparsity": 1.0 - n_inter / max(1, n_users * len(items)),
        "avg_length": float(lengths.mean()), "min_length": int(lengths.min()), "max_length": int(lengths.max()),
        "empty_rate": {v: float((items[v] == "").mean()) for v in source.views},
    }
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
        "id_warnings": {"item": id_warnings(item_order), "user": user_warnings},
        "counts": {k: stats[k] for k in ("users", "items", "interactions")},
        "stats": stats,
    }
    DatasetFolder(out).write_manifest(manifest)
    return manifest


class _Warnings:
    """:func:`id_warnings` accumulated over batches of raw ids."""

    def __init__(self, examples: int = 3):
        self.examples = examples
        self.found: dict[str, dict[str, Any]] = {}

    def add(self, raw_ids: list[str]) -> None:
        for kind, found in id_warnings(raw_ids, self.examples).items():
            entry = self.found.setdefault(kind, {"count": 0, "examples": []})
            entry["count"] += found["count"]
            entry["examples"].extend(found["examples"][: self.examples - len(entry["examples"])])

    def result(self) -> dict[str, dict[str, Any]]:
        return {kind: self.found[kind] for kind in ID_CHECKS if kind in self.found}


def _write_sequences(con, path: Path, has_time: bool) -> tuple[np.ndarray, dict]:
    """Stream the sorted interactions into ``sequences.parquet`` (one list row per user, users in id order); returns
    the per-user lengths (int32) and the user id warnings."""
    order = 's."timestamp", s."order"' if has_time else 's."order"'
    rows = con.sql(f"""SELECT s.uid, i.id AS iid, s."timestamp" FROM seq s JOIN item_ids i ON s.item = i.raw
                           ORDER BY s.uid, {order}""").to_arrow_reader(BATCH_ROWS)
    names = con.cursor().sql("SELECT raw FROM users ORDER BY id").to_arrow_reader(BATCH_ROWS)
    pending_names: list[pa.Array] = []
    n_pending = 0
    warnings = _Warnings()
    lengths: list[np.ndarray] = []
    schema = sequences_schema()

    def take_names(n: int) -> pa.Array:
        nonlocal pending_names, n_pending
        while n_pending < n:
            batch = names.read_next_batch()
            pending_names.append(batch.column(0))
            n_pending += len(batch)
        joined = pa.concat_arrays(pending_names) if len(pending_names) > 1 else pending_names[0]
        pending_names, n_pending = [joined.slice(n)], n_pending - n
        return joined.slice(0, n)

    carry = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        def emit(uid: np.ndarray, iid: np.ndarray, stamps: np.ndarray) -> None:
            bounds = np.flatnonzero(np.diff(uid)) + 1
            offsets = np.concatenate([[0], bounds, [len(uid)]]).astype(np.int32)
            users = uid[offsets[:-1]]
            raw = take_names(len(users))
            warnings.add(raw.to_pylist())
            lengths.append(np.diff(offsets))
            writer.write_table(pa.table({
                "user_id": pa.array(users, pa.int32()),
                "raw_user_id": raw.cast(pa.string()),
                "item_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(iid, pa.int32())),
                "timestamps": (pa.ListArray.from_arrays(pa.array(offsets), pa.array(stamps.astype(np.int64)))
                               if has_time else pa.nulls(len(users), pa.list_(pa.int64()))),
            }, schema=schema))

        for batch in rows:
            if not len(batch):
                continue
            uid = np.concatenate([carry[0], batch.column(0).to_numpy()])
            iid = np.concatenate([carry[1], batch.column(1).to_numpy()])
            stamps = np.concatenate([carry[2], batch.column(2).to_numpy(zero_copy_only=False)])
            cut = int(np.searchsorted(uid, uid[-1]))  # the last user may go on in the next batch
            if cut:
                emit(uid[:cut], iid[:cut], stamps[:cut])
            carry = (uid[cut:], iid[cut:], stamps[cut:])
        if len(carry[0]):
            emit(*carry)
    return (np.concatenate(lengths) if lengths else np.zeros(0, np.int32)), warnings.result()


def build_dataset(source: SourceData, missing_meta: str = "drop",
                  memory_limit: str = DEFAULT_MEMORY_LIMIT) -> CanonicalDataset:
    """:func:`write_dataset` into a temporary folder, loaded back as a :class:`CanonicalDataset` (same errors)."""
    folder = temporary_folder("semrec-dataset-", "the dataset")
    try:
        write_dataset(source, folder, missing_meta=missing_meta, memory_limit=memory_limit)
        return CanonicalDataset.load(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


