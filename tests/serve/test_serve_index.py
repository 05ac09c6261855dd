"""faiss search in serving follows the one ranking rule: score descending, equal scores by item id ascending."""

from __future__ import annotations

import numpy as np
import torch

from semrec.eval.ranking import top_k
from semrec.serve import index as faiss_index


def test_search_unseen_orders_equal_scores_by_item_id_as_exact_top_k_does():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 8)).astype(np.float32)
    vectors = np.repeat(base, 6, axis=0)  # 24 items in 4 groups of 6 identical vectors: every score ties 6 times
    order = rng.permutation(len(vectors))  # stored in a shuffled order, so faiss's own tie order is not the ids'
    vectors = vectors[order]
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    seen = [set(), {3, 7}, {int(i) for i in range(1, 25, 2)}, set(), {24}]
    for index in (faiss_index.exact_index(vectors), faiss_index.approx_index(vectors, "hnsw")):
        found = faiss_index.search_unseen(index, queries, seen, k=9)
        scores = torch.from_numpy(queries @ vectors.T)
        scores = torch.cat([torch.full((5, 1), -torch.inf), scores], dim=1)  # column 0: the padding item
        for q, s in enumerate(seen):
            scores[q, sorted(s)] = -torch.inf
        _, expected = top_k(scores, 9)
        for q in range(5):
            ids = [item for item, _ in found[q]]
            assert ids == expected[q].tolist()
            values = [v for _, v in found[q]]
            assert values == sorted(values, reverse=True)
            assert not set(ids) & seen[q]
