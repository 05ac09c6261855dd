"""Code quality reports and the extra de-duplication level (TIGER-style).

``add_dedup_level`` appends one digit that numbers the items sharing a full code 0, 1, 2, ... in row
order, so every code becomes unique; ``next_dedup_digits`` gives new items the next free digit of
their collision group (``max existing digit + 1``, then +1 for each further new item of that group).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from semrec.errors import SemrecError
from semrec.tokenizers.base import CodeReport, ItemTokenizer


def _as_codes(codes: np.ndarray, what: str = "codes") -> np.ndarray:
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise SemrecError(f"{what} must be a 2-d matrix [n_items, n_levels], got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SemrecError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _group_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group id of each row, size of each group) for the distinct full code rows."""
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if codes.shape[1] == 0:
        return np.zeros(codes.shape[0], dtype=np.int64), np.array([codes.shape[0]], dtype=np.int64)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(-1).astype(np.int64), counts.astype(np.int64)


def add_dedup_level(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Append a digit numbering the rows that share a full code (0, 1, 2, ... in row order).

    Returns ``(codes_with_extra_level int64 [n, L+1], dedup_size)`` where ``dedup_size`` (the extra
    level's codebook size) is the largest number of rows sharing one code (at least 1).
    """
    codes = _as_codes(codes)
    n = codes.shape[0]
    group, counts = _group_ids(codes)
    digits = np.zeros(n, dtype=np.int64)
    if n:
        order = np.argsort(group, kind="stable")  # rows grouped, each group in row order
        sorted_group = group[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_group)) + 1]
        first_of_group = np.repeat(starts, np.diff(np.r_[starts, n]))
        digits[order] = np.arange(n) - first_of_group
    size = int(counts.max()) if counts.size else 1
    return np.concatenate([codes, digits[:, None]], axis=1), max(size, 1)


def next_dedup_digits(existing: np.ndarray, new_codes: np.ndarray) -> np.ndarray:
    """Dedup digits for new items, given the existing codes that already carry a dedup digit.

    ``existing`` is ``[n, L+1]`` (last column = dedup digit), ``new_codes`` is ``[m, L]`` (base codes).
    A new item gets ``max digit among existing items with its base code + 1`` (0 if none), and new
    items of the same base code get consecutive digits in row order. Returns ``int64 [m]``.
    """
    existing = _as_codes(existing, "existing")
    new_codes = _as_codes(new_codes, "new_codes")
    if existing.shape[0] and existing.shape[1] != new_codes.shape[1] + 1:
        raise SemrecError(
            f"existing codes have {existing.shape[1]} levels; expected base levels + 1 = {new_codes.shape[1] + 1}"
        )
    next_free: dict[tuple[int, ...], int] = {}
    for row in existing:
        key = tuple(row[:-1].tolist())
        next_free[key] = max(next_free.get(key, 0), int(row[-1]) + 1)
    digits = np.empty(new_codes.shape[0], dtype=np.int64)
    for i, row in enumerate(new_codes):
        key = tuple(row.tolist())
        digits[i] = next_free.get(key, 0)
        next_free[key] = int(digits[i]) + 1
    return digits


def collision_stats(codes: np.ndarray) -> tuple[float, int]:
    """(fraction of rows whose full code equals at least one other row's, largest group size)."""
    codes = _as_codes(codes)
    n = codes.shape[0]
    if n == 0:
        return 0.0, 0
    _, counts = _group_ids(codes)
    colliding = int(counts[counts > 1].sum())
    return colliding / n, int(counts.max())


def level_stats(column: np.ndarray, codebook_size: int) -> tuple[float, float]:
    """(utilisation = distinct codes used / codebook size, perplexity = exp(entropy)) of one level."""
    if column.size == 0:
        return 0.0, 0.0
    _, counts = np.unique(column, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    return len(counts) / codebook_size, float(np.exp(entropy))


def code_report(
    tokenizer: ItemTokenizer, codes: np.ndarray, views: Mapping[str, np.ndarray] | None = None
) -> CodeReport:
    """Per-level utilisation and perplexity, collisions and (with ``views``) reconstruction error.

    ``codes`` are the tokenizer's codes of some items (``encode`` output); ``views`` are the same
    items' input vectors, used for the reconstruction error when the tokenizer can compute it. The
    tokenizer's fit ``notes`` (clamps, fallbacks) are copied into the report.
    """
    codes = _as_codes(codes)
    sizes = list(tokenizer.codebook_sizes)
    if codes.shape[1] != len(sizes):
        raise SemrecError(f"codes have {codes.shape[1]} levels, the tokenizer has {len(sizes)}")
    if codes.size and (codes.min() < 0 or (codes >= np.asarray(sizes)[None, :]).any()):
        raise SemrecError("codes fall outside the tokenizer's codebooks")
    utilisation, perplexity = [], []
    for level, size in enumerate(sizes):
        u, p = level_stats(codes[:, level], size)
        utilisation.append(u)
        perplexity.append(p)
    rate, biggest = collision_stats(codes)
    error = None
    recon = getattr(tokenizer, "reconstruction_error", None)
    if views is not None and callable(recon):
        error = float(recon(views))
    return CodeReport(
        tokenizer=tokenizer.kind,
        n_items=int(codes.shape[0]),
        n_levels=len(sizes),
        codebook_sizes=[int(s) for s in sizes],
        utilisation=utilisation,
        perplexity=perplexity,
        collision_rate=rate,
        max_collision_group=biggest,
        reconstruction_error=error,
        layout=dict(getattr(tokenizer, "layout", {}) or {}),
        dedup_level=bool(getattr(tokenizer, "dedup", False)),
        notes=[str(n) for n in getattr(tokenizer, "notes", [])],
    )
