"""Full-ranking evaluation shared by every model.

Item tables are computed once per evaluation (``model.eval_tables()``); user vectors batch by batch;
scores are taken against item chunks so memory stays bounded for large catalogs. The padding item
is never ranked. ``exclude_history`` removes the user's own history items from the ranking (off by
default, as the references): all of them, not only the last ``max_len`` the model reads. Head items are the
most popular 20% by training frequency.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from semrec.data.batching import eval_batches
from semrec.data.splits import EvalRows
from semrec.models.base import SequentialRecommender
from semrec.train.metrics import DEFAULT_KS, metrics_from_ranks

# 2: the target score comes from the same matrix product as the others, ties broken by item id (version 1 could
# rank a target below itself through rounding); results.json records it, bench/quality.py re-evaluates older runs
EVALUATOR_VERSION = 2


def history_pairs(histories: list[np.ndarray], targets: np.ndarray,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item index) pairs ``[P], [P]`` of every item of each row's *whole* history (item ids 1..N as 0-based
    indices id - 1), the row's own target left out. The model reads only the last ``max_len`` items; excluding
    history items from the ranking must cover all of them."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    rows = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if len(rows) else rows
    keep = (items > 0) & (items != np.repeat(np.asarray(targets, dtype=np.int64), lengths))
    return torch.from_numpy(rows[keep]).to(device), torch.from_numpy(items[keep] - 1).to(device)


def _chunk_scores(user: torch.Tensor, candidate: torch.Tensor, start: int, stop: int,
                  history: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Scores of items ``start..stop-1`` (0-based rows of ``candidate``), history items (``history_pairs``, the
    targets already left out) at -inf."""
    scores = user @ candidate[start:stop].T
    if history is not None:
        rows, items = history
        inside = (items >= start) & (items < stop)
        scores[rows[inside], items[inside] - start] = float("-inf")
    return scores


@torch.no_grad()
def rank_targets(model: SequentialRecommender, rows: EvalRows, max_len: int, batch_size: int = 1024,
                 exclude_history: bool = False, item_chunk: int = 65536,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """0-based rank of each row's target among items 1..N.

    The target's score is read from the same matrix product as every other item's (an elementwise
    recomputation rounds differently and can rank the target below itself). Ties are broken by item id,
    as ``torch.topk`` does: an item with exactly the target's score ranks above it iff its id is smaller.
    With several item chunks the products are computed twice (target scores first) to keep this exact.
    """
    was_training = model.training
    model.eval()
    candidate, history_table = model.eval_tables()
    if model.similarity == "cosine":
        candidate = F.normalize(candidate, dim=-1)
    candidate = candidate[1:]  # padding is never ranked
    n = candidate.size(0)
    chunks = [(start, min(n, start + item_chunk)) for start in range(0, n, item_chunk)]
    ranks = []
    for first, batch in zip(range(0, len(rows.targets), batch_size), eval_batches(rows, max_len, batch_size, device)):
        user = model.encode_sequence(batch["items"], batch["lengths"], history_table)
        if model.similarity == "cosine":
            user = F.normalize(user, dim=-1)
        targets = batch["targets"] - 1
        history = history_pairs(rows.histories[first:first + len(user)], rows.targets[first:first + len(user)],
                                user.device) if exclude_history else None
        target_score = torch.empty(len(user), device=user.device, dtype=user.dtype)
        if len(chunks) > 1:
            for start, stop in chunks:
                inside = (targets >= start) & (targets < stop)
                if inside.any():
                    scores = user @ candidate[start:stop].T
                    target_score[inside] = scores[inside, targets[inside] - start]
        above = torch.zeros(len(user), dtype=torch.long, device=user.device)
        for start, stop in chunks:
            scores = _chunk_scores(user, candidate, start, stop, history)
            if len(chunks) == 1:
                target_score = scores.gather(1, targets.unsqueeze(1)).squeeze(1)
            ts = target_score.unsqueeze(1)
            ids = torch.arange(start, stop, device=user.device)
            above += ((scores > ts) | ((scores == ts) & (ids < targets.unsqueeze(1)))).sum(1)
        ranks.append(above.cpu())
    model.train(was_training)
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def evaluate(model: SequentialRecommender, rows: EvalRows, max_len: int, batch_size: int = 1024,
             exclude_history: bool = False, head_mask: np.ndarray | None = None,
             ks: tuple[int, ...] = DEFAULT_KS, device: torch.device | str = "cpu") -> dict[str, float | None]:
    """Recall/NDCG@K and MRR over all rows, plus NDCG@10 on head and tail targets when ``head_mask`` is given.

    A metric over no row is None (n/a): every metric when ``rows`` is empty (the model is not even run), the head or
    tail ones when no target falls in that group."""
    if len(rows.targets):
        ranks = rank_targets(model, rows, max_len, batch_size, exclude_history, device=device)
    else:
        ranks = np.zeros(0, dtype=np.int64)  # nothing to rank
    out = metrics_from_ranks(ranks, ks)
    if head_mask is not None:
        is_head = head_mask[rows.targets]
        for name, sel in (("head", is_head), ("tail", ~is_head)):
            part = metrics_from_ranks(ranks[sel], (10,))
            out[f"{name}_ndcg@10"] = part["ndcg@10"]
            out[f"{name}_recall@10"] = part["recall@10"]
            out[f"{name}_rows"] = int(sel.sum())
    return out
