"""Checks of what callers give a tokenizer: parameters, view names, input matrices and fit rows.

Each returns the value normalised or raises :class:`~semrec.errors.SemrecError` naming the parameter or view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from semrec.errors import SemrecError
from semrec.io import NpyRows

# Rows per block where a check or an encoding pass walks a whole view: bounded temporaries at any catalogue size.
BLOCK_ROWS = 65536


def as_view_list(views: Any, what: str = "views") -> list[str]:
    """Normalise a view-name parameter (a name, a comma-separated string or a sequence) to a non-empty list."""
    if isinstance(views, str):
        views = [v.strip() for v in views.split(",") if v.strip()]
    try:
        names = [str(v) for v in views]
    except TypeError:
        raise SemrecError(f"{what} must be a view name or a list of view names, got {views!r}") from None
    if not names:
        raise SemrecError(f"{what} must name at least one view")
    if len(set(names)) != len(names):
        raise SemrecError(f"{what} lists a view twice: {names}")
    return names


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else a SemrecError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SemrecError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise SemrecError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_views(views: Mapping[str, np.ndarray | NpyRows], names: list[str], kind: str,
                dims: Mapping[str, int] | None = None) -> dict[str, np.ndarray | NpyRows]:
    """The views ``names`` of ``views`` as C-contiguous float32 matrices ``[n, dim]`` with equal row counts
    (and, given ``dims``, the fitted dims); SemrecError naming the view otherwise (``kind``: the tokenizer's).

    A view may also be an :class:`~semrec.io.NpyRows` (a float32 matrix on disk, read in blocks: what `semrec codes`
    passes, so that no whole view is held in memory); it is returned as it is, after a blockwise finiteness check.
    """
    if not isinstance(views, Mapping):
        raise SemrecError(f"views must be a dict of view name -> matrix, got {type(views).__name__}")
    missing = [v for v in names if v not in views]
    if missing:
        raise SemrecError(
            f"{kind} tokenizer: missing view(s) {missing}; given views: {sorted(views)}"
        )
    out: dict[str, np.ndarray | NpyRows] = {}
    n_rows: int | None = None
    for name in names:
        x = views[name]
        lazy = isinstance(x, NpyRows)
        if not lazy:
            x = np.asarray(x)
        if x.ndim != 2:
            raise SemrecError(f"view '{name}' must be a 2-d matrix [n_items, dim], got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise SemrecError(f"view '{name}' must hold real numbers, got dtype {x.dtype}")
        if n_rows is not None and x.shape[0] != n_rows:
            first = names[0]
            raise SemrecError(
                f"views are not row-aligned: '{first}' has {n_rows} rows, '{name}' has {x.shape[0]}"
            )
        n_rows = x.shape[0]
        if dims is not None and x.shape[1] != dims[name]:
            raise SemrecError(
                f"view '{name}' has dim {x.shape[1]}, but the tokenizer was fitted on dim {dims[name]}"
            )
        if lazy:
            if x.dtype != np.float32:
                raise SemrecError(f"view '{name}' ({x.path}) must be a float32 matrix, got {x.dtype}")
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
        for first in range(0, x.shape[0], BLOCK_ROWS):  # blockwise: no [n, dim] boolean temporary
            if not np.isfinite(x[first:first + BLOCK_ROWS]).all():
                raise SemrecError(f"view '{name}' contains NaN or infinite values")
        out[name] = x
    return out


def check_fit_rows(fit_rows: Any, n_items: int) -> np.ndarray:
    """``fit_rows`` (row indices or a boolean mask over ``n_items`` rows) as sorted unique int64 indices."""
    rows = np.asarray(fit_rows)
    if rows.dtype == bool:
        if rows.shape != (n_items,):
            raise SemrecError(f"a boolean fit_rows mask must have shape ({n_items},), got {rows.shape}")
        rows = np.flatnonzero(rows)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise SemrecError("fit_rows must be a 1-d array of row indices or a boolean mask")
    rows = rows.astype(np.int64)
    if rows.size == 0:
        raise SemrecError("fit_rows is empty: nothing to fit on")
    if rows.min() < 0 or rows.max() >= n_items:
        raise SemrecError(f"fit_rows must lie in 0..{n_items - 1}, got values {rows.min()}..{rows.max()}")
    unique = np.unique(rows)
    if unique.size != rows.size:
        raise SemrecError("fit_rows contains duplicate rows")
    return unique
