"""``--exclude-history`` removes the user's whole history from the ranking, not only the last max_len items the
model reads (issue 16, case 14): the evaluator and bench/ranking_anatomy.py (the Recommender and the HTTP route:
tests/test_serve_startup.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from semrec.data.splits import EvalRows
from semrec.eval.evaluator import rank_targets
from semrec.eval.metrics import ranks_from_scores
from semrec.eval.ranking import history_pairs
from tests.support import table_model

ROOT = Path(__file__).resolve().parents[2]



def _brute_force(table: torch.Tensor, rows: EvalRows, max_len: int, exclude: bool) -> list[int]:
    out = []
    for hist, target in zip(rows.histories, rows.targets):
        scores = (table[1:] @ table[torch.as_tensor(hist[-max_len:])].sum(0)).double()
        if exclude:
            scores[torch.as_tensor([h - 1 for h in hist if h != target], dtype=torch.long)] = float("-inf")
        out.append(int(ranks_from_scores(scores.unsqueeze(0), torch.tensor([target - 1]))[0]))
    return out


def test_history_pairs_cover_every_item_but_the_target():
    rows, items = history_pairs([np.array([5, 3, 9, 2]), np.array([], dtype=np.int64), np.array([7, 1])],
                                np.array([9, 4, 8]))
    assert rows.tolist() == [0, 0, 0, 2, 2] and items.tolist() == [5, 3, 2, 7, 1]  # item ids


def test_rank_targets_excludes_the_whole_history_not_only_the_last_max_len():
    torch.manual_seed(0)
    n_items, max_len = 120, 4
    table = torch.randint(-3, 4, (n_items + 1, 16)).float()
    rng = np.random.default_rng(0)
    histories = [rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(2, 40)), replace=False)
                 for _ in range(64)]
    targets = np.array([int(rng.integers(1, n_items + 1)) for _ in histories])
    # the early history items (never read by the model) score above everything: only a whole-history exclusion
    # takes them out of the ranking
    for hist in histories[:16]:
        user = table[torch.as_tensor(hist[-max_len:])].sum(0)
        table[torch.as_tensor(hist[:-max_len])] = 3 * torch.sign(user)
    rows = EvalRows(np.arange(len(histories)), histories, targets)
    assert sum(len(h) > max_len for h in histories) > 40
    for exclude in (False, True):
        expected = _brute_force(table, rows, max_len, exclude)
        for chunk, batch in ((65536, 1024), (32, 7)):  # one item chunk / several chunks and batches
            got = rank_targets(table_model(table), rows, max_len=max_len, batch_size=batch, exclude_history=exclude,
                               item_chunk=chunk)
            assert got.tolist() == expected, (exclude, chunk)
    # with the whole history excluded, no history item ranks above the target
    excluded = rank_targets(table_model(table), rows, max_len=max_len, exclude_history=True)
    truncated = _brute_force_last_only(table, rows, max_len)
    assert (excluded <= np.array(truncated)).all() and (excluded < np.array(truncated)).any()


def _brute_force_last_only(table: torch.Tensor, rows: EvalRows, max_len: int) -> list[int]:
    """The old behaviour: only the last max_len history items excluded (a rank at least as large)."""
    out = []
    for hist, target in zip(rows.histories, rows.targets):
        scores = (table[1:] @ table[torch.as_tensor(hist[-max_len:])].sum(0)).double()
        scores[torch.as_tensor([h - 1 for h in hist[-max_len:] if h != target], dtype=torch.long)] = float("-inf")
        out.append(int(ranks_from_scores(scores.unsqueeze(0), torch.tensor([target - 1]))[0]))
    return out


def test_ranking_anatomy_counts_the_whole_history(tmp_path):
    from semrec.config import RunConfig, TrainConfig
    from semrec.data.dataset import CanonicalDataset
    from semrec.runs import evaluate_run
    from semrec.train.trainer import Trainer
    from tests.support import make_tiny_dataset

    spec = importlib.util.spec_from_file_location("bench_ranking_anatomy", ROOT / "bench" / "ranking_anatomy.py")
    anatomy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anatomy)
    data = make_tiny_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    cfg = RunConfig(model="sasrec", dataset=str(data), out=str(out),
                    model_params={"hidden_size": 16, "inner_size": 32, "max_len": 3},
                    train=TrainConfig(epochs=2, batch_size=32, lr=3e-3, warmup_steps=2, progress=False))
    Trainer(cfg).fit()
    test_rows = CanonicalDataset.load(data).split().test
    assert sum(len(h) > 3 for h in test_rows.histories) > 0.8 * len(test_rows.histories)
    figures = anatomy.anatomy(out, dup=0.9)
    excluded = evaluate_run(out, exclude_history=True, device="cpu")["test"]
    assert figures["ndcg@10 excl. history"] == pytest.approx(excluded["ndcg@10"], abs=1e-6)
    assert figures["rank 1 excl. history"] >= figures["rank 1"]
