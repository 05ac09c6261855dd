"""One owner per run (issue 17): the folder classes name every file the trainer writes, ``load_run`` gives the
trained model, ``ensure_trained`` reuses, resumes or trains, item inputs are built one way for the catalogue and
for new items, and model capabilities live on the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semrec.api import ensure_trained
from semrec.artifacts import DatasetFolder, MissingCheckpoint, RunFolder
from semrec.config import RunConfig, TrainConfig
from semrec.eval.evaluator import EVALUATOR_VERSION
from semrec.models import REGISTRY, build_model, cold_start_refusal, model_entry
from semrec.models.inputs import build_item_inputs, item_features
from semrec.runs import evaluate_run, load_run, load_run_data
from tests.support import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


def sasrec_config(data: Path, out: Path, epochs: int) -> RunConfig:
    return RunConfig(model="sasrec", dataset=str(data), out=str(out),
                     model_params={"hidden_size": 16, "inner_size": 32, "max_len": 10},
                     train=TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, warmup_steps=2, progress=False))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("runs") / "ds")


def test_ensure_trained_trains_then_reuses_then_resumes_and_rereads_older_evaluations(tiny_data, tmp_path):
    out = tmp_path / "run"
    folder = RunFolder(out)
    first = ensure_trained(sasrec_config(tiny_data, out, 1), out)  # nothing there: trains
    assert folder.read_results() == first and first["epochs_run"] == 1
    # every file the trainer wrote is named by RunFolder
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [RunFolder.CONFIG, RunFolder.FINGERPRINTS, RunFolder.METRICS, RunFolder.RESULTS, RunFolder.CHECKPOINTS,
         RunFolder.TENSORBOARD, RunFolder.CURVE])
    assert sorted(p.name for p in folder.checkpoints.iterdir()) == ["best.pt", "last.pt"]
    assert folder.best == folder.checkpoint("best") and folder.has_started() and folder.is_finished()

    stamp = folder.last.stat().st_mtime_ns
    assert ensure_trained(sasrec_config(tiny_data, out, 5), out) == first  # finished: reused, not retrained
    assert folder.last.stat().st_mtime_ns == stamp

    stale = {**first, "evaluator": "older"}  # made by an older evaluator: re-ranked with the current one
    folder.write_results(stale)
    again = ensure_trained(sasrec_config(tiny_data, out, 5), out)
    assert again["evaluator"] == EVALUATOR_VERSION and again["test"] == first["test"]
    assert folder.last.stat().st_mtime_ns == stamp

    folder.results.unlink()  # interrupted after its first epoch: resumed, not restarted
    resumed = ensure_trained(sasrec_config(tiny_data, out, 2), out)
    rows = folder.read_metrics()
    assert resumed["epochs_run"] == 2 and [r["epoch"] for r in rows] == [0, 1]


def test_load_run_gives_the_trained_model_as_evaluate_run_ranks_it(tiny_data, tmp_path):
    out = tmp_path / "run"
    results = ensure_trained(sasrec_config(tiny_data, out, 2), out)
    run = load_run(out)
    assert run.config.model == "sasrec" and run.model.max_len == 10 and not run.model.training
    assert run.tokenizer is None and run.folder.path == out
    saved = torch.load(RunFolder(out).best, weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in run.model.state_dict().items())
    assert evaluate_run(out, device="cpu")["test"] == results["test"]
    last = load_run(out, "last")
    saved_last = torch.load(RunFolder(out).last, weights_only=False)["model"]
    assert all(torch.equal(saved_last[k], v) for k, v in last.model.state_dict().items())
    with pytest.raises(Exception, match="checkpoint must be best or last"):
        load_run(out, "middle")
    RunFolder(out).best.unlink()
    with pytest.raises(MissingCheckpoint, match="best.pt: missing"):
        load_run(out)


@pytest.fixture(scope="module")
def serving_data(tmp_path_factory) -> Path:
    from tests.support import make_serving_dataset

    return make_serving_dataset(tmp_path_factory.mktemp("serving") / "data")


@pytest.mark.parametrize("model", ["ccfrec", "vqrec", "unisrec"])
def test_new_items_get_the_inputs_the_catalogue_has(model, serving_data, tmp_path):
    """The catalogue's item inputs, rebuilt from its own texts the way a cold-start item's are, are equal."""
    from semrec.serve.items import ItemFeaturizer
    from tests.support import train_run

    run = load_run(train_run(serving_data, model, tmp_path / model, epochs=1))
    data = run.data

    def never(texts):  # every text is the catalogue's: the encoder is not called
        raise AssertionError(f"encoder called for {texts[:2]}")

    featurizer = ItemFeaturizer(run.config, data.dataset, run.tokenizer, never)
    texts = [{v: str(data.dataset.items.iloc[i][v]) for v in data.dataset.views} for i in range(data.dataset.n_items)]
    features = featurizer.features(texts)
    assert sorted(features) == {"ccfrec": ["codes", "text"], "vqrec": ["codes"], "unisrec": ["plm"]}[model]
    rebuilt = build_item_inputs(features, data.items.codebook_sizes)
    assert rebuilt.n_items == data.items.n_items and rebuilt.codebook_sizes == data.items.codebook_sizes
    for name in ("codes", "text", "plm"):
        mine, catalogue = getattr(rebuilt, name), getattr(data.items, name)
        assert (mine is None) == (catalogue is None), name
        if mine is not None:
            assert mine.dtype == catalogue.dtype and torch.equal(mine, catalogue), name
    if model_entry(model).reads_codes_folder:
        # given the fitted codes, item_features lays the catalogue out exactly as load_run_data does
        matrices = {v: featurizer.catalogue()[v][0][1:] for v in run.tokenizer.input_views}
        again = build_item_inputs(item_features(model_entry(model).needs, matrices, run.tokenizer, "all",
                                                codes=data.items.codes[1:].numpy()), data.items.codebook_sizes)
        assert torch.equal(again.codes, data.items.codes)
    assert DatasetFolder(serving_data).exists() and load_run_data(run.config).fingerprints == data.fingerprints


def test_model_capabilities_live_on_the_models():
    readers = [name for name, entry in REGISTRY.items() if entry.reads_item_data]
    assert readers == ["ccfrec", "vqrec", "unisrec"]
    assert [n for n, e in REGISTRY.items() if e.reads_codes_folder] == ["ccfrec", "vqrec"]
    assert [n for n, e in REGISTRY.items() if not e.trainable] == ["popularity"]
    for name in ("popularity", "sasrec", "gru4rec", "bert4rec"):
        assert cold_start_refusal(name, {}) == (
            f"{name} ranks items by learned per-item parameters (IDs or popularity), so an item added after "
            "training cannot be ranked; retrain with the item in the dataset, or use a model that reads item text or "
            "codes (ccfrec, vqrec, unisrec)")
    assert cold_start_refusal("ccfrec", {}) is None and cold_start_refusal("vqrec", {}) is None
    assert cold_start_refusal("unisrec", {"train_stage": "inductive"}) is None
    assert cold_start_refusal("unisrec", {}).startswith("unisrec with train_stage 'transductive'")
    counts = torch.arange(7)
    items = build_item_inputs({}, popularity=counts.numpy(), n_items=6)
    assert build_model("popularity", {}, items).max_len == 50
    for name in ("sasrec", "gru4rec", "bert4rec"):
        assert build_model(name, {"max_len": 7}, items).max_len == 7
        assert build_model(name, {}, items).max_len == model_entry(name).config_class().max_len


def test_build_item_inputs_pads_row_zero():
    codes = np.array([[1, 2], [3, 0]], dtype=np.int64)
    text = np.ones((2, 3, 4), dtype=np.float32)
    items = build_item_inputs({"codes": codes, "text": text, "plm": np.full((2, 5), 2.0)}, [4, 4])
    assert items.n_items == 2 and items.codes.tolist() == [[-1, -1], [1, 2], [3, 0]]
    assert items.text.dtype == torch.float32 and items.text[0].abs().sum() == 0 and items.text[1:].eq(1).all()
    assert items.plm.dtype == torch.float32 and items.plm[0].abs().sum() == 0 and items.plm[1:].eq(2).all()
    assert items.popularity.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="needs features or n_items"):
        build_item_inputs({})


def test_serving_and_run_loading_do_not_import_the_training_loop():
    code = ("import sys, semrec.runs, semrec.serve, semrec.serve.app, semrec.serve.export; "
            "print('semrec.train.trainer' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
