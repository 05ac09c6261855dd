"""Code quality: per-level utilisation and perplexity, collisions, reconstruction error (:class:`CodeReport`).

The de-duplication digit that makes colliding codes unique is in :mod:`semrec.tokenizers.dedup`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from semrec.errors import SemrecError
from semrec.tokenizers.base import ItemTokenizer
from semrec.tokenizers.dedup import COLLISION_THRESHOLD, as_codes, collision_stats


@dataclass
class CodeReport:
    """Quality report of a fitted tokenizer on a set of items."""

    tokenizer: str
    n_items: int
    n_levels: int
    codebook_sizes: list[int]
    utilisation: list[float]          # fraction of each level's codebook used by these items
    perplexity: list[float]           # exp(entropy) of each level's code distribution
    collision_rate: float             # fraction of items whose full code equals another item's
    max_collision_group: int          # largest number of items sharing one full code
    reconstruction_error: float | None  # mean ||x - x_hat||^2 / mean ||x||^2 in the quantised space
    layout: dict[str, list[int]] = field(default_factory=dict)  # view -> code slots (when per view)
    dedup_level: bool = False         # whether the last level is the extra de-duplication digit
    notes: list[str] = field(default_factory=list)  # what the fit adapted to its data (clamps, fallbacks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def squared_error(x: np.ndarray, x_hat: np.ndarray) -> tuple[float, float]:
    """``(sum ||x - x_hat||^2, sum ||x||^2)`` in float64, 16,384 rows at a time (the float64 temporaries stay
    bounded for a block of any size); the relative error is their ratio."""
    block = 16384
    error = denom = 0.0
    for first in range(0, len(x), block):
        part = np.asarray(x[first:first + block], dtype=np.float64)
        denom += float(np.square(part).sum())
        error += float(np.square(part - np.asarray(x_hat[first:first + block], dtype=np.float64)).sum())
    return error, denom


def relative_error(x: np.ndarray, x_hat: np.ndarray) -> float:
    """``sum ||x - x_hat||^2 / sum ||x||^2`` (= ratio of the means), computed in float64 (:func:`squared_error`)."""
    error, denom = squared_error(x, x_hat)
    return 0.0 if denom == 0.0 else error / denom


def level_stats(column: np.ndarray, codebook_size: int) -> tuple[float, float]:
    """(utilisation = distinct codes used / codebook size, perplexity = exp(entropy)) of one level."""
    if column.size == 0:
        return 0.0, 0.0
    _, counts = np.unique(column, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    return len(counts) / codebook_size, float(np.exp(entropy))


COLLISION_WARNING = COLLISION_THRESHOLD  # share of items with a shared full code above which the report warns


def code_report(
    tokenizer: ItemTokenizer, codes: np.ndarray, views: Mapping[str, np.ndarray] | None = None
) -> CodeReport:
    """Per-level utilisation and perplexity, collisions and (with ``views``) reconstruction error.

    ``codes`` are the tokenizer's codes of some items (``encode`` output); ``views`` are the same
    items' input vectors, used for the reconstruction error when the tokenizer can compute it. The
    tokenizer's fit ``notes`` (clamps, fallbacks) are copied into the report.
    """
    codes = as_codes(codes)
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
    notes = [str(n) for n in getattr(tokenizer, "notes", [])]
    if rate > COLLISION_WARNING:  # (never with the dedup digit: every code is then unique)
        notes.append(f"warning: {rate:.1%} of items share their full code with another item (largest group "
                     f"{biggest}); a model that reads only codes cannot tell them apart: give more codes (pq: -p "
                     f"total_codes=... or -p codes_per_view=...; rq/opq: more levels) or --dedup")
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
        notes=notes,
    )
