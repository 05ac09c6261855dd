"""CTR metrics (issue 19, spec solid 8) against cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semrec.eval.ctr_metrics import ctr_metrics, ranking_at_k, uauc


def test_auc_uauc_logloss_by_hand():
    # user 7: positive scored above 2 of its 3 negatives -> AUC 2/3; user 3: positive on top -> AUC 1;
    # user 9: only negatives -> skipped by UAUC
    users = np.array([7, 7, 7, 7, 3, 3, 9])
    labels = np.array([1, 0, 0, 0, 1, 0, 0])
    logits = np.array([0.5, 1.0, 0.0, -1.0, 2.0, -2.0, 0.3])
    m = ctr_metrics(users, labels, logits)
    assert m["uauc"] == pytest.approx((2 / 3 + 1) / 2)
    # overall AUC: positives {0.5, 2.0} vs negatives {1.0, 0.0, -1.0, -2.0, 0.3}: 0.5 beats 4 of 5, 2.0 all 5
    assert m["auc"] == pytest.approx((4 + 5) / 10)
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert m["logloss"] == pytest.approx(expected)


def test_ndcg_and_hr_by_hand():
    users = np.array([1, 1, 1, 1, 2, 2, 2])
    labels = np.array([0, 0, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.3, 0.2, 0.1])  # user 1: positive at rank 2; user 2: at rank 1
    m = ranking_at_k(users, labels, scores, ks=(1, 2, 5))
    assert m["hr@1"] == 0.0 and m["hr@2"] == 0.5 and m["hr@5"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1 / math.log2(3) / 2)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(3)) / 2)


def test_several_positives_use_the_ideal_dcg():
    users = np.zeros(4, dtype=int)
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])  # positives at ranks 0 and 2
    m = ranking_at_k(users, labels, scores, ks=(3,))
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_ties_rank_the_smaller_item_id_first_never_the_positive_for_free():
    users = np.zeros(3, dtype=int)
    labels = np.array([1, 0, 0])
    constant = np.zeros(3)
    m = ranking_at_k(users, labels, constant, candidates=np.array([30, 10, 20]), ks=(1, 3))
    assert m["hr@1"] == 0.0 and m["ndcg@3"] == pytest.approx(1 / math.log2(4))  # positive (id 30) ranked third
    assert ranking_at_k(users, labels, constant, candidates=np.array([5, 10, 20]), ks=(1,))["hr@1"] == 1.0


def test_undefined_metrics_are_none_not_zero():
    one_class = ctr_metrics(np.array([1, 1]), np.array([0, 0]), np.array([0.1, 0.2]))
    assert one_class["auc"] is None and one_class["uauc"] is None and one_class["logloss"] is None
    assert one_class["ndcg@10"] is None and one_class["hr@10"] is None
    empty = ctr_metrics(np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros(0))
    assert all(v is None for v in empty.values())


def test_uauc_groups_by_user_id_not_by_row_order():
    users = np.array([1, 2, 1, 2])
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.5])  # user 1: AUC 1; user 2: AUC 0
    assert uauc(users, labels, scores) == pytest.approx(0.5)
