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
