"""The chunked exact cross-entropy (issue 20): the full softmax's value and gradients, without the logit matrix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semrec.models.losses import chunked_cross_entropy


def _dense(hidden, table, targets, first, scale):
    return F.cross_entropy(scale * hidden @ table[first:].T, targets - first)


@pytest.mark.parametrize(("chunk", "first", "scale"), [(16, 1, 1.0), (7, 0, 1.0), (500, 1, 1 / 0.07), (1, 1, 2.0)])
def test_value_and_gradients_match_the_dense_loss(chunk, first, scale):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 8, generator=g, requires_grad=True)
    table = torch.randn(101, 8, generator=g, requires_grad=True)
    targets = torch.randint(first, 101, (37,), generator=g)
    targets[:3] = targets[3]  # repeated targets accumulate into one table row
    dense = _dense(hidden, table, targets, first, scale)
    dh, dt = torch.autograd.grad(dense, (hidden, table))
    ours = chunked_cross_entropy(hidden, table, targets, chunk_size=chunk, first=first, scale=scale)
    oh, ot = torch.autograd.grad(ours, (hidden, table))
    assert ours.item() == pytest.approx(dense.item(), rel=1e-5)
    assert torch.allclose(oh, dh, atol=1e-5) and torch.allclose(ot, dt, atol=1e-5)
    if first:
        assert ot[0].abs().max() == 0  # the padding row is no class


def test_gradcheck_in_double_precision():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 8, 3, 3, 5])
    assert torch.autograd.gradcheck(lambda h, t: chunked_cross_entropy(h, t, targets, chunk_size=3, scale=1.5),
                                    (hidden, table))


def test_large_logits_stay_finite_and_only_one_input_may_need_gradients():
    hidden = torch.full((2, 4), 50.0)
    table = torch.randn(20, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    loss = chunked_cross_entropy(hidden, table, torch.tensor([3, 4]), chunk_size=6)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(_dense(hidden, table, torch.tensor([3, 4]), 1, 1.0)
                                                                 .item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(table.grad).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"targets": torch.tensor([0, 1])}, "targets must lie in 1..9"),
    ({"targets": torch.tensor([1, 10])}, "targets must lie in 1..9"),
    ({"targets": torch.tensor([1])}, r"targets must be \[P\] = \[2\]"),
    ({"chunk_size": 0}, "chunk_size must be >= 1"),
    ({"table": torch.zeros(10, 3)}, "must share D"),
])
def test_bad_inputs_are_refused(kwargs, message):
    args = {"hidden": torch.zeros(2, 4), "table": torch.zeros(10, 4), "targets": torch.tensor([1, 2]), **kwargs}
    with pytest.raises(ValueError, match=message):
        chunked_cross_entropy(**args)


SEQUENCE = {"items": torch.tensor([[3, 4, 5, 0], [7, 8, 9, 10], [2, 0, 0, 0]]),
            "targets": torch.tensor([[4, 5, 6, 0], [8, 9, 10, 11], [12, 0, 0, 0]]),
            "lengths": torch.tensor([3, 4, 1])}


@pytest.mark.parametrize(("name", "params"), [
    ("sasrec", {"hidden_size": 16, "inner_size": 32, "max_len": 6}),
    ("gru4rec", {"embedding_size": 16, "hidden_size": 16, "max_len": 6}),
    ("bert4rec", {"hidden_size": 16, "inner_size": 32, "max_len": 6}),
    ("unisrec", {"hidden_size": 16, "inner_size": 32, "max_len": 6, "sample_style": "sequence"}),
    ("vqrec", {"hidden_size": 16, "inner_size": 32, "max_len": 6, "sample_style": "sequence",
               "permutation": "none"}),
])
def test_every_full_softmax_model_trains_the_same_with_chunks(name, params, monkeypatch):
    """ce_chunk_size changes memory, not the loss: same value and gradients as the dense logits (same dropout draws)."""
    from semrec.models import build_model
    from semrec.models import losses as module
    from tests.models.test_models import tiny_items

    calls = []
    real = module._ChunkedCrossEntropy.apply
    monkeypatch.setattr(module._ChunkedCrossEntropy, "apply", lambda *a: calls.append(a[4]) or real(*a))
    losses, grads = [], []
    for chunk in (0, 7):
        torch.manual_seed(0)
        items = tiny_items()
        items.plm = items.text[:, 0]  # UniSRec reads one view's raw PLM vectors
        model = build_model(name, {**params, "ce_chunk_size": chunk}, items)
        torch.manual_seed(1)
        loss, _ = model.loss(dict(SEQUENCE))
        loss.backward()
        losses.append(loss.item())
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert calls == [7]  # the dense run never took the chunked path, the chunked one did
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], atol=1e-5), key


def test_sampled_softmax_masks_a_negative_only_for_the_row_it_hits():
    from semrec.models.losses import sampled_softmax

    g = torch.Generator().manual_seed(3)
    user, table = torch.randn(2, 4, generator=g), torch.randn(10, 4, generator=g)
    targets, negatives = torch.tensor([3, 5]), torch.tensor([3, 7, 5])
    zeros = torch.zeros(3)
    loss = sampled_softmax(user, table, targets, negatives, zeros, torch.zeros(2))
    row0 = torch.stack([user[0] @ table[3], user[0] @ table[7], user[0] @ table[5]])  # its own target 3 masked once
    row1 = torch.stack([user[1] @ table[5], user[1] @ table[3], user[1] @ table[7]])  # 3 is a negative for row 1
    expected = 0.5 * (F.cross_entropy(row0[None], torch.tensor([0])) + F.cross_entropy(row1[None], torch.tensor([0])))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["popularity", "in_batch", "mixed", "uniform"])
def test_the_logq_corrected_sampled_loss_follows_the_full_softmax(kind):
    """Importance sampling: the sum over draws of exp(s_j) / E[count_j] estimates sum_j exp(s_j), so with many draws
    the corrected loss is the full cross-entropy plus the mean log E[count] of the targets (a constant: the
    gradients are the full softmax's), here within 3%; without the correction a skewed sampler is biased."""
    from semrec.models.losses import item_softmax_loss, negative_sample, sampled_softmax

    torch.manual_seed(4)
    n, d = 60, 8
    popularity = torch.cat([torch.zeros(1), (torch.arange(1, n + 1).float() ** -1.2) * 1000]).round().clamp(min=1)
    p = popularity.clone()
    p[0] = 0
    targets = torch.multinomial(p / p.sum(), 4000, replacement=True)  # positions' targets follow the frequencies
    table = torch.randn(n + 1, d)
    user = (torch.randn(len(targets), d) * 0.7).requires_grad_()
    full = item_softmax_loss(user, table, targets, "full")
    (full_grad,) = torch.autograd.grad(full * len(targets), user)
    torch.manual_seed(5)
    ids, log_neg, log_tgt = negative_sample(kind, 20000, targets, n, popularity)
    sampled = sampled_softmax(user, table, targets, ids, log_neg, log_tgt)
    (grad,) = torch.autograd.grad(sampled * len(targets), user)
    assert (sampled - log_tgt.mean()).item() == pytest.approx(full.item(), rel=0.03)
    assert F.cosine_similarity(grad.flatten(), full_grad.flatten(), dim=0) > 0.98
    assert grad.norm().item() == pytest.approx(full_grad.norm().item(), rel=0.05)
    if kind == "popularity":
        raw = sampled_softmax(user, table, targets, ids, torch.zeros(len(ids)), torch.zeros(len(targets)))
        (raw_grad,) = torch.autograd.grad(raw * len(targets), user)
        assert F.cosine_similarity(raw_grad.flatten(), full_grad.flatten(), dim=0) < 0.95  # the bias it removes
    torch.manual_seed(5)
    assert item_softmax_loss(user, table, targets, kind, 20000, popularity=popularity).item() == pytest.approx(
        sampled.item(), rel=1e-6)  # the one entry point draws the same way


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    ("softmax", {}, "sampled loss must be one of uniform, popularity, in_batch, mixed, got 'softmax'"),
    ("uniform", {"num_negatives": 0}, "num_negatives must be >= 1"),
    ("popularity", {"popularity": None}, "needs the items' training counts"),
    ("mixed", {"popularity": torch.ones(3)}, r"needs the items' training counts \[10\]"),
])
def test_bad_sampled_settings_are_refused(kind, kwargs, message):
    from semrec.models.losses import negative_sample

    args = {"num_negatives": 5, "popularity": torch.ones(10), **kwargs}
    with pytest.raises(ValueError, match=message):
        negative_sample(kind, args["num_negatives"], torch.tensor([1, 2]), 9, args["popularity"])


MODELS = [("sasrec", {"hidden_size": 16, "inner_size": 32, "max_len": 6}),
          ("gru4rec", {"embedding_size": 16, "hidden_size": 16, "max_len": 6}),
          ("bert4rec", {"hidden_size": 16, "inner_size": 32, "max_len": 6}),
          ("unisrec", {"hidden_size": 16, "inner_size": 32, "max_len": 6, "sample_style": "sequence"}),
          ("vqrec", {"hidden_size": 16, "inner_size": 32, "max_len": 6, "sample_style": "sequence",
                     "permutation": "none"})]


@pytest.mark.parametrize("loss", ["uniform", "popularity", "in_batch", "mixed"])
@pytest.mark.parametrize(("name", "params"), MODELS)
def test_every_item_table_model_trains_with_the_sampled_losses(name, params, loss, monkeypatch):
    from semrec.models import build_model
    from semrec.models import losses as module
    from tests.models.test_models import tiny_items

    seen = []
    real = module.negative_sample
    monkeypatch.setattr(module, "negative_sample", lambda *a: seen.append(a[0]) or real(*a))
    items = tiny_items()
    items.plm = items.text[:, 0]
    torch.manual_seed(0)
    model = build_model(name, {**params, "loss": loss, "num_negatives": 9}, items)
    value, parts = model.loss(dict(SEQUENCE))
    value.backward()
    assert seen == [loss] and torch.isfinite(value) and parts["rec"] > 0
    assert "train_counts" not in model.state_dict()  # checkpoints keep their keys
    assert sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize(("params", "message"), [
    ({"loss": "softmax"}, "loss must be one of full, uniform, popularity, in_batch, mixed, got 'softmax'"),
    ({"loss": "uniform", "num_negatives": 0}, "num_negatives must be >= 1"),
    ({"ce_chunk_size": -1}, "num_negatives must be >= 1 and ce_chunk_size >= 0, got 1024 and -1"),
])
def test_bad_loss_settings_name_the_model(params, message):
    from semrec.errors import SemrecError
    from semrec.models import build_model
    from tests.models.test_models import tiny_items

    with pytest.raises(SemrecError, match=f"sasrec: {message}"):
        build_model("sasrec", {"hidden_size": 16, **params}, tiny_items())


def test_frequency_losses_need_training_counts():
    from semrec.errors import SemrecError
    from semrec.models import ItemInputs, build_model

    with pytest.raises(SemrecError, match="the in_batch loss needs the items' training counts"):
        build_model("gru4rec", {"loss": "in_batch"}, ItemInputs(n_items=10))
    build_model("gru4rec", {"loss": "uniform"}, ItemInputs(n_items=10))  # uniform needs none


def test_ccfrec_full_softmax_is_the_same_in_chunks(monkeypatch):
    from semrec.models import build_model
    from semrec.models import losses as module
    from tests.models.test_models import tiny_items

    calls = []
    real = module._ChunkedCrossEntropy.apply
    monkeypatch.setattr(module._ChunkedCrossEntropy, "apply", lambda *a: calls.append(a[4]) or real(*a))
    values = []
    for chunk in (0, 8):
        torch.manual_seed(0)
        model = build_model("ccfrec", {"embedding_size": 16, "inner_size": 32, "n_heads": 2, "max_len": 6,
                                       "negatives": "full", "history_negatives": False, "sample_style": "sequence",
                                       "mlm_weight": 0.0, "cl_weight": 0.0, "ce_chunk_size": chunk}, tiny_items())
        torch.manual_seed(1)
        values.append(model.loss(dict(SEQUENCE))[1]["rec"].item())
    assert calls == [8] and values[1] == pytest.approx(values[0], rel=1e-5)
