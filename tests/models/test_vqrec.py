"""VQ-Rec: the code permutation (a true permutation at the end, gradients flow, the reference's no-op),
item vectors from codes, the pre-training loss pieces, the fine-tuning schedule, tokenizer -> model on a
tiny dataset, cold items, and pretrain -> finetune through the CLI on merged datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from semrec.cli import app
from semrec.config import CodesConfig, RunConfig, TrainConfig
from semrec.data.dataset import CanonicalDataset
from semrec.models import ItemInputs, build_model
from semrec.models.permutation import CodePermutation
from semrec.tokenizers.pipeline import fit_codes, load_codes
from semrec.train.trainer import Trainer
from tests.support import make_tiny_dataset, train_losses

SMALL = {"hidden_size": 16, "inner_size": 32, "max_len": 8, "dropout": 0.1, "attn_dropout": 0.1}
OPQ = {"M": 4, "nbits": 3, "niter": 5, "polysemous": False}


def items(n_items: int = 20, levels: int = 4, k: int = 8) -> ItemInputs:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, k, (n_items + 1, levels), generator=gen)
    codes[0] = -1
    return ItemInputs(n_items=n_items, codes=codes, codebook_sizes=[k] * levels)


def vqrec(**kw):
    return build_model("vqrec", {**SMALL, **kw}, items())


# ----- permutation ----------------------------------------------------------------------------------
def test_learned_permutation_is_a_bijection_and_passes_gradients():
    torch.manual_seed(0)
    perm = CodePermutation(3, 10, "learned")
    perm.trans_matrix.data.normal_(0, 0.05)
    tables = torch.randn(3, 10, 4)
    out = perm(tables, noise=True)
    out.pow(2).sum().backward()
    assert perm.trans_matrix.grad is not None and perm.trans_matrix.grad.abs().sum() > 0
    final = perm.final()
    for block in final:
        assert sorted(block.tolist()) == list(range(10))  # every row used exactly once
    # the forward value is exactly a row permutation of the tables
    matrices = perm.matrices(noise=False).detach()
    assert torch.allclose(matrices.sum(-1), torch.ones(3, 10)) and torch.allclose(matrices.sum(-2), torch.ones(3, 10))


def test_learned_permutation_recovers_a_hidden_permutation():
    torch.manual_seed(0)
    n = 12
    tables = torch.randn(1, n, 6)
    hidden = torch.randperm(n)
    target = tables[0, hidden]
    perm = CodePermutation(1, n, "learned", logit_scale=10.0)
    opt = torch.optim.Adam(perm.parameters(), lr=0.05)
    for _ in range(150):
        loss = (perm(tables, noise=True)[0] - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(perm.final()[0], hidden)


def test_reference_permutation_gets_zero_gradient_and_is_not_a_bijection():
    torch.manual_seed(0)
    perm = CodePermutation(4, 257, "reference")
    before = perm.trans_matrix.detach().clone()
    opt = torch.optim.Adam(perm.parameters(), lr=0.1)
    out = perm(torch.randn(4, 257, 3), noise=True)
    out.pow(2).sum().backward()
    opt.step()
    assert perm.trans_matrix.grad.abs().sum() == 0
    assert torch.equal(perm.trans_matrix, before)
    distinct = np.mean([len(set(block.tolist())) / 257 for block in perm.final()])
    assert 0.6 < distinct < 0.95  # the spec's simulation: ~79% distinct targets per block


# ----- model ----------------------------------------------------------------------------------------
def test_item_vector_is_the_mean_of_its_code_rows_with_block_offsets():
    model = vqrec(permutation="none")
    codes = items().codes
    assert model.codes[0].tolist() == [0, 0, 0, 0]
    assert model.codes[3].tolist() == [int(c) + 1 + 9 * k for k, c in enumerate(codes[3])]
    table = model.item_embeddings()
    assert torch.allclose(table[3], model.code_embedding.weight[model.codes[3]].mean(0))


def test_fake_codes_stay_in_their_block_and_replace_about_fake_ratio():
    torch.manual_seed(0)
    model = vqrec(stage="pretrain")
    original = model.codes[1:].repeat(200, 1)
    fake = model.fake_codes(original)
    low = model.code_offsets + 1
    assert ((fake >= low) & (fake < low + model.code_sizes)).all()
    # replaced w.p. 0.75, and a replacement re-draws the same code w.p. 1/8
    assert (fake != original).float().mean().item() == pytest.approx(0.75 * 7 / 8, abs=0.02)


def test_pretrain_loss_treats_same_targets_as_exp0_and_is_finite():
    torch.manual_seed(0)
    model = vqrec(stage="pretrain", dropout=0.0, attn_dropout=0.0)
    batch = {"items": torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0]]), "lengths": torch.tensor([2, 3, 1]),
             "targets": torch.tensor([7, 7, 8])}
    loss, parts = model.loss(batch)
    assert torch.isfinite(loss) and "contrastive" in parts
    loss.backward()
    assert model.code_embedding.weight.grad.abs().sum() > 0


def test_finetune_schedule_trains_only_the_permutation_then_bakes_it():
    torch.manual_seed(0)
    model = vqrec(reassign_epochs=2, fix_enc=True)
    model.begin_epoch(0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"permutation.trans_matrix"}
    model.permutation.trans_matrix.data.normal_(0, 0.05)
    model.eval()
    before = model.item_embeddings().detach().clone()
    model.begin_epoch(2)  # bake
    assert bool(model.reassigned)
    assert torch.allclose(model.item_embeddings()[1:], before[1:], atol=1e-6)  # the baked table = the permuted one
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "code_embedding.weight" in trainable and "input_norm.weight" in trainable
    assert not any(n.startswith(("encoder.", "position_embedding.", "permutation.")) for n in trainable)
    baked = model.code_embedding.weight.detach().clone()
    model.begin_epoch(3)  # already baked: no second re-assignment
    assert torch.equal(model.code_embedding.weight, baked)


def test_scratch_training_trains_everything():
    model = vqrec(permutation="none", reassign_epochs=0, fix_enc=False)
    model.begin_epoch(0)
    assert all(p.requires_grad for p in model.parameters())
    assert model.permutation is None


# ----- tokenizer -> model on a dataset --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_opq(tmp_path_factory) -> Path:
    folder = make_tiny_dataset(tmp_path_factory.mktemp("vq") / "ds")
    fit_codes(folder, CodesConfig(tokenizer="opq", params=OPQ), progress=False)
    return folder


def test_tokenizer_codes_reach_the_model_and_cold_items_are_rankable(tiny_opq, tmp_path):
    cfg = RunConfig(model="vqrec", dataset=str(tiny_opq), codes="opq", out=str(tmp_path / "run"),
                    model_params={**SMALL, "permutation": "none", "reassign_epochs": 0, "fix_enc": False},
                    train=TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_steps=0, weight_decay=0.0,
                                      progress=False))
    trainer = Trainer(cfg)
    codes, _ = load_codes(tiny_opq / "codes" / "opq")
    model = trainer.model
    assert torch.equal(model.codes[1:] - model.code_offsets - 1, torch.from_numpy(codes[1:]))
    results = trainer.fit()
    assert 0 <= results["test"]["ndcg@10"] <= 1
    # items outside the training sequences (the tokenizer was fitted without them) still have codes and vectors
    dataset = CanonicalDataset.load(tiny_opq)
    cold = sorted(set(range(1, dataset.n_items + 1)) - set(dataset.train_items().tolist()))
    table = model.item_embeddings()
    if cold:
        assert (codes[cold] >= 0).all()
        assert torch.allclose(table[cold[0]], model.code_embedding.weight[model.codes[cold[0]]].mean(0))


def test_pretrain_tokenizer_is_named_by_the_model_registry():
    """`semrec pretrain` fits the tokenizer kind the model's registry entry names (VQ-Rec: opq), no other."""
    from semrec.models import REGISTRY
    from semrec.tokenizers import TOKENIZERS

    named = {name: e.pretrain_tokenizer for name, e in REGISTRY.items() if e.pretrain_tokenizer is not None}
    assert named == {"vqrec": "opq"}
    assert set(named.values()) <= set(TOKENIZERS)


def test_pretrain_on_merged_datasets_then_finetune(tmp_path):
    a = make_tiny_dataset(tmp_path / "a", n_users=80, n_items=40, seed=1)
    b = make_tiny_dataset(tmp_path / "b", n_users=80, n_items=50, seed=2)
    target = make_tiny_dataset(tmp_path / "t", seed=3)
    fit_codes(target, CodesConfig(tokenizer="opq", params=OPQ), progress=False)
    runner = CliRunner()
    params = [f"model_params.{k}={v}" for k, v in SMALL.items()]
    sets = [x for p in [*params, "train.progress=false", "train.batch_size=64"] for x in ("--set", p)]
    merged = tmp_path / "merged"
    opq = [x for k, v in OPQ.items() for x in ("-p", f"{k}={v}")]
    result = runner.invoke(app, ["pretrain", "--datasets", f"{a},{b}", "--merged", str(merged), "--out",
                                 str(tmp_path / "pre"), "--epochs", "2", *opq, *sets], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (merged / "codes" / "opq" / "codes.npy").is_file()
    manifest = json.loads((merged / "manifest.json").read_text())
    assert [d["name"] for d in manifest["domains"]] == ["tiny", "tiny"]
    assert manifest["counts"]["items"] == 90
    merged_ds = CanonicalDataset.load(merged)
    assert merged_ds.raw_item_ids(np.array([1, 41]))[0].startswith("0-")
    assert merged_ds.raw_item_ids(np.array([41]))[0].startswith("1-")
    pre_state = torch.load(tmp_path / "pre" / "checkpoints" / "best.pt", weights_only=True)["model"]
    result = runner.invoke(app, ["finetune", str(tmp_path / "pre"), "--dataset", str(target), "-c",
                                 "configs/vqrec/Scientific.yaml", "--out", str(tmp_path / "ft"), "--epochs", "3",
                                 "--set", "model_params.reassign_epochs=1", *sets], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "initialised" in result.output
    ft_state = torch.load(tmp_path / "ft" / "checkpoints" / "last.pt", weights_only=True)["model"]
    # fix_enc: the pre-trained Transformer and positions are unchanged, the code table was re-assigned and tuned
    for name, value in pre_state.items():
        if name.startswith(("encoder.", "position_embedding.")):
            assert torch.equal(ft_state[name], value), name
    assert not torch.equal(ft_state["code_embedding.weight"], pre_state["code_embedding.weight"])
    assert bool(ft_state["reassigned"])


def test_sequence_style_loss_equals_the_mean_of_prefix_losses():
    torch.manual_seed(0)
    model = vqrec(permutation="none", reassign_epochs=0, sample_style="sequence", dropout=0.0, attn_dropout=0.0)
    model.eval()
    seq = torch.tensor([3, 5, 2, 9, 4])
    batch = {"items": seq[:-1].unsqueeze(0), "lengths": torch.tensor([4]), "targets": seq[1:].unsqueeze(0)}
    loss, _ = model.loss(batch)
    prefix = []
    for i in range(1, 5):
        items = torch.zeros(1, 4, dtype=torch.long)
        items[0, :i] = seq[:i]
        prefix.append(model.loss({"items": items, "lengths": torch.tensor([i]), "targets": seq[i:i + 1]})[0])
    assert loss.item() == pytest.approx(torch.stack(prefix).mean().item(), rel=1e-5)
    with pytest.raises(Exception, match="prefix"):
        vqrec(stage="pretrain", sample_style="sequence")


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_loss_falls_on_tiny_data(stage):
    torch.manual_seed(0)
    model = build_model("vqrec", {**SMALL, "stage": stage, "permutation": "none", "reassign_epochs": 0,
                                  "dropout": 0.0, "attn_dropout": 0.0}, items(n_items=30))
    losses = train_losses(model, steps=60, style="prefix")
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


def test_pretrain_and_finetune_bad_input_give_one_line_errors(tmp_path):
    runner = CliRunner()
    a = make_tiny_dataset(tmp_path / "a", n_users=60, n_items=50, seed=1)
    fit_codes(a, CodesConfig(tokenizer="opq", params=OPQ), progress=False)
    b = make_tiny_dataset(tmp_path / "b", n_users=40, n_items=30, seed=2)
    cases = [
        (["pretrain", "--datasets", f"{a},{tmp_path / 'missing'}", "--merged", str(tmp_path / "m")],
         "not a prepared dataset"),
        (["finetune", str(tmp_path / "no-run"), "--dataset", str(a), "-c", "configs/vqrec/Scientific.yaml"],
         "neither a checkpoint nor a run folder"),
        (["train", "-c", "configs/vqrec/Scientific-scratch.yaml", "--dataset", str(a), "--set",
          "model_params.permutation=sorted"], "permutation must be"),
        (["train", "-c", "configs/vqrec/Scientific-scratch.yaml", "--dataset", str(b)], "semrec codes"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and message in result.output, (args, result.output)
    # a merge needs every dataset's 'all' embeddings
    (b / "embeddings" / "all-MiniLM-L6-v2" / "embeddings.json").unlink()
    result = runner.invoke(app, ["pretrain", "--datasets", f"{a},{b}", "--merged", str(tmp_path / "m2")])
    assert result.exit_code == 2 and "semrec embed" in result.output, result.output


def test_staged_finetune_runs_under_ddp(tiny_opq, tmp_path):
    """begin_epoch freezes / unfreezes parameters: the trainer re-wraps DistributedDataParallel when they change."""
    import os
    import subprocess
    import sys

    from semrec.config import save_config

    cfg = RunConfig(model="vqrec", dataset=str(tiny_opq), codes="opq", out=str(tmp_path / "run"),
                    model_params={**SMALL, "reassign_epochs": 1, "fix_enc": True},
                    train=TrainConfig(epochs=3, batch_size=32, lr=3e-3, warmup_steps=0, weight_decay=0.0,
                                      progress=False))
    save_config(cfg, tmp_path / "cfg.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
           "-m", "semrec.cli", "train", "-c", str(tmp_path / "cfg.yaml")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and bool(state["model"]["reassigned"])
