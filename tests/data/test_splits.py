from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semrec.data.build import build_dataset
from semrec.data.dataset import SourceData
from semrec.data.sources import amazon2023
from semrec.data.splits import last_out_w_his, leave_last_out


def test_leave_last_out_hand_case():
    split = leave_last_out([np.array([1, 2, 3, 4, 5]), np.array([7, 8]), np.array([9, 1, 2])])
    assert [s.tolist() for s in split.train] == [[1, 2, 3], [7, 8], [9]]
    assert split.valid.users.tolist() == [0, 2]
    assert [h.tolist() for h in split.valid.histories] == [[1, 2, 3], [9]]
    assert split.valid.targets.tolist() == [4, 1]
    assert split.test.users.tolist() == [0, 2]
    assert [h.tolist() for h in split.test.histories] == [[1, 2, 3, 4], [9, 1]]
    assert split.test.targets.tolist() == [5, 2]


def test_last_out_w_his_published_rule_hand_case():
    # user A: C is repeated (second dropped), B and D tie on time (input order kept); user Z has 2 items.
    ratings = pd.DataFrame(
        [("A", "C", 5.0, 30), ("A", "B", 4.0, 10), ("A", "D", 3.0, 10), ("A", "C", 1.0, 40),
         ("A", "E", 2.0, 50), ("Z", "Q", 5.0, 1), ("Z", "R", 5.0, 2)],
        columns=["user_id", "parent_asin", "rating", "timestamp"],
    )
    rows = last_out_w_his(ratings)
    train = rows["train"][["user_id", "parent_asin", "timestamp", "history"]].values.tolist()
    assert train == [["A", "B", 10, ""], ["A", "D", 10, "B"], ["Z", "Q", 1, ""], ["Z", "R", 2, "Q"]]
    assert rows["valid"][["user_id", "parent_asin", "history"]].values.tolist() == [["A", "C", "B D"]]
    assert rows["test"][["user_id", "parent_asin", "history"]].values.tolist() == [["A", "E", "B D C"]]


ratings_strategy = st.lists(
    st.tuples(st.sampled_from("uvwxyz"), st.sampled_from("abcdefghij"), st.integers(0, 20)),
    min_size=1, max_size=60,
)


def _frame(triples):
    return pd.DataFrame(
        [(u, i, 1.0, t) for u, i, t in triples], columns=["user_id", "parent_asin", "rating", "timestamp"]
    )


@settings(max_examples=60, deadline=None)
@given(ratings_strategy)
def test_rows_follow_the_rule(triples):
    rows = last_out_w_his(_frame(triples))
    all_rows = pd.concat(rows.values(), ignore_index=True)
    # one row per distinct (user, item); every history is the user's earlier distinct items
    assert len(all_rows) == len({(u, i) for u, i, _ in triples})
    for user, group in all_rows.groupby("user_id"):
        longest = group.loc[group["history"].str.len().idxmax()]
        sequence = longest["history"].split() + [longest["parent_asin"]]
        assert len(sequence) == len(set(sequence))
        times = group.set_index("parent_asin").loc[sequence, "timestamp"].tolist()
        assert times == sorted(times)
        for _, row in group.iterrows():
            n = len(row["history"].split())
            assert sequence[n] == row["parent_asin"]
        n_valid = (rows["valid"]["user_id"] == user).sum()
        n_test = (rows["test"]["user_id"] == user).sum()
        assert (n_valid, n_test) == ((1, 1) if len(sequence) >= 3 else (0, 0))
        if len(sequence) >= 3:
            assert rows["test"].loc[rows["test"]["user_id"] == user, "parent_asin"].item() == sequence[-1]
            assert rows["valid"].loc[rows["valid"]["user_id"] == user, "parent_asin"].item() == sequence[-2]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(triples=ratings_strategy)
def test_rating_file_and_rebuilt_split_files_give_the_same_dataset(triples, tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    frame = _frame(triples)
    frame.to_csv(folder / "ratings.csv", index=False)
    items = sorted({i for _, i, _ in triples})
    meta = pd.DataFrame({"raw_id": items, "title": [f"item {i}" for i in items]})
    direct = build_dataset(SourceData("d", "t", amazon2023.read_ratings(folder / "ratings.csv"),
                                      meta, ["title"], [folder / "ratings.csv"]))
    for split, rows in last_out_w_his(frame).items():
        rows.to_csv(folder / f"D.{split}.csv", index=False)
    files = {s: folder / f"D.{s}.csv" for s in ("train", "valid", "test")}
    rebuilt = build_dataset(SourceData("d", "t", amazon2023.read_splits(files), meta, ["title"],
                                       list(files.values())))
    assert [s.tolist() for s in direct.sequences] == [s.tolist() for s in rebuilt.sequences]
    assert direct.items["raw_id"].tolist() == rebuilt.items["raw_id"].tolist()
    a, b = leave_last_out(direct.sequences), leave_last_out(rebuilt.sequences)
    assert a.test.targets.tolist() == b.test.targets.tolist()
    assert a.valid.targets.tolist() == b.valid.targets.tolist()
