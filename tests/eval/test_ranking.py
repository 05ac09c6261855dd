"""semrec/eval/ranking.py, the one ranking rule: ties by item id, padding never ranked, a user's whole history
excluded (its target kept), and the evaluator's ranks, ``ranks_from_scores`` and the top-k lists agreeing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semrec.data.splits import EvalRows
from semrec.eval.evaluator import rank_targets
from semrec.eval.metrics import ranks_from_scores
from semrec.eval.ranking import (
    history_pairs,
    item_scores,
    mask_scores,
    outranks,
    rank_of_targets,
    scoring_vectors,
    top_k,
    top_lists,
)
from tests.support import table_model

INF = float("-inf")


def test_ties_are_broken_by_item_id_in_ranks_and_top_k():
    # items 1..5 of a block starting at item 1; items 2, 3 and 5 tie at 0.5
    scores = torch.tensor([[0.25, 0.5, 0.5, 0.75, 0.5]])
    assert outranks(scores, torch.tensor([0.5]), torch.tensor([3]), start=1).tolist() == [
        [False, True, False, True, False]]  # item 4 (higher) and item 2 (tied, smaller id) rank above item 3
    values, ids = top_k(scores, 3, start=1)
    assert ids.tolist() == [[4, 2, 3]] and values.tolist() == [[0.75, 0.5, 0.5]]
    assert top_k(scores, 5, start=1)[1].tolist() == [[4, 2, 3, 5, 1]]
    # the rank of each item is its position in the full top-k list
    order = top_k(scores, 5, start=1)[1][0].tolist()
    for item in range(1, 6):
        rank = outranks(scores, scores[:, item - 1], torch.tensor([item]), start=1).sum().item()
        assert order[rank] == item


def test_top_k_matches_a_stable_sort_on_heavy_ties():
    """Integer scores tie everywhere, also across the k-th place (where torch.topk alone picks arbitrary ids)."""
    gen = torch.Generator().manual_seed(0)
    for n, k in ((7, 3), (500, 10), (3000, 64), (40, 40), (40, 100)):
        scores = torch.randint(0, 4, (6, n), generator=gen).float()
        scores[0, :5] = INF  # some masked entries
        values, ids = top_k(scores, k, start=0)
        reference = torch.sort(scores, dim=1, descending=True, stable=True)
        assert torch.equal(ids, reference.indices[:, :k]) and torch.equal(values, reference.values[:, :k])


def test_top_k_refuses_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        top_k(torch.tensor([[0.1, float("nan"), 0.3]]), 2)


def test_padding_is_never_ranked_nor_listed():
    table = torch.tensor([[100.0, 100.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # padding row scores highest
    user = torch.tensor([[1.0, 0.5]])
    full = item_scores(user, table, start=0)
    assert full.tolist() == [[INF, 1.0, 0.5, 1.5]]
    assert item_scores(user, table).tolist() == [[1.0, 0.5, 1.5]]  # start=1: the padding row is not in the product
    assert top_lists(full, 10) == [[(3, 1.5), (1, 1.0), (2, 0.5)]]
    assert rank_of_targets(user, table, torch.tensor([3])).tolist() == [0]  # not below the padding item
    assert ranks_from_scores(full, torch.tensor([3])).tolist() == [0]
    assert mask_scores(torch.ones(2, 3), start=0).tolist() == [[INF, 1.0, 1.0]] * 2
    assert mask_scores(torch.ones(1, 3), start=4).tolist() == [[1.0, 1.0, 1.0]]  # a block without the padding item


def test_history_pairs_cover_whole_histories_longer_than_max_len():
    histories = [np.arange(1, 61), np.array([], dtype=np.int64), np.array([0, 0, 7, 9])]  # 60 items; padded row
    rows, items = history_pairs(histories)  # serving: no target, every known item
    assert rows.tolist() == [0] * 60 + [2, 2] and items.tolist() == list(range(1, 61)) + [7, 9]
    rows, items = history_pairs(histories, np.array([30, 5, 9]))  # evaluation: the row's own target stays
    assert rows.tolist() == [0] * 59 + [2] and items.tolist() == [i for i in range(1, 61) if i != 30] + [7]


def _table_and_rows(n_items: int = 90, n_rows: int = 40, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randint(-2, 3, (n_items + 1, 6), generator=gen).float()  # integer scores: exact, many ties
    table[0] = 50.0  # the padding row would win every ranking
    rng = np.random.default_rng(seed)
    histories = [rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(1, 30)), replace=False)
                 for _ in range(n_rows)]
    targets = np.array([int(rng.integers(1, n_items + 1)) for _ in histories])
    return table, EvalRows(np.arange(n_rows), histories, targets)



@pytest.mark.parametrize("exclude", [False, True])
def test_evaluator_scores_ranks_and_top_k_follow_one_rule(exclude):
    """For histories longer than max_len: the evaluator's rank of the target (one or several item chunks), the rank
    read from the full score matrix and the target's position in the full top-k list are the same number; with
    the history excluded, no history item is ranked or listed, the target always is."""
    max_len = 4
    table, rows = _table_and_rows()
    assert sum(len(h) > max_len for h in rows.histories) > 20
    user = torch.stack([table[torch.as_tensor(h[-max_len:])].sum(0) for h in rows.histories])
    targets = torch.as_tensor(rows.targets)
    seen = history_pairs(rows.histories, rows.targets) if exclude else None
    full = item_scores(user, table, start=0, exclude=seen)
    from_matrix = ranks_from_scores(full, targets)
    for chunk, batch in ((65536, 1024), (16, 7)):
        evaluated = rank_targets(table_model(table), rows, max_len=max_len, batch_size=batch,
                                 exclude_history=exclude, item_chunk=chunk)
        assert evaluated.tolist() == from_matrix.tolist()
        assert rank_of_targets(user, table, targets, seen, item_chunk=chunk).tolist() == from_matrix.tolist()
    lists = top_lists(full, table.size(0))
    for row, (hist, target) in enumerate(zip(rows.histories, rows.targets)):
        listed = [i for i, _ in lists[row]]
        assert 0 not in listed and listed.index(target) == from_matrix[row]
        if exclude:
            assert not set(hist.tolist()) - {target} & set(listed)
            assert len(listed) == len(table) - 1 - len(set(hist.tolist()) - {target})


def test_scoring_vectors_normalise_only_for_cosine():
    x = torch.tensor([[3.0, 4.0]])
    assert torch.equal(scoring_vectors(x, "cosine"), torch.tensor([[0.6, 0.8]]))
    assert scoring_vectors(x, "dot") is x


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 5), st.integers(0, 10_000))
def test_the_counted_rank_is_the_tie_rule_summed(rows, cols, start, seed):
    """count_outranking (two counts, the tie rule only where ties exist) = outranks(...).sum(1), with many exact
    ties (scores on a coarse grid), -inf entries, and targets inside or outside the block."""
    from semrec.eval.ranking import count_outranking

    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (rows, cols), generator=g).float()
    scores[torch.rand(rows, cols, generator=g) < 0.1] = float("-inf")
    targets = torch.randint(start, start + cols + 3, (rows,), generator=g)  # some outside the block
    inside = (targets < start + cols)
    target_scores = torch.where(inside, scores[torch.arange(rows), (targets - start).clamp(max=cols - 1)],
                                torch.randint(0, 4, (rows,), generator=g).float())
    target_scores[target_scores == float("-inf")] = 1.0
    scores[torch.arange(rows)[inside], (targets - start)[inside]] = target_scores[inside]
    expected = outranks(scores, target_scores, targets, start).sum(1)
    assert count_outranking(scores, target_scores, targets, start).tolist() == expected.tolist()
