"""How a training run ends: nothing to evaluate (issue 16, case 7), a wall-time budget, and resuming with a new epoch
cap, patience or budget (case 13)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from semrec.cli import app, format_metrics
from semrec.config import RunConfig, TrainConfig
from semrec.data.build import build_dataset
from semrec.data.dataset import CanonicalDataset, SourceData
from semrec.errors import SemrecError
from semrec.eval.evaluator import evaluate
from semrec.eval.metrics import head_items, metrics_from_ranks
from semrec.models import ItemInputs, build_model
from semrec.runs import evaluate_run
from semrec.train.trainer import Trainer
from tests.support import make_tiny_dataset

runner = CliRunner()
SASREC = {"hidden_size": 16, "inner_size": 32, "max_len": 10}
TINY_ARGS = ["--set", "model_params.hidden_size=16", "--set", "model_params.max_len=10", "--set",
             "train.progress=false", "--set", "train.batch_size=32", "--set", "train.warmup_steps=2"]
METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr", "head_ndcg@10",
           "tail_ndcg@10"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("end") / "ds")


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> Path:
    """60 users with 1 or 2 interactions each: leave-last-out has no valid or test row."""
    rows = [(f"u{u}", f"i{(u + k) % 20}", float(k)) for u in range(60) for k in range(1 + u % 2)]
    items = pd.DataFrame({"raw_id": [f"i{i}" for i in range(20)], "title": [f"item {i}" for i in range(20)]})
    source = SourceData("short", "synthetic", pd.DataFrame(rows, columns=["user", "item", "timestamp"]), items,
                        ["title"], [])
    return build_dataset(source).save(tmp_path_factory.mktemp("short") / "ds")


# ----- case 7: nothing to evaluate ------------------------------------------------------------------------------

def test_metrics_over_no_row_are_none():
    assert metrics_from_ranks(np.zeros(0)) == {"recall@5": None, "ndcg@5": None, "recall@10": None, "ndcg@10": None,
                                               "recall@20": None, "ndcg@20": None, "mrr": None}


def test_an_empty_head_or_tail_group_is_none(tiny):
    dataset = CanonicalDataset.load(tiny)
    split = dataset.split()
    train = np.concatenate(split.train)
    items = ItemInputs(n_items=dataset.n_items, popularity=torch.from_numpy(np.bincount(train,
                                                                                        minlength=dataset.n_items + 1)))
    model = build_model("popularity", {}, items)
    every_item_head = np.ones(dataset.n_items + 1, dtype=bool)
    out = evaluate(model, split.test, 10, head_mask=every_item_head)
    assert out["head_rows"] == len(split.test.targets) and out["head_ndcg@10"] == out["ndcg@10"] is not None
    assert out["tail_rows"] == 0 and out["tail_ndcg@10"] is None and out["tail_recall@10"] is None
    normal = evaluate(model, split.test, 10, head_mask=head_items(split.train, dataset.n_items))
    assert normal["tail_rows"] > 0 and normal["tail_ndcg@10"] is not None


def test_format_metrics_shows_none_and_absent_as_na():
    table = format_metrics({"valid": {c: 0.5 for c in METRICS}, "test": {"recall@5": None, "ndcg@5": 0.25}})
    lines = table.splitlines()
    assert lines[1] == "valid  " + " ".join(f"{0.5:>12.4f}" for _ in METRICS)
    assert lines[2] == "test   " + f"{'n/a':>12} {0.25:>12.4f} " + " ".join(f"{'n/a':>12}" for _ in METRICS[2:])
    assert lines[3] == ("n/a: nothing to evaluate (valid and test rows come from users with 3+ interactions; "
                        "head/tail: no target in that group)")
    assert "n/a" not in format_metrics({"valid": {c: 0.5 for c in METRICS}})


def test_nothing_to_evaluate_warns_reports_na_and_keeps_the_last_epoch(short, tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(app, ["train", "--model", "sasrec", "--dataset", str(short), "--out", str(run),
                                     "--epochs", "2", *TINY_ARGS])
    assert result.exit_code == 0, result.output
    warning = ("warning: dataset 'short' has nothing to evaluate: leave-last-out holds out the last two items of "
               "users with at least 3 interactions, and no user has that many (longest sequence: 2); every metric is "
               "n/a; training runs all 2 epochs with no model selection (the last epoch's checkpoint is kept as "
               "best)")
    assert caplog.messages == [warning]
    lines = result.stdout.splitlines()
    assert lines[1] == "valid  " + " ".join(f"{'n/a':>12}" for _ in METRICS)
    assert lines[2] == "test   " + " ".join(f"{'n/a':>12}" for _ in METRICS)
    assert lines[4] == (f"last epoch 1 kept as best (no validation pass chose one); stopped: epoch cap (2) reached "
                        f"after 2 epoch(s); run folder {run}")
    results = json.loads((run / "results.json").read_text())
    assert results["best_epoch"] == 1 and results["selection"] == "last_epoch" and results["stop_reason"] == "epochs"
    for split in ("valid", "test"):
        assert all(results[split][c] is None for c in METRICS) and results[split]["tail_rows"] == 0
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and not any(k.startswith("valid_") for r in history for k in r)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 1 and best["score"] is None
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    # evaluate: the same warning (without the training part) and the n/a table; the run still recommends
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0 and caplog.messages == [warning.split("; training runs")[0]]
    assert result.stdout.splitlines()[1:3] == lines[1:3]
    assert evaluate_run(run, device="cpu")["test"]["ndcg@10"] is None
    result = runner.invoke(app, ["recommend", str(run), "--history", "i1", "--k", "3"])
    assert result.exit_code == 0 and len(result.stdout.strip().splitlines()) == 4, result.output


def test_popularity_with_nothing_to_evaluate(short, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        results = Trainer(RunConfig(model="popularity", dataset=str(short), out=str(tmp_path / "pop"),
                                    train=TrainConfig(progress=False))).fit()
    assert results["test"]["ndcg@10"] is None and results["stop_reason"] == "not_trainable"
    assert caplog.messages[0].endswith("(longest sequence: 2); every metric is n/a")


def test_no_validation_pass_keeps_the_last_epoch(tiny, tmp_path, caplog):
    cfg = RunConfig(model="sasrec", dataset=str(tiny), out=str(tmp_path / "run"), model_params=dict(SASREC),
                    train=TrainConfig(epochs=2, eval_every=5, batch_size=32, warmup_steps=2, progress=False))
    with caplog.at_level(logging.WARNING):
        results = Trainer(cfg).fit()
    assert results["selection"] == "last_epoch" and results["best_epoch"] == 1
    assert results["test"]["ndcg@10"] is not None
    assert caplog.messages == ["warning: no validation pass ran (eval_every 5, 2 epoch(s) trained); the last epoch's "
                               "checkpoint (epoch 1) is kept as best"]


# ----- case 13: time budget and resume with new limits ---------------------------------------------------------

def test_time_budget_ends_the_run_cleanly(tiny, tmp_path):
    budget_s = 4.0
    t0 = time.perf_counter()
    cfg = RunConfig(model="sasrec", dataset=str(tiny), out=str(tmp_path / "run"), model_params=dict(SASREC),
                    train=TrainConfig(epochs=100_000, patience=100_000, batch_size=32, warmup_steps=2,
                                      progress=False, time_budget_minutes=budget_s / 60))
    results = Trainer(cfg).fit()
    elapsed = time.perf_counter() - t0
    assert results["stop_reason"] == "time_budget" and 0 < results["epochs_run"] < 100_000
    assert elapsed < budget_s + 3.0, elapsed  # stopped with time for the final evaluation (+ scheduling slack)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["valid"] == results["valid"] and saved["stop_reason"] == "time_budget"
    history = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(history, key=lambda r: r["valid_ndcg@10"])
    assert results["best_epoch"] == best["epoch"]
    assert results["valid"]["ndcg@10"] == pytest.approx(best["valid_ndcg@10"])


def test_time_budget_truncates_an_epoch_validates_it_and_the_run_resumes(tiny, tmp_path, monkeypatch):
    cfg = RunConfig(model="sasrec", dataset=str(tiny), out=str(tmp_path / "run"), model_params=dict(SASREC),
                    train=TrainConfig(epochs=3, batch_size=8, max_steps_per_epoch=8, warmup_steps=2, progress=False,
                                      time_budget_minutes=60))
    # a deterministic clock: the budget is spent once 5 steps have run
    monkeypatch.setattr(Trainer, "_out_of_time", lambda self, sync=False: self.step >= 5)
    trainer = Trainer(cfg)
    assert trainer.steps_per_epoch == 8
    results = trainer.fit()
    assert results["stop_reason"] == "time_budget" and results["epochs_run"] == 1 and results["best_epoch"] == 0
    (record,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert record["time_budget_stop"] is True and record["steps"] == 5 and "valid_ndcg@10" in record
    assert results["valid"]["ndcg@10"] == pytest.approx(record["valid_ndcg@10"])
    monkeypatch.undo()
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--set",
                                 "train.time_budget_minutes=null"])
    assert result.exit_code == 0, result.output
    resumed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert resumed["stop_reason"] == "epochs" and resumed["epochs_run"] == 3
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["time_budget_minutes"] is None


def test_resume_accepts_a_new_epoch_cap_patience_and_budget_only(tiny, tmp_path, monkeypatch):
    run = tmp_path / "run"
    import semrec.train.trainer as trainer_module

    original_log = trainer_module.Trainer._log

    def interrupt_after_two(self, writer, record):
        original_log(self, writer, record)
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_log", interrupt_after_two)
    result = runner.invoke(app, ["train", "--model", "sasrec", "--dataset", str(tiny), "--out", str(run),
                                 "--epochs", "6", *TINY_ARGS])
    assert result.exit_code == 130 and not (run / "results.json").exists()
    monkeypatch.undo()
    # finish the interrupted run with a lower epoch cap: no more training, the best checkpoint evaluated
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    results = json.loads((run / "results.json").read_text())
    assert results["epochs_run"] == 2 and results["stop_reason"] == "epochs"
    assert result.stdout.splitlines()[-1].endswith(f"stopped: epoch cap (2) reached after 2 epoch(s); run folder {run}")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # a higher cap and another patience: training goes on; the saved config takes the new values
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3", "--patience", "4",
                                 "--time-budget", "30"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "results.json").read_text())["epochs_run"] == 3
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (saved["epochs"], saved["patience"], saved["time_budget_minutes"]) == (3, 4, 30.0)
    # every other option is refused, naming it
    for args, message in [
        (["--lr", "0.1"], "--resume continues a run with its saved config; drop --lr (only --epochs, --patience and "
                          "--time-budget can change)"),
        (["--model", "gru4rec", "--seed", "3"], "drop --model, --seed (only"),
        (["--set", "train.lr=0.1"], "--resume continues a run with its saved config: train.lr cannot change (only "
                                    "train.epochs, train.patience, train.time_budget_minutes can: --epochs, "
                                    "--patience, --time-budget)"),
        (["--time-budget", "0"], "train.time_budget_minutes must be a positive number of minutes, got 0.0"),
    ]:
        result = runner.invoke(app, ["train", "--resume", str(run), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_resume_with_a_patience_already_exhausted_stops_at_once(tiny, tmp_path):
    from semrec.train.trainer import resume_config

    run = tmp_path / "run"
    cfg = RunConfig(model="sasrec", dataset=str(tiny), out=str(run), model_params=dict(SASREC),
                    train=TrainConfig(epochs=3, lr=0.0, warmup_steps=0, batch_size=32, patience=100, progress=False))
    first = Trainer(cfg).fit()  # lr 0: epoch 0 stays best, two validations without improvement
    assert first["best_epoch"] == 0 and torch.load(run / "checkpoints" / "last.pt", weights_only=True)["bad_evals"] == 2
    results = Trainer(resume_config(run, ["train.epochs=50", "train.patience=2"]), run_dir=run, resume=True).fit()
    assert results["stop_reason"] == "patience" and results["epochs_run"] == 3 and results["test"] == first["test"]


def test_time_budget_must_be_positive(tiny, tmp_path):
    cfg = RunConfig(model="sasrec", dataset=str(tiny), out=str(tmp_path / "run"),
                    train=TrainConfig(time_budget_minutes=-1.0, progress=False))
    with pytest.raises(SemrecError, match="must be a positive number of minutes, got -1.0"):
        Trainer(cfg)
