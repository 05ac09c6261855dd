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


def test_fit_on_train_reads_only_the_sequences(tiny, monkeypatch):
    config = CodesConfig(tokenizer="opq", name="train", fit_on="train", params={"view": "all", "M": 4, "nbits": 4})
    _, before = fit_codes(tiny, config, progress=False)
    report = (before / "codes.json").read_text()
    dataset = CanonicalDataset.load(tiny)
    assert f'"n_fit_items": {len(dataset.train_items())}' in report and len(dataset.train_items()) < dataset.n_items

    def refuse(*_args, **_kwargs):
        raise AssertionError("CanonicalDataset.load called")

    monkeypatch.setattr(CanonicalDataset, "load", classmethod(refuse))
    _, after = fit_codes(tiny, config, progress=False)
    np.testing.assert_array_equal(np.load(after / "codes.npy"), np.load(before / "codes.npy"))


def test_fit_on_all_never_loads_the_dataset(tiny, monkeypatch):
    before = fit_codes(tiny, CodesConfig(tokenizer="kmeans", name="before", params={"views": ["all"], "k": 8}),
                       progress=False)[1]

    def refuse(*_args, **_kwargs):
        raise AssertionError("CanonicalDataset.load called for fit_on: all")

    monkeypatch.setattr(CanonicalDataset, "load", classmethod(refuse))
    _, after = fit_codes(tiny, CodesConfig(tokenizer="kmeans", name="after", params={"views": ["all"], "k": 8}),
                         progress=False)
    np.testing.assert_array_equal(np.load(after / "codes.npy"), np.load(before / "codes.npy"))


def test_peek_dataset_refuses_what_load_refuses(tiny, tmp_path):
    with pytest.raises(SemrecError, match="not a prepared dataset"):
        peek_dataset(tmp_path / "nothing")
    (tiny / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(SemrecError, match="items.parquet: cannot read"):
        peek_dataset(tiny)


# --- views read from disk in blocks (NpyRows) and encoded block by block --------------------------------------------


def _npy(tmp_path, array, name="m.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


def test_npy_rows_reads_slices_and_rows_like_the_array(tmp_path):
    from semrec.io import NpyRows

    full = np.random.default_rng(1).standard_normal((23, 5)).astype(np.float32)
    rows = NpyRows(_npy(tmp_path, full), skip=1)
    x = full[1:]
    assert rows.shape == x.shape and len(rows) == 22 and rows.dtype == np.float32 and rows.ndim == 2
    np.testing.assert_array_equal(rows[:], x)
    np.testing.assert_array_equal(rows[3:9], x[3:9])
    np.testing.assert_array_equal(rows[20:40], x[20:40])  # clipped like numpy
    assert rows[9:3].shape == (0, 5)
    pick = np.array([7, 2, 3, 4, 2, 21, -1])  # unsorted, repeated, consecutive runs, negative
    np.testing.assert_array_equal(rows[pick], x[pick])
    np.testing.assert_array_equal(np.asarray(rows, dtype=np.float64), x.astype(np.float64))
    with pytest.raises(IndexError):
        rows[np.array([22])]
    with pytest.raises(TypeError):
        rows[::2]
    with pytest.raises(TypeError):
        rows[np.ones(22, dtype=bool)]
    some = np.array([0, 2, 3, 4, 9, 10, 21])
    part = rows.subset(some)  # still on disk: slices and indices of the subset map to the file's rows
    assert part.shape == (7, 5) and len(part) == 7
    np.testing.assert_array_equal(part[:], x[some])
    np.testing.assert_array_equal(part[2:5], x[some][2:5])
    np.testing.assert_array_equal(part[np.array([6, 0, 0, -2])], x[some][[6, 0, 0, -2]])
    np.testing.assert_array_equal(part.subset(np.array([1, 5]))[:], x[some][[1, 5]])
    with pytest.raises(IndexError):
        rows.subset(np.array([22]))


def test_npy_rows_refuses_bad_files_naming_them(tmp_path):
    from semrec.io import NpyRows

    (tmp_path / "bad.npy").write_bytes(b"junk")
    with pytest.raises(SemrecError, match="bad.npy: cannot read"):
        NpyRows(tmp_path / "bad.npy")
    with pytest.raises(SemrecError, match="absent.npy: cannot read"):
        NpyRows(tmp_path / "absent.npy")
    with pytest.raises(SemrecError, match="3d.npy: expected a 2-d C-order numeric matrix"):
        NpyRows(_npy(tmp_path, np.zeros((2, 2, 2)), "3d.npy"))
    with pytest.raises(SemrecError, match="f.npy: expected a 2-d C-order.*Fortran"):
        NpyRows(_npy(tmp_path, np.asfortranarray(np.zeros((3, 2))), "f.npy"))
    path = _npy(tmp_path, np.zeros((100, 8), np.float32), "short.npy")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(SemrecError, match=r"short.npy: truncated \(.* 100 x 8 float32\)"):
        NpyRows(path)
    rows = NpyRows(_npy(tmp_path, np.ones((50, 8), np.float32), "shrinks.npy"))
    (tmp_path / "shrinks.npy").write_bytes((tmp_path / "shrinks.npy").read_bytes()[:-64])  # cut after opening
    np.testing.assert_array_equal(rows[:40], np.ones((40, 8), np.float32))
    with pytest.raises(SemrecError, match=r"shrinks.npy: truncated while reading rows 0..49"):
        rows[:]
    with pytest.raises(SemrecError, match="cannot skip 3 of its 2 rows"):
        NpyRows(_npy(tmp_path, np.zeros((2, 2)), "two.npy"), skip=3)


@pytest.mark.parametrize("kind, params", [
    ("pq", {"views": ["a", "b"], "pca_dim": 8, "nbits": 4, "dedup": True}),
    ("opq", {"view": "a", "M": 4, "nbits": 4}),
    ("rq", {"views": ["a", "b"], "levels": 2, "nbits": 4, "pca_dim": 6}),
    ("kmeans", {"views": ["a", "b"], "k": 6}),
])
def test_blocks_and_on_disk_views_change_no_code(kind, params, tmp_path, monkeypatch):
    """Encoding block by block (BLOCK_ROWS rows) from NpyRows gives the codes and report of whole in-memory arrays:
    every tokenizer's _encode is row-independent. Duplicate rows across blocks share codes; dedup digits count on."""
    import semrec.tokenizers.base as base
    import semrec.tokenizers.checks as checks
    from semrec.io import NpyRows
    from semrec.tokenizers import build_tokenizer

    rng = np.random.default_rng(3)
    views = {"a": rng.standard_normal((400, 16)).astype(np.float32),
             "b": rng.standard_normal((400, 12)).astype(np.float32)}
    for x in views.values():
        x[350:360] = x[5:15]  # identical items in different blocks
    on_disk = {name: NpyRows(_npy(tmp_path, np.vstack([np.zeros((1, x.shape[1]), np.float32), x]), f"{name}.npy"),
                             skip=1) for name, x in views.items()}
    whole = build_tokenizer(kind, **params)
    whole.fit(views, seed=0)
    expected = whole.encode(views)
    some = np.flatnonzero(np.arange(400) % 3 != 1)  # fitted on some rows: the same fit from disk, block by block
    on_some = build_tokenizer(kind, **params)
    on_some.fit(views, some, seed=0)
    monkeypatch.setattr(base, "BLOCK_ROWS", 64)
    monkeypatch.setattr(checks, "BLOCK_ROWS", 64)
    blocked = build_tokenizer(kind, **params)
    blocked.fit(on_disk, some, seed=0)
    np.testing.assert_array_equal(blocked.fit_codes, on_some.fit_codes)
    np.testing.assert_array_equal(blocked.encode(on_disk), on_some.encode(views))
    blocked = build_tokenizer(kind, **params)
    blocked.fit(on_disk, seed=0)
    np.testing.assert_array_equal(blocked.fit_codes, whole.fit_codes)
    np.testing.assert_array_equal(whole.fit_codes, expected)  # semrec codes (fit_on: all) writes fit_codes
    np.testing.assert_array_equal(blocked.encode(on_disk), expected)
    np.testing.assert_array_equal(blocked.encode(views), expected)
    base_levels = len(whole.base_codebook_sizes)  # identical items: one base code (pq's dedup digit tells them apart)
    np.testing.assert_array_equal(expected[350:360, :base_levels], expected[5:15, :base_levels])
    assert blocked.reconstruction_error(on_disk) == pytest.approx(whole.reconstruction_error(views), rel=1e-9)
    bad = np.vstack([np.zeros((1, 16), np.float32), views["a"]])
    bad[300, 2] = np.nan
    with pytest.raises(SemrecError, match="view 'a' contains NaN"):
        blocked.encode({**on_disk, "a": NpyRows(_npy(tmp_path, bad, "nan.npy"), skip=1)})


def test_codes_read_views_from_disk_and_refuse_a_truncated_file(tiny, monkeypatch):
    import semrec.text.encode as encode

    calls = []
    real = encode.load_view_embeddings
    monkeypatch.setattr("semrec.tokenizers.pipeline.load_view_embeddings",
                        lambda *a, **k: calls.append(k) or real(*a, **k))
    config = CodesConfig(tokenizer="kmeans", name="lazy", params={"views": ["all"], "k": 8})
    fit_codes(tiny, config, progress=False)
    assert calls == [{"lazy": True}]
    path = next((tiny / "embeddings").glob("*/all.npy"))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SemrecError, match=r"truncated .*re-run 'semrec embed'"):
        fit_codes(tiny, config, progress=False)
