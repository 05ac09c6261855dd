"""Ranking metrics for one held-out item per row (full ranking).

With a single relevant item at 0-based rank r: Recall@K = Hit@K = [r < K], NDCG@K = 1/log2(r + 2) if r < K,
MRR = 1/(r + 1). The rank counts the items that outrank the target under the one ranking rule
(``semrec.eval.ranking``): a higher score, or the same score and a smaller item id.
"""

from __future__ import annotations

import numpy as np
import torch

from semrec.eval.ranking import outranks

DEFAULT_KS = (5, 10, 20)


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``targets[b]`` among ``scores[b]`` ([B, n_items]; column j = item j); -inf entries never
    outrank. The one ranking rule (:func:`semrec.eval.ranking.outranks`): a tied item ranks above the target iff
    its index is smaller."""
    targets = targets.view(-1)
    return outranks(scores, scores.gather(1, targets.view(-1, 1)), targets).sum(dim=1)


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float | None]:
    """Mean Recall@K, NDCG@K (for each K) and MRR over rows, from 0-based ranks; every value is None (n/a, not 0)
    when there is no row."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float | None] = {}
    if ranks.size == 0:
        return {**{f"{m}@{k}": None for k in ks for m in ("recall", "ndcg")}, "mrr": None}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    out["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def head_items(train_sequences: list[np.ndarray], n_items: int, fraction: float = 0.2) -> np.ndarray:
    """Boolean mask over item ids 0..N: the most popular ``fraction`` of items by training frequency."""
    counts = np.bincount(np.concatenate(train_sequences) if train_sequences else np.zeros(0, dtype=np.int64),
                         minlength=n_items + 1)[: n_items + 1]
    n_head = max(1, int(round(fraction * n_items)))
    order = np.argsort(-counts[1:], kind="stable") + 1  # ties: lower id first, deterministic
    mask = np.zeros(n_items + 1, dtype=bool)
    mask[order[:n_head]] = True
    return mask
