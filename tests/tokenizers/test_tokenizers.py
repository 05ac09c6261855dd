"""Item tokenizers on small generated data: shapes, faiss equality, persistence, dedup, reports, errors."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from sklearn.decomposition import PCA

from semrec.errors import SemrecError
from semrec.tokenizers import (
    TOKENIZERS,
    KMeansTokenizer,
    OPQTokenizer,
    PQTokenizer,
    RQTokenizer,
    add_dedup_level,
    build_tokenizer,
    code_report,
    load_tokenizer,
    next_dedup_digits,
)
from semrec.tokenizers.faiss_utils import unpack_codes
from semrec.tokenizers.pca import PCAProjection

VIEWS5 = ["title", "brand", "features", "categories", "description"]


def clustered(n: int, dim: int, seed: int, k: int = 12, spread: float = 0.4) -> np.ndarray:
    """Gaussian blobs around ``k`` random centres (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    x = centres[rng.integers(0, k, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x.astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def single_faiss_thread():
    """Run faiss single-threaded here: on a 2-core machine shared with other jobs, OpenMP's busy-waiting
    made these tiny fits 10-20x slower with 2 threads. (The tokenizers' ``threads`` option does the same.)"""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def views() -> dict[str, np.ndarray]:
    out = {name: clustered(700, 40, seed=i) for i, name in enumerate(VIEWS5)}
    out["all"] = clustered(700, 32, seed=99)
    return out


# small, fast settings per kind (used by the generic tests)
SMALL = {
    "pq": dict(views=VIEWS5, pca_dim=16, codes_per_view=4, nbits=5),
    "opq": dict(view="all", M=8, nbits=5, niter=8, polysemous=False),
    "rq": dict(views=["title", "brand"], mode="per_view", levels=3, nbits=5),
    "kmeans": dict(views=["title", "brand"], k=24, normalize=True),
}


def test_registry_lists_all_kinds() -> None:
    assert set(TOKENIZERS) == {"pq", "opq", "rq", "kmeans"}
    assert isinstance(build_tokenizer("pq"), PQTokenizer)
    assert build_tokenizer("opq").factory_string == "OPQ32,IVF1,PQ32x8"


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_fit_encode_shapes_and_ranges(kind: str, views: dict[str, np.ndarray]) -> None:
    tok = build_tokenizer(kind, **SMALL[kind])
    tok.fit(views, seed=3)
    codes = tok.encode(views)
    assert codes.dtype == np.int64
    assert codes.shape == (700, tok.n_levels)
    assert len(tok.codebook_sizes) == tok.n_levels
    assert codes.min() >= 0
    assert (codes < np.asarray(tok.codebook_sizes)[None, :]).all()
    assert np.array_equal(tok.fit_codes, codes)
    assert tok.encode({k: v[:0] for k, v in views.items()}).shape == (0, tok.n_levels)


@pytest.mark.parametrize("kind", sorted(SMALL))
@pytest.mark.parametrize("dedup", [False, True])
def test_save_load_round_trip(kind: str, dedup: bool, views: dict[str, np.ndarray], tmp_path) -> None:
    tok = build_tokenizer(kind, dedup=dedup, **SMALL[kind])
    tok.fit(views, fit_rows=np.arange(0, 700, 2), seed=1)
    codes = tok.encode(views)
    tok.save(tmp_path / "tok")
    meta = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert meta["kind"] == kind and meta["format_version"] == 1
    assert meta["params"]["dedup"] is dedup
    loaded = load_tokenizer(tmp_path / "tok")
    assert type(loaded) is type(tok)
    assert loaded.codebook_sizes == tok.codebook_sizes
    assert np.array_equal(loaded.encode(views), codes)
    assert np.array_equal(loaded.fit_codes, tok.fit_codes)
    assert loaded.reconstruction_error(views) == pytest.approx(tok.reconstruction_error(views), rel=1e-6)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_same_seed_same_codes(kind: str, views: dict[str, np.ndarray]) -> None:
    runs = []
    for _ in range(2):
        tok = build_tokenizer(kind, **SMALL[kind])
        tok.fit(views, seed=7)
        runs.append(tok.encode(views))
    assert np.array_equal(runs[0], runs[1])


def test_seed_changes_kmeans(views: dict[str, np.ndarray]) -> None:
    a, b = (build_tokenizer("kmeans", **SMALL["kmeans"]) for _ in range(2))
    a.fit(views, seed=0)
    b.fit(views, seed=1)
    assert not np.array_equal(a.centroids, b.centroids)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_fit_uses_only_fit_rows(kind: str, views: dict[str, np.ndarray]) -> None:
    rows = np.arange(0, 700, 2)
    shifted = {k: v.copy() for k, v in views.items()}
    for v in shifted.values():
        v[1::2] += 25.0  # rows outside the fit set come from a very different distribution
    # without a dedup digit: pq's default (auto) decides it on every row given to fit, and the shifted rows collide
    on_rows = build_tokenizer(kind, dedup=False, **SMALL[kind])
    on_rows.fit(shifted, fit_rows=rows, seed=5)
    on_subset = build_tokenizer(kind, dedup=False, **SMALL[kind])
    on_subset.fit({k: v[rows] for k, v in shifted.items()}, seed=5)
    assert on_rows.n_fit == 350
    assert np.array_equal(on_rows.encode(shifted), on_subset.encode(shifted))
    mask = np.zeros(700, dtype=bool)
    mask[rows] = True
    on_mask = build_tokenizer(kind, dedup=False, **SMALL[kind])
    on_mask.fit(shifted, fit_rows=mask, seed=5)
    assert np.array_equal(on_mask.encode(shifted), on_subset.encode(shifted))


# ---------------------------------------------------------------------------------------------------- PQ


def test_pq_layout_five_views_four_codes(views: dict[str, np.ndarray]) -> None:
    tok = PQTokenizer(views=VIEWS5, pca_dim=16, codes_per_view=4, nbits=5)
    assert tok.layout == {
        "title": [0, 1, 2, 3],
        "brand": [4, 5, 6, 7],
        "features": [8, 9, 10, 11],
        "categories": [12, 13, 14, 15],
        "description": [16, 17, 18, 19],
    }
    tok.fit(views)
    assert tok.n_levels == 20 and tok.codebook_sizes == [32] * 20
    assert tok.index.pq.M == 20 and tok.index.d == 80 and tok.index.metric_type == faiss.METRIC_INNER_PRODUCT
    # the codes of a view's slots depend on that view only
    changed = dict(views)
    changed["brand"] = views["brand"][::-1].copy()
    before, after = tok.encode(views), tok.encode(changed)
    other = [s for s in range(20) if s not in tok.layout["brand"]]
    assert np.array_equal(before[:, other], after[:, other])
    assert not np.array_equal(before[:, tok.layout["brand"]], after[:, tok.layout["brand"]])


@pytest.mark.parametrize("nbits", [5, 8])
def test_pq_codes_equal_faiss(nbits: int, views: dict[str, np.ndarray]) -> None:
    tok = PQTokenizer(views=VIEWS5, pca_dim=16, codes_per_view=4, nbits=nbits)
    tok.fit(views, seed=2)
    codes = tok.encode(views)
    x = np.concatenate([tok.transform(views)[v] for v in VIEWS5], axis=1)
    # 1) argmin of the squared L2 distance to each sub-quantiser's centroids
    pq = tok.index.pq
    centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    sub = x.reshape(len(x), pq.M, pq.dsub)
    dist = ((sub[:, :, None, :] - centroids[None]) ** 2).sum(-1)
    assert np.array_equal(codes, dist.argmin(-1))
    # 2) what faiss stores after add
    index = faiss.clone_index(tok.index)
    index.add(x)
    stored = faiss.vector_to_array(index.codes).reshape(len(x), pq.code_size)
    assert np.array_equal(codes, unpack_codes(stored, pq.M, nbits))


def test_pq_transform_is_sklearn_pca(views: dict[str, np.ndarray]) -> None:
    tok = PQTokenizer(views=VIEWS5, pca_dim=16, codes_per_view=4, nbits=5)
    tok.fit(views, fit_rows=np.arange(400), seed=0)
    out = tok.transform(views)
    for v in VIEWS5:
        x64 = views[v].astype(np.float64)  # the PCA is fitted in float64
        ref = PCA(n_components=16, whiten=True, random_state=0).fit(x64[:400]).transform(x64)
        assert out[v].shape == (700, 16) and out[v].dtype == np.float32
        np.testing.assert_allclose(out[v], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("whiten", [True, False])
def test_pca_with_numpy_equals_sklearn(whiten: bool) -> None:
    x = clustered(500, 30, seed=4)
    new = clustered(50, 30, seed=5)
    ref = PCA(n_components=12, whiten=whiten, random_state=0).fit(x.astype(np.float64))
    ours = PCAProjection.fit(x, 12, whiten, seed=0)
    expected = ref.transform(new.astype(np.float64)).astype(np.float32)
    # sklearn's formula in float64; ours projects row by row, so only the last float32 digit may differ
    np.testing.assert_allclose(ours.transform(new), expected, rtol=1e-6, atol=1e-6)
    again = PCAProjection.from_arrays(ours.to_arrays("p"), "p", whiten)
    np.testing.assert_array_equal(again.transform(new), ours.transform(new))


def test_pca_transform_in_blocks_equals_one_row_at_a_time(monkeypatch) -> None:
    """transform works TRANSFORM_BLOCK rows at a time (bounded float64 temporaries): the same float32 values as
    projecting every row on its own, for a block size that does not divide n."""
    from semrec.tokenizers import pca as pca_module

    x = clustered(500, 30, seed=4)
    fitted = PCAProjection.fit(x, 12, True, seed=0)
    whole = fitted.transform(x)
    monkeypatch.setattr(pca_module, "TRANSFORM_BLOCK", 7)
    blocked = fitted.transform(x)
    rows = np.concatenate([fitted.transform(x[i:i + 1]) for i in range(len(x))])
    assert blocked.dtype == np.float32 and blocked.shape == (500, 12) and blocked.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(blocked, whole)
    np.testing.assert_array_equal(blocked, rows)
    assert fitted.transform(x[:0]).shape == (0, 12)


def test_pca_fit_on_a_seeded_sample_of_large_inputs(monkeypatch) -> None:
    """Above MAX_FIT_ROWS rows the PCA is fitted on a random sample drawn with the seed (the memory of sklearn's
    float64 copies stops growing with the catalogue): the same seed gives the same projection, and the sample's
    components span the full fit's subspace."""
    from semrec.tokenizers import pca as pca_module

    x = clustered(4000, 30, seed=4)
    full = PCAProjection.fit(x, 8, False, seed=0)
    monkeypatch.setattr(pca_module, "MAX_FIT_ROWS", 1000)
    sampled = PCAProjection.fit(x, 8, False, seed=0)
    np.testing.assert_array_equal(PCAProjection.fit(x, 8, False, seed=0).components, sampled.components)
    assert not np.array_equal(PCAProjection.fit(x, 8, False, seed=1).components, sampled.components)
    assert not np.array_equal(sampled.components, full.components)  # a sample, not all 4000 rows
    # principal angles between the two 8-d subspaces: the sample's leading directions are the full fit's
    cosines = np.linalg.svd(full.components @ sampled.components.T, compute_uv=False)
    assert cosines.min() > 0.95


def test_pq_pca_dim_clamped_to_small_views(views: dict[str, np.ndarray]) -> None:
    small = {v: views[v][:, :10].copy() for v in VIEWS5}
    tok = PQTokenizer(views=VIEWS5, pca_dim=128, codes_per_view=4, nbits=4)
    tok.fit(small)
    assert tok.pca_dim_used == 8  # min(128, 699, 10) rounded down to a multiple of 4
    assert tok.transform(small)["title"].shape == (700, 8)
    assert tok.encode(small).shape == (700, 20)


# ---------------------------------------------------------------------------------------------------- OPQ


def _invlist_codes(index) -> np.ndarray:
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    size = invlists.list_size(0)
    return faiss.rev_swig_ptr(invlists.get_codes(0), size * invlists.code_size).reshape(size, -1).copy()


@pytest.mark.parametrize(("M", "nbits", "polysemous"), [(8, 5, False), (2, 8, True), (4, 8, False)])
def test_opq_codes_equal_faiss_index_for_cold_items(M: int, nbits: int, polysemous: bool, views) -> None:
    fit_rows = np.arange(500)
    tok = OPQTokenizer(view="all", M=M, nbits=nbits, niter=6, polysemous=polysemous)
    tok.fit(views, fit_rows=fit_rows, seed=0)
    codes = tok.encode(views)
    assert codes.shape == (700, M)
    index = faiss.clone_index(tok.index)
    assert index.ntotal == 0
    assert faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training == polysemous
    index.add(views["all"])  # includes the 200 cold rows the quantiser never saw
    assert np.array_equal(codes, unpack_codes(_invlist_codes(index), M, nbits))
    # the spec's encoding maths: y = A x - c, then a squared-L2 argmin per chunk
    arrays = tok.quantiser_arrays()
    y = views["all"] @ arrays["rotation"].T - arrays["coarse_centroid"]
    cents = arrays["pq_centroids"]
    chunks = y.reshape(len(y), M, -1)
    dist = ((chunks[:, :, None, :] - cents[None]) ** 2).sum(-1)
    agree = (dist.argmin(-1) == codes).mean()
    assert agree > 0.999  # float32 rounding may flip a near-tie
    assert np.linalg.norm(arrays["coarse_centroid"]) == pytest.approx(1.0, abs=1e-4)  # spherical k-means


def test_opq_rejects_dim_not_multiple_of_m(views: dict[str, np.ndarray]) -> None:
    with pytest.raises(SemrecError, match="multiple of M=7"):
        OPQTokenizer(view="all", M=7, nbits=4).fit(views)


# ---------------------------------------------------------------------------------------------------- RQ / k-means


def test_rq_layout_and_unpacking(views: dict[str, np.ndarray]) -> None:
    tok = RQTokenizer(views=["title", "brand", "features"], mode="per_view", levels=3, nbits=5, pca_dim=12)
    tok.fit(views, seed=0)
    codes = tok.encode(views)
    assert codes.shape == (700, 9)
    assert tok.layout == {"title": [0, 1, 2], "brand": [3, 4, 5], "features": [6, 7, 8]}
    # rebuild the title reconstruction from the unpacked codes and the codebooks
    rq = tok.indexes[0].rq
    books = faiss.vector_to_array(rq.codebooks).reshape(3, 32, 12)
    x_title = tok.transform(views)["title"]
    ours = sum(books[level][codes[:, level]] for level in range(3))
    np.testing.assert_allclose(ours, rq.decode(rq.compute_codes(x_title)), rtol=1e-5, atol=1e-5)


def test_rq_joint_mode(views: dict[str, np.ndarray]) -> None:
    tok = RQTokenizer(views=["title", "brand"], mode="joint", levels=4, nbits=4)
    tok.fit(views)
    assert tok.encode(views).shape == (700, 4)
    assert tok.layout == {}
    assert tok.indexes[0].d == 80


def test_kmeans_assigns_nearest_centroid(views: dict[str, np.ndarray]) -> None:
    tok = KMeansTokenizer(views=["title", "brand"], k=16, normalize=False)
    tok.fit(views, seed=0)
    codes = tok.encode(views)
    x = np.concatenate([views["title"], views["brand"]], axis=1)
    dist = ((x[:, None, :] - tok.centroids[None]) ** 2).sum(-1)
    assert codes.shape == (700, 1)
    assert (codes[:, 0] == dist.argmin(1)).mean() > 0.999


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [
        ("pq", dict(nbits=2), dict(nbits=6)),
        ("opq", dict(nbits=2), dict(nbits=6)),
        ("rq", dict(levels=1), dict(levels=4)),
        ("kmeans", dict(k=4), dict(k=64)),
    ],
)
def test_reconstruction_error_lower_with_more_bits(kind: str, low: dict, high: dict, views) -> None:
    errors = []
    for extra in (low, high):
        tok = build_tokenizer(kind, **{**SMALL[kind], **extra})
        tok.fit(views, seed=0)
        errors.append(tok.reconstruction_error(views))
    assert 0.0 < errors[1] < errors[0] <= 1.5


# ---------------------------------------------------------------------------------------------------- report / dedup


class _Stub:
    kind = "stub"
    codebook_sizes = [4, 4]
    layout = {"v": [0, 1]}
    dedup = False


def test_code_report_on_hand_made_codes() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 1], [1, 2], [1, 2], [2, 3]])
    rep = code_report(_Stub(), codes)
    assert rep.n_items == 6 and rep.n_levels == 2 and rep.codebook_sizes == [4, 4]
    assert rep.collision_rate == pytest.approx(5 / 6)
    assert rep.max_collision_group == 3
    assert rep.utilisation == [0.75, 0.75]
    p = np.array([3, 2, 1]) / 6
    assert rep.perplexity[0] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert rep.reconstruction_error is None and rep.layout == {"v": [0, 1]}
    unique = code_report(_Stub(), np.array([[0, 0], [1, 1], [2, 2], [3, 3]]))
    assert unique.collision_rate == 0.0 and unique.max_collision_group == 1
    assert unique.perplexity == [pytest.approx(4.0), pytest.approx(4.0)]
    with pytest.raises(SemrecError, match="outside"):
        code_report(_Stub(), np.array([[0, 4]]))


def test_code_report_of_a_tokenizer(views: dict[str, np.ndarray]) -> None:
    tok = build_tokenizer("pq", **SMALL["pq"])
    tok.fit(views)
    rep = code_report(tok, tok.encode(views), views)
    assert rep.tokenizer == "pq" and rep.n_levels == 20 and rep.layout == tok.layout
    assert rep.reconstruction_error == pytest.approx(tok.reconstruction_error(views))
    assert all(0 < u <= 1 for u in rep.utilisation)


def test_add_dedup_level_and_next_digit() -> None:
    codes = np.array([[3, 1], [0, 2], [3, 1], [3, 1], [0, 2], [5, 5]])
    with_dedup, size = add_dedup_level(codes)
    assert size == 3
    assert with_dedup[:, -1].tolist() == [0, 0, 1, 2, 1, 0]
    assert np.array_equal(with_dedup[:, :-1], codes)
    assert len({tuple(r) for r in with_dedup.tolist()}) == 6
    new = np.array([[3, 1], [9, 9], [0, 2], [3, 1]])
    assert next_dedup_digits(with_dedup, new).tolist() == [3, 0, 2, 4]


def test_dedup_digits_one_rule_with_remembered_items() -> None:
    """The one dedup rule (semrec.tokenizers.dedup.DedupDigits): a remembered item (same key and base code)
    gets its code back, the k-th twin of a call the k-th remembered code; new items the next free digit of
    their group, in row order; a digit beyond the level's size raises naming the row."""
    from semrec.tokenizers.dedup import DedupDigits

    fit = np.array([[3, 1, 0], [3, 1, 1], [0, 2, 0], [3, 1, 2]])
    keys = [b"a", b"b", b"c", b"b"]
    rule = DedupDigits(fit, keys)
    base = np.array([[3, 1], [3, 1], [3, 1], [0, 2], [3, 1], [7, 7], [0, 2]])
    call = [b"b", b"b", b"b", b"c", b"x", b"y", b"a"]  # 'a' with another base code than remembered: new
    assert rule.digits(base, call).tolist() == [1, 2, 3, 0, 4, 0, 1]
    assert rule.digits(base).tolist() == [3, 4, 5, 1, 6, 0, 2]  # without keys every item is new
    assert rule.digits(base, call, size=5).tolist() == [1, 2, 3, 0, 4, 0, 1]
    with pytest.raises(SemrecError) as err:
        rule.digits(base, call, size=4)
    assert str(err.value) == ("row 4: 5 items share the code [3, 1], but the dedup level has only 4 values; "
                              "refit with a larger dedup_size")
    assert add_dedup_level(np.zeros((0, 2), dtype=np.int64))[1] == 1
    assert add_dedup_level(np.zeros((3, 0), dtype=np.int64))[0].tolist() == [[0], [1], [2]]


def test_tokenizer_dedup_level(views: dict[str, np.ndarray]) -> None:
    tok = KMeansTokenizer(views=["title"], k=8, dedup=True)
    fit_rows = np.arange(600)
    tok.fit(views, fit_rows=fit_rows, seed=0)
    assert tok.n_levels == 2
    codes = tok.encode(views)
    assert len({tuple(r) for r in codes.tolist()}) == 700  # every item unique
    assert np.array_equal(codes[:600], tok.fit_codes)  # fit items keep their fit codes
    base_counts = np.bincount(codes[:, 0], minlength=8)
    assert tok.codebook_sizes == [8, int(base_counts.max())]
    # new items alone: next free digit of their collision group, after the fit items
    new = {"title": views["title"][600:]}
    new_codes = tok.encode(new)
    assert np.array_equal(new_codes[:, 1], next_dedup_digits(tok.fit_codes, new_codes[:, :1]))
    assert np.array_equal(new_codes, codes[600:])
    # a new item with the same vector as fit item 0 (in a call without item 0) gets the next digit
    twin = tok.encode({"title": views["title"][[0, 0]]})
    group = codes[0, 0]
    n_fit_in_group = int((tok.fit_codes[:, 0] == group).sum())
    assert twin.tolist() == [codes[0].tolist(), [group, n_fit_in_group]]


def test_dedup_overflow_raises(views: dict[str, np.ndarray]) -> None:
    tok = KMeansTokenizer(views=["title"], k=4, dedup=True)
    fit_view = {"title": views["title"][:300]}
    tok.fit(fit_view, seed=0)
    biggest = int(np.bincount(tok.fit_codes[:, 0]).argmax())
    member = np.flatnonzero(tok.fit_codes[:, 0] == biggest)[0]
    extra = {"title": views["title"][[member]] + 1e-3}
    with pytest.raises(SemrecError, match="dedup_size"):
        tok.encode(extra)
    roomy = KMeansTokenizer(views=["title"], k=4, dedup=True, dedup_size=400)
    roomy.fit(fit_view, seed=0)
    assert roomy.encode(extra)[0].tolist() == [biggest, int((roomy.fit_codes[:, 0] == biggest).sum())]


# ---------------------------------------------------------------------------------------------------- errors


def test_too_few_items_raises_with_hint(views: dict[str, np.ndarray]) -> None:
    few = {k: v[:100] for k, v in views.items()}
    with pytest.raises(SemrecError, match=r"at least 256 training items.*nbits=6"):
        OPQTokenizer(view="all", M=8, nbits=8).fit(few)
    with pytest.raises(SemrecError, match="at least 256"):
        PQTokenizer(views=VIEWS5, pca_dim=16, nbits=8).fit(few)
    with pytest.raises(SemrecError, match="at least 256"):
        RQTokenizer(views=["title"], nbits=8).fit(few)
    with pytest.raises(SemrecError, match="smaller k"):
        KMeansTokenizer(views=["title"], k=256).fit(few)


def test_missing_view_raises(views: dict[str, np.ndarray]) -> None:
    tok = PQTokenizer(views=[*VIEWS5, "reviews"], pca_dim=16, nbits=4)
    with pytest.raises(SemrecError, match=r"missing.*reviews"):
        tok.fit(views)


def test_wrong_dim_at_encode_raises(views: dict[str, np.ndarray]) -> None:
    tok = build_tokenizer("opq", **SMALL["opq"])
    tok.fit(views)
    with pytest.raises(SemrecError, match="has dim 16, but the tokenizer was fitted on dim 32"):
        tok.encode({"all": views["all"][:, :16]})


def test_unknown_kind_and_param_raise() -> None:
    with pytest.raises(SemrecError, match=r"unknown tokenizer kind 'lsh'.*pq, opq, rq, kmeans"):
        build_tokenizer("lsh")
    with pytest.raises(SemrecError, match="unknown parameter 'n_bits'"):
        build_tokenizer("pq", n_bits=8)


def test_other_bad_inputs_raise(views: dict[str, np.ndarray], tmp_path) -> None:
    with pytest.raises(SemrecError, match="not fitted"):
        PQTokenizer().encode(views)
    with pytest.raises(SemrecError, match="multiple of codes_per_view"):
        PQTokenizer(pca_dim=10, codes_per_view=4)
    with pytest.raises(SemrecError, match="nbits"):
        PQTokenizer(nbits=0)
    with pytest.raises(SemrecError, match="unknown RQ mode"):
        RQTokenizer(mode="stacked")
    bad = {"all": views["all"].copy()}
    bad["all"][3, 2] = np.nan
    with pytest.raises(SemrecError, match="NaN"):
        build_tokenizer("opq", **SMALL["opq"]).fit(bad)
    with pytest.raises(SemrecError, match="fit_rows must lie"):
        build_tokenizer("opq", **SMALL["opq"]).fit(views, fit_rows=np.array([0, 700]))
    with pytest.raises(SemrecError, match="duplicate"):
        build_tokenizer("opq", **SMALL["opq"]).fit(views, fit_rows=np.array([0, 1, 1]))
    with pytest.raises(SemrecError, match="row-aligned"):
        build_tokenizer("kmeans", **SMALL["kmeans"]).fit({"title": views["title"], "brand": views["brand"][:5]})
    with pytest.raises(SemrecError, match="no tokenizer found"):
        load_tokenizer(tmp_path / "nothing")


def test_failed_fit_leaves_tokenizer_unfitted(views: dict[str, np.ndarray]) -> None:
    tok = KMeansTokenizer(views=["title"], k=8, dedup=True, dedup_size=1)
    with pytest.raises(SemrecError, match="dedup_size=1 is too small"):
        tok.fit(views)
    assert not tok.is_fitted


def test_threads_setting_is_restored(views: dict[str, np.ndarray]) -> None:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)
    try:
        tok = build_tokenizer("kmeans", threads=1, **SMALL["kmeans"])
        tok.fit(views)
        tok.encode(views)
        assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(before)


def test_opq_refuses_fewer_training_items_than_dims() -> None:
    # faiss aborts the whole process (double free) on this input; semrec must raise a clear error first
    x = np.random.default_rng(0).standard_normal((300, 384)).astype("float32")
    with pytest.raises(SemrecError, match="at least as many training items as vector dims"):
        build_tokenizer("opq", M=8, nbits=6).fit({"all": x})


@pytest.mark.parametrize("kind", ["pq", "opq"])
def test_saved_tokenizer_loads_without_faiss(kind: str, views: dict[str, np.ndarray], tmp_path) -> None:
    """A machine without faiss (a GPU box that only trains) still loads saved codes, layouts and the PCA
    projections; fitting or encoding there fails with a clear message, not an ImportError at import time."""
    import subprocess
    import sys

    tok = build_tokenizer(kind, **SMALL[kind])
    tok.fit(views, fit_rows=np.arange(0, 700, 2), seed=1)
    tok.save(tmp_path / "tok")
    np.savez(tmp_path / "views.npz", **views)
    expected = tok.transform(views) if kind == "pq" else None
    if expected is not None:
        np.savez(tmp_path / "expected.npz", **expected)
    script = f"""
import sys
sys.modules["faiss"] = None  # any 'import faiss' now raises ImportError
import numpy as np
from semrec.errors import SemrecError
from semrec.tokenizers import build_tokenizer, load_tokenizer
tok = load_tokenizer({str(tmp_path / "tok")!r})
assert tok.codebook_sizes == {tok.codebook_sizes!r}
views = dict(np.load({str(tmp_path / "views.npz")!r}))
if {kind!r} == "pq":
    out, ref = tok.transform(views), np.load({str(tmp_path / "expected.npz")!r})
    assert all(np.array_equal(out[v], ref[v]) for v in ref.files)
for action in (lambda: tok.encode(views), lambda: build_tokenizer({kind!r}, **{SMALL[kind]!r}).fit(views)):
    try:
        action()
    except SemrecError as exc:
        assert "faiss is not installed" in str(exc), exc
    else:
        raise AssertionError("no error without faiss")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ------------------------------------------------------------------------- identical inputs, identical codes


def degenerate_views(n: int, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """LC-Rec-like views: 'brand' is one vector for every item (all brands empty), 'categories' holds three
    distinct vectors, 'title' and 'all' are distinct per item; items 1-3 are copies of item 0 in every view."""
    rng = np.random.default_rng(seed)

    def unit(rows: int) -> np.ndarray:
        x = rng.standard_normal((rows, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    categories = np.where(np.arange(n) < 4, 0, np.arange(n) % 3)
    out = {"brand": np.repeat(unit(1), n, axis=0), "categories": unit(3)[categories]}
    for name in ("title", "all"):
        x = unit(n)
        x[1:4] = x[0]
        out[name] = x
    return out


DEGENERATE = {
    "pq": dict(views=["title", "brand", "categories"], pca_dim=8, codes_per_view=2, nbits=3),
    "opq": dict(view="all", M=4, nbits=3, niter=4, polysemous=False),
    "rq": dict(views=["title", "brand", "categories"], levels=2, nbits=3, pca_dim=6, whiten=True),
    "rq-raw": dict(views=["title", "brand", "categories"], levels=2, nbits=3),
    "kmeans": dict(views=["title", "brand"], k=8),
}


def _same_vectors(views: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Group id of each row by its exact vectors in ``names``."""
    joined = np.concatenate([views[v] for v in names], axis=1)
    return np.unique(joined, axis=0, return_inverse=True)[1].reshape(-1)


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("dim", [16, 384])
def test_identical_vectors_give_identical_codes(case: str, dim: int) -> None:
    """Issue 16 case 3: bitwise identical input vectors get identical codes, at fit time, encoded alone (cold
    start) and in any batch; per-view slots of a view that never varies are one code for every item."""
    views = degenerate_views(40, dim)
    tok = build_tokenizer(case.split("-")[0], dedup=False, **DEGENERATE[case])  # the base codes (auto: digit)
    if case == "opq" and dim > 40:
        views = {k: v[:, :32] for k, v in views.items()}  # OPQ needs at least as many items as dims
    tok.fit(views, seed=0)
    codes = tok.fit_codes
    group = _same_vectors(views, tok.input_views)
    for g in np.unique(group):
        assert (codes[group == g] == codes[group == g][0]).all(), (g, codes[group == g])
    for view, slots in tok.layout.items():
        for g in np.unique(_same_vectors(views, [view])):
            rows = _same_vectors(views, [view]) == g
            assert (codes[rows][:, slots] == codes[rows][0, slots]).all(), view
    if tok.layout:
        assert len({tuple(r) for r in codes[:, tok.layout["brand"]].tolist()}) == 1
    alone = np.concatenate([tok.encode({k: v[i:i + 1] for k, v in views.items()}) for i in range(40)])
    assert np.array_equal(alone, codes)
    order = np.random.default_rng(1).permutation(40)[:17]
    assert np.array_equal(tok.encode({k: v[order] for k, v in views.items()}), codes[order])


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_dedup_digit_of_identical_vectors(case: str) -> None:
    """With the dedup level, items with identical vectors share their base code and get digits 0, 1, 2, ...;
    the fit items encoded in any batch keep their fit codes, and a copy encoded alone gets the first one's."""
    views = degenerate_views(40, 16)
    tok = build_tokenizer(case.split("-")[0], dedup=True, **DEGENERATE[case])
    tok.fit(views, seed=0)
    codes = tok.fit_codes
    assert len({tuple(r) for r in codes.tolist()}) == 40
    twins = codes[:4]  # items 0-3 have identical vectors in every view
    assert (twins[:, :-1] == twins[0, :-1]).all() and len(set(twins[:, -1].tolist())) == 4
    assert np.array_equal(tok.encode(views), codes)
    reverse = np.arange(40)[::-1]
    assert np.array_equal(tok.encode({k: v[reverse] for k, v in views.items()})[:, :-1], codes[reverse, :-1])
    for i in range(4):
        assert tok.encode({k: v[i:i + 1] for k, v in views.items()}).tolist() == [codes[0].tolist()]
    for i in range(4, 40):
        assert tok.encode({k: v[i:i + 1] for k, v in views.items()}).tolist() == [codes[i].tolist()]


def test_pca_zeroes_directions_without_variance() -> None:
    rng = np.random.default_rng(0)
    same = np.repeat(rng.standard_normal((1, 384)).astype(np.float32), 10, axis=0)
    pca = PCAProjection.fit(same, 8, whiten=True, seed=0)
    assert pca.live_dims == 0
    assert np.array_equal(pca.transform(same), np.zeros((10, 8), dtype=np.float32))
    three = rng.standard_normal((3, 384)).astype(np.float32)[np.arange(30) % 3]
    pca = PCAProjection.fit(three, 8, whiten=True, seed=0)
    assert pca.live_dims == 2  # three distinct points span a plane
    out = pca.transform(three)
    assert not out[:, 2:].any() and np.allclose(out[:, :2].std(axis=0), 1.0, atol=0.05)
    assert np.array_equal(out[0], out[3]) and np.array_equal(out[0], out[27])


def test_pca_projects_each_row_on_its_own() -> None:
    x = clustered(300, 64, seed=6)
    pca = PCAProjection.fit(x, 32, whiten=True, seed=0)
    batch = pca.transform(x)
    alone = np.concatenate([pca.transform(x[i:i + 1]) for i in range(300)])
    assert np.array_equal(batch, alone)
    assert np.array_equal(pca.transform(x[::-1])[::-1], batch)


def test_pq_ten_items_with_one_empty_brand_issue_case() -> None:
    """The reported case: ten LC-Rec items, brand '' for all (one MiniLM-sized vector repeated), PQ with
    nbits=2: every item gets the same brand codes, also when one item is encoded alone."""
    views = degenerate_views(10, 384, seed=3)
    tok = PQTokenizer(views=["title", "brand", "categories"], nbits=2, dedup=False)  # the base codes
    tok.fit(views, seed=0)
    assert tok.pca_dim_used == 8
    brand = tok.fit_codes[:, tok.layout["brand"]]
    assert brand.tolist() == [[0, 0, 0, 0]] * 10  # the all-zero projection falls in the first centroid
    for i in range(10):
        assert np.array_equal(tok.encode({k: v[i:i + 1] for k, v in views.items()})[0], tok.fit_codes[i])
    notes = "\n".join(tok.notes)
    assert "pca_dim clamped from 128 to 8" in notes
    assert "view 'brand' varies in only 0 of its 8 PCA directions over the 10 fit items (1 distinct vector(s))" \
        in notes
    assert "view 'categories' varies in only 2 of its 8 PCA directions" in notes


# ---------------------------------------------------------------------------------------- small catalogues


@pytest.mark.parametrize(("n", "dim", "nbits"), [(12, 384, 2), (40, 64, 5)])
def test_rq_with_fewer_items_than_dims_trains_with_plain_kmeans(n: int, dim: int, nbits: int, tmp_path) -> None:
    """Issue 16 case 4: faiss's progressive-dimension training raised 'PCA matrix cannot output 384 dimensions
    from 384' below as many items as dims; RQ now trains each level with plain k-means there, and says so."""
    x = clustered(n, dim, seed=2)
    tok = RQTokenizer(views=["all"], levels=3, nbits=nbits)
    tok.fit({"all": x}, seed=0)
    assert tok.notes == [
        f"RQ: {n} fit items are fewer than the input dims of all ({dim} dims): trained with plain k-means per "
        "level instead of faiss's progressive-dimension k-means (which needs at least as many items as dims); "
        f"set pca_dim below {n} to keep it"]
    codes = tok.encode({"all": x})
    assert codes.shape == (n, 3) and codes.max() < 2**nbits
    assert tok.reconstruction_error({"all": x}) < 1.0
    report = code_report(tok, codes, {"all": x})
    shared = report.collision_rate > 0.05  # then the report adds its collision warning after the fit notes
    assert report.notes[:len(tok.notes)] == tok.notes and len(report.notes) == len(tok.notes) + shared
    tok.save(tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok").notes == tok.notes
    with_pca = RQTokenizer(views=["all"], levels=3, nbits=nbits, pca_dim=n - 1)
    with_pca.fit({"all": x}, seed=0)
    assert not any("plain k-means" in note for note in with_pca.notes)


def test_small_catalogue_refusals_name_the_parameter_and_the_fix() -> None:
    """Every tokenizer/parameter combination that faiss cannot fit on a small catalogue is a SemrecError
    naming the parameter and the fix (or a noted clamp, tested above)."""
    x = {v: clustered(12, 384, seed=i) for i, v in enumerate(["title", "brand", "all"])}
    hint = r"use a smaller nbits \(nbits=3 needs 8 items\) or provide more training items"
    with pytest.raises(SemrecError, match=r"PQ with nbits=8 needs at least 256 training items .* got 12; " + hint):
        PQTokenizer(views=["title", "brand"]).fit(x)
    with pytest.raises(SemrecError, match=r"RQ with nbits=8 needs at least 256 .* got 12; " + hint):
        RQTokenizer(views=["title"]).fit(x)
    with pytest.raises(SemrecError, match=r"OPQ with nbits=4 needs at least 16 .* got 12; " + hint):
        OPQTokenizer(view="all", M=8, nbits=4).fit({"all": x["all"][:, :8]})
    with pytest.raises(SemrecError, match=r"k-means with k=20 needs at least 20 .* 12; use a smaller k \(at most 12"):
        KMeansTokenizer(views=["title"], k=20).fit(x)
    with pytest.raises(SemrecError, match=r"OPQ: the view dim 384 is not a multiple of M=7; choose M dividing 384"):
        OPQTokenizer(view="all", M=7, nbits=2).fit(x)
    with pytest.raises(SemrecError, match="OPQ needs at least as many training items as vector dims"):
        OPQTokenizer(view="all", M=8, nbits=2).fit(x)
    with pytest.raises(SemrecError, match=r"PQ: cannot keep 16 PCA dims per view \(12 fit items"):
        PQTokenizer(views=["title"], pca_dim=16, codes_per_view=16, nbits=2).fit(x)


def test_relative_error_in_blocks_equals_the_whole_array_formula() -> None:
    """The reconstruction error sums 16,384 rows at a time (bounded float64 temporaries); over more rows than one
    block it is the whole-array formula up to float64 rounding, and 0 for an all-zero input."""
    from semrec.tokenizers.report import relative_error

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40_000, 8)).astype(np.float32)
    x_hat = (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    x64, h64 = x.astype(np.float64), x_hat.astype(np.float64)
    expected = np.square(x64 - h64).sum() / np.square(x64).sum()
    assert relative_error(x, x_hat) == pytest.approx(expected, rel=1e-12)
    assert relative_error(np.zeros((3, 2), np.float32), np.ones((3, 2), np.float32)) == 0.0


def test_rq_trains_on_a_seeded_sample_above_256_items_per_centroid(monkeypatch) -> None:
    """Above MAX_POINTS_PER_CENTROID x 2^nbits fit items the residual quantiser trains on a seeded sample of that
    many (its training memory is n x beam x dims), says so in a note, and still encodes every item; the same seed
    gives the same quantiser, and below the cap nothing is sampled."""
    from semrec.tokenizers import faiss_utils

    monkeypatch.setattr(faiss_utils, "MAX_POINTS_PER_CENTROID", 40)  # 8 centroids x 40 = 320 training rows
    x = {"all": clustered(700, 16, seed=3)}
    tok = RQTokenizer(views=["all"], levels=2, nbits=3)
    tok.fit(x, seed=0)
    assert any("random sample of 320 of the 700 fit items" in note for note in tok.notes)
    codes = tok.encode(x)
    assert codes.shape == (700, 2) and codes.min() >= 0 and codes.max() < 8
    again = RQTokenizer(views=["all"], levels=2, nbits=3)
    again.fit(x, seed=0)
    np.testing.assert_array_equal(again.encode(x), codes)
    small = RQTokenizer(views=["all"], levels=2, nbits=3)
    small.fit({"all": x["all"][:300]}, seed=0)
    assert not any("random sample" in note for note in small.notes)


def test_opq_trains_on_a_seeded_sample_above_256_items_per_centroid(monkeypatch) -> None:
    """OPQ likewise: above the cap a seeded sample trains the index (a note says so), every item is encoded, and the
    same seed gives the same codes."""
    from semrec.tokenizers import faiss_utils

    monkeypatch.setattr(faiss_utils, "MAX_POINTS_PER_CENTROID", 20)  # 16 centroids x 20 = 320 training rows
    x = {"all": clustered(700, 32, seed=3)}
    tok = OPQTokenizer(M=4, nbits=4, niter=2, polysemous=False)
    tok.fit(x, seed=0)
    assert any("random sample of 320 of the 700 fit items" in note for note in tok.notes)
    codes = tok.encode(x)
    assert codes.shape == (700, 4) and codes.min() >= 0 and codes.max() < 16
    again = OPQTokenizer(M=4, nbits=4, niter=2, polysemous=False)
    again.fit(x, seed=0)
    np.testing.assert_array_equal(again.encode(x), codes)


def test_pq_trains_its_codebooks_on_a_seeded_sample_above_256_items_per_centroid(monkeypatch) -> None:
    """PQ likewise: above the cap the codebooks train on a seeded sample (a note says so), every item is encoded,
    and the same seed gives the same codes."""
    from semrec.tokenizers import faiss_utils

    monkeypatch.setattr(faiss_utils, "MAX_POINTS_PER_CENTROID", 20)  # 16 centroids x 20 = 320 training rows
    x = {"all": clustered(700, 32, seed=3)}
    tok = PQTokenizer(views=["all"], pca_dim=16, codes_per_view=4, nbits=4)
    tok.fit(x, seed=0)
    assert any("random sample of 320 of the 700 fit items" in note for note in tok.notes)
    codes = tok.encode(x)  # 4 PQ codes (+ the dedup digit when too many items collide)
    assert codes.shape[0] == 700 and codes[:, :4].min() >= 0 and codes[:, :4].max() < 16
    again = PQTokenizer(views=["all"], pca_dim=16, codes_per_view=4, nbits=4)
    again.fit(x, seed=0)
    np.testing.assert_array_equal(again.encode(x), codes)


def test_row_keys_in_blocks_hash_every_row_as_one_at_a_time() -> None:
    """row_keys hashes 16,384 rows at a time (no float32 copy of a whole view): over more rows than one block each
    key is the row's own hash, -0.0 counts as 0.0, and a row repeated across blocks gets the same key."""
    import hashlib

    from semrec.tokenizers.dedup import row_keys

    x = np.random.default_rng(0).standard_normal((20_000, 4)).astype(np.float32)
    x[19_999] = x[3]
    x[17_000] = -0.0
    x[5] = 0.0
    keys = row_keys({"v": x}, ["v"])
    assert len(keys) == 20_000
    assert keys[19_999] == keys[3] and keys[17_000] == keys[5]
    assert keys[12_345] == hashlib.blake2b((x[12_345] + np.float32(0.0)).tobytes(), digest_size=16).digest()
    assert len(set(keys)) == 20_000 - 2
