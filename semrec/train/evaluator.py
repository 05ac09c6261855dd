"""Full-ranking evaluation shared by every model.

Item tables are computed once per evaluation (``model.eval_tables()``); user vectors batch by batch;
scores are taken against item chunks so memory stays bounded for large catalogs. The padding item
is never ranked. ``exclude_history`` removes the user's own history items from the ranking (off by
default, as the references). Head items are the most popular 20% by training frequency.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from semrec.data.batching import eval_batches
from semrec.data.splits import EvalRows
from semrec.models.base import SequentialRecommender
from semrec.train.metrics import DEFAULT_KS, metrics_from_ranks


@torch.no_grad()
def rank_targets(model: SequentialRecommender, rows: EvalRows, max_len: int, batch_size: int = 1024,
                 exclude_history: bool = False, item_chunk: int = 65536,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """0-based rank of each row's target among items 1..N."""
    was_training = model.training
    model.eval()
    candidate, history_table = model.eval_tables()
    if model.similarity == "cosine":
        candidate = F.normalize(candidate, dim=-1)
    candidate = candidate[1:]  # padding is never ranked
    ranks = []
    for batch in eval_batches(rows, max_len, batch_size, device):
        user = model.encode_sequence(batch["items"], batch["lengths"], history_table)
        if model.similarity == "cosine":
            user = F.normalize(user, dim=-1)
        target_score = (user * candidate[batch["targets"] - 1]).sum(-1, keepdim=True)
        above = torch.zeros(user.size(0), dtype=torch.long, device=user.device)
        for start in range(0, candidate.size(0), item_chunk):
            above += (user @ candidate[start: start + item_chunk].T > target_score).sum(1)
        if exclude_history:
            items = batch["items"]
            hist_scores = (user.unsqueeze(1) * candidate[(items - 1).clamp(min=0)]).sum(-1)
            above -= ((hist_scores > target_score) & (items > 0)).sum(1)
        ranks.append(above.cpu())
    model.train(was_training)
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def evaluate(model: SequentialRecommender, rows: EvalRows, max_len: int, batch_size: int = 1024,
             exclude_history: bool = False, head_mask: np.ndarray | None = None,
             ks: tuple[int, ...] = DEFAULT_KS, device: torch.device | str = "cpu") -> dict[str, float]:
    """Recall/NDCG@K and MRR over all rows, plus NDCG@10 on head and tail targets when ``head_mask`` is given."""
    ranks = rank_targets(model, rows, max_len, batch_size, exclude_history, device=device)
    out = metrics_from_ranks(ranks, ks)
    if head_mask is not None and len(ranks):
        is_head = head_mask[rows.targets]
        for name, sel in (("head", is_head), ("tail", ~is_head)):
            part = metrics_from_ranks(ranks[sel], (10,))
            out[f"{name}_ndcg@10"] = part["ndcg@10"]
            out[f"{name}_recall@10"] = part["recall@10"]
            out[f"{name}_rows"] = int(sel.sum())
    return out
