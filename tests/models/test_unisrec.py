"""UniSRec: shapes, MoE gates and noise, padding invariance, inductive scoring of unseen items, fix_enc,
the learning signal on tiny data, and one Trainer run on the tiny synthetic dataset (its 'all' view)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from semrec.config import RunConfig, TrainConfig
from semrec.data.batching import build_train_samples, train_batches
from semrec.errors import SemrecError
from semrec.models import ItemInputs, build_model
from semrec.models.unisrec import UniSRec
from semrec.runs import load_run_data
from semrec.train.trainer import Trainer
from tests.support import make_tiny_dataset, similarity_scores, train_losses

N_ITEMS, PLM_DIM, HIDDEN = 30, 40, 16
SMALL = {"hidden_size": HIDDEN, "inner_size": 32, "n_heads": 2, "max_len": 6, "n_exps": 4}


def plm_items(n_items: int = N_ITEMS, dim: int = PLM_DIM, seed: int = 0) -> ItemInputs:
    gen = torch.Generator().manual_seed(seed)
    plm = torch.randn(n_items + 1, dim, generator=gen)
    plm[0] = 0
    return ItemInputs(n_items=n_items, plm=plm)


def unisrec(items: ItemInputs | None = None, **kw) -> UniSRec:
    model = build_model("unisrec", {**SMALL, **kw}, items or plm_items())
    assert isinstance(model, UniSRec)
    return model


BATCH = {"items": torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7], [9, 0, 0, 0]]), "lengths": torch.tensor([3, 4, 1]),
         "targets": torch.tensor([4, 8, 10])}


@pytest.mark.parametrize("stage", ["transductive", "inductive"])
def test_shapes_loss_and_buffers(stage):
    torch.manual_seed(0)
    model = unisrec(train_stage=stage).eval()
    cand, hist = model.eval_tables()
    assert cand.shape == (N_ITEMS + 1, HIDDEN) and hist is cand
    assert not cand.requires_grad
    user = model.encode_sequence(BATCH["items"], BATCH["lengths"], hist)
    assert user.shape == (3, HIDDEN)
    assert similarity_scores(model, user, cand).shape == (3, N_ITEMS + 1)
    loss, parts = model.train().loss(BATCH)
    assert loss.dim() == 0 and torch.isfinite(loss) and set(parts) == {"rec"}
    # eval mode: CE over cos / tau against items 1..N only (padding is never a class); a large tau keeps
    # the logits small, so that a padding class would visibly change the loss
    for tau in (0.07, 10.0):
        model.config.tau = tau
        model.eval()
        cos = similarity_scores(model, model.encode_sequence(BATCH["items"], BATCH["lengths"]), model.eval_tables()[0])
        expected = torch.nn.functional.cross_entropy(cos[:, 1:] / tau, BATCH["targets"] - 1)
        torch.testing.assert_close(model.loss(BATCH)[0], expected)
    # the frozen PLM matrix is a buffer, neither a parameter nor saved in checkpoints
    assert "plm" not in dict(model.named_parameters()) and "plm" in dict(model.named_buffers())
    assert "plm" not in model.state_dict()
    assert model.adaptor.w_gate.shape == (PLM_DIM, 4) and len(model.adaptor.experts) == 4
    assert model.adaptor.experts[0].lin.bias is None and model.adaptor.experts[0].bias.abs().sum() == 0


def test_sequence_style_loss_matches_prefix_rows():
    """All-position loss on one sequence == mean of the prefix rows' losses (causal model, no dropout)."""
    torch.manual_seed(0)
    seq = unisrec(sample_style="sequence", dropout=0.0, attn_dropout=0.0, adaptor_dropout=0.0).eval()
    assert seq.sample_style == "sequence" and UniSRec.sample_style == "prefix"
    train = [np.array([3, 7, 1, 9, 12])]
    s = build_train_samples(train, 6, "sequence")
    p = build_train_samples(train, 6, "prefix")
    batch_s = next(train_batches(s, 8, seed=0, epoch=0))
    batch_p = next(train_batches(p, 8, seed=0, epoch=0))
    torch.testing.assert_close(seq.loss(batch_s)[0], seq.loss(batch_p)[0], rtol=1e-4, atol=1e-5)


def test_gates_uniform_at_init_noise_only_in_training():
    torch.manual_seed(0)
    model = unisrec()
    x = model.plm[1:]
    adaptor = model.adaptor
    adaptor.eval()
    torch.testing.assert_close(adaptor.gates(x), torch.full((N_ITEMS, 4), 0.25))
    # eval mode: no noise, no dropout -> deterministic item tables and user vectors
    model.eval()
    t1, t2 = model.eval_tables()[0], model.eval_tables()[0]
    assert torch.equal(t1, t2)
    u1 = model.encode_sequence(BATCH["items"], BATCH["lengths"])
    u2 = model.encode_sequence(BATCH["items"], BATCH["lengths"])
    assert torch.equal(u1, u2)
    # training mode: gate logits = 0 + N(0,1) * (softplus(0) + 0.01) at init
    adaptor.train()
    gates = adaptor.gates(x.repeat(200, 1))
    assert not torch.allclose(gates, torch.full_like(gates, 0.25))
    torch.testing.assert_close(gates.sum(-1), torch.ones(len(gates)))
    logits = torch.log(gates)  # softmax is shift-invariant: compare centred logits' spread
    centred = logits - logits.mean(-1, keepdim=True)
    expected_std = math.log(2) + 0.01
    observed = centred.std().item() * math.sqrt(4 / 3)  # undo the centring over 4 experts
    assert abs(observed - expected_std) < 0.03
    # non-zero gate weights make the gates input-dependent (softmax(x W_gate))
    with torch.no_grad():
        adaptor.w_gate.normal_()
    adaptor.eval()
    assert adaptor.gates(x).std(0).sum() > 0


def test_padding_does_not_change_the_user_vector():
    torch.manual_seed(0)
    model = unisrec().eval()
    items, lengths = BATCH["items"], BATCH["lengths"]
    _, hist = model.eval_tables()
    a = model.encode_sequence(items, lengths, hist)
    more = model.encode_sequence(torch.cat([items, torch.zeros(3, 2, dtype=torch.long)], 1), lengths, hist)
    torch.testing.assert_close(a, more)
    torch.testing.assert_close(model.encode_sequence(items, lengths), a)  # table computed on the fly
    trimmed = model.encode_sequence(items[2:, :1], lengths[2:], hist)
    torch.testing.assert_close(trimmed, a[2:])
    # padding slots filled with arbitrary items do not leak into the last real position (causal)
    garbage = items.clone()
    garbage[items == 0] = 5
    torch.testing.assert_close(model.encode_sequence(garbage, lengths, hist), a)


def test_inductive_has_no_id_embedding_and_scores_unseen_items():
    torch.manual_seed(0)
    items = plm_items()
    items.plm[N_ITEMS] = items.plm[3]  # the unseen item N has the same text as item 3
    ind = unisrec(items, train_stage="inductive")
    tra = unisrec(items, train_stage="transductive")
    assert ind.item_embedding is None and not any("item_embedding" in n for n, _ in ind.named_parameters())
    assert tra.item_embedding is not None
    n_id = (N_ITEMS + 1) * HIDDEN
    assert sum(p.numel() for p in tra.parameters()) - sum(p.numel() for p in ind.parameters()) == n_id
    # a few training steps on sequences that never contain item N
    train = [np.arange(s, s + 5) for s in range(1, N_ITEMS - 5)]
    samples = build_train_samples(train, 6, "prefix")
    opt = torch.optim.Adam(ind.parameters(), lr=1e-2)
    for batch in train_batches(samples, 16, seed=0, epoch=0):
        loss, _ = ind.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ind.eval()
    cand, hist = ind.eval_tables()
    with torch.no_grad():
        torch.testing.assert_close(cand[N_ITEMS], ind.encode_items(items.plm[N_ITEMS:]).squeeze(0))
        # a brand-new text vector, outside the catalogue, is encoded by the same adaptor
        new = torch.randn(2, PLM_DIM)
        assert ind.encode_items(new).shape == (2, HIDDEN)
    user = ind.encode_sequence(BATCH["items"], BATCH["lengths"], hist)
    scores = similarity_scores(ind, user, cand)
    torch.testing.assert_close(scores[:, N_ITEMS], scores[:, 3])  # same text -> same score, inductively
    tra.eval()
    cand_t, hist_t = tra.eval_tables()
    scores_t = similarity_scores(tra, tra.encode_sequence(BATCH["items"], BATCH["lengths"], hist_t), cand_t)
    assert not torch.allclose(scores_t[:, N_ITEMS], scores_t[:, 3])  # the ID embedding tells them apart


def test_fix_enc_freezes_positions_and_transformer_only():
    torch.manual_seed(0)
    model = unisrec(fix_enc=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("position_embedding.", "encoder.")) for n in frozen)
    assert any(n.startswith("encoder.") for n in frozen) and "position_embedding.weight" in frozen
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss, _ = model.loss(BATCH)
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name not in frozen), name
    assert all(p.requires_grad for p in unisrec().parameters())  # from scratch everything trains


def test_bad_config_is_a_clear_error():
    with pytest.raises(SemrecError, match="train_stage"):
        unisrec(train_stage="inductive_ft")
    with pytest.raises(SemrecError, match="plm"):
        build_model("unisrec", SMALL, ItemInputs(n_items=5))


@pytest.mark.parametrize("stage", ["transductive", "inductive"])
def test_loss_falls_on_tiny_data(stage):
    torch.manual_seed(0)
    model = unisrec(train_stage=stage, dropout=0.0, attn_dropout=0.0, adaptor_dropout=0.0)
    losses = train_losses(model, steps=60, style="prefix")
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_run_data_for_plm_only_needs_no_codes(tmp_path):
    folder = make_tiny_dataset(tmp_path / "ds")
    data = load_run_data(RunConfig(model="unisrec", dataset=str(folder)))
    assert data.items.plm is not None and data.items.plm.shape == (data.dataset.n_items + 1, 32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_unisrec") / "ds")


def test_trainer_end_to_end_on_the_all_view(tiny, tmp_path):
    params = {**SMALL, "max_len": 8, "dropout": 0.1, "attn_dropout": 0.1, "train_stage": "inductive"}
    cfg = RunConfig(model="unisrec", dataset=str(tiny), out=str(tmp_path / "run"), model_params=params,
                    train=TrainConfig(epochs=2, batch_size=64, lr=3e-3, warmup_steps=0, weight_decay=0.0,
                                      progress=False))
    trainer = Trainer(cfg)
    plm = trainer.model.plm
    assert plm.shape == (trainer.data.dataset.n_items + 1, 32) and plm[0].abs().sum() == 0
    results = trainer.fit()
    assert 0 <= results["test"]["ndcg@10"] <= 1 and results["epochs_run"] == 2
    history = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and "rec" in history[0] and "valid_ndcg@10" in history[1]
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert "plm" not in state and "adaptor.w_gate" in state
