"""SOLID's model (issue 19, spec solid 5): the clip bound, t = 0 as a semantic-only generator, the frozen codebook,
semantic ids aligned with item ids, gradients reaching both generators (and the projections when trained), and the
nearest-codeword search by a distance matrix."""

from __future__ import annotations

import pytest
import torch

from semrec.models.base import ItemInputs
from semrec.models.layers import ParameterGenerator
from semrec.models.solid import SOLID, SOLIDConfig, nearest_codewords

N_ITEMS, K, D = 20, 4, 32


def _inputs(seed: int = 0) -> ItemInputs:
    g = torch.Generator().manual_seed(seed)
    semantic = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(N_ITEMS) % K + 1])
    return ItemInputs(n_items=N_ITEMS, semantic=semantic, codebook=torch.randn(K + 1, D, generator=g))


def _batch():
    g = torch.Generator().manual_seed(1)
    items = torch.randint(1, N_ITEMS + 1, (6, 5), generator=g)
    lengths = torch.tensor([5, 3, 1, 5, 2, 4])
    items[torch.arange(5)[None, :] >= lengths[:, None]] = 0
    return {"items": items, "lengths": lengths, "candidates": torch.randint(1, N_ITEMS + 1, (6,), generator=g),
            "labels": torch.tensor([1.0, 0, 0, 1, 0, 1])}


def _model(**kw) -> SOLID:
    torch.manual_seed(0)
    return SOLID(SOLIDConfig(max_len=5, **kw), _inputs())


def test_nearest_codewords_match_the_broadcast_definition():
    g = torch.Generator().manual_seed(2)
    h, codebook = torch.randn(3, 7, D, generator=g), torch.randn(9, D, generator=g)
    broadcast = (h[:, :, None, :] - codebook[None, None]).norm(dim=-1).argmin(-1)  # the reference's B x L x K x D
    assert torch.equal(nearest_codewords(h, codebook), broadcast)


@pytest.mark.parametrize("head", ["duet", "apg"])
def test_the_item_correction_is_clipped_to_t(head, monkeypatch):
    model = _model(head=head, clip=0.01)
    batch = _batch()
    seen = []
    real_generate = model.generator.generate
    monkeypatch.setattr(model.generator, "generate", lambda g: [(w * 1e3, None if b is None else b * 1e3)
                                                               for w, b in real_generate(g)])
    sem_generate = model.sem_generator.generate
    monkeypatch.setattr(model.sem_generator, "generate", lambda g: seen.append(sem_generate(g)) or seen[-1])
    captured = {}
    real_apply = model.apply_head
    monkeypatch.setattr(model, "apply_head", lambda s, layers: captured.setdefault("layers", layers) and
                        real_apply(s, layers))
    model.user_vectors(batch["items"], batch["lengths"])
    for (w, b), (ws, bs) in zip(captured["layers"], seen[0]):
        assert (w - ws).abs().max() <= 0.01 + 1e-6  # huge item weights, bounded correction
        if b is not None:
            assert (b - bs).abs().max() <= 0.01 + 1e-6


def test_t_zero_is_the_semantic_generator_alone():
    model = _model(clip=0.0)
    batch = _batch()
    with torch.no_grad():
        out = model.user_vectors(batch["items"], batch["lengths"])
        sem = model.semantic_history(batch["items"])
        hist = model.encoder.history(batch["items"])
        alone = model.apply_head(model.encoder.state(hist, batch["items"], batch["lengths"]),
                                 model.sem_generator.generate(model.sem_generator.condition(sem, batch["lengths"])))
    assert torch.allclose(out, alone, atol=1e-6)


def test_the_codebook_stays_frozen_and_gradients_reach_both_generators():
    model = _model(frozen_projections=False)
    assert "codebook" not in dict(model.named_parameters()) and "codebook" in model.state_dict()
    before = model.codebook.clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    loss, parts = model.loss(_batch())
    loss.backward()
    assert set(parts) == {"bce", "vq"}
    for name in ("generator.gru.weight_ih_l0", "sem_generator.gru.weight_ih_l0", "sem_generator.w_proj_0",
                 "generator.w_proj_1", "decoder.0.weight", "cat.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    opt.step()
    assert torch.equal(model.codebook, before)


def test_the_alignment_loss_moves_only_the_semantic_branch():
    model = _model()
    batch = _batch()
    _, align = model._user(batch["items"], batch["lengths"])
    align.backward()  # MSE(H_c, stopgrad(q)): no gradient into the item side or the decoder (spec solid 5.2)
    params = dict(model.named_parameters())
    assert params["cat.weight"].grad.abs().sum() > 0 and params["cat_tower.0.weight"].grad.abs().sum() > 0
    for name in ("encoder.item.weight", "decoder.0.weight", "generator.gru.weight_ih_l0"):
        assert params[name].grad is None or params[name].grad.abs().sum() == 0, name


def test_semantic_ids_follow_item_ids_in_every_batch():
    model = _model()
    batch = _batch()
    mapped = model.semantic[batch["items"]]
    assert torch.equal(mapped == 0, batch["items"] == 0)  # padding stays padding
    assert torch.equal(mapped[batch["items"] > 0], (batch["items"][batch["items"] > 0] - 1) % K + 1)


def test_fusion_only_has_no_alignment_loss_and_bad_inputs_are_refused():
    model = _model(vq=False)
    _, parts = model.loss(_batch())
    assert set(parts) == {"bce"}
    with pytest.raises(ValueError, match="duet or apg head"):
        SOLID(SOLIDConfig(head="base"), _inputs())
    bad = _inputs()
    bad.semantic[3] = K + 1
    with pytest.raises(ValueError, match=f"semantic ids must lie in 1..{K}"):
        SOLID(SOLIDConfig(max_len=5), bad)
    with pytest.raises(ValueError, match="needs the items' semantic ids"):
        SOLID(SOLIDConfig(max_len=5), ItemInputs(n_items=N_ITEMS))


@pytest.mark.parametrize("backbone", ["gru4rec", "bert4rec", "din"])
def test_solid_on_the_other_sequence_backbones_trains(backbone):
    model = _model(backbone=backbone, head="apg")
    loss, parts = model.loss(_batch())
    loss.backward()
    assert torch.isfinite(loss) and parts["vq"] > 0
    assert model.sem_generator.gru.weight_ih_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("head", ["duet", "apg"])
def test_every_route_scores_with_both_generators(head):
    """The CTR logits (evaluation), the loss and full ranking read the same fused user vector."""
    model = _model(head=head, clip=0.5).eval()
    batch = _batch()
    with torch.no_grad():
        user = model.user_vectors(batch["items"], batch["lengths"])
        logits = model.ctr_logits(batch)
        assert torch.allclose(logits, (user * model.encoder.targets(batch["candidates"])).sum(-1), atol=1e-6)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])
        assert model.loss(batch)[1]["bce"].item() == pytest.approx(bce.item(), rel=1e-6)
        # the semantic generator matters to the evaluation logits (it did not when ctr_logits bypassed SOLID)
        model.sem_generator.generate = lambda g: [(w * 0, None if b is None else b * 0)
                                                  for w, b in ParameterGenerator.generate(model.sem_generator, g)]
        assert not torch.allclose(model.ctr_logits(batch), logits, atol=1e-4)


@pytest.mark.parametrize("head", ["duet", "apg"])
def test_solid_on_din_generates_the_classifier_from_both_branches(head):
    """DIN (spec 7.4): the fused layers are the classifier 2D -> 128 -> 64 -> 1 on [target, pooled history]; the
    clip bound holds on every layer; no user vector (no full ranking)."""
    from semrec.errors import SemrecError

    model = _model(backbone="din", head=head, clip=0.01)
    batch = _batch()
    hist = model.encoder.history(batch["items"])
    layers, align = model.generated(hist, batch["items"], batch["lengths"])
    expected = [(64, 128), (128, 64), (64, 1)] if head == "duet" else [(16, 16)] * 3
    assert [tuple(w.shape[1:]) for w, _ in layers] == expected and align > 0
    sem = model.sem_generator.generate(model.sem_generator.condition(model.semantic_history(batch["items"]),
                                                                     batch["lengths"]))
    for (w, _), (ws, _) in zip(layers, sem):
        assert (w - ws).abs().max() <= 0.01 + 1e-6
    loss, parts = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and parts["vq"] > 0 and model.codebook.grad is None
    for name in ("sem_generator.gru.weight_ih_l0", "generator.gru.weight_ih_l0", "encoder.qkv.0.weight", "cat.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    with torch.no_grad():
        assert model.ctr_logits(batch).shape == (6,)
    with pytest.raises(SemrecError, match="DIN scores each candidate inside its target attention"):
        model.user_vectors(batch["items"], batch["lengths"])
