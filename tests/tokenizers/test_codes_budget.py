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
    few = PQTokenizer(views=["title"], pca_dim=32, codes_per_view=4, nbits=2)
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
