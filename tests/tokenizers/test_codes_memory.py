"""`semrec codes` reads only what it needs of the dataset (issue 20): the views and item count from the manifest and
the items file's footer (peek_dataset), the sequences only for fit_on: train; peek_dataset refuses what load refuses."""

from __future__ import annotations

import numpy as np
import pytest

from semrec.config import CodesConfig
from semrec.data.dataset import CanonicalDataset, peek_dataset
from semrec.errors import SemrecError
from semrec.tokenizers.pipeline import fit_codes
from tests.support import embed_vectors, make_tiny_dataset


@pytest.fixture()
def tiny(tmp_path):
    ds = make_tiny_dataset(tmp_path / "tiny", n_users=150, n_items=300)
    n = CanonicalDataset.load(ds).n_items
    embed_vectors(ds, {"all": np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)}, "tests.codes")
    return ds


def test_peek_dataset_reads_views_and_item_count_without_loading(tiny):
    loaded = CanonicalDataset.load(tiny)
    assert peek_dataset(tiny) == (loaded.views, loaded.n_items)


def test_fit_on_all_never_loads_the_dataset(tiny, monkeypatch):
    before = fit_codes(tiny, CodesConfig(tokenizer="kmeans", name="before", params={"views": ["all"], "k": 8}),
                       progress=False)[1]

    def refuse(*_args, **_kwargs):
        raise AssertionError("CanonicalDataset.load called for fit_on: all")

    monkeypatch.setattr(CanonicalDataset, "load", classmethod(refuse))
    _, after = fit_codes(tiny, CodesConfig(tokenizer="kmeans", name="after", params={"views": ["all"], "k": 8}),
                         progress=False)
    np.testing.assert_array_equal(np.load(after / "codes.npy"), np.load(before / "codes.npy"))
    with pytest.raises(AssertionError, match="fit_on: all"):  # fit_on: train needs the sequences
        fit_codes(tiny, CodesConfig(tokenizer="kmeans", name="train", fit_on="train",
                                    params={"views": ["all"], "k": 8}), progress=False)


def test_peek_dataset_refuses_what_load_refuses(tiny, tmp_path):
    with pytest.raises(SemrecError, match="not a prepared dataset"):
        peek_dataset(tmp_path / "nothing")
    (tiny / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(SemrecError, match="items.parquet: cannot read"):
        peek_dataset(tiny)
