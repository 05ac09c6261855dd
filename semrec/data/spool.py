"""Interactions written to disk while a source is read, so that ``semrec prepare`` does not hold them (issue 20, §3).

A reader calls :meth:`InteractionSpool.add` once per interaction (raw user id, raw item id, timestamp); every
:attr:`InteractionSpool.CHUNK` rows the pending rows become one Parquet row group of a temporary file
(``user``, ``item``: string; ``timestamp``: float64, NaN when the source has none; ``order``: int64, the input
position that breaks timestamp ties). Memory holds one chunk, the distinct item ids (the catalogue, which the metadata
reader needs) and a few counters, whatever the file's size. :func:`semrec.data.build.write_dataset` reads the file back
through DuckDB (an out-of-core sort under a memory limit).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from semrec.errors import DataFormatError, SemrecError


def temporary_folder(prefix: str, what: str) -> Path:
    """A new folder under ``TMPDIR`` (Python's :func:`tempfile.gettempdir`); SemrecError naming it when it cannot be
    made."""
    try:
        return Path(tempfile.mkdtemp(prefix=prefix))
    except OSError as exc:
        raise SemrecError(f"cannot make a temporary folder for {what} under {tempfile.gettempdir()} ({exc}); set "
                          "TMPDIR to a writable folder") from None


SCHEMA = pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.float64()), ("order", pa.int64())])


class InteractionSpool:
    """Interactions of one source streamed to a temporary Parquet file in row groups of :attr:`CHUNK` rows.

    ``where`` (the file being read) is named in errors. Timestamps are checked as they pass: they must be all absent
    (NaN) or all finite and within int64 (anything else would silently reorder sequences or drop every timestamp);
    :meth:`finish` raises DataFormatError naming the first bad interaction. The temporary folder is removed by
    :meth:`cleanup` or when the spool is garbage-collected.
    """

    CHUNK = 262_144

    def __init__(self, where: str | Path):
        self.where = where
        self.folder = temporary_folder("semrec-spool-", "the interactions read")
        self._remove = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.path = self.folder / "interactions.parquet"
        self._writer: pq.ParquetWriter | None = None
        self._users: list[str] = []
        self._items: list[str] = []
        self._stamps = array("d")
        self.n_rows = 0
        self.n_missing_time = 0  # NaN timestamps
        self._first_bad: tuple[int, str, str, float] | None = None  # (row, user, item, value)
        self.items: set[str] = set()  # distinct raw item ids
        self.finished = False

    # ----- writing -------------------------------------------------------------------------------
    def add(self, user: str, item: str, timestamp: float = math.nan) -> None:
        """One interaction, in input order."""
        self._users.append(user)
        self._items.append(item)
        self._stamps.append(timestamp)
        if len(self._users) >= self.CHUNK:
            self._flush()

    def extend(self, users: list[str], items: list[str], timestamps: np.ndarray) -> None:
        """Many interactions at once (``timestamps``: float64, one per row)."""
        for start in range(0, len(users), self.CHUNK):
            stop = start + self.CHUNK
            self._users.extend(users[start:stop])
            self._items.extend(items[start:stop])
            self._stamps.extend(np.asarray(timestamps[start:stop], dtype=np.float64).tolist())
            if len(self._users) >= self.CHUNK:
                self._flush()

    @classmethod
    def from_frame(cls, frame: Any, where: str | Path) -> InteractionSpool:
        """A spool holding a ``pandas.DataFrame`` with columns ``user``, ``item`` (raw ids, any dtype: made strings)
        and ``timestamp`` (numbers; NaN = none). DataFormatError when a timestamp is not a number."""
        try:
            stamps = frame["timestamp"].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(where, f"timestamps must be numbers ({exc})", field="timestamp") from None
        spool = cls(where)
        spool.extend(frame["user"].astype(str).tolist(), frame["item"].astype(str).tolist(), stamps)
        return spool.finish()

    def add_arrays(self, users: pa.Array, items: pa.Array, timestamps: np.ndarray) -> None:
        """Many interactions as Arrow string arrays (raw user and item ids) and float64 timestamps, written as they
        are (after the rows pending from :meth:`add`)."""
        self._flush()
        self._write(users, items, np.asarray(timestamps, dtype=np.float64))

    def _flush(self) -> None:
        if self._users:
            self._write(pa.array(self._users, pa.string()), pa.array(self._items, pa.string()),
                        np.frombuffer(self._stamps, dtype=np.float64))
            self._users, self._items, self._stamps = [], [], array("d")

    def _write(self, users: pa.Array, items: pa.Array, stamps: np.ndarray) -> None:
        if not len(users):
            return
        missing = np.isnan(stamps)
        self.n_missing_time += int(missing.sum())
        if self._first_bad is None:
            bad = np.flatnonzero(missing | ~np.isfinite(stamps) | (np.abs(stamps) >= 2.0**63))
            if bad.size:
                k = int(bad[0])
                self._first_bad = (self.n_rows + k, users[k].as_py(), items[k].as_py(), float(stamps[k]))
        self.items.update(pc.unique(items).to_pylist())
        order = np.arange(self.n_rows, self.n_rows + len(users), dtype=np.int64)
        batch = pa.record_batch([users.cast(pa.string()), items.cast(pa.string()), pa.array(stamps),
                                 pa.array(order)], schema=SCHEMA)
        try:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.path, SCHEMA)
            self._writer.write_batch(batch)
        except OSError as exc:  # disk full, folder removed
            raise SemrecError(f"cannot write the interactions read from {self.where} to {self.path} ({exc}); set "
                              "TMPDIR to a folder with room for them") from None
        self.n_rows += len(users)

    def finish(self) -> InteractionSpool:
        """Write the last rows and close the file; DataFormatError when timestamps are neither all absent nor all
        usable (naming the first bad interaction). Returns ``self``; calling it again does nothing."""
        if self.finished:
            return self
        self._flush()
        if self._writer is None:
            pq.write_table(SCHEMA.empty_table(), self.path)
        else:
            self._writer.close()
        self.finished = True
        if self.n_missing_time != self.n_rows and self._first_bad is not None:
            n_bad = self.n_missing_time + self._count_unusable()
            row, user, item, value = self._first_bad
            raise DataFormatError(self.where, f"{n_bad} of {self.n_rows} interaction(s) have no usable timestamp "
                                  f"(first: user {user!r}, item {item!r}: {value}); "
                                  "timestamps must be all finite or all absent", field="timestamp")
        return self

    def _count_unusable(self) -> int:
        """Finite-or-NaN aside: the rows whose timestamp is infinite or beyond int64 (read back, error path only)."""
        count = 0
        for batch in pq.ParquetFile(self.path).iter_batches(columns=["timestamp"]):
            stamps = batch.column(0).to_numpy(zero_copy_only=False)
            count += int((np.isinf(stamps) | (np.abs(stamps) >= 2.0**63)).sum())
        return count

    # ----- facts ---------------------------------------------------------------------------------
    @property
    def has_time(self) -> bool:
        """True when every interaction has a timestamp (after :meth:`finish`)."""
        return self.n_rows > 0 and self.n_missing_time == 0

    def cleanup(self) -> None:
        """Remove the temporary folder (also done when the spool is garbage-collected)."""
        if self._writer is not None and not self.finished:
            self._writer.close()
        self._remove()
