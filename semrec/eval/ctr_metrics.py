"""CTR metrics over labelled candidate rows (spec solid section 8): AUC, UAUC, log-loss, NDCG@K and HR@K per user.

* AUC and log-loss: sklearn's ``roc_auc_score`` / ``log_loss`` over all rows (log-loss on the sigmoid of the logits,
  clipped by sklearn; None when the rows hold one label class only, where AUC is undefined).
* UAUC: sklearn's AUC per user, users whose rows hold one label class skipped, unweighted mean over the rest.
* NDCG@K / HR@K: per user, rows ranked by score (descending); users without a positive skipped; DCG = sum over
  positives at 0-based rank i < K of 1/log2(i + 2), IDCG = the same for min(#positives, K) positives at the top;
  HR@K = 1 if a positive is in the top K. Means over users. **Ties**: an equal score ranks the candidate with the
  smaller item id first (the project's one ranking rule, :mod:`semrec.eval.ranking`); the reference keeps file
  order, which puts a tied positive (written first) on top and rewards constant scores.

Users are grouped by id (rows need not be contiguous here; the sample table keeps them so, as the reference
requires). Every function takes numpy arrays ``[rows]``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.metrics import log_loss, roc_auc_score

DEFAULT_KS = (5, 10, 20)


def _groups(users: np.ndarray) -> list[np.ndarray]:
    """Row indices of each user, users in first-seen order."""
    users = np.asarray(users)
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    groups = np.split(order, bounds)
    return sorted((g for g in groups if len(g)), key=lambda g: g[0])


def uauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Mean per-user AUC over users with both label classes (None when there is none)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    values = [roc_auc_score(labels[g], scores[g]) for g in _groups(users) if 0 < labels[g].sum() < len(g)]
    return float(np.mean(values)) if values else None


def ranking_at_k(users: np.ndarray, labels: np.ndarray, scores: np.ndarray, candidates: np.ndarray | None = None,
                 ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float | None]:
    """NDCG@K and HR@K per user over each user's rows, averaged over users with a positive (None if there is none).
    ``candidates`` (item ids) break score ties, smaller id first; without them ties keep row order."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    ids = np.zeros(len(labels), dtype=np.int64) if candidates is None else np.asarray(candidates)
    ndcg: dict[int, list[float]] = {k: [] for k in ks}
    hr: dict[int, list[float]] = {k: [] for k in ks}
    discount = 1.0 / np.log2(np.arange(max(len(labels), 1)) + 2.0)
    for g in _groups(users):
        lab = labels[g]
        n_pos = int(lab.sum())
        if n_pos == 0:
            continue
        order = np.lexsort((np.arange(len(g)), ids[g], -scores[g]))  # score desc, then item id, then row
        ranked = lab[order]
        for k in ks:
            top = ranked[:k]
            dcg = float((top * discount[: len(top)]).sum())
            idcg = float(discount[: min(n_pos, k)].sum())
            ndcg[k].append(dcg / idcg)
            hr[k].append(float(top.any()))
    out: dict[str, float | None] = {}
    for k in ks:
        out[f"ndcg@{k}"] = float(np.mean(ndcg[k])) if ndcg[k] else None
        out[f"hr@{k}"] = float(np.mean(hr[k])) if hr[k] else None
    return out


def ctr_metrics(users: np.ndarray, labels: np.ndarray, logits: np.ndarray, candidates: np.ndarray | None = None,
                ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float | None]:
    """``auc``, ``uauc``, ``logloss``, ``ndcg@K``, ``hr@K`` (spec solid 8) of logits ``[rows]`` (probability =
    sigmoid(logit)); a metric that is undefined on these rows (one label class, no row) is None."""
    labels = np.asarray(labels).astype(np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    out: dict[str, float | None] = {"auc": None, "uauc": None, "logloss": None}
    if len(labels) and 0 < labels.sum() < len(labels):
        out["auc"] = float(roc_auc_score(labels, logits))
        out["logloss"] = float(log_loss(labels, expit(logits), labels=[0, 1]))
    if len(labels):
        out["uauc"] = uauc(users, labels, logits)
    out.update(ranking_at_k(users, labels, logits, candidates, ks))
    return out
