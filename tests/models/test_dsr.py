"""The CTR task in the one trainer and the dynamic-parameter baselines of SOLID (issue 19): Base / DUET / APG heads
on the SASRec and GRU4Rec CTR backbones, frozen or trained generator projections, full ranking of the same run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semrec.config import CtrConfig, RunConfig, TrainConfig
from semrec.errors import SemrecError
from semrec.models.base import ItemInputs
from semrec.models.dsr import DSR, DSRConfig
from semrec.models.layers import ParameterGenerator, clip_fuse
from tests.support import make_tiny_dataset


@pytest.fixture(scope="module")
def ctr_dataset(tmp_path_factory):
    from semrec import api

    ds = make_tiny_dataset(tmp_path_factory.mktemp("ctr") / "ds")
    api.ctr_data(ds, CtrConfig(history=8, eval_negatives=19))
    return ds


def _config(ds, out, head="duet", backbone="sasrec", **train):
    return RunConfig(model="dsr", dataset=str(ds), out=str(out),
                     model_params={"head": head, "backbone": backbone, "max_len": 8},
                     train=TrainConfig(**{"epochs": 2, "batch_size": 64, "lr": 3e-3, "warmup_steps": 0,
                                          "progress": False, **train}))


@pytest.mark.parametrize(("backbone", "head"), [("sasrec", "base"), ("sasrec", "duet"), ("gru4rec", "apg"),
                                               ("bert4rec", "duet"), ("din", "base"), ("din", "duet"),
                                               ("din", "apg")])
def test_ctr_runs_train_select_on_uauc_and_rank_all_items(ctr_dataset, tmp_path, backbone, head):
    from semrec.runs import evaluate_run
    from semrec.train.trainer import Trainer

    results = Trainer(_config(ctr_dataset, tmp_path / "run", head, backbone)).fit()
    assert results["task"] == "ctr" and results["metric"] == "uauc" and results["selection"] == "best_valid"
    for split in ("valid", "test"):
        assert set(results[split]) >= {"auc", "uauc", "logloss", "ndcg@10", "hr@10"}
        assert 0.0 <= results[split]["uauc"] <= 1.0
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(history, key=lambda r: r["valid_uauc"])
    assert results["best_epoch"] == best["epoch"] and results["valid"]["uauc"] == pytest.approx(best["valid_uauc"])
    if backbone == "din":  # no user vector without the candidate: full ranking is refused, with the reason
        with pytest.raises(SemrecError, match="DIN scores each candidate inside its target attention"):
            evaluate_run(tmp_path / "run", device="cpu")
        return
    full = evaluate_run(tmp_path / "run", device="cpu")  # the ranking contract: full ranking over every item
    assert 0.0 <= full["test"]["ndcg@10"] <= 1.0


def test_select_on_test_is_the_references_selection_and_says_so(ctr_dataset, tmp_path):
    from semrec.train.trainer import Trainer, describe_results

    config = _config(ctr_dataset, tmp_path / "run", "base", select_on="test")
    results = Trainer(config).fit()
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert results["selection"] == "best_test"
    assert results["best_epoch"] == max(history, key=lambda r: r["test_uauc"])["epoch"]
    assert "(test, the reference's selection uauc)" in describe_results(results, config)


def test_missing_samples_and_too_long_histories_are_refused(tmp_path, ctr_dataset):
    from semrec.train.trainer import Trainer

    bare = make_tiny_dataset(tmp_path / "bare")
    with pytest.raises(SemrecError, match=rf"no CTR samples; run 'semrec ctr-data {bare}' first"):
        Trainer(_config(bare, tmp_path / "a"))
    long = _config(ctr_dataset, tmp_path / "b")
    long.model_params["max_len"] = 9
    with pytest.raises(SemrecError, match="max_len=9 is longer than the 8-item histories"):
        Trainer(long)
    with pytest.raises(SemrecError, match="select_on must be 'valid' or 'test'"):
        Trainer(_config(ctr_dataset, tmp_path / "c", select_on="train"))


def _batch(n_items=20, rows=6, length=5):
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, n_items + 1, (rows, length), generator=g)
    lengths = torch.tensor([5, 3, 1, 5, 2, 4])
    items[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return {"items": items, "lengths": lengths, "candidates": torch.randint(1, n_items + 1, (rows,), generator=g),
            "labels": torch.tensor([1.0, 0, 0, 1, 0, 1])}


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_projections_never_train_and_learnable_ones_get_gradients(frozen):
    model = DSR(DSRConfig(head="duet", frozen_projections=frozen, max_len=5), ItemInputs(n_items=20))
    names = {n for n, _ in model.named_parameters()}
    assert ("generator.w_proj_0" in names) is not frozen
    assert "generator.w_proj_1" in model.state_dict()  # saved either way: a checkpoint restores the same model
    before = model.generator.w_proj_0.detach().clone()
    loss, _ = model.loss(_batch())
    loss.backward()
    assert model.generator.gru.weight_ih_l0.grad is not None and model.generator.mlp[0].weight.grad.abs().sum() > 0
    if frozen:
        assert not model.generator.w_proj_0.requires_grad
    else:
        assert model.generator.w_proj_0.grad.abs().sum() > 0
    assert torch.equal(model.generator.w_proj_0.detach(), before)


def test_projections_are_fixed_by_their_seed_and_folded_into_two():
    a, b = ParameterGenerator(8, [(8, 8)] * 2, seed=3), ParameterGenerator(8, [(8, 8)] * 2, seed=3)
    assert torch.equal(a.w_proj_1, b.w_proj_1) and a.w_proj_0.abs().max() < 2
    assert not torch.equal(a.w_proj_0, ParameterGenerator(8, [(8, 8)] * 2, seed=4).w_proj_0)
    shaped = ParameterGenerator(8, [(16, 4), (4, 1)]).generate(torch.zeros(3, 8))
    assert [tuple(w.shape) for w, _ in shaped] == [(3, 16, 4), (3, 4, 1)] and tuple(shaped[1][1].shape) == (3, 1)


def test_clip_fuse_bounds_the_item_part():
    item, sem = torch.tensor([5.0, -5.0, 0.001]), torch.tensor([1.0, 1.0, 1.0])
    assert torch.allclose(clip_fuse(item, sem, 0.01), torch.tensor([1.01, 0.99, 1.001]))
    assert torch.equal(clip_fuse(item, sem, 0.0), sem)  # t = 0: the semantic generator alone


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "gru4rec"])
def test_the_user_vector_ignores_padding_and_candidates(backbone):
    model = DSR(DSRConfig(head="apg", max_len=8, backbone=backbone), ItemInputs(n_items=20)).eval()
    batch = _batch()
    wide = dict(batch, items=torch.cat([batch["items"], torch.zeros(6, 3, dtype=torch.long)], dim=1))
    with torch.no_grad():
        assert torch.allclose(model.user_vectors(batch["items"], batch["lengths"]),
                              model.user_vectors(wide["items"], wide["lengths"]), atol=1e-5)
        scores = model.encode_sequence(batch["items"], batch["lengths"]) @ model.item_embeddings().T
        picked = scores[torch.arange(6), batch["candidates"]]
        assert torch.allclose(picked, model.ctr_logits(batch), atol=1e-5)
    empty = model.encode_sequence(torch.zeros(1, 5, dtype=torch.long), torch.tensor([0]))
    assert torch.isfinite(empty).all()


def test_a_resumed_ctr_run_ends_as_an_uninterrupted_one(ctr_dataset, tmp_path):
    from semrec.train.trainer import Trainer

    straight = Trainer(_config(ctr_dataset, tmp_path / "straight", "apg", epochs=3)).fit()
    Trainer(_config(ctr_dataset, tmp_path / "cut", "apg", epochs=1)).fit()
    resumed = Trainer(_config(ctr_dataset, tmp_path / "cut", "apg", epochs=3), run_dir=tmp_path / "cut",
                      resume=True).fit()
    assert straight["valid"] == resumed["valid"] and straight["test"] == resumed["test"]
    strip = lambda path: [{k: v for k, v in json.loads(r).items() if "seconds" not in k and k != "peak_rss_gb"}  # noqa: E731
                          for r in (path / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "straight") == strip(tmp_path / "cut")


def test_a_ctr_run_recommends_raw_items_like_any_run(ctr_dataset, tmp_path):
    from semrec import api
    from semrec.train.trainer import Trainer

    Trainer(_config(ctr_dataset, tmp_path / "run", "duet", epochs=1)).fit()
    rec = api.load_recommender(tmp_path / "run")
    top = rec.recommend(["i1", "i2", "i3"], k=5)
    assert len(top.items) == 5 and not {"i1", "i2", "i3"} & {i.raw_id for i in top.items}  # history excluded


def test_duet_vqvae_reads_a_learned_quantiser_and_adds_its_loss():
    model = DSR(DSRConfig(head="duet", max_len=5, vqvae_size=7), ItemInputs(n_items=20))
    loss, parts = model.loss(_batch())
    assert set(parts) == {"bce", "vqvae"} and parts["vqvae"] > 0
    assert loss.item() == pytest.approx((parts["bce"] + 0.1 * parts["vqvae"]).item(), rel=1e-5)
    loss.backward()
    for name in ("vqvae.codebook.weight", "vqvae.dec.0.weight", "vqvae.enc.0.weight", "generator.gru.weight_ih_l0"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="head duet"):
        DSR(DSRConfig(head="apg", vqvae_size=7), ItemInputs(n_items=20))


@pytest.mark.parametrize(("backbone", "head"), [("sasrec", "duet"), ("gru4rec", "apg"), ("bert4rec", "base"),
                                               ("din", "duet")])
def test_evaluation_scores_each_history_once_with_the_row_by_row_values(ctr_dataset, tmp_path, backbone, head,
                                                                        monkeypatch):
    from semrec.train.trainer import Trainer

    trainer = Trainer(_config(ctr_dataset, tmp_path / "run", head, backbone, epochs=1, eval_batch_size=7))
    task = trainer.task
    rows = task.rows["test"]
    starts, group = rows.history_groups()
    assert len(starts) == len(set(rows.users.tolist())) < len(rows)  # one history per test user, 20 rows each
    assert (rows.items[starts[group]] == rows.items).all() and (rows.lengths[starts[group]] == rows.lengths).all()
    grouped = task.logits("test", torch.device("cpu"))
    calls = []
    real = trainer.model.ctr_logits
    monkeypatch.setattr(trainer.model, "ctr_logits", lambda batch: calls.append(1) or real(batch))
    monkeypatch.setattr(type(trainer.model), "scores_by_user_vector", property(lambda self: False))
    by_row = task.logits("test", torch.device("cpu"))
    assert calls and np.allclose(grouped, by_row, atol=1e-5) and grouped.shape == (len(rows),)


def test_a_ctr_run_under_ddp_matches_a_single_process(ctr_dataset, tmp_path):
    """Two gloo ranks x 32 rows vs one process x 64 (the same global batches; no dropout in these models): the CTR
    metrics agree within 0.02 absolute (summation order and per-shard loss means differ)."""
    import os
    import subprocess
    import sys

    from semrec.config import save_config

    for name in ("single", "ddp"):
        save_config(_config(ctr_dataset, tmp_path / name, "duet", epochs=2), tmp_path / f"{name}.yaml")
    one = subprocess.run([sys.executable, "-m", "semrec.cli", "train", "-c", str(tmp_path / "single.yaml")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stdout + one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
                          "-m", "semrec.cli", "train", "-c", str(tmp_path / "ddp.yaml")], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stdout + two.stderr
    a = json.loads((tmp_path / "single" / "results.json").read_text())
    b = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert a["task"] == b["task"] == "ctr"
    for split in ("valid", "test"):
        for metric in ("auc", "uauc", "ndcg@10"):
            assert abs(a[split][metric] - b[split][metric]) <= 0.02, (split, metric, a[split], b[split])
