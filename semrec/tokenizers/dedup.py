"""The extra de-duplication digit (TIGER-style), written once: :class:`DedupDigits`.

A code with the dedup digit is ``[base code..., digit]``. Items that share a base code (a *group*) are numbered
0, 1, 2, ... in row order. Given codes that already carry a digit, a new item gets the next free digit of its
group (``max existing digit + 1``, 0 for a new group), and further new items of that group in the same call
the following ones. With the input vectors' hashes (:func:`row_keys`) of the items that hold the existing codes,
an item whose vectors and base code match one of them gets that item's code back instead.

:func:`add_dedup_level` (number the rows of one matrix) and :func:`next_dedup_digits` (digits of new items
after existing ones) are that one rule without remembered items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from semrec.errors import SemrecError


def as_codes(codes: np.ndarray, what: str = "codes") -> np.ndarray:
    """``codes`` as ``int64 [n, levels]``; SemrecError naming ``what`` if not a 2-d integer matrix."""
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise SemrecError(f"{what} must be a 2-d matrix [n_items, n_levels], got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SemrecError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def row_keys(views: Mapping[str, np.ndarray], names: list[str]) -> list[bytes]:
    """A 128-bit hash of each row's input vectors (views in ``names`` order; -0.0 counts as 0.0)."""
    per_view = []
    for name in names:  # one view, and 16,384 of its rows, at a time: no copy of a whole view
        x, keys = views[name], []
        for first in range(0, len(x), 16384):
            block = np.ascontiguousarray(x[first:first + 16384], dtype=np.float32) + np.float32(0.0)
            keys += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in block]
        per_view.append(keys)
    if len(per_view) == 1:
        return per_view[0]
    return [hashlib.blake2b(b"".join(parts), digest_size=16).digest() for parts in zip(*per_view)]


def distinct_rows(x: np.ndarray) -> int:
    """How many distinct rows the matrix ``x [n, d]`` holds (by :func:`row_keys`)."""
    return len(set(row_keys({"x": x}, ["x"])))


# Share of items whose full code equals another item's above which `semrec codes` warns, and above which a
# tokenizer built with ``dedup="auto"`` (pq, CCFRec's codes, by default) adds the dedup digit.
COLLISION_THRESHOLD = 0.05


def _group_sizes(codes: np.ndarray) -> np.ndarray:
    """How many rows of ``codes [n >= 1, L]`` hold each distinct full code."""
    if codes.shape[1] == 0:
        return np.array([codes.shape[0]], dtype=np.int64)
    if codes.size and codes.min() >= 0:  # the smallest dtype that holds them: np.unique's sorted copies shrink 8x
        codes = codes.astype(np.min_scalar_type(int(codes.max())), copy=False)
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return counts.astype(np.int64)


def collision_stats(codes: np.ndarray) -> tuple[float, int]:
    """(fraction of rows whose full code equals at least one other row's, largest group size)."""
    codes = as_codes(codes)
    n = codes.shape[0]
    if n == 0:
        return 0.0, 0
    counts = _group_sizes(codes)
    colliding = int(counts[counts > 1].sum())
    return colliding / n, int(counts.max())


class DedupDigits:
    """Dedup digits of new items after existing codes.

    ``codes`` are ``int64 [n, L+1]`` (last column = dedup digit). ``keys`` (optional, one per row of ``codes``)
    are :func:`row_keys` of the items holding them: an item given with the same key and base code as one of
    them gets that item's code back (the k-th such item of one call the k-th remembered code).
    """

    def __init__(self, codes: np.ndarray, keys: list[bytes] | None = None):
        self.codes = np.ascontiguousarray(as_codes(codes))
        self.keys = list(keys) if keys is not None else []
        if self.keys and len(self.keys) != self.codes.shape[0]:
            raise SemrecError(f"{len(self.keys)} keys for {self.codes.shape[0]} codes")
        self._known: dict[bytes, list[np.ndarray]] = {}
        for key, code in zip(self.keys, self.codes):
            self._known.setdefault(key, []).append(code)
        self._next_free: dict[tuple[int, ...], int] = {}
        for code in self.codes:
            group = tuple(int(c) for c in code[:-1])
            self._next_free[group] = max(self._next_free.get(group, 0), int(code[-1]) + 1)

    def digits(self, base: np.ndarray, keys: list[bytes] | None = None, size: int | None = None) -> np.ndarray:
        """Digits ``int64 [m]`` of the items with base codes ``base [m, L]`` (and, optionally, their keys).

        ``size`` (the dedup level's codebook size) bounds the digits: a new item that would need a digit
        ``>= size`` raises SemrecError naming its row.
        """
        taken: dict[bytes, int] = {}
        new_in_call: dict[tuple[int, ...], int] = {}
        digits = np.empty(base.shape[0], dtype=np.int64)
        for i, code in enumerate(base):
            known = self._known.get(keys[i]) if keys is not None else None
            if known is not None:
                used = taken.get(keys[i], 0)
                if used < len(known) and np.array_equal(known[used][:-1], code):
                    digits[i] = known[used][-1]
                    taken[keys[i]] = used + 1
                    continue
            group = tuple(int(c) for c in code)
            offset = new_in_call.get(group, 0)
            digit = self._next_free.get(group, 0) + offset
            if size is not None and digit >= size:
                raise SemrecError(
                    f"row {i}: {digit + 1} items share the code {list(group)}, but the dedup level has only "
                    f"{size} values; refit with a larger dedup_size"
                )
            digits[i] = digit
            new_in_call[group] = offset + 1
        return digits


def add_dedup_level(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Append a digit numbering the rows that share a full code (0, 1, 2, ... in row order).

    Returns ``(codes_with_extra_level int64 [n, L+1], dedup_size)`` where ``dedup_size`` (the extra
    level's codebook size) is the largest number of rows sharing one code (at least 1).
    """
    codes = as_codes(codes)
    digits = DedupDigits(np.zeros((0, codes.shape[1] + 1), dtype=np.int64)).digits(codes)
    size = int(digits.max()) + 1 if digits.size else 1
    return np.concatenate([codes, digits[:, None]], axis=1), size


def next_dedup_digits(existing: np.ndarray, new_codes: np.ndarray) -> np.ndarray:
    """Dedup digits for new items, given the existing codes that already carry a dedup digit.

    ``existing`` is ``[n, L+1]`` (last column = dedup digit), ``new_codes`` is ``[m, L]`` (base codes).
    A new item gets ``max digit among existing items with its base code + 1`` (0 if none), and new
    items of the same base code get consecutive digits in row order. Returns ``int64 [m]``.
    """
    existing = as_codes(existing, "existing")
    new_codes = as_codes(new_codes, "new_codes")
    if existing.shape[0] and existing.shape[1] != new_codes.shape[1] + 1:
        raise SemrecError(
            f"existing codes have {existing.shape[1]} levels; expected base levels + 1 = {new_codes.shape[1] + 1}"
        )
    return DedupDigits(existing).digits(new_codes)
