"""faiss indexes over item vectors: exact inner product, HNSW and IVF, and the recall of one against the other.

Vectors are what the model scores with: L2-normalised for cosine models (inner product = cosine), raw for
dot-product models (maximum inner product search). Index row ``j`` is item ``j + 1`` (the padding item 0 is
never indexed).
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from semrec.errors import SemrecError

APPROX_KINDS = ("hnsw", "ivf")
TRAIN_PER_LIST = 64  # IVF k-means trains on at most this many vectors per list
DEFAULTS: dict[str, dict[str, int]] = {
    "hnsw": {"M": 32, "ef_construction": 200, "ef_search": 128},
    "ivf": {"nlist": 0, "nprobe": 16},  # nlist 0: about 4 sqrt(n), at least 39 training vectors per list
}


def index_params(kind: str, params: dict[str, Any] | None = None) -> dict[str, int]:
    """Defaults of ``kind`` overridden by ``params`` (unknown names and non-positive values are errors)."""
    if kind not in APPROX_KINDS:
        raise SemrecError(f"unknown approximate index '{kind}' (choose {' | '.join(APPROX_KINDS)})")
    out = dict(DEFAULTS[kind])
    for key, value in (params or {}).items():
        if key not in out:
            raise SemrecError(f"{kind}: unknown index parameter '{key}' (known: {', '.join(out)})")
        try:
            out[key] = int(value)
        except (TypeError, ValueError):
            raise SemrecError(f"{kind}: parameter '{key}' must be an integer, got {value!r}") from None
        if out[key] < (0 if key == "nlist" else 1):
            raise SemrecError(f"{kind}: parameter '{key}' must be positive, got {value!r}")
    return out


def exact_index(vectors: np.ndarray) -> Any:
    """``IndexFlatIP`` over ``vectors [n, d]``."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def approx_index(vectors: np.ndarray, kind: str = "hnsw", params: dict[str, Any] | None = None,
                 seed: int = 0) -> Any:
    """An HNSW (``IndexHNSWFlat``) or IVF (``IndexIVFFlat``) inner-product index over ``vectors [n, d]``.

    Items added later (``index.add``) are searchable at once: HNSW links them into the graph, IVF assigns them
    to the nearest existing list."""
    p = index_params(kind, params)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
    else:
        nlist = p["nlist"] or max(1, min(int(4 * math.sqrt(n)), n // 39))
        if nlist > n:
            raise SemrecError(f"ivf: nlist={nlist} is larger than the {n} items")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.verbose = False
        sample = n if n <= TRAIN_PER_LIST * nlist else TRAIN_PER_LIST * nlist  # k-means on a seeded sample
        rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if sample < n else slice(None)
        index.train(np.ascontiguousarray(x[rows]))
        index.nprobe = min(p["nprobe"], nlist)
    index.add(x)
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the top ``k`` (rows -1 where the index returns fewer)."""
    k = max(1, min(k, index.ntotal))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def recall_at_k(exact: Any, approx: Any, queries: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (1.0 = the approximate index loses nothing)."""
    if len(queries) == 0:
        return float("nan")
    _, truth = search(exact, queries, k)
    _, found = search(approx, queries, k)
    hits = [len(set(t[t >= 0]) & set(f[f >= 0])) / max(1, int((t >= 0).sum())) for t, f in zip(truth, found)]
    return float(np.mean(hits))


def describe(index: Any) -> dict[str, Any]:
    """The effective settings of a built index (e.g. the nlist chosen for ``nlist=0``)."""
    if isinstance(index, faiss.IndexHNSW):
        return {"kind": "hnsw", "ntotal": int(index.ntotal), "M": int(index.hnsw.nb_neighbors(1)),
                "ef_construction": int(index.hnsw.efConstruction), "ef_search": int(index.hnsw.efSearch)}
    if isinstance(index, faiss.IndexIVF):
        return {"kind": "ivf", "ntotal": int(index.ntotal), "nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    return {"kind": type(index).__name__, "ntotal": int(index.ntotal)}


def search_unseen(index: Any, queries: np.ndarray, seen: list[set[int]], k: int) -> list[list[tuple[int, float]]]:
    """Top-``k`` (item id, score) per query, skipping the item ids in ``seen[q]`` (index row j = item j + 1).

    Ordered by the one ranking rule of :func:`semrec.eval.ranking.top_k`: score descending, equal scores by item id
    ascending. faiss leaves the order of equal scores to its search, and may cut a group of equal scores at the
    ``k``-th place anywhere: when the ``k``-th kept score equals the last score returned, the search is widened
    (doubled) until it does not, so an exact index gives exactly :func:`~semrec.eval.ranking.top_k`'s items. An
    approximate index applies the rule to the candidates it finds (it may miss an item, tied or not)."""
    if len(queries) == 0:
        return []
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    out: list[list[tuple[int, float]] | None] = [None] * len(queries)
    todo = np.arange(len(queries))
    width = k + max(len(s) for s in seen)
    while len(todo):
        values, rows = search(index, queries[todo], width)
        widen = []
        for q, row_v, row_i in zip(todo, values, rows):
            found = [(int(j) + 1, float(v)) for j, v in zip(row_i, row_v) if j >= 0 and int(j) + 1 not in seen[q]]
            found.sort(key=lambda pair: (-pair[1], pair[0]))
            complete = (row_i < 0).any() or len(row_i) >= index.ntotal
            if not complete and len(found) >= k and found[k - 1][1] == float(row_v[-1]):
                widen.append(q)  # a tie crosses the end of what was returned: some equal scores may be missing
            out[q] = found[:k]
        todo = np.array(widen, dtype=np.int64)
        width = min(2 * width, index.ntotal)
    return out  # type: ignore[return-value]
