"""Atomic file writing and checksums shared by every artifact writer."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from semrec.errors import SemrecError


def _new_temporary(path: Path) -> Path:
    """Create an empty, unique ``.<name>.<random>.tmp`` next to ``path``, with the mode an ordinary new file gets
    (0666 less the process umask; ``tempfile.mkstemp`` would make it 0600, and the rename would keep that)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file next to {path}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    The file is created like an ordinary one (mode 0666 less the umask), so artifacts are as readable by other
    accounts as the umask allows. Writers may replace the temporary file (the rename takes whatever is there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file. Raises SemrecError naming the file when it is missing or not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SemrecError(f"{path}: not found") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise SemrecError(f"{path}: not valid JSON ({exc})") from None


def require_artifact(path: str | Path, folder_kind: str, fix: str) -> Path:
    """``path`` if it is a file, else SemrecError ``"<path>: missing (incomplete <folder_kind> folder); <fix>"``."""
    path = Path(path)
    if not path.is_file():
        raise SemrecError(f"{path}: missing (incomplete {folder_kind} folder); {fix}")
    return path


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Save a numpy array atomically (``np.save`` on a temporary file, then rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def write_padded_npy(path: str | Path, matrix: np.ndarray, pad_rows: int = 1, block: int = 65536,
                     pad_value: float = 0) -> None:
    """Save ``[pad_rows rows of pad_value; matrix]`` as one ``.npy`` atomically, writing the header, the padding rows
    and then ``matrix`` in blocks of rows: no stacked copy (``np.vstack`` held a second [N, dim] matrix, 1.5 GB at 10^6
    items x 384 dims). The file equals ``np.save`` of the stacked array."""
    if not isinstance(matrix, NpyRows):  # an NpyRows is copied block by block, never read whole
        matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise SemrecError(f"write_padded_npy: a 2-d matrix is needed, got shape {matrix.shape}")
    shape = (matrix.shape[0] + pad_rows, matrix.shape[1])
    header = {"descr": np.lib.format.dtype_to_descr(matrix.dtype), "fortran_order": False, "shape": shape}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)  # what np.save writes for such a header
            fh.write(np.full((pad_rows, shape[1]), pad_value, dtype=matrix.dtype).tobytes())
            for first in range(0, matrix.shape[0], block):
                fh.write(np.ascontiguousarray(matrix[first:first + block]).tobytes())


class NpyRowWriter:
    """A ``[n_rows, dim]`` ``.npy`` file filled row by row in any order, never held in memory (``semrec embed`` at
    10^6 items x 384 dims: a 1.5 GB matrix before). Use as a context manager: the file appears atomically at ``path``
    when the block exits without an error; :meth:`put` writes rows with ``os.pwrite`` (contiguous runs of rows in
    one call). Rows never written read as zeros. The file equals ``np.save`` of the matrix."""

    def __init__(self, path: str | Path, n_rows: int, dim: int, dtype: Any = np.float32):
        self.path, self.shape, self.dtype = Path(path), (int(n_rows), int(dim)), np.dtype(dtype)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self._atomic = None
        self._fh = None

    def __enter__(self) -> NpyRowWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._fh = open(tmp, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(self._fh, header)
        self._fh.flush()
        self._start = self._fh.tell()
        self._fh.truncate(self._start + self.shape[0] * self._row_bytes)
        return self

    def put(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Write ``values[k]`` (``[len(rows), dim]``, cast to the file's dtype) as row ``rows[k]``."""
        rows = np.asarray(rows, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=self.dtype).reshape(len(rows), self.shape[1])
        if not len(rows):
            return
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise IndexError(f"NpyRowWriter: row index out of range for {self.shape[0]} rows")
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
        runs = np.flatnonzero(np.diff(rows) != 1) + 1
        fd = self._fh.fileno()
        for first, stop in zip(np.concatenate([[0], runs]), np.concatenate([runs, [len(rows)]])):
            data = memoryview(values[first:stop].reshape(-1).view(np.uint8))
            position, done = self._start + int(rows[first]) * self._row_bytes, 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], position + done)

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()
        self._atomic.__exit__(*exc)


def cache_root() -> Path:
    """semrec's cache folder: ``$SEMREC_CACHE`` or ``~/.cache/semrec``."""
    return Path(os.environ.get("SEMREC_CACHE", Path.home() / ".cache" / "semrec"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(*parts: str) -> str:
    """Hash a sequence of strings unambiguously (each part is length-prefixed)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class NpyRows:
    """The rows of a 2-d ``.npy`` matrix on disk, read when indexed and never held whole (issue 20: a tokenizer's
    input of 10^6 items x 384 dims is 1.5 GB; read through a memory map, every row once touched would stay in the
    process's resident set, so reads go through ``os.pread`` into fresh arrays instead).

    ``x[a:b]`` (step 1) and ``x[index_array]`` return ``ndarray`` copies in the file's dtype; ``np.asarray(x)``
    reads everything (for small inputs). ``skip`` leading rows are hidden (``semrec embed``'s padding row);
    :meth:`subset` gives some of the rows as an NpyRows of their own.
    Raises :class:`SemrecError` naming the file when it is not a readable 2-d C-order numeric ``.npy`` or is shorter
    than its header says.
    """

    ndim = 2

    def __init__(self, path: str | Path, skip: int = 0):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                offset = f.tell()
        except (OSError, ValueError) as exc:
            raise SemrecError(f"{self.path}: cannot read ({type(exc).__name__}: {exc})") from None
        if len(shape) != 2 or fortran or not np.issubdtype(dtype, np.number):
            raise SemrecError(f"{self.path}: expected a 2-d C-order numeric matrix, got shape {shape}, dtype {dtype}"
                              f"{' (Fortran order)' if fortran else ''}")
        if not 0 <= skip <= shape[0]:
            raise SemrecError(f"{self.path}: cannot skip {skip} of its {shape[0]} rows")
        self.dtype = np.dtype(dtype)
        self._row_bytes = int(shape[1]) * self.dtype.itemsize
        size = self.path.stat().st_size
        if size < offset + shape[0] * self._row_bytes:
            raise SemrecError(f"{self.path}: truncated ({size} bytes, its header says {shape[0]} x {shape[1]} "
                              f"{self.dtype})")
        self._start = offset + skip * self._row_bytes
        self.shape = (int(shape[0]) - skip, int(shape[1]))
        self._rows: np.ndarray | None = None  # with subset(): the file rows these rows are

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"NpyRows({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def _read(self, fd: int, first: int, count: int, out: np.ndarray) -> None:
        """Rows ``first .. first + count - 1`` of the file into ``out`` (C-contiguous), in reads of at most 1 GiB (one
        pread returns at most ~2 GiB on Linux)."""
        view = memoryview(out.reshape(-1).view(np.uint8))
        done, position = 0, self._start + first * self._row_bytes
        while done < len(view):
            got = os.preadv(fd, [view[done:done + (1 << 30)]], position + done)
            if got == 0:
                raise SemrecError(f"{self.path}: truncated while reading rows {first}..{first + count - 1}")
            done += got

    def subset(self, rows: np.ndarray) -> NpyRows:
        """The rows ``rows`` (indices into these rows) as an NpyRows of their own, still read on demand (a
        tokenizer fitted on some items reads them like the whole catalogue: in blocks, never all at once)."""
        picked = self._file_rows(self._checked_index(rows))
        out = copy.copy(self)
        out._rows, out.shape = picked, (len(picked), self.shape[1])
        return out

    def _file_rows(self, local: np.ndarray) -> np.ndarray:
        return local if self._rows is None else self._rows[local]

    def _checked_index(self, key: Any) -> np.ndarray:
        rows = np.asarray(key)
        if rows.dtype == bool or rows.ndim != 1 or (len(rows) and not np.issubdtype(rows.dtype, np.integer)):
            raise TypeError(f"NpyRows: index with a slice or a 1-d integer array, got {type(key).__name__}")
        rows = np.where(rows < 0, rows + len(self), rows).astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"NpyRows: row index out of range for {len(self)} rows")
        return rows

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            first, stop, step = key.indices(len(self))
            if step != 1:
                raise TypeError("NpyRows: only slices of step 1")
            if self._rows is not None:
                return self._read_rows(self._rows[first:stop])
            out = np.empty((max(0, stop - first), self.shape[1]), dtype=self.dtype)
            if len(out):
                with open(self.path, "rb") as f:
                    self._read(f.fileno(), first, len(out), out)
            return out
        return self._read_rows(self._file_rows(self._checked_index(key)))

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """File rows ``rows`` (any order, repeats allowed), one read per run of consecutive rows."""
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        order = np.argsort(rows, kind="stable")
        with open(self.path, "rb") as f:
            i = 0
            while i < len(order):
                j = i + 1
                while j < len(order) and rows[order[j]] == rows[order[j - 1]] + 1:
                    j += 1
                block = np.empty((j - i, self.shape[1]), dtype=self.dtype)
                self._read(f.fileno(), int(rows[order[i]]), j - i, block)
                out[order[i:j]] = block
                i = j
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)
