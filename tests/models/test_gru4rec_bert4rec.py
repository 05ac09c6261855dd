"""GRU4Rec and BERT4Rec: shapes, padding invariance, BERT4Rec cloze masking and [MASK] placement, score
equivalence of the folded output bias, the learning signal, configs and the trainer end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semrec.config import RunConfig, TrainConfig, load_config
from semrec.data.batching import build_train_samples, train_batches
from semrec.data.splits import EvalRows
from semrec.eval.evaluator import rank_targets
from semrec.models import ItemInputs, build_model
from semrec.models.bert4rec import BERT4Rec
from semrec.models.gru4rec import GRU4Rec
from semrec.train.trainer import Trainer
from tests.support import make_tiny_dataset, similarity_scores, train_losses

REPO = Path(__file__).resolve().parents[2]
N_ITEMS = 30
PARAMS = {
    "gru4rec": {"embedding_size": 16, "hidden_size": 24, "max_len": 6},
    "bert4rec": {"hidden_size": 16, "inner_size": 32, "max_len": 6},
}


def make(name: str, **kw):
    return build_model(name, {**PARAMS[name], **kw}, ItemInputs(n_items=N_ITEMS))


def right_padded(n_rows: int, max_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (n_rows,), generator=gen)
    items = torch.randint(1, N_ITEMS + 1, (n_rows, max_len), generator=gen)
    items[torch.arange(max_len) >= lengths[:, None]] = 0
    return items, lengths


def sequence_batch(n_rows: int, max_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A "sequence"-style batch as build_train_samples makes it, from random user sequences."""
    rng = np.random.default_rng(seed)
    train = [rng.integers(1, N_ITEMS + 1, size=int(rng.integers(2, 3 * max_len))) for _ in range(n_rows)]
    samples = build_train_samples(train, max_len, "sequence")
    return next(train_batches(samples, len(samples), seed=0, epoch=0))


# ----- both models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_shapes_and_registry(name):
    model = make(name).eval()
    assert isinstance(model, {"gru4rec": GRU4Rec, "bert4rec": BERT4Rec}[name])
    items, lengths = right_padded(5, 6)
    user = model.encode_sequence(items, lengths)
    table, history = model.eval_tables()
    extra = 1 if name == "bert4rec" else 0  # BERT4Rec's folded output bias
    assert user.shape == (5, 16 + extra) and table.shape == (N_ITEMS + 1, 16 + extra) and history is None
    assert similarity_scores(model, user, table).shape == (5, N_ITEMS + 1)
    loss, parts = model.loss(sequence_batch(8, 6))
    assert loss.ndim == 0 and torch.isfinite(loss) and set(parts) == {"rec"}


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_padding_never_changes_the_user_vector(name):
    torch.manual_seed(0)
    model = make(name).eval()
    items = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0], [1, 2, 3, 4]])
    lengths = torch.tensor([3, 1, 4])
    base = model.encode_sequence(items, lengths)
    more = model.encode_sequence(torch.cat([items, torch.zeros(3, 2, dtype=torch.long)], 1), lengths)
    torch.testing.assert_close(more, base)
    for row in range(3):  # each row alone, without any padding
        alone = model.encode_sequence(items[row: row + 1, : lengths[row]], lengths[row: row + 1])
        torch.testing.assert_close(alone, base[row: row + 1])
    garbage = items.clone()  # padding ids must not matter either (masked / after the last real position)
    garbage[items == 0] = 9
    torch.testing.assert_close(model.encode_sequence(garbage, lengths), base)
    other = items.clone()  # ...while a real item does
    other[0, 0] = 11
    assert not torch.allclose(model.encode_sequence(other, lengths)[0], base[0])


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_loss_falls_on_tiny_data(name):
    torch.manual_seed(0)
    if name == "gru4rec":
        losses = train_losses(make(name, dropout=0.0), steps=80, style="sequence")
    else:  # the cloze loss is noisier (few masked items per batch): more steps, larger lr
        losses = train_losses(make(name, dropout=0.0, attn_dropout=0.0), steps=150, style="sequence", lr=1e-2)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_configs_load_and_build(name):
    for dataset in ("Scientific", "ml-100k"):
        cfg = load_config(RunConfig, REPO / "configs" / name / f"{dataset}.yaml")
        assert cfg.model == name and cfg.dataset == f"data/{dataset}"
        assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.patience == 10
        model = build_model(name, cfg.model_params, ItemInputs(n_items=N_ITEMS))
        assert model.config.max_len == 50


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "ds")


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_trainer_end_to_end(name, tiny, tmp_path):
    params = {**PARAMS[name], "max_len": 10}
    cfg = RunConfig(model=name, dataset=str(tiny), out=str(tmp_path / name), model_params=params,
                    train=TrainConfig(epochs=3, batch_size=32, lr=3e-3, warmup_steps=5, progress=False))
    results = Trainer(cfg).fit()
    for split in ("valid", "test"):
        assert set(results[split]) >= {"recall@10", "ndcg@10", "mrr"}
        assert all(np.isfinite(v) for v in results[split].values())
        assert 0 <= results[split]["ndcg@10"] <= 1
    history = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 3 and all(np.isfinite(r["loss"]) for r in history)


# ----- BERT4Rec masking and prediction ------------------------------------------------------------------
def test_cloze_masks_only_real_items_at_least_one_per_row():
    torch.manual_seed(0)
    model = make("bert4rec", mask_ratio=0.2)
    batch = sequence_batch(300, 6)
    masked, window, chosen = model.cloze(batch)
    assert masked.size(1) <= 6 and window.shape == masked.shape == chosen.shape
    real = window > 0
    assert not (chosen & ~real).any()  # padding is never masked
    assert chosen.any(1).all()  # every row has a masked item
    assert (masked[chosen] == model.mask_id).all() and torch.equal(masked[~chosen], window[~chosen])
    # the window is the batch's max_len + 1 items minus the oldest one when it does not fit
    lengths = batch["lengths"]
    full = torch.cat([batch["items"][:, :1], batch["targets"]], 1)
    for row in range(len(lengths)):
        n = int(lengths[row]) + 1
        expected = full[row, max(0, n - 6): n]
        assert torch.equal(window[row, : len(expected)], expected) and (window[row, len(expected):] == 0).all()


def test_cloze_forces_the_last_real_item_when_none_was_drawn():
    model = make("bert4rec", mask_ratio=1e-6)
    batch = {"items": torch.tensor([[4, 5], [8, 0]]), "lengths": torch.tensor([2, 1]),
             "targets": torch.tensor([[5, 6], [9, 0]])}
    masked, window, chosen = model.cloze(batch)
    assert window.tolist() == [[4, 5, 6], [8, 9, 0]]
    assert chosen.tolist() == [[False, False, True], [False, True, False]]
    assert masked.tolist() == [[4, 5, model.mask_id], [8, model.mask_id, 0]]


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_masked_fraction_matches_mask_ratio(ratio):
    """Rows of 20 real items: forcing one mask in an empty row adds at most 0.8**20 / 20 < 1e-3 to the rate;
    with ~40k real positions the standard error is ~0.002, so a 0.01 tolerance is > 4 sigma."""
    torch.manual_seed(1)
    model = make("bert4rec", mask_ratio=ratio, max_len=20)
    seq = torch.randint(1, N_ITEMS + 1, (2000, 21))
    batch = {"items": seq[:, :-1], "targets": seq[:, 1:], "lengths": torch.full((2000,), 20)}
    masked, window, chosen = model.cloze(batch)
    assert masked.size(1) == 20  # 21-item window, oldest dropped
    assert abs(chosen.float().mean().item() - ratio) < 0.01


def test_masking_is_reproducible_from_the_torch_seed():
    model = make("bert4rec")
    batch = sequence_batch(50, 6)
    torch.manual_seed(3)
    a = model.cloze(batch)[2]
    torch.manual_seed(3)
    b = model.cloze(batch)[2]
    assert torch.equal(a, b)


def test_mask_token_appended_after_the_last_real_item():
    model = make("bert4rec", max_len=4)
    m = model.mask_id
    items = torch.tensor([[3, 4, 0, 0], [7, 0, 0, 0], [1, 2, 3, 4]])
    seq, position = model.with_mask_token(items, torch.tensor([2, 1, 4]))
    assert seq.size(1) <= 4
    assert seq.tolist() == [[3, 4, m, 0], [7, m, 0, 0], [2, 3, 4, m]]  # full history: oldest item dropped
    assert position.tolist() == [2, 1, 3]
    seq, position = model.with_mask_token(items[:2, :2], torch.tensor([2, 1]))  # narrower batch
    assert seq.tolist() == [[3, 4, m], [7, m, 0]] and position.tolist() == [2, 1]


def test_folded_bias_scores_equal_training_logits():
    torch.manual_seed(0)
    model = make("bert4rec").eval()
    with torch.no_grad():
        model.output_bias.normal_(0.0, 1.0)  # a non-trivial bias
    items, lengths = right_padded(4, 6, seed=2)
    user = model.encode_sequence(items, lengths)
    table = model.item_embeddings()
    scores = similarity_scores(model, user, table)
    # the training path: hidden state at [MASK] -> output head -> logits with the bias
    seq, position = model.with_mask_token(items, lengths)
    hidden = model._head(model._hidden(seq)[torch.arange(4), position])
    logits = model._logits(hidden)
    torch.testing.assert_close(scores[:, 1:], logits[:, 1:])
    assert torch.equal(scores[:, 1:].argsort(1, descending=True), logits[:, 1:].argsort(1, descending=True))
    assert table.shape[0] == N_ITEMS + 1  # no [MASK] row among the candidates
    # the evaluator's full ranking agrees with the training logits; the bounds absorb float summation order
    # (the evaluator compares a matmul score with an elementwise-sum target score, which can count the
    # target itself as above it)
    target = torch.tensor([5, 9, 1, 30])
    rows = EvalRows(users=np.arange(4), histories=[items[r, : lengths[r]].numpy() for r in range(4)],
                    targets=target.numpy())
    ranks = torch.from_numpy(rank_targets(model, rows, max_len=6))
    gap = logits[:, 1:] - logits[torch.arange(4), target][:, None]
    assert ((gap > 1e-4).sum(1) <= ranks).all() and (ranks <= (gap > -1e-4).sum(1)).all()
    bias_free = user[:, :-1] @ table[1:, :-1].T  # dropping the bias would change the ranking
    assert not torch.equal(bias_free.argsort(1), logits[:, 1:].argsort(1))
    assert torch.isfinite(F.cross_entropy(logits, target))
