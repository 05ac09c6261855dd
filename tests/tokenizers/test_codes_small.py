"""`semrec codes` on a small LC-Rec catalogue whose brands are all empty (issue 16, cases 3 and 4).

The embeddings are made up (no PLM): like the text encoder, which encodes each distinct text once, every
item's empty brand gets one and the same vector, and the three distinct category texts three vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from semrec.cli import app
from semrec.io import read_json
from semrec.text.encode import DEFAULT_MODEL, embeddings_dir
from semrec.tokenizers import load_tokenizer
from tests.support import _one_line_error, embed_vectors, lcrec

runner = CliRunner()
N_ITEMS = 12


def _unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """12 LC-Rec items, brand '' for all; MiniLM-sized (384-d) made-up embeddings of every view."""
    root = tmp_path_factory.mktemp("small")
    inter = {str(u): [(u + k) % N_ITEMS for k in range(4)] for u in range(N_ITEMS)}
    items = {str(i): {"title": f"Item {i}", "brand": "", "categories": f"Cat{i % 3}", "description": f"about {i}"}
             for i in range(N_ITEMS)}
    lcrec(root / "src", json.dumps(inter), json.dumps(items))
    result = runner.invoke(app, ["prepare", str(root / "src"), "-o", str(root / "ds")])
    assert result.exit_code == 0, result.output
    ds = root / "ds"
    rng = np.random.default_rng(0)
    n = N_ITEMS
    category = np.array([int(raw) % 3 for raw in _raw_ids(ds)])
    matrices = {"title": _unit(rng, n, 384), "brand": np.repeat(_unit(rng, 1, 384), n, axis=0),
                "categories": _unit(rng, 3, 384)[category], "description": _unit(rng, n, 384),
                "all": _unit(rng, n, 384)}
    embed_vectors(ds, matrices, "tests.codes_small")
    return ds


def _raw_ids(ds: Path) -> list[str]:
    from semrec.data.dataset import CanonicalDataset

    return CanonicalDataset.load(ds).items["raw_id"].tolist()


def _views(ds: Path) -> dict[str, np.ndarray]:
    out = embeddings_dir(ds, DEFAULT_MODEL)
    manifest = read_json(out / "embeddings.json")
    return {v: np.load(out / e["file"])[1:] for v, e in manifest["views"].items()}


def test_pq_empty_brand_gives_one_brand_code(dataset: Path) -> None:
    """Case 3: every item's brand vector is the same, so every item gets the same brand codes, also when one
    item is encoded alone with the saved tokenizer (cold start); the report says which views do not vary."""
    result = runner.invoke(app, ["codes", str(dataset), "-p", "nbits=2", "--name", "pq2"])
    assert result.exit_code == 0, result.output
    folder = dataset / "codes" / "pq2"
    codes = np.load(folder / "codes.npy")[1:]
    tok = load_tokenizer(folder / "tokenizer")
    assert tok.layout["brand"] == [4, 5, 6, 7]
    assert codes[:, 4:8].tolist() == [[0, 0, 0, 0]] * N_ITEMS
    category = np.array([int(raw) % 3 for raw in _raw_ids(dataset)])
    for c in range(3):  # one code per distinct category text
        assert len({tuple(r) for r in codes[category == c][:, 8:12].tolist()}) == 1
    views = _views(dataset)
    for i in range(N_ITEMS):
        assert np.array_equal(tok.encode({v: views[v][i:i + 1] for v in tok.input_views})[0], codes[i])
    notes = read_json(folder / "report.json")["notes"]
    assert notes == [
        "PQ: pca_dim clamped from 128 to 8 (12 fit items, smallest view dim 384; at most fit items - 1, "
        "a multiple of codes_per_view=4)",
        "PQ: view 'brand' varies in only 0 of its 8 PCA directions over the 12 fit items (1 distinct vector(s)); "
        "the other 8 are set to 0, the same for every item",
        "PQ: view 'categories' varies in only 2 of its 8 PCA directions over the 12 fit items "
        "(3 distinct vector(s)); the other 6 are set to 0, the same for every item",
    ]
    assert f"note          {notes[0]}" in result.output and f"              {notes[2]}" in result.output
    assert read_json(folder / "tokenizer" / "tokenizer.json")["fitted"]["pca_live_dims"] == {
        "title": 8, "brand": 0, "categories": 2, "description": 8}


def test_rq_on_twelve_items(dataset: Path) -> None:
    """Case 4: `codes -t rq -p nbits=2` on 12 items raised faiss's 'PCA matrix cannot output 384 dimensions
    from 384'; it now trains, and the report says how."""
    result = runner.invoke(app, ["codes", str(dataset), "-t", "rq", "-p", "nbits=2", "--name", "rq2"])
    assert result.exit_code == 0, result.output
    note = ("RQ: 12 fit items are fewer than the input dims of title (384 dims), brand (384 dims), categories "
            "(384 dims), description (384 dims): trained with plain k-means per level instead of faiss's "
            "progressive-dimension k-means (which needs at least as many items as dims); set pca_dim below 12 "
            "to keep it")
    assert f"note          {note}" in result.output
    folder = dataset / "codes" / "rq2"
    assert read_json(folder / "report.json")["notes"] == [note]
    codes = np.load(folder / "codes.npy")[1:]
    assert codes.shape == (N_ITEMS, 16) and codes.max() <= 3
    assert len({tuple(r) for r in codes[:, 4:8].tolist()}) == 1  # one brand code for all
    result = runner.invoke(app, ["codes", str(dataset), "-t", "rq", "-p", "nbits=2", "-p", "pca_dim=8",
                                 "--name", "rq2pca"])
    assert result.exit_code == 0, result.output
    assert "plain k-means" not in result.output


@pytest.mark.parametrize(("args", "expected"), [
    (["-t", "rq", "-p", "nbits=8"], "RQ with nbits=8 needs at least 256 training items for 256 centroids, got 12; "
                                    "use a smaller nbits (nbits=3 needs 8 items) or provide more training items"),
    (["-t", "pq"], "PQ with nbits=8 needs at least 256 training items for 256 centroids, got 12; "
                   "use a smaller nbits (nbits=3 needs 8 items) or provide more training items"),
    (["-t", "kmeans"], "k-means with k=256 needs at least 256 training items for 256 centroids, got 12; "
                       "use a smaller k (at most 12)"),
    (["-t", "opq", "-p", "M=7", "-p", "nbits=2"],
     "OPQ: the view dim 384 is not a multiple of M=7; choose M dividing 384"),
    (["-t", "opq", "-p", "M=8", "-p", "nbits=2", "--fit-on", "all"],
     "OPQ needs at least as many training items as vector dims (384); got 12. Use a smaller embedding (PCA), "
     "more training items, or the 'pq' tokenizer"),
    (["-t", "pq", "-p", "nbits=2", "-p", "codes_per_view=16", "-p", "pca_dim=16"],
     "PQ: cannot keep 16 PCA dims per view (12 fit items, smallest view dim 384); use fewer codes_per_view"),
])
def test_small_catalogue_refusals(dataset: Path, args: list[str], expected: str) -> None:
    """Case 4's siblings: what no clamp can fix is one line naming the parameter and the fix."""
    assert _one_line_error(runner.invoke(app, ["codes", str(dataset), *args])) == f"error: {expected}"


def test_pipeline_defaults_come_from_the_tokenizer_class(dataset: Path, monkeypatch) -> None:
    """Which items a tokenizer fits on by default and whether it takes the dataset's views are class attributes
    of the tokenizer (no per-kind table in the pipeline): VQ-Rec's opq fits on training items, pq and rq read
    every view of the dataset."""
    from semrec.data.dataset import CanonicalDataset
    from semrec.tokenizers import TOKENIZERS, KMeansTokenizer

    assert {k: c.default_fit_on for k, c in TOKENIZERS.items()} == {
        "pq": "all", "opq": "train", "rq": "all", "kmeans": "all"}
    assert sorted(k for k, c in TOKENIZERS.items() if c.views_from_dataset) == ["pq", "rq"]
    result = runner.invoke(app, ["codes", str(dataset), "-t", "kmeans", "-p", "k=4", "--name", "km"])
    assert result.exit_code == 0, result.output
    assert read_json(dataset / "codes" / "km" / "codes.json")["fit_on"] == "all"
    assert read_json(dataset / "codes" / "km" / "tokenizer" / "tokenizer.json")["params"]["views"] == ["all"]
    monkeypatch.setattr(KMeansTokenizer, "default_fit_on", "train")
    monkeypatch.setattr(KMeansTokenizer, "views_from_dataset", True)
    result = runner.invoke(app, ["codes", str(dataset), "-t", "kmeans", "-p", "k=4", "--name", "km-train"])
    assert result.exit_code == 0, result.output
    assert read_json(dataset / "codes" / "km-train" / "codes.json")["fit_on"] == "train"
    views = read_json(dataset / "codes" / "km-train" / "tokenizer" / "tokenizer.json")["params"]["views"]
    assert views == CanonicalDataset.load(dataset).views


@pytest.mark.parametrize(("args", "digit", "warned"), [
    ([], False, True),                        # kmeans: no digit by default, the collision warning instead
    (["--dedup"], True, False),
    (["--set", "dedup=auto"], True, False),     # 12 items in 4 clusters: far more than 5% collide
    (["--no-dedup", "--set", "dedup=auto"], True, False),  # --set wins over the flag, as for every other key
])
def test_codes_dedup_setting_from_the_command_line(dataset: Path, args, digit, warned) -> None:
    name = f"km-dedup-{len(args)}-{digit}"
    result = runner.invoke(app, ["codes", str(dataset), "-t", "kmeans", "-p", "k=4", "--name", name, *args])
    assert result.exit_code == 0, result.output
    codes = np.load(dataset / "codes" / name / "codes.npy")[1:]
    assert codes.shape[1] == (2 if digit else 1)
    assert (len({tuple(r) for r in codes.tolist()}) == N_ITEMS) is digit
    assert ("warning: " in result.output) is warned and ("dedup         last level" in result.output) is digit


def test_codes_bad_dedup_setting_is_one_line(dataset: Path) -> None:
    result = runner.invoke(app, ["codes", str(dataset), "-t", "kmeans", "-p", "k=4", "--set", "dedup=sometimes"])
    assert _one_line_error(result) == "error: config 'dedup': expected true/false or 'auto', got 'sometimes'"
