import math

import numpy as np
import torch

from semrec.train.metrics import head_items, metrics_from_ranks, ranks_from_scores


def test_ranks_from_scores_hand_case():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.4, 0.4, 0.2, 0.8]])
    # row 0 target item 2 (0.5): one item above -> rank 1; row 1 target item 1 (0.4): 0.8 above, tie ignored
    assert ranks_from_scores(scores, torch.tensor([2, 1])).tolist() == [1, 1]
    scores[0, 1] = float("-inf")
    assert ranks_from_scores(scores, torch.tensor([2, 1])).tolist() == [0, 1]


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
