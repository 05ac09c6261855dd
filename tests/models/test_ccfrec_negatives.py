"""CCFRec's negative sampling modes (issue 18): per-row masking hides only the row's own target, no row ever
scores its own target as a negative, sequence rows can draw their own history items as negatives, and history
items can be added as hard negatives."""

from __future__ import annotations

import pytest
import torch

from semrec.models.base import ItemInputs
from semrec.models.ccfrec import CCFRec, CCFRecConfig, negative_mode
from semrec.models.negatives import history_logits

N_ITEMS = 40


def model(**params) -> CCFRec:
    torch.manual_seed(0)
    codes = torch.randint(0, 8, (N_ITEMS + 1, 4))
    codes[0] = -1
    items = ItemInputs(n_items=N_ITEMS, codes=codes, text=torch.randn(N_ITEMS + 1, 2, 16),
                       codebook_sizes=[8, 8, 8, 8])
    cfg = CCFRecConfig(embedding_size=16, inner_size=32, max_len=6, **params)
    return CCFRec(cfg, items)


def prefix_batch() -> dict[str, torch.Tensor]:
    items = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 0, 0], [2, 8, 0, 0, 0, 0]])
    return {"items": items, "lengths": torch.tensor([3, 4, 2]), "targets": torch.tensor([4, 9, 3])}


def sequence_batch() -> dict[str, torch.Tensor]:
    items = torch.tensor([[1, 2, 3, 4, 5, 0], [6, 7, 8, 0, 0, 0]])
    targets = torch.tensor([[2, 3, 4, 5, 9, 0], [7, 8, 10, 0, 0, 0]])
    return {"items": items, "lengths": torch.tensor([5, 3]), "targets": targets}


def test_auto_is_reference_for_prefix_rows_and_per_row_for_sequence_rows():
    assert negative_mode(CCFRecConfig()) == "reference"
    assert negative_mode(CCFRecConfig(sample_style="sequence")) == "per_row"
    assert negative_mode(CCFRecConfig(neg_num=0, negatives="per_row")) == "full"
    assert negative_mode(CCFRecConfig(negatives="full")) == "full"
    assert negative_mode(CCFRecConfig(negatives="reference", sample_style="sequence")) == "reference"


@pytest.mark.parametrize("mode", ["per_row", "full"])
def test_per_row_masking_hides_only_the_rows_own_target(mode):
    m = model(neg_num=N_ITEMS, negatives=mode)  # a pool of every item: every target is in it
    targets = torch.tensor([4, 9, 3, 9])
    pool, mask = m.negative_pool(targets, mode)
    assert sorted(pool.tolist()) == list(range(1, N_ITEMS + 1))
    for r, target in enumerate(targets.tolist()):
        masked = set(pool[mask[r]].tolist())
        assert masked == {target}  # its own target: never its negative
        others = set(targets.tolist()) - {target}
        assert others <= set(pool[~mask[r]].tolist())  # other rows' targets stay negatives


def test_reference_pool_never_holds_a_target_of_the_batch():
    m = model(neg_num=30, negatives="reference")
    targets = torch.tensor([4, 9, 3])
    for _ in range(20):
        pool, mask = m.negative_pool(targets, "reference")
        assert mask is None and len(pool) == 30 and len(set(pool.tolist())) == 30
        assert not set(pool.tolist()) & {4, 9, 3} and min(pool.tolist()) >= 1


def test_sampled_per_row_pool_never_scores_the_rows_own_target():
    m = model(neg_num=10, negatives="per_row")
    targets = torch.tensor([4, 9, 3])
    for _ in range(50):
        pool, mask = m.negative_pool(targets, "per_row")
        assert len(set(pool.tolist())) == 10 and 0 not in pool.tolist()
        for r, target in enumerate(targets.tolist()):
            assert target not in pool[~mask[r]].tolist()


def test_sequence_rows_draw_their_own_history_items_as_negatives():
    m = model(neg_num=N_ITEMS, sample_style="sequence")  # auto: per_row
    batch = sequence_batch()
    flat = batch["targets"][batch["targets"] > 0]
    pool, mask = m.negative_pool(flat, negative_mode(m.config))
    # position 3 of window 0 reads items 1, 2, 3, 4 and predicts 5: its history items are negatives
    row = 3
    assert flat[row] == 5
    assert {1, 2, 3, 4} <= set(pool[~mask[row]].tolist())
    # the reference's batch-wide exclusion hides them all (they are targets of earlier positions)
    ref_pool, _ = m.negative_pool(flat, "reference")
    assert not {2, 3, 4} & set(ref_pool.tolist())


@pytest.mark.parametrize("style", ["prefix", "sequence"])
def test_history_negatives_are_the_rows_consumed_items_except_its_target(style):
    model(neg_num=5, negatives="per_row", history_negatives=True, sample_style=style)  # a valid setting
    batch = prefix_batch() if style == "prefix" else sequence_batch()
    items, targets = batch["items"], batch["targets"]
    users = torch.nn.functional.normalize(torch.randn(*items.shape, 16), dim=-1)
    vectors = torch.nn.functional.normalize(torch.randn(int((items > 0).sum()), 16), dim=-1)
    logits = history_logits(users, vectors, items, targets, batch["lengths"])
    finite = torch.isfinite(logits)
    if style == "prefix":
        assert finite.tolist() == [[True, True, True, False, False, False],
                                   [True, True, True, True, False, False],
                                   [True, True, False, False, False, False]]
        row2 = torch.tensor([[2, 8, 0, 0, 0, 0]])  # a row whose history holds its own target: masked there
        logits2 = history_logits(users[:1], vectors[:2], row2, torch.tensor([8]), torch.tensor([2]))
        assert torch.isfinite(logits2).tolist() == [[True, False, False, False, False, False]]
    else:
        # window 0, position t reads items[0..t]; window 1 likewise; 8 positions in all
        expected = [[j <= t for j in range(6)] for t in range(5)] + [[j <= t for j in range(6)] for t in range(3)]
        for r in range(5, 8):
            expected[r][3:] = [False] * 3  # window 1 has 3 items
        assert finite.tolist() == expected


@pytest.mark.parametrize("params", [
    {"negatives": "reference"}, {"negatives": "per_row"}, {"negatives": "full"},
    {"negatives": "per_row", "history_negatives": True}, {"negatives": "reference", "separate_dropout": True},
])
@pytest.mark.parametrize("style", ["prefix", "sequence"])
def test_every_mode_trains(params, style):
    m = model(neg_num=12, sample_style=style, mlm_weight=0.0, cl_weight=0.0, **params)
    batch = prefix_batch() if style == "prefix" else sequence_batch()
    loss, parts = m.loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert m.code_embedding.weight.grad is not None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="negatives must be one of auto, reference, per_row, full"):
        model(negatives="batch")
    with pytest.raises(ValueError, match="already has them"):
        model(neg_num=0, history_negatives=True)
