"""Leave-last-out split (test = last item, valid = second-to-last, train = the rest) and the
Amazon Reviews 2023 ``last_out_w_his`` row layout built from it.

Users with fewer than 3 interactions keep all their items in train and get no valid/test row
(every 5-core dataset has at least 5, so this only matters for unfiltered sources).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_EVAL_LENGTH = 3


@dataclass
class EvalRows:
    """One evaluation row per user: the history before the target, and the target."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray


@dataclass
class LeaveLastOutSplit:
    train: list[np.ndarray]  # per user id: the training prefix (all items for users shorter than 3)
    valid: EvalRows
    test: EvalRows


def leave_last_out(sequences: list[np.ndarray]) -> LeaveLastOutSplit:
    """Split every user's time-ordered sequence by the leave-last-out rule."""
    train, v_users, v_hist, v_tgt, t_users, t_hist, t_tgt = [], [], [], [], [], [], []
    for user, seq in enumerate(sequences):
        if len(seq) < MIN_EVAL_LENGTH:
            train.append(seq)
            continue
        train.append(seq[:-2])
        v_users.append(user)
        v_hist.append(seq[:-2])
        v_tgt.append(seq[-2])
        t_users.append(user)
        t_hist.append(seq[:-1])
        t_tgt.append(seq[-1])
    as_int = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
    return LeaveLastOutSplit(
        train=train,
        valid=EvalRows(as_int(v_users), v_hist, as_int(v_tgt)),
        test=EvalRows(as_int(t_users), t_hist, as_int(t_tgt)),
    )


def last_out_w_his(ratings: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Build the ``last_out_w_his`` train/valid/test rows from a rating-only frame, by the published rule.

    ``ratings`` has columns ``user_id, parent_asin, rating, timestamp``. Per user, rows are sorted by
    timestamp (stable), repeats of an item dropped (first kept); with n interactions: test = the
    last one (history = all before), valid = the second-to-last, train = one row for every earlier
    interaction i (history = items 0..i-1, empty for i = 0). Users with n < 3 only get train rows.
    """
    frame = ratings.copy()
    frame["_order"] = np.arange(len(frame))
    frame = frame.sort_values(["user_id", "timestamp", "_order"], kind="stable")
    frame = frame.drop_duplicates(["user_id", "parent_asin"], keep="first")
    out: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    for user, group in frame.groupby("user_id", sort=True):
        rows = group.to_dict("records")
        asins = [r["parent_asin"] for r in rows]
        n = len(rows)
        for i, row in enumerate(rows):
            if n >= MIN_EVAL_LENGTH and i == n - 1:
                split = "test"
            elif n >= MIN_EVAL_LENGTH and i == n - 2:
                split = "valid"
            else:
                split = "train"
            out[split].append({
                "user_id": user, "parent_asin": row["parent_asin"], "rating": row["rating"],
                "timestamp": row["timestamp"], "history": " ".join(asins[:i]),
            })
    columns = ["user_id", "parent_asin", "rating", "timestamp", "history"]
    return {k: pd.DataFrame(v, columns=columns) for k, v in out.items()}
