"""CTR samples (issue 19 part 1, spec solid 2-3): the leave-last-out rows, unseen negatives, a fixed table, the
histories read back from the sequences, and what ``semrec ctr-data`` writes and refuses."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from semrec.cli import app
from semrec.data.ctr import SPLITS, build_ctr_samples, histories, load_ctr_samples
from semrec.errors import SemrecError
from tests.support import _one_line_error, make_tiny_dataset

runner = CliRunner()
N_ITEMS = 60
SEQUENCES = [np.array([5, 7, 9, 11, 13, 2]), np.array([3, 4]), np.array([8, 1, 6]), np.array([20])]


def test_positives_follow_leave_last_out_and_users_stay_contiguous():
    s = build_ctr_samples(SEQUENCES, N_ITEMS, train_negatives=2, eval_negatives=5, seed=1)
    train = s.part("train")
    pos = train[train["label"] == 1]
    # user 0 (6 items): training positives at positions 1..3 (items 7, 9, 11); user 1 (2 items, train-only):
    # position 1 (item 4); user 2 (3 items): none (item 0 has no history); user 3 (1 item): none
    assert list(zip(pos["user"], pos["position"], pos["candidate"])) == [(0, 1, 7), (0, 2, 9), (0, 3, 11), (1, 1, 4)]
    assert (train.groupby(["user", "position"]).size() == 3).all()  # the positive and 2 negatives
    for split, position in (("valid", -2), ("test", -1)):
        part = s.part(split)
        assert part["user"].tolist() == [0] * 6 + [2] * 6  # users with >= 3 items, contiguous, positive first
        assert part["label"].tolist() == ([1] + [0] * 5) * 2
        assert part["candidate"][part["label"] == 1].tolist() == [SEQUENCES[0][position], SEQUENCES[2][position]]
        assert part["position"].tolist() == [6 + position] * 6 + [3 + position] * 6
    assert s.counts()["valid"] == {"rows": 12, "positives": 2, "users": 2}


def test_negatives_are_unseen_items_and_eval_negatives_distinct():
    rng = np.random.default_rng(0)
    sequences = [rng.choice(np.arange(1, 41), size=int(rng.integers(3, 30)), replace=False) for _ in range(50)]
    s = build_ctr_samples(sequences, 40, train_negatives=4, eval_negatives=9, seed=3)
    negatives = s.frame[s.frame["label"] == 0]
    assert not any(c in set(sequences[u].tolist()) for u, c in zip(negatives["user"], negatives["candidate"]))
    assert negatives["candidate"].between(1, 40).all()
    for split in ("valid", "test"):
        part = s.part(split)
        assert (part[part["label"] == 0].groupby("user")["candidate"].nunique() == 9).all()


def test_the_table_is_fixed_by_the_seed():
    a = build_ctr_samples(SEQUENCES, N_ITEMS, eval_negatives=20, seed=4)
    assert a.frame.equals(build_ctr_samples(SEQUENCES, N_ITEMS, eval_negatives=20, seed=4).frame)
    assert not a.frame.equals(build_ctr_samples(SEQUENCES, N_ITEMS, eval_negatives=20, seed=5).frame)
    assert list(a.frame.columns) == ["split", "user", "position", "candidate", "label"] and SPLITS[0] == "train"


def test_histories_are_the_last_l_items_before_the_position_left_aligned():
    items, lengths = histories(SEQUENCES, np.array([0, 0, 2, 1]), np.array([5, 1, 2, 1]), 3)
    assert items.tolist() == [[9, 11, 13], [5, 0, 0], [8, 1, 0], [3, 0, 0]]
    assert lengths.tolist() == [3, 1, 2, 1]


def test_too_few_unseen_items_and_bad_settings_are_refused():
    with pytest.raises(SemrecError, match=r"user 'u0' interacted with 6 of 12 items, so 6 unseen item\(s\) remain "
                                          r"for 7 valid negatives; lower --eval-negatives"):
        build_ctr_samples([np.array([1, 2, 3, 4, 5, 6])], 12, eval_negatives=7, user_names=["u0"])
    with pytest.raises(SemrecError, match="train_negatives must be an integer >= 0, got -1"):
        build_ctr_samples(SEQUENCES, N_ITEMS, train_negatives=-1)
    zero = build_ctr_samples(SEQUENCES, N_ITEMS, train_negatives=0, eval_negatives=0)
    assert zero.frame["label"].all()  # positives only


def test_ctr_data_command_writes_once_and_loads_back(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds")
    result = runner.invoke(app, ["ctr-data", str(ds), "--eval-negatives", "19", "--history", "8"])
    assert result.exit_code == 0, result.output
    assert "1 positive + 19 unseen negatives per user" in result.output and "history L = 8" in result.output
    samples, manifest = load_ctr_samples(ds / "ctr" / "ctr", ds)
    assert manifest["history"] == 8 and manifest["eval_negatives"] == 19
    assert manifest["counts"]["test"]["rows"] == 20 * manifest["counts"]["test"]["users"]
    assert samples.counts() == manifest["counts"]
    # a damaged or replaced table is refused, naming the file and the fix
    (ds / "ctr" / "ctr" / "samples.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(SemrecError, match="not the table ctr.json describes"):
        load_ctr_samples(ds / "ctr" / "ctr", ds)
    (ds / "ctr" / "ctr" / "ctr.json").unlink()
    with pytest.raises(SemrecError, match=r"ctr.json: missing \(incomplete CTR samples folder\); re-run 'semrec "
                                          r"ctr-data'"):
        load_ctr_samples(ds / "ctr" / "ctr", ds)


@pytest.mark.parametrize(("args", "message"), [
    (["--history", "0"], "error: history must be an integer >= 1, got 0"),
    (["--train-negatives=-2"], "error: train_negatives must be an integer >= 0, got -2"),
    (["--set", "seed=x"], "error: config 'seed': expected an integer, got 'x'"),
])
def test_ctr_data_bad_settings_are_one_line(tmp_path, args, message):
    ds = make_tiny_dataset(tmp_path / "ds")
    assert _one_line_error(runner.invoke(app, ["ctr-data", str(ds), *args])) == message


def test_ctr_data_on_a_missing_dataset_names_the_fix(tmp_path):
    line = _one_line_error(runner.invoke(app, ["ctr-data", str(tmp_path / "none")]))
    assert "run 'semrec prepare' first" in line
