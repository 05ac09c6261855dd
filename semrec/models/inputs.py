"""The item inputs a model reads, built one way for the catalogue (:func:`semrec.runs.load_run_data`) and for items
added after training (:mod:`semrec.serve.items`), so that a new item gets exactly what it would have had in the
catalogue.

``item_features`` turns an item's view embeddings into the arrays its model reads (no padding row);
``build_item_inputs`` lays them out as :class:`~semrec.models.base.ItemInputs` (row 0 = padding: codes -1, vectors 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from semrec.models.base import ItemInputs

ITEM_DATA = ("codes", "text", "plm")  # item inputs sized by the catalogue (buffers, never trained parameters)


def item_features(needs: tuple[str, ...], matrices: Mapping[str, np.ndarray], tokenizer: Any | None,
                  text_view: str, codes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The item data a model with ``needs`` reads, for ``n`` items, no padding row.

    ``matrices``: ``{view: float32 [n, dim]}``, the views the tokenizer reads (code models) or ``text_view``
    (plm models). Returns ``codes`` int64 ``[n, levels]`` (``codes`` when given, the catalogue's fitted codes,
    else ``tokenizer.encode``), ``text`` float32 ``[n, views, dim]`` (the tokenizer's PCA of each view, see
    :func:`semrec.tokenizers.pipeline.pca_text`), ``plm`` float32 ``[n, dim]`` (the raw vectors of ``text_view``)."""
    out: dict[str, np.ndarray] = {}
    if "codes" in needs or "text" in needs:
        out["codes"] = np.asarray(tokenizer.encode(matrices) if codes is None else codes, dtype=np.int64)
    if "text" in needs:
        from semrec.tokenizers.pipeline import pca_text

        out["text"] = pca_text(tokenizer, matrices)
    if "plm" in needs:
        out["plm"] = np.asarray(matrices[text_view], dtype=np.float32)
    return out


def build_item_inputs(features: Mapping[str, np.ndarray], codebook_sizes: list[int] | None = None,
                      popularity: np.ndarray | None = None, n_items: int | None = None) -> ItemInputs:
    """``ItemInputs`` of ``n`` items from :func:`item_features` arrays (padding row prepended: codes -1, vectors 0).

    ``popularity``: training frequencies ``[n + 1]`` (zeros when None: items never seen in training); ``n_items``:
    the item count when ``features`` is empty (ID-only models)."""
    n = len(next(iter(features.values()))) if features else n_items
    if n is None:
        raise ValueError("build_item_inputs needs features or n_items")
    counts = torch.zeros(n + 1, dtype=torch.long) if popularity is None else torch.from_numpy(popularity)
    items = ItemInputs(n_items=n, codebook_sizes=codebook_sizes, popularity=counts)
    if "codes" in features:
        codes = features["codes"]
        items.codes = torch.from_numpy(np.concatenate([np.full((1, codes.shape[1]), -1, np.int64), codes]))
    for name in ("text", "plm"):
        if name in features:
            matrix = np.asarray(features[name], dtype=np.float32)
            setattr(items, name, torch.from_numpy(np.concatenate([np.zeros_like(matrix[:1]), matrix])))
    return items
