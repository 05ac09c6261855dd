"""semrec.api: the plain functions behind every command give what the commands print, refuse bad arguments with
one line, and the ``ensure_*`` functions reuse what is current (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from semrec import api
from semrec.artifacts import DatasetFolder, RunFolder
from semrec.config import CodesConfig, RunConfig, TrainConfig
from semrec.errors import SemrecError
from tests.support import make_tiny_dataset, train_tiny_sasrec


def test_interim_results_evaluate_the_best_checkpoint_of_an_unfinished_run(tmp_path):
    assert api.interim_results(tmp_path / "missing") is None
    out, final = train_tiny_sasrec(tmp_path)
    (out / "results.json").unlink()  # as if the run were still going
    interim = api.interim_results(out)
    assert interim["epochs_run"] == 3 and interim["best_epoch"] == final["best_epoch"]
    assert interim["test"]["ndcg@10"] == pytest.approx(final["test"]["ndcg@10"])
    assert interim["train_wall_seconds"] > 0
    rows = [r for r in (out / "metrics.jsonl").read_text().splitlines() if r]
    assert len(rows) == 3
    best = final["best_epoch"]
    import json

    expected = sum(json.loads(r)["train_seconds"] + json.loads(r).get("eval_seconds", 0.0) for r in rows
                   if json.loads(r)["epoch"] <= best)
    assert interim["seconds_to_best"] == pytest.approx(expected) and api.seconds_to_best(out, best) == interim[
        "seconds_to_best"]
    assert api.seconds_to_best(tmp_path / "missing") is None
    # history items are never targets (repeats are dropped), so excluding them can only lift each target's rank
    excluded = api.evaluate(out, exclude_history=True, device="cpu")
    assert excluded.exclude_history is True
    for split in ("valid", "test"):
        for metric in ("ndcg@5", "ndcg@10", "recall@10", "mrr"):
            assert excluded.metrics[split][metric] >= final[split][metric] - 1e-9
    assert excluded.metrics["test"]["mrr"] > final["test"]["mrr"]
    assert api.interim_results(out, exclude_history=True)["test"] == excluded.metrics["test"]
    kept = api.evaluate(out, device="cpu")  # the run's own setting: history kept
    assert kept.exclude_history is False and kept.metrics["test"] == pytest.approx(final["test"])


def test_train_then_resume_with_a_new_epoch_cap(tmp_path):
    data = make_tiny_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    cfg = RunConfig(model="sasrec", dataset=str(data), out=str(out),
                    model_params={"hidden_size": 16, "inner_size": 32, "max_len": 10},
                    train=TrainConfig(epochs=1, batch_size=32, lr=3e-3, warmup_steps=2, progress=False))
    trained = api.train(cfg)
    assert trained.run_dir == out and trained.results["epochs_run"] == 1
    assert trained.describe().startswith("best epoch 0") and "epoch cap (1) reached" in trained.describe()
    with pytest.raises(SemrecError, match="already holds a run"):
        api.train(cfg)
    said: list[str] = []
    with pytest.raises(SemrecError, match="train.lr cannot change"):
        api.resume(out, ["train.lr=0.1"], say=said.append)
    more = api.resume(out, [("train.epochs", 2)], say=said.append)
    assert said == [f"resuming {out} after epoch 0 (best so far: epoch 0)"]
    assert more.resumed_after == 0 and more.results["epochs_run"] == 2
    assert RunFolder(out).read_results() == more.results


def test_ensure_codes_fits_once_and_again_when_the_dataset_changed(tmp_path):
    data = make_tiny_dataset(tmp_path / "ds")
    cfg = CodesConfig(tokenizer="pq", params={"pca_dim": 16, "codes_per_view": 2, "nbits": 3})
    folder = api.ensure_codes(data, cfg)
    codes = DatasetFolder(data).codes("pq")
    assert folder == codes.path and codes.is_current(DatasetFolder(data))
    stamp = codes.codes.stat().st_mtime_ns
    assert api.ensure_codes(data, cfg) == folder and codes.codes.stat().st_mtime_ns == stamp  # current: reused
    make_tiny_dataset(data, seed=1)  # another dataset in the same folder: the codes are stale
    assert not codes.is_current(DatasetFolder(data))
    api.ensure_codes(data, cfg)
    assert codes.is_current(DatasetFolder(data)) and codes.codes.stat().st_mtime_ns != stamp


def test_recommend_takes_exactly_one_of_history_or_user(tmp_path):
    out, _ = train_tiny_sasrec(tmp_path, epochs=1)
    with pytest.raises(SemrecError, match="exactly one"):
        api.recommend(out)
    with pytest.raises(SemrecError, match="exactly one"):
        api.recommend(out, ["i1"], user="u0")
    with pytest.raises(SemrecError, match="k must be at least 1, got 0"):
        api.recommend(out, ["i1"], k=0)
    by_user = api.recommend(out, user="u0", k=5)
    by_history = api.recommend(out, by_user.history, k=5)
    assert by_user.history and by_user.result == by_history.result and len(by_user.result.items) == 5
    unknown = api.recommend(out, ["i1", "nope"], k=3)
    assert unknown.result.unknown == ["nope"] and len(unknown.result.items) == 3


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, "--epochs must be at least 1, got 0"),
    ("batch_size", 0, "--batch-size must be at least 1, got 0"),
    ("lr", float("nan"), "--lr must be a positive number, got nan"),
    ("lr", -1.0, "--lr must be a positive number, got -1.0"),
])
def test_quickstart_refuses_bad_settings_before_any_work(tmp_path, field, value, message):
    settings = api.QuickstartSettings(data_dir=tmp_path / "data", runs_dir=tmp_path / "runs", **{field: value})
    with pytest.raises(SemrecError, match=message.replace("(", r"\(")):
        api.quickstart(settings, say=pytest.fail)  # nothing said: refused before the first stage
    assert not (tmp_path / "data").exists()


def test_quickstart_ccfrec_config_is_the_documented_fast_setting(tmp_path):
    settings = api.QuickstartSettings(runs_dir=tmp_path, overrides=["model_params.neg_num=500"])
    cfg = api.quickstart_ccfrec_config(settings, Path("data/ml-100k"), "ml-100k")
    assert cfg.model == "ccfrec" and cfg.codes == "pq" and cfg.out == str(tmp_path / "quickstart-ml-100k-ccfrec")
    assert cfg.model_params == {**api.QUICK_CCFREC, "neg_num": 500}
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.warmup_steps, cfg.train.grad_clip,
            cfg.train.patience) == (6, 256, 2e-3, 10, 1.0, 6)
    aux = api.quickstart_ccfrec_config(api.QuickstartSettings(aux_losses=True), Path("d"), "d")
    assert aux.model_params["mlm_weight"] == 0.6 and aux.model_params["cl_weight"] == 0.4


def test_merge_needs_a_dataset():
    with pytest.raises(SemrecError, match="at least one prepared dataset"):
        api.ensure_merged([])
