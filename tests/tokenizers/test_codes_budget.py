"""PQ's code budget follows the data (issue 18): a total number of code slots split over the views present, fewer
codes per view for a catalogue too small for them, and a warning when many items share their full code."""

from __future__ import annotations

import numpy as np
import pytest

from semrec.tokenizers import load_tokenizer
from semrec.tokenizers.pq import PQTokenizer, codes_for_views
from semrec.tokenizers.report import code_report


@pytest.mark.parametrize(("views", "expected"), [(5, 4), (4, 4), (3, 4), (2, 8), (1, 16)])
def test_the_default_budget_keeps_ccfrecs_layout_and_gives_fewer_views_more_codes(views, expected):
    assert codes_for_views(20, views, 128) == expected
    tok = PQTokenizer(views=[f"v{i}" for i in range(views)])
    assert tok.codes_per_view == expected and tok.n_codes == views * expected


def test_codes_per_view_divides_the_pca_dim_and_an_explicit_value_wins():
    assert codes_for_views(20, 1, 96) == 16 and codes_for_views(20, 1, 90) == 18
    assert codes_for_views(3, 5, 128) == 1
    assert PQTokenizer(views=["title"], codes_per_view=4).n_codes == 4
    assert PQTokenizer(views=["title"], total_codes=8).n_codes == 8


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)).astype(np.float32)


def test_one_view_with_the_budget_collides_far_less_than_four_codes(tmp_path):
    x = {"title": clustered(600, 64)}
    few = PQTokenizer(views=["title"], pca_dim=32, codes_per_view=4, nbits=2, dedup=False)
    budget = PQTokenizer(views=["title"], pca_dim=32, nbits=2)  # 16 codes
    rates = []
    for tok in (few, budget):
        tok.fit(x, seed=0)
        rates.append(code_report(tok, tok.encode(x), x))
    assert budget.n_codes == 16 and rates[1].collision_rate < rates[0].collision_rate
    assert rates[0].collision_rate > 0.05 and rates[0].notes[-1].startswith("warning: ")
    assert "share their full code" in rates[0].notes[-1] and "total_codes" in rates[0].notes[-1]
    assert not any(n.startswith("warning: ") for n in rates[1].notes)
    budget.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.codes_per_view == 16 and (again.encode(x) == budget.encode(x)).all()


def test_a_small_catalogue_gets_fewer_codes_per_view_with_a_note():
    x = {"title": clustered(9, 64)}  # 8 PCA dims at most: not room for 16 codes
    tok = PQTokenizer(views=["title"], pca_dim=32, nbits=1)
    tok.fit(x, seed=0)
    assert tok.codes_per_view == 8 and tok.encode(x).shape == (9, 8)
    assert any("8 codes per view instead of 16" in note for note in tok.notes)


@pytest.mark.parametrize(("params", "message"), [
    ({"total_codes": 0}, "total_codes must be >= 1, got 0"),
    ({"total_codes": "many"}, "total_codes"),
    ({"codes_per_view": 0}, "codes_per_view must be >= 1, got 0"),
])
def test_bad_code_budgets_are_refused_with_the_parameter_named(params, message):
    from semrec.errors import SemrecError

    with pytest.raises(SemrecError, match=message):
        PQTokenizer(views=["title"], **params)


# ------------------------------------------------------------------------------ the dedup digit follows the data


def test_auto_dedup_adds_the_digit_only_when_more_than_5_percent_of_items_collide(tmp_path):
    x = {"title": clustered(600, 64)}
    crowded = PQTokenizer(views=["title"], pca_dim=32, codes_per_view=4, nbits=2, dedup="auto")  # 4 codes
    crowded.fit(x, seed=0)
    plain = PQTokenizer(views=["title"], pca_dim=32, codes_per_view=4, nbits=2, dedup=False)
    plain.fit(x, seed=0)
    base_rate = code_report(plain, plain.encode(x)).collision_rate
    assert base_rate > 0.05
    codes = crowded.encode(x)
    assert crowded.dedup and codes.shape == (600, 5) and (codes[:, :4] == plain.encode(x)).all()
    assert len({tuple(row) for row in codes.tolist()}) == 600
    note = next(n for n in crowded.notes if n.startswith("dedup auto: "))
    assert f"{base_rate:.1%} of items share their code" in note and "--no-dedup" in note
    report = code_report(crowded, codes, x)
    assert report.dedup_level and report.collision_rate == 0.0 and note in report.notes
    assert not any(n.startswith("warning: ") for n in report.notes)
    crowded.save(tmp_path / "tok")  # the decision is saved: a loaded tokenizer encodes the same codes
    again = load_tokenizer(tmp_path / "tok")
    assert again.dedup is True and (again.encode(x) == codes).all()

    roomy = PQTokenizer(views=["title"], pca_dim=32, nbits=8)  # 16 codes of 256, no collision; dedup: the default, auto
    roomy.fit(x, seed=0)
    assert not roomy.dedup and roomy.encode(x).shape == (600, 16)
    assert not any(n.startswith("dedup auto") for n in roomy.notes)


def test_auto_dedup_decides_on_every_item_even_when_fitted_on_some():
    """The collision rate is taken over all rows given to fit (the codes `semrec codes` writes), not only the
    fit rows: here the fit rows alone are distinct, the catalogue is not."""
    rng = np.random.default_rng(0)
    x = {"title": np.repeat(rng.standard_normal((100, 64)).astype(np.float32), 2, axis=0)}  # every item twice
    tok = PQTokenizer(views=["title"], pca_dim=32, nbits=4, dedup="auto")
    tok.fit(x, fit_rows=np.arange(0, 200, 2), seed=0)
    assert tok.dedup and len({tuple(r) for r in tok.encode(x).tolist()}) == 200


def test_the_dedup_default_is_auto_for_ccfrecs_pq_and_off_for_the_others():
    from semrec.config import CodesConfig
    from semrec.errors import SemrecError
    from semrec.tokenizers import TOKENIZERS, build_tokenizer

    assert {k: c.default_dedup for k, c in TOKENIZERS.items()} == {
        "pq": "auto", "opq": False, "rq": False, "kmeans": False}
    assert CodesConfig().dedup is None
    assert PQTokenizer(views=["title"]).auto_dedup and not build_tokenizer("opq").auto_dedup
    with pytest.raises(SemrecError, match="dedup must be true, false or 'auto', got 'sometimes'"):
        PQTokenizer(views=["title"], dedup="sometimes")
