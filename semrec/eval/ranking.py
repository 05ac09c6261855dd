"""The one ranking rule: how user vectors and an item table become scores, ranks of targets and top-k lists.

The evaluator, the :class:`~semrec.serve.Recommender`, ``metrics.ranks_from_scores`` and the benchmarks all rank
through these functions, so a measured NDCG and a served list follow the same rule:

* item ids are 1..N and 0 is padding; an item table ``[N + 1, d]`` has row ``i`` = item ``i`` (row 0 the padding
  row). A block of scores ``[B, C]`` starting at item ``start`` has column ``j`` = item ``start + j``;
* score = user vector . item vector, one matrix product per block (:func:`scoring_vectors` makes both unit
  length for cosine models);
* masking: the padding item is never ranked, nor any excluded ``(row, item id)`` pair (:func:`history_pairs`:
  each user's *whole* history, not only the last ``max_len`` items a model reads, its own target left out);
  both score ``-inf``, and ``-inf`` entries are never listed;
* ties by item id, as a stable sort: an item with exactly the target's score ranks above it iff its id is
  smaller, and a top-k list gives tied items in increasing id (``torch.topk`` alone does not guarantee this
  order on CPU; :func:`top_k` enforces it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def scoring_vectors(vectors: torch.Tensor, similarity: str) -> torch.Tensor:
    """``vectors [n, d]`` as scored: unit rows (L2, last dimension) for ``similarity == 'cosine'``, unchanged for
    'dot'."""
    return F.normalize(vectors, dim=-1) if similarity == "cosine" else vectors


def history_pairs(histories: Sequence[Sequence[int] | np.ndarray], targets: np.ndarray | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item id) pairs ``[P], [P]`` (int64) of every item of each row's *whole* history, to exclude from the
    ranking. Padding (id 0) is skipped; with ``targets`` (one item id per row) the row's own target is left out,
    so it stays rankable. A model reads only the last ``max_len`` items; the exclusion covers all of them."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    rows = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if len(rows) else rows
    keep = items > 0
    if targets is not None:
        keep &= items != np.repeat(np.asarray(targets, dtype=np.int64), lengths)
    return torch.from_numpy(rows[keep]).to(device), torch.from_numpy(items[keep]).to(device)


def mask_scores(scores: torch.Tensor, start: int = 0,
                exclude: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Set, in place, the padding item (when the block ``scores [B, C]`` starts at item 0) and the ``exclude``
    pairs ``(row, item id)`` that fall inside the block (items ``start..start + C - 1``) to ``-inf``; returns
    ``scores``."""
    if start == 0 and scores.size(1):
        scores[:, 0] = NEG_INF
    if exclude is not None:
        rows, items = exclude
        inside = (items >= start) & (items < start + scores.size(1))
        scores[rows[inside], items[inside] - start] = NEG_INF
    return scores


def item_scores(user: torch.Tensor, table: torch.Tensor, start: int = 1, stop: int | None = None,
                exclude: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Scores ``[B, stop - start]`` of items ``start..stop - 1`` (``stop`` defaults to all, N + 1): one product of
    ``user [B, d]`` with rows ``start:stop`` of ``table [N + 1, d]`` (both as :func:`scoring_vectors` made them),
    then :func:`mask_scores`. ``start=1`` leaves the padding row out of the product; ``start=0`` keeps its column
    (at ``-inf``) so column ``j`` is item ``j``."""
    scores = user @ table[start:stop].T
    return mask_scores(scores, start, exclude)


def outranks(scores: torch.Tensor, target_scores: torch.Tensor, targets: torch.Tensor,
             start: int = 0) -> torch.Tensor:
    """Boolean ``[B, C]``: the items of the block (column ``j`` = item ``start + j``) that rank above row ``b``'s
    target ``targets[b]`` (an item id) of score ``target_scores[b]``: a higher score, or the same score and a
    smaller id. ``-inf`` entries never outrank a finite target score."""
    ts = target_scores.reshape(-1, 1)
    ids = torch.arange(start, start + scores.size(1), device=scores.device)
    return (scores > ts) | ((scores == ts) & (ids < targets.reshape(-1, 1)))


@torch.no_grad()
def rank_of_targets(user: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                    exclude: tuple[torch.Tensor, torch.Tensor] | None = None,
                    item_chunk: int = 65536) -> torch.Tensor:
    """0-based rank (int64 ``[B]``) of each row's target item id among items 1..N of ``table [N + 1, d]``.

    Items are scored in chunks of ``item_chunk`` so memory stays bounded ``[B, item_chunk]``. The target's score
    is read from the same matrix product as every other item's (an elementwise recomputation rounds differently
    and can rank the target below itself); with several chunks the products are computed twice (target scores
    first) to keep this exact. ``exclude`` pairs (:func:`history_pairs`, the targets left out) are not ranked."""
    n = table.size(0) - 1
    chunks = [(1 + s, 1 + min(n, s + item_chunk)) for s in range(0, n, item_chunk)]
    target_score = torch.empty(len(user), device=user.device, dtype=user.dtype)
    if len(chunks) > 1:
        for start, stop in chunks:
            inside = (targets >= start) & (targets < stop)
            if inside.any():
                scores = user @ table[start:stop].T
                target_score[inside] = scores[inside, targets[inside] - start]
    above = torch.zeros(len(user), dtype=torch.long, device=user.device)
    for start, stop in chunks:
        scores = item_scores(user, table, start, stop, exclude)
        if len(chunks) == 1:
            target_score = scores.gather(1, (targets - start).unsqueeze(1)).squeeze(1)
        above += count_outranking(scores, target_score, targets, start)
    return above


def _row_counts(mask: torch.Tensor) -> torch.Tensor:
    """True entries per row of a boolean ``[B, C]`` as int64 ``[B]`` (on CPU through numpy, about 10x faster than
    torch's boolean sum)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(mask.numpy().sum(1, dtype=np.int64))
    return mask.sum(1)


def count_outranking(scores: torch.Tensor, target_scores: torch.Tensor, targets: torch.Tensor,
                     start: int = 0) -> torch.Tensor:
    """Per row, how many items of the block outrank the target (:func:`outranks`, int64 ``[B]``), without
    materialising the tie rule for every row: ``#(score > t)``, plus, only in rows where another item's score equals
    the target's exactly, the tied items with a smaller id."""
    ts = target_scores.reshape(-1, 1)
    above = _row_counts(scores > ts)
    at_least = _row_counts(scores >= ts)
    own = ((targets >= start) & (targets < start + scores.size(1))).long()  # the target's own column ties with it
    tied = torch.nonzero(at_least - above - own.to(above.device) > 0).flatten()
    if len(tied):
        rows = tied.to(scores.device)
        extra = outranks(scores[rows], target_scores[rows], targets[rows], start)
        above[tied] = _row_counts(extra).to(above.device)
    return above.to(scores.device)


def top_k(scores: torch.Tensor, k: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``min(k, C)`` best items of each row of ``scores [B, C]`` (column ``j`` = item ``start + j``): values
    ``[B, k]`` (descending) and item ids ``[B, k]`` (int64), ties in increasing id. ``-inf`` entries (padding,
    excluded) come last when a row has fewer finite scores than ``k``; :func:`top_lists` drops them.

    Raises ValueError on NaN scores (they have no rank)."""
    k = min(k, scores.size(1))
    values, ids = torch.topk(scores, k, dim=1)
    if k == 0 or len(scores) == 0:
        return values, ids + start
    if torch.isnan(values[:, 0]).any():  # topk puts NaN first
        raise ValueError("NaN scores cannot be ranked")
    kth = values[:, -1:]
    # rows where items tied with the k-th score are left out: topk's choice among them is arbitrary, keep the
    # smallest ids
    crossing = torch.nonzero((scores == kth).sum(1) != (values == kth).sum(1)).flatten()
    if len(crossing):
        part, cut = scores[crossing], kth[crossing]
        above, tied = part > cut, part == cut
        take = above | (tied & (tied.cumsum(1) <= k - above.sum(1, keepdim=True)))
        ids[crossing] = torch.nonzero(take)[:, 1].view(-1, k)
        values[crossing] = part.gather(1, ids[crossing])
    ids, by_id = ids.sort(dim=1)
    values = values.gather(1, by_id)
    order = values.sort(dim=1, descending=True, stable=True).indices
    return values.gather(1, order), ids.gather(1, order) + start


def top_lists(scores: torch.Tensor, k: int, start: int = 0) -> list[list[tuple[int, float]]]:
    """:func:`top_k` as ``[(item id, score), ...]`` per row, ``-inf`` entries (never ranked) left out: a row
    may list fewer than ``k`` items."""
    values, ids = top_k(scores, k, start)
    return [[(i, v) for i, v in zip(row_i, row_v) if v != NEG_INF]
            for row_i, row_v in zip(ids.tolist(), values.tolist())]
