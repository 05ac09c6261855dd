"""embed_dataset with an injected encoder (FunctionEncoder): the files, manifest and cache of the real encoder."""

from __future__ import annotations

import numpy as np
import pytest

from semrec.artifacts import EmbeddingsFolder
from semrec.config import EmbedConfig
from semrec.data.build import build_dataset
from semrec.data.dataset import CanonicalDataset
from semrec.data.sources import load_source
from semrec.errors import SemrecError
from semrec.io import sha256_text
from semrec.text.encode import DEFAULT_MODEL, FunctionEncoder, embed_dataset, embeddings_dir, load_view_embeddings
from tests.support import lcrec

VIEWS = ["title", "brand", "all"]


def _length_vectors(texts: list[str]) -> np.ndarray:
    """Row i = [len(text), 1, 0]: a function of the text alone."""
    return np.array([[len(t), 1.0, 0.0] for t in texts])


@pytest.fixture()
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))  # a cold cache
    build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / "ds")
    return tmp_path / "ds"


def test_function_encoder_writes_the_manifest_of_semrec_embed(dataset, tmp_path):
    encoder = FunctionEncoder(_length_vectors, "length-v1", dim=3)
    manifest = embed_dataset(dataset, EmbedConfig(views=VIEWS), progress=False, encoder=encoder)
    data = CanonicalDataset.load(dataset)
    assert manifest["model"] == DEFAULT_MODEL and manifest["dataset"] == data.name and manifest["dim"] == 3
    assert manifest["n_items"] == data.n_items == 4 and manifest["padding_row"] == 0
    assert list(manifest["views"]) == VIEWS
    for view in VIEWS:
        texts = data.view_texts(view)
        assert manifest["views"][view] == {"file": f"{view}.npy", "key": sha256_text("length-v1", *texts), "dim": 3,
                                           "distinct_texts": len(set(texts)), "cache_hit": False}
    folder = embeddings_dir(dataset)
    assert EmbeddingsFolder(folder).manifest.is_file() and EmbeddingsFolder(folder).settings.is_file()
    matrices = load_view_embeddings(folder)
    for view in VIEWS:
        expected = np.vstack([np.zeros((1, 3)), _length_vectors(data.view_texts(view))]).astype(np.float32)
        assert matrices[view].dtype == np.float32 and np.array_equal(matrices[view], expected)
    # a re-run is current; another folder with the same texts reads the content-hash cache
    again = embed_dataset(dataset, EmbedConfig(views=VIEWS), progress=False, encoder=encoder)
    assert all(v["cache_hit"] for v in again["views"].values())
    build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / "ds2")
    other = embed_dataset(tmp_path / "ds2", EmbedConfig(views=["title"]), progress=False, encoder=encoder)
    assert other["views"]["title"]["cache_hit"] and other["views"]["title"]["key"] == manifest["views"]["title"]["key"]
    # another identity is another key: re-encoded, never served the first function's vectors
    doubled = FunctionEncoder(lambda texts: 2 * _length_vectors(texts), "length-v2", dim=3)
    changed = embed_dataset(dataset, EmbedConfig(views=["title"]), progress=False, encoder=doubled)
    assert not changed["views"]["title"]["cache_hit"]
    assert changed["views"]["title"]["key"] != manifest["views"]["title"]["key"]
    assert np.array_equal(load_view_embeddings(folder, ["title"])["title"], 2 * matrices["title"])


def test_function_encoder_bad_output_and_bad_encoders_are_clear_errors(dataset):
    config = EmbedConfig(views=["title"])
    with pytest.raises(SemrecError, match=r"encoder 'short' returned shape \(4, 2\) for 4 texts; expected \(4, 3\)"):
        embed_dataset(dataset, config, progress=False,
                      encoder=FunctionEncoder(lambda texts: _length_vectors(texts)[:, :2], "short", dim=3))
    with pytest.raises(SemrecError, match=r"encoder 'flat' returned shape \(4,\) for 4 texts; expected \(4, dim\)"):
        embed_dataset(dataset, config, progress=False,
                      encoder=FunctionEncoder(lambda texts: np.ones(len(texts)), "flat"))
    with pytest.raises(SemrecError, match="encoder 'nan' returned non-finite values"):
        embed_dataset(dataset, config, progress=False,
                      encoder=FunctionEncoder(lambda texts: np.full((len(texts), 3), np.nan), "nan"))
    with pytest.raises(TypeError, match="wrap a function texts -> matrix in FunctionEncoder"):
        embed_dataset(dataset, config, progress=False, encoder=_length_vectors)
    with pytest.raises(SemrecError, match="identity must be a non-empty string"):
        FunctionEncoder(_length_vectors, "")
    with pytest.raises(SemrecError, match="dim must be a positive integer"):
        FunctionEncoder(_length_vectors, "x", dim=0)
    assert not EmbeddingsFolder(embeddings_dir(dataset)).manifest.exists()  # nothing written by a failed call
