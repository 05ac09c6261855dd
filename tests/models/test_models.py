"""Model shapes, padding behaviour, masking statistics and the learning signal on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semrec.models import ItemInputs, build_model
from semrec.models.ccfrec import CCFRec, CCFRecConfig
from tests.support import train_losses


def tiny_items(n_items: int = 30, levels: int = 4, k: int = 8, views: int = 2, dim: int = 16) -> ItemInputs:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, k, (n_items + 1, levels), generator=gen)
    codes[0] = -1
    text = torch.randn(n_items + 1, views, dim, generator=gen)
    text[0] = 0
    return ItemInputs(n_items=n_items, codes=codes, codebook_sizes=[k] * levels, text=text,
                      popularity=torch.arange(n_items + 1))


def ccfrec(**kw) -> CCFRec:
    params = {"embedding_size": 16, "inner_size": 32, "n_heads": 2, "neg_num": 10, "max_len": 6, **kw}
    return build_model("ccfrec", params, tiny_items())


def test_ccfrec_code_ids_are_offset_per_level_and_zero_for_padding():
    model = ccfrec()
    items = tiny_items()
    assert model.codes[0].tolist() == [0, 0, 0, 0]
    expected = items.codes[1] + torch.tensor([0, 8, 16, 24]) + 1
    assert model.codes[1].tolist() == expected.tolist()
    assert model.n_code_ids == 33
    assert model.code_embedding.weight[0].abs().sum() > 0  # reference: random, never-trained pad/[MASK] row


def test_ccfrec_padding_does_not_change_the_user_vector():
    torch.manual_seed(0)
    model = ccfrec().eval()
    items = torch.tensor([[3, 4, 5, 0, 0], [7, 8, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    padded_more = torch.cat([items, torch.zeros(2, 1, dtype=torch.long)], 1)
    _, hist = model.eval_tables()
    a = model.encode_sequence(items, lengths, hist)
    b = model.encode_sequence(padded_more, lengths, hist)
    c = model.encode_sequence(items, lengths)  # without the precomputed table
    assert a.shape == (2, 16)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
    trimmed = model.encode_sequence(items[1:, :2], lengths[1:], hist)
    torch.testing.assert_close(trimmed, a[1:])


def test_ccfrec_asymmetric_pooling():
    model = ccfrec().eval()
    cand, hist = model.eval_tables()
    h, z = model.fuse(torch.tensor([1, 2]))
    torch.testing.assert_close(hist[1:3], h.mean(1))
    torch.testing.assert_close(cand[1:3], h.mean(1) + z.mean(1))
    assert cand[0].abs().sum() == 0
    sym = ccfrec(symmetric_pooling=True).eval()
    c2, h2 = sym.eval_tables()
    torch.testing.assert_close(c2, h2)


def test_mask_statistics():
    torch.manual_seed(0)
    model = ccfrec(mask_ratio=0.5)
    codes = torch.randint(1, model.n_code_ids, (20000, 4))
    masked, chosen = model.mask_codes(codes)
    rate = chosen.float().mean().item()
    assert abs(rate - 0.5) < 0.01
    sel_masked, sel_orig = masked[chosen], codes[chosen]
    to_mask = (sel_masked == 0).float().mean().item()
    unchanged = (sel_masked == sel_orig).float().mean().item()
    assert abs(to_mask - 0.8) < 0.01
    assert abs(unchanged - (0.1 + 0.1 / (model.n_code_ids - 1))) < 0.01  # kept, or replaced by itself
    assert torch.equal(masked[~chosen], codes[~chosen])
    assert sel_masked.min() >= 0 and sel_masked.max() < model.n_code_ids


def test_negatives_exclude_batch_targets_and_are_distinct():
    torch.manual_seed(0)
    model = ccfrec(neg_num=20)
    targets = torch.tensor([1, 2, 3, 3])
    neg, _ = model.negative_pool(targets, "reference")
    assert len(neg) == 20 and len(set(neg.tolist())) == 20
    assert not set(neg.tolist()) & {1, 2, 3} and neg.min() >= 1 and neg.max() <= 30


@pytest.mark.parametrize("name", ["ccfrec", "sasrec"])
def test_loss_falls_on_tiny_data(name):
    torch.manual_seed(0)
    if name == "ccfrec":
        model = ccfrec(dropout=0.0, dropout_cross=0.0)
        losses = train_losses(model, style="prefix")
    else:
        model = build_model("sasrec", {"hidden_size": 16, "inner_size": 32, "max_len": 6, "dropout": 0.0,
                                       "attn_dropout": 0.0}, tiny_items())
        losses = train_losses(model, style="sequence")
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


def test_ccfrec_full_softmax_and_no_aux_losses():
    torch.manual_seed(0)
    model = ccfrec(neg_num=0, mlm_weight=0.0, cl_weight=0.0)
    batch = {"items": torch.tensor([[1, 2, 0], [4, 5, 6]]), "lengths": torch.tensor([2, 3]),
             "targets": torch.tensor([3, 7])}
    loss, parts = model.loss(batch)
    assert set(parts) == {"rec"} and torch.isfinite(loss)


def test_ccfrec_sequence_style_rec_loss_matches_prefix_rows():
    """Full softmax, no dropout, no aux losses: all-position loss on a window == mean over its prefix rows."""
    from semrec.data.batching import build_train_samples, train_batches

    torch.manual_seed(0)
    model = ccfrec(sample_style="sequence", neg_num=0, mlm_weight=0.0, cl_weight=0.0, dropout=0.0,
                   dropout_cross=0.0).eval()
    assert model.sample_style == "sequence" and CCFRec.sample_style == "prefix"
    train = [np.array([3, 7, 1, 9, 12]), np.array([4, 2, 8])]
    batch_s = next(train_batches(build_train_samples(train, 6, "sequence"), 8, seed=0, epoch=0))
    batch_p = next(train_batches(build_train_samples(train, 6, "prefix"), 8, seed=0, epoch=0))
    assert batch_s["targets"].dim() == 2 and batch_p["targets"].dim() == 1
    torch.testing.assert_close(model.loss(batch_s)[0], model.loss(batch_p)[0], rtol=1e-4, atol=1e-5)


def test_ccfrec_sequence_style_trains_with_all_losses():
    torch.manual_seed(0)
    model = ccfrec(sample_style="sequence", neg_num=12, dropout=0.0, dropout_cross=0.0)
    batch = {"items": torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]]), "lengths": torch.tensor([3, 4]),
             "targets": torch.tensor([[2, 3, 9, 0], [5, 6, 7, 8]])}
    loss, parts = model.loss(batch)
    assert set(parts) == {"rec", "mcm", "msa"} and torch.isfinite(loss)
    loss.backward()
    assert model.code_embedding.weight.grad.abs().sum() > 0
    losses = train_losses(ccfrec(sample_style="sequence", dropout=0.0, dropout_cross=0.0), style="sequence")
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    from semrec.errors import SemrecError

    with pytest.raises(SemrecError, match="sample_style must be 'prefix' or 'sequence'"):
        ccfrec(sample_style="windows")


def test_text_dim_mismatch_is_a_clear_error():
    from semrec.errors import SemrecError

    with pytest.raises(SemrecError, match="pca_dim=32"):
        build_model("ccfrec", {"embedding_size": 32}, tiny_items())
    with pytest.raises(Exception, match="model_params.nope"):
        build_model("sasrec", {"nope": 1}, tiny_items())
    assert isinstance(CCFRecConfig(), CCFRecConfig)


def test_memory_saving_gelu_linear_matches_autograd():
    from semrec.models.layers import GeluLinear

    torch.manual_seed(0)
    h = torch.randn(3, 5, 8, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 8, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(GeluLinear.apply, (h, w, b))
    out = GeluLinear.apply(h, w, b)
    torch.testing.assert_close(out, torch.nn.functional.linear(torch.nn.functional.gelu(h), w, b))


def test_by_length_groups_match_the_full_width_pass_at_real_positions():
    from semrec.models.layers import TransformerEncoder, by_length

    torch.manual_seed(0)
    encoder = TransformerEncoder(2, 16, 2, 32, 0.0, 0.0).eval()
    lengths = torch.tensor([1, 9, 3, 2, 12, 1, 5, 4, 2, 7])
    x = torch.randn(10, 12, 16) * (torch.arange(12) < lengths[:, None]).unsqueeze(-1)
    full = encoder(x, is_causal=True)
    grouped = by_length(lambda v: encoder(v, is_causal=True), x, lengths, groups=3)
    real = torch.arange(12) < lengths[:, None]
    assert torch.allclose(full[real], grouped[real], atol=1e-5)
    # gradients flow back to every real input position
    x.requires_grad_(True)
    weights = torch.randn(16)  # (a plain sum of LayerNorm outputs is constant: no gradient)
    (by_length(lambda v: encoder(v, is_causal=True), x, lengths, groups=3)[real] @ weights).sum().backward()
    assert (x.grad.abs().sum(-1)[real] > 0).all()
