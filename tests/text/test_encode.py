"""Text encoding with the default offline MiniLM model and the content-hash cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semrec.config import EmbedConfig
from semrec.data.build import build_dataset
from semrec.data.sources import load_source
from semrec.errors import SemrecError
from semrec.text.encode import TextEncoder, embed_dataset, embeddings_dir, load_view_embeddings
from tests.support import lcrec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def test_encode_normalised_and_deduplicated(encoder):
    texts = ["a red lamp", "", "a red lamp", "stainless steel staples, 1000 count"]
    out = encoder.encode(texts, progress=False)
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.allclose(out[0], out[3])
    # same result as encoding the text alone (batching / sorting does not change vectors)
    np.testing.assert_allclose(encoder.encode(["a red lamp"], progress=False)[0], out[0], atol=1e-5)


def test_embed_dataset_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))  # a cold cache, whatever ran before
    build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / "ds")
    first = embed_dataset(tmp_path / "ds", EmbedConfig(views=["title", "brand", "all"]), progress=False)
    assert not any(v["cache_hit"] for v in first["views"].values())
    matrices = load_view_embeddings(embeddings_dir(tmp_path / "ds"))
    assert set(matrices) == {"title", "brand", "all"}
    assert matrices["title"].shape == (5, 384)  # 4 items + padding row 0
    assert not matrices["title"][0].any() and np.allclose(np.linalg.norm(matrices["title"][1:], axis=1), 1, atol=1e-5)
    # every item has brand "B.": one distinct text, identical rows
    assert first["views"]["brand"]["distinct_texts"] == 1 and np.ptp(matrices["brand"][1:], axis=0).max() == 0

    # a re-run with the same texts and model is served without loading the model
    again = embed_dataset(tmp_path / "ds", EmbedConfig(views=["title", "brand", "all"]), progress=False)
    assert all(v["cache_hit"] for v in again["views"].values())
    # the same texts in another dataset folder come from the content-hash cache
    build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / "ds2")
    other = embed_dataset(tmp_path / "ds2", EmbedConfig(views=["title"]), progress=False)
    assert other["views"]["title"]["cache_hit"]


def test_unknown_view_and_missing_embeddings(tmp_path):
    build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / "ds")
    with pytest.raises(SemrecError, match="no text view 'color'"):
        embed_dataset(tmp_path / "ds", EmbedConfig(views=["color"]), progress=False)
    with pytest.raises(SemrecError, match="run 'semrec embed' first"):
        load_view_embeddings(tmp_path / "nothing")


def test_unloadable_model_is_a_clear_error(tmp_path):
    with pytest.raises(SemrecError, match="cannot load text encoder"):
        TextEncoder(str(tmp_path / "no-such-model")).encode(["x"], progress=False)


def test_max_seq_length_beyond_the_model_is_a_clear_error(tmp_path):
    """Issue 16 case 6: `semrec embed d --set max_seq_length=1024` with MiniLM (512 positions) ended in a torch
    traceback on the first long text; it is one line naming the limit, before anything is written."""
    from typer.testing import CliRunner

    from semrec.cli import app

    long_text = " ".join(f"word{i}" for i in range(900))
    items = json.dumps({str(i): {"title": f"Item {i}", "description": long_text if i == 0 else f"about {i}"}
                        for i in range(11)})
    build_dataset(load_source(lcrec(tmp_path / "src", items=items))).save(tmp_path / "ds")
    result = CliRunner().invoke(app, ["embed", str(tmp_path / "ds"), "--views", "description",
                                      "--set", "max_seq_length=1024"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: max_seq_length=1024 is more than the text encoder 'all-MiniLM-L6-v2' can read: it has position "
        "embeddings for 512 tokens; set max_seq_length to at most 512, or leave it unset (the model's default: 256)")
    assert not (tmp_path / "ds" / "embeddings").exists()
    # the largest accepted length reads the long text (and differs from the default's truncation at 256)
    at_limit = TextEncoder(max_seq_length=512).encode([long_text, "short"], progress=False)
    default = TextEncoder().encode([long_text, "short"], progress=False)
    assert at_limit.shape == (2, 384) and not np.allclose(at_limit[0], default[0])
    np.testing.assert_allclose(at_limit[1], default[1], atol=1e-5)


def test_max_seq_length_without_room_for_text():
    with pytest.raises(SemrecError) as info:
        TextEncoder(max_seq_length=2).encode(["a red lamp"], progress=False)
    assert str(info.value) == ("max_seq_length=2 leaves no room for text: the text encoder 'all-MiniLM-L6-v2' adds 2 "
                               "special tokens to every text; use at least 3, or leave it unset (the model's default: "
                               "256)")


def test_an_injected_text_encoder_writes_the_default_manifest(tmp_path, monkeypatch):
    """embed_dataset(..., encoder=TextEncoder(model)) writes the very manifest and matrices of the default path."""
    monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))
    config = EmbedConfig(views=["title", "all"])
    for name in ("default", "injected"):
        build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / name)
    default = embed_dataset(tmp_path / "default", config, progress=False)
    injected = embed_dataset(tmp_path / "injected", config, progress=False, encoder=TextEncoder(config.model))
    assert [v["cache_hit"] for v in injected["views"].values()] == [True, True]  # the same cache key

    def strip(manifest):
        return {**manifest, "views": {v: {k: x for k, x in e.items() if k != "cache_hit"}
                                      for v, e in manifest["views"].items()}}

    assert strip(injected) == strip(default)
    a, b = (load_view_embeddings(embeddings_dir(tmp_path / n)) for n in ("default", "injected"))
    assert all(np.array_equal(a[v], b[v]) for v in ("title", "all"))
