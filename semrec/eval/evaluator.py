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

from semrec.data.batching import eval_batches
from semrec.data.splits import EvalRows
from semrec.eval.metrics import DEFAULT_KS, metrics_from_ranks
from semrec.eval.ranking import history_pairs, rank_of_targets, scoring_vectors
from semrec.models.base import SequentialRecommender

# 2: the target score comes from the same matrix product as the others, ties broken by item id (version 1 could
# rank a target below itself through rounding); results.json records it, bench/quality.py re-evaluates older runs
EVALUATOR_VERSION = 2


@torch.no_grad()
def rank_targets(model: SequentialRecommender, rows: EvalRows, max_len: int, batch_size: int = 1024,
                 exclude_history: bool = False, item_chunk: int = 65536,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """0-based rank of each row's target among items 1..N (int64 ``[len(rows)]``), under the one ranking rule
    (:func:`semrec.eval.ranking.rank_of_targets`: the target's score from the same matrix product as every other
    item's, ties by item id, items scored ``item_chunk`` at a time). With ``exclude_history`` the
    row's whole history (but its target) is not ranked."""
    was_training = model.training
    model.eval()
    candidate, history_table = model.eval_tables()
    table = scoring_vectors(candidate, model.similarity)
    # rows in order of history length: a batch is padded to its longest history only (most are short), and the
    # ranks go back to row order at the end
    order = np.argsort([min(len(h), max_len) for h in rows.histories], kind="stable")
    by_length = EvalRows(rows.users[order], [rows.histories[i] for i in order], rows.targets[order])
    ranks = []
    for first, batch in zip(range(0, len(order), batch_size), eval_batches(by_length, max_len, batch_size, device)):
        user = scoring_vectors(model.encode_sequence(batch["items"], batch["lengths"], history_table),
                               model.similarity)
        part = slice(first, first + len(user))
        exclude = (history_pairs(by_length.histories[part], by_length.targets[part], user.device) if exclude_history
                   else None)
        ranks.append(rank_of_targets(user, table, batch["targets"], exclude, item_chunk).cpu())
    model.train(was_training)
    out = np.zeros(len(order), dtype=np.int64)
    if ranks:
        out[order] = torch.cat(ranks).numpy()
    return out


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
