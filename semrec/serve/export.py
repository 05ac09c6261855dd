"""``semrec export``: the item embedding matrix of a run plus an exact and an approximate faiss index.

Output folder (default ``<run>/export``): ``items.npy`` (float32 ``[n_items, d]``, row j = item j + 1, the
vectors the model scores with: L2-normalised for cosine models), ``item_ids.json`` (raw ids in row order, the
cold-start additions included), ``exact.index`` (``IndexFlatIP``), ``approx.index`` (HNSW or IVF, inner product)
and ``export.json`` (what was written, and the approximate index's recall@10 against exact search on the user
vectors of the validation histories). Every file is written atomically; ``export.json`` last.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from semrec.io import write_json, write_npy
from semrec.serve import index as faiss_index
from semrec.serve.recommender import Recommender
from semrec.tokenizers.faiss_utils import write_index


def validation_queries(rec: Recommender, max_queries: int = 5000, seed: int = 0) -> np.ndarray:
    """User vectors of (a seeded sample of at most ``max_queries``) validation histories."""
    rows = rec.dataset.split().valid
    histories = [h for h in rows.histories if len(h)]
    if len(histories) > max_queries:
        pick = np.random.default_rng(seed).choice(len(histories), max_queries, replace=False)
        histories = [histories[i] for i in sorted(pick)]
    parts = [rec.user_vectors(histories[s:s + 1024]).cpu().numpy() for s in range(0, len(histories), 1024)]
    return np.concatenate(parts) if parts else np.zeros((0, rec.item_matrix()[0].shape[1]), np.float32)


def export_run(rec: Recommender, out: str | Path | None = None, approx: str = "hnsw",
               params: dict[str, Any] | None = None, max_queries: int = 5000, k: int = 10,
               seed: int = 0) -> dict[str, Any]:
    """Write the export folder of a loaded run; return its summary (also saved as ``export.json``)."""
    out = Path(out) if out is not None else rec.run_dir / "export"
    vectors, raw_ids = rec.item_matrix()
    write_npy(out / "items.npy", vectors)
    write_json(out / "item_ids.json", raw_ids)
    exact = faiss_index.exact_index(vectors)
    write_index(exact, out / "exact.index")
    t0 = time.perf_counter()
    approximate = faiss_index.approx_index(vectors, approx, params, seed)
    build_seconds = time.perf_counter() - t0
    write_index(approximate, out / "approx.index")
    queries = validation_queries(rec, max_queries, seed)
    recall = faiss_index.recall_at_k(exact, approximate, queries, k)
    summary = {
        "run": str(rec.run_dir), "model": rec.config.model, "dataset": rec.dataset.name,
        "n_items": len(raw_ids), "n_cold_items": rec.n_cold_items, "dim": int(vectors.shape[1]),
        "similarity": rec.similarity, "normalised": rec.similarity == "cosine",
        "files": {"vectors": "items.npy", "ids": "item_ids.json", "exact": "exact.index", "approx": "approx.index"},
        "row_rule": "row j = item_ids[j]; faiss ids are rows",
        "approx": {"kind": approx, "params": {k: v for k, v in faiss_index.describe(approximate).items()
                                              if k not in ("kind", "ntotal")},
                   "build_seconds": round(build_seconds, 3)},
        f"recall@{k}": recall, "recall_queries": int(len(queries)),
        "recall_rule": f"mean |approx top-{k} & exact top-{k}| / {k} over validation-history user vectors",
    }
    write_json(out / "export.json", summary)
    return summary
