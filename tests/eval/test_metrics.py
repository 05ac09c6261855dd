import math

import numpy as np
import torch

from semrec.eval.metrics import head_items, metrics_from_ranks, ranks_from_scores
from tests.support import table_model


def test_ranks_from_scores_hand_case():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.4, 0.4, 0.2, 0.8]])
    # row 0 target item 2 (0.5): one item above -> rank 1; row 1 target item 1 (0.4): 0.8 above, and the tied
    # item 0 ranks above it (smaller id, as torch.topk breaks ties)
    assert ranks_from_scores(scores, torch.tensor([2, 1])).tolist() == [1, 2]
    scores[0, 1] = float("-inf")
    assert ranks_from_scores(scores, torch.tensor([2, 1])).tolist() == [0, 2]
    # a tied item with a larger id does not outrank the target
    assert ranks_from_scores(torch.tensor([[0.3, 0.3]]), torch.tensor([0])).tolist() == [0]


def test_metrics_from_ranks_hand_computed():
    m = metrics_from_ranks(np.array([0, 1, 4, 9, 30]), ks=(5, 10))
    assert math.isclose(m["recall@5"], 3 / 5)
    assert math.isclose(m["recall@10"], 4 / 5)
    ndcg5 = (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5
    assert math.isclose(m["ndcg@5"], ndcg5)
    assert math.isclose(m["ndcg@10"], ndcg5 + 1 / math.log2(11) / 5)
    assert math.isclose(m["mrr"], (1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 31) / 5)


def test_head_items_top_fraction_by_training_frequency():
    train = [np.array([1, 2, 3]), np.array([1, 2]), np.array([1, 5])]
    mask = head_items(train, n_items=10, fraction=0.2)
    assert mask.tolist() == [False, True, True] + [False] * 8



def _rows(n_rows: int, n_items: int, seed: int = 0):
    from semrec.data.splits import EvalRows

    rng = np.random.default_rng(seed)
    histories = [rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(1, 6)), replace=False)
                 for _ in range(n_rows)]
    targets = np.array([int(rng.integers(1, n_items + 1)) for _ in range(n_rows)])
    return EvalRows(np.arange(n_rows), histories, targets)


def test_rank_targets_matches_brute_force_with_ties_chunks_and_history_exclusion():
    from semrec.eval.evaluator import rank_targets

    torch.manual_seed(0)
    n_items = 300
    table = torch.randn(n_items + 1, 48)
    table[10] = table[20]  # duplicate items: exact ties
    table[30] = table[7]
    model = table_model(table, mean=True)
    rows = _rows(200, n_items)
    rows.targets[:20] = 20  # targets with a tied smaller-id twin
    rows.targets[20:40] = 7  # ... and with a tied larger-id twin
    for exclude in (False, True):
        expected = []
        for hist, target in zip(rows.histories, rows.targets):
            scores = (table[1:] @ table[torch.as_tensor(hist)].mean(0)).double()
            if exclude:
                scores[torch.as_tensor([h - 1 for h in hist if h != target], dtype=torch.long)] = float("-inf")
            expected.append(int(ranks_from_scores(scores.unsqueeze(0), torch.tensor([target - 1]))[0]))
        one_chunk = rank_targets(model, rows, max_len=10, exclude_history=exclude)
        chunked = rank_targets(model, rows, max_len=10, exclude_history=exclude, item_chunk=64)
        assert np.array_equal(one_chunk, chunked)
        # float32 products vs the float64 reference may differ only on near-ties
        assert np.mean(one_chunk == np.array(expected)) > 0.97
        assert (one_chunk[:20] >= 1).all() or exclude  # item 10 (same vector, smaller id) always ranks above 20
        assert (one_chunk[20:40] == np.array(expected)[20:40]).mean() > 0.9


def test_rank_targets_never_ranks_the_target_below_itself():
    from semrec.eval.evaluator import rank_targets

    torch.manual_seed(1)
    n_items = 2000
    table = torch.randn(n_items + 1, 64)
    model = table_model(table, mean=True)
    rows = _rows(300, n_items, seed=1)
    # the target is the only item in the history: its own score is the row maximum (up to rounding)
    rows.histories = [np.array([t]) for t in rows.targets]
    ranks = rank_targets(model, rows, max_len=10)
    assert (ranks == 0).mean() > 0.99
