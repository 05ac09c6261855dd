"""Recommender (Python API), cold-start items per model, faiss export and the recommend / export CLI on tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from semrec.artifacts import RunFolder
from semrec.cli import app
from semrec.data.batching import pad_right
from semrec.errors import SemrecError
from semrec.models import build_model, cold_start_refusal
from semrec.runs import load_run_config, load_run_data
from semrec.serve import ColdStartUnsupported, ItemConflict, Recommender, UnknownItem
from semrec.serve.export import export_run
from semrec.tokenizers import load_tokenizer
from semrec.tokenizers.pipeline import pca_text
from semrec.train.checkpoint import load_checkpoint
from tests.support import copy_run, fake_encode, serving_runs

COLD_MODELS = ["ccfrec", "vqrec", "unisrec"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return serving_runs(tmp_path_factory.getbasetemp() / "serving")


@pytest.fixture(scope="module")
def ccfrec(runs) -> Recommender:
    return Recommender.load(runs["ccfrec"], encoder=fake_encode)


def test_featurizer_reproduces_the_catalogue_item_data(runs):
    """Encoding an existing item's texts gives exactly the codes / text vectors the trainer loaded."""
    cfg = load_run_config(runs["ccfrec"])
    data = load_run_data(cfg)
    tokenizer = load_tokenizer(Path(cfg.dataset) / "codes" / "pq" / "tokenizer")
    from semrec.text.encode import embeddings_dir, load_view_embeddings

    matrices = load_view_embeddings(embeddings_dir(cfg.dataset), list(tokenizer.input_views))
    assert np.array_equal(pca_text(tokenizer, {v: m[1:] for v, m in matrices.items()}), data.items.text[1:].numpy())
    rec = Recommender.load(runs["ccfrec"], encoder=fake_encode)
    texts = [{v: str(row[v]) for v in data.dataset.views} for _, row in data.dataset.items.iterrows()]
    features = rec._get_featurizer().features(texts)
    assert np.array_equal(features["codes"], data.items.codes[1:].numpy())
    assert np.array_equal(features["text"], data.items.text[1:].numpy())


def test_catalogue_texts_keep_their_catalogue_vectors_whatever_the_batch(runs):
    """Issue 16, case 3 at cold start: the encoder's floats depend slightly on the batch a text is in; an item whose
    text is already in the catalogue gets the catalogue's own vector (so its codes), alone or in any batch; only new
    texts reach the encoder."""
    calls: list[list[str]] = []

    def batch_dependent_encode(texts: list[str]) -> np.ndarray:  # fake_encode + noise that depends on the batch
        calls.append(list(texts))
        noise = np.random.default_rng(len(texts)).standard_normal((len(texts), 32)).astype(np.float32) * 1e-3
        return fake_encode(texts) + noise

    data = load_run_data(load_run_config(runs["ccfrec"]))
    rec = Recommender.load(runs["ccfrec"], encoder=batch_dependent_encode)
    featurizer = rec._get_featurizer()
    texts = [{v: str(row[v]) for v in data.dataset.views} for _, row in data.dataset.items.iterrows()]
    catalogue_codes = data.items.codes[1:].numpy()
    calls.clear()
    assert featurizer.embed_views == ["title", "brand"]
    new_item = {"title": "a title nobody has", "brand": texts[3]["brand"]}
    for batch in ([texts[4]], texts[:7], texts[4:5] + [new_item]):
        features = featurizer.features(batch)
        row = 0 if len(batch) != 7 else 4
        assert np.array_equal(features["codes"][row], catalogue_codes[4])
        assert np.array_equal(features["text"][row], data.items.text[5].numpy())  # bitwise: the catalogue's vector
    # only the new title reached the encoder (the new item's brand is a catalogue text)
    assert calls == [["a title nobody has"]]
    alone = featurizer.features([new_item])["codes"][0]
    assert np.array_equal(features["codes"][1], alone)  # the new item: the same codes alone and in a batch


def test_scores_are_the_evaluators(runs, ccfrec):
    """The served scores are the evaluator's: cosine of the model's user vector and candidate table."""
    data = load_run_data(load_run_config(runs["ccfrec"]))
    rows = data.split.valid
    histories = [data.dataset.raw_item_ids(h) for h in rows.histories[:20]]
    served = ccfrec.score_histories(histories, exclude_seen=False)
    model = ccfrec.model
    candidate, history_table = model.eval_tables()
    items, lengths = pad_right(rows.histories[:20], ccfrec.max_len)
    user = model.encode_sequence(torch.from_numpy(items), torch.from_numpy(lengths), history_table)
    expected = F.normalize(user, dim=-1) @ F.normalize(candidate, dim=-1).T
    assert torch.allclose(served[:, 1:], expected[:, 1:], atol=1e-5)
    assert torch.isinf(served[:, 0]).all()


def test_recommend_contract(ccfrec):
    result = ccfrec.recommend(["i1", "nope", "i2", "zzz"], k=5)
    assert result.unknown == ["nope", "zzz"] and result.history_used == 2 and result.fallback is None
    assert len(result.items) == 5 and all(i.title and i.title.startswith("item") for i in result.items)
    assert [i.score for i in result.items] == sorted((i.score for i in result.items), reverse=True)
    assert not {"i1", "i2"} & {i.raw_id for i in result.items}
    everything = ccfrec.recommend(["i1", "i2"], k=1000)
    assert len(everything.items) == ccfrec.n_items - 2  # k is capped, seen items never come back
    assert len(ccfrec.recommend(["i1", "i2"], k=1000, exclude_seen=False).items) == ccfrec.n_items
    # batch = one product, same answers as one by one
    histories = [["i1", "i2"], ["i7"], ["i30", "i31", "i32"]]
    batch = ccfrec.recommend_batch(histories, k=4)
    for history, got in zip(histories, batch):
        one = ccfrec.recommend(history, k=4)
        assert [i.raw_id for i in got.items] == [i.raw_id for i in one.items]
        assert np.allclose([i.score for i in got.items], [i.score for i in one.items], atol=1e-6)
    # no known item: the most popular items, flagged
    popular = ccfrec.recommend(["nope"], k=3)
    assert popular.fallback == "popularity" and popular.unknown == ["nope"] and popular.history_used == 0
    counts = ccfrec._popularity[1:].numpy()
    assert [i.score for i in popular.items] == sorted(counts, reverse=True)[:3]
    assert ccfrec.recommend([], k=2).fallback == "popularity"
    # long histories: the model reads the last max_len items, all are excluded
    long = [f"i{j}" for j in range(20)]
    result = ccfrec.recommend(long, k=10)
    assert result.history_used == ccfrec.max_len and not set(long) & {i.raw_id for i in result.items}
    for bad in ("i1,i2", None):
        with pytest.raises(SemrecError, match="list of raw item ids"):
            ccfrec.recommend(bad)
    for k in (0, -1, 2.5, True):
        with pytest.raises(SemrecError, match="k must be"):
            ccfrec.recommend(["i1"], k=k)


def test_equal_scores_are_listed_by_item_id(ccfrec):
    """The one tie rule (semrec.eval.ranking) in served lists: the popularity fallback's counts tie a lot, and equally
    popular items come in increasing id (torch.topk alone picks tied items in no fixed order on CPU)."""
    counts = ccfrec._popularity[1:].numpy()
    assert len(np.unique(counts)) < len(counts) // 2  # many ties
    expected = [ccfrec._raw_ids[i] for i in np.argsort(-counts, kind="stable") + 1]
    for k in (7, len(counts)):
        assert [i.raw_id for i in ccfrec.recommend(["nope"], k=k).items] == expected[:k]


def test_exact_retrieval_in_bounded_chunks(ccfrec, monkeypatch):
    import semrec.serve.recommender as module

    histories = [["i1", "i2"], ["nope"], ["i7"], ["i30", "i31"]]
    whole = ccfrec.recommend_batch(histories, k=5)
    monkeypatch.setattr(module, "SCORE_BUDGET", 1)  # one history per matrix product
    for a, b in zip(whole, ccfrec.recommend_batch(histories, k=5)):
        assert [i.raw_id for i in a.items] == [i.raw_id for i in b.items] and a.fallback == b.fallback


def test_item_lookup_and_user_history(ccfrec):
    item = ccfrec.item("i3")
    assert item == {"raw_id": "i3", "cold_start": False, "texts": {"title": "item 3", "brand": "brand 3."},
                    "added_at": None}
    with pytest.raises(UnknownItem):
        ccfrec.item("nope")
    history = ccfrec.user_history("u0")
    assert history and all(h in ccfrec._index for h in history)
    with pytest.raises(UnknownItem, match="unknown user"):
        ccfrec.user_history("nobody")


@pytest.mark.parametrize("model", COLD_MODELS)
def test_cold_items_equal_catalogue_vectors(runs, tmp_path, model):
    """A cold item gets the vector the model computes had it been in the catalogue; it is rankable at once,
    usable in histories, and persists in the run folder."""
    run = copy_run(runs[model], tmp_path / "run")
    rec = Recommender.load(run, encoder=fake_encode)
    n = rec.n_items
    added = rec.add_items([
        {"raw_id": "copy3", "title": "item 3", "brand": ["brand 3"]},  # cleaned like the source: identical item
        {"raw_id": "fresh", "title": " <b>Laser</b> &amp; level!! ", "brand": "Acme"},
    ])
    assert [a["raw_id"] for a in added] == ["copy3", "fresh"] and [a["item_id"] for a in added] == [n + 1, n + 2]
    assert rec.n_items == n + 2 and rec.n_cold_items == 2
    assert rec.item("fresh")["texts"] == {"title": "Laser & level", "brand": "Acme."}
    assert rec.item("fresh")["cold_start"] is True
    i3, copy3, fresh = rec.item_id("i3"), rec.item_id("copy3"), rec.item_id("fresh")
    assert torch.allclose(rec._candidate[copy3], rec._candidate[i3], atol=1e-6)
    cfg = rec.config
    data = load_run_data(cfg)
    if "codes" in added[0]:
        assert added[0]["codes"] == data.items.codes[i3].tolist()
    # the reference: rebuild the model with the cold items in its catalogue, load the trained parameters
    features = rec._cold_features
    items = data.items
    items.n_items += 2
    for name, value in features.items():
        old = getattr(items, name)
        setattr(items, name, torch.cat([old, torch.from_numpy(value).to(old.dtype)]))
    full = build_model(cfg.model, cfg.model_params, items)
    state = load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    own = full.state_dict()
    full.load_state_dict({k: v for k, v in state.items() if own[k].shape == v.shape}, strict=False)
    full.eval()
    with torch.no_grad():
        candidate, history = full.eval_tables()
    assert torch.allclose(rec._candidate, F.normalize(candidate, dim=-1), atol=1e-5)
    assert torch.allclose(rec._history, history, atol=1e-5)
    # rankable at once, and usable in a history
    assert "fresh" in {i.raw_id for i in rec.recommend(["i1"], k=rec.n_items).items}
    scores = rec.score_histories([["fresh", "i5"]])
    assert torch.isinf(scores[0, fresh]) and torch.isfinite(scores[0, copy3])
    # persisted: a new process sees the same catalogue
    again = Recommender.load(run, encoder=fake_encode)
    assert again.n_cold_items == 2 and again.item("fresh")["texts"]["title"] == "Laser & level"
    assert torch.allclose(again._candidate, rec._candidate, atol=1e-6)
    rec.add_items([{"raw_id": "third", "title": "third thing"}])
    assert Recommender.load(run, encoder=fake_encode).n_cold_items == 3


def test_add_items_errors_change_nothing(runs, tmp_path):
    run = copy_run(runs["ccfrec"], tmp_path / "run")
    rec = Recommender.load(run, encoder=fake_encode)
    cases = [
        ([{"raw_id": "i3", "title": "x"}], ItemConflict, "already in the catalogue"),
        ([{"raw_id": "a", "title": "x"}, {"raw_id": "a", "title": "y"}], ItemConflict, "twice"),
        ([{"raw_id": "a", "titel": "x"}], SemrecError, "unknown field.*'titel'.*title, brand"),
        ([{"raw_id": "a", "title": "", "brand": None}], SemrecError, "no text"),
        ([{"raw_id": "a", "title": 3}], SemrecError, "must be text"),
        ([{"title": "x"}], SemrecError, "raw_id"),
        ([{"raw_id": "  ", "title": "x"}], SemrecError, "raw_id"),
        (["i3"], SemrecError, "mapping"),
        ([], SemrecError, "non-empty list"),
        ({"raw_id": "a", "title": "x"}, SemrecError, "non-empty list"),
    ]
    for items, error, message in cases:
        with pytest.raises(error, match=message):
            rec.add_items(items)
    assert rec.n_cold_items == 0 and not RunFolder(run).cold_items.exists()


def test_models_without_text_refuse_cold_start(runs, tmp_path):
    rec = Recommender.load(runs["sasrec"], encoder=fake_encode)
    with pytest.raises(ColdStartUnsupported, match="sasrec.*retrain.*ccfrec, vqrec, unisrec"):
        rec.add_items([{"raw_id": "new", "title": "x"}])
    assert rec.info()["cold_start"] is False and not RunFolder(runs["sasrec"]).cold_items.exists()
    assert "train_stage=inductive" in cold_start_refusal("unisrec", {"train_stage": "transductive"})
    assert "train_stage=inductive" in cold_start_refusal("unisrec", {})
    assert cold_start_refusal("unisrec", {"train_stage": "inductive"}) is None
    assert "popularity" in cold_start_refusal("popularity", {})


def test_changed_dataset_is_refused(runs, tmp_path):
    run = copy_run(runs["ccfrec"], tmp_path / "run")
    Recommender.load(run, encoder=fake_encode).add_items([{"raw_id": "new", "title": "x"}])
    meta_path = RunFolder(run).cold_items
    with np.load(meta_path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["fingerprints"]["codes"] = "0" * 64
    np.savez(meta_path, meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(SemrecError, match="another version of the run's codes"):
        Recommender.load(run, encoder=fake_encode)


@pytest.mark.parametrize("approx", ["hnsw", "ivf"])
def test_export_and_approximate_retrieval(runs, tmp_path, approx):
    import faiss

    rec = Recommender.load(runs["ccfrec"], encoder=fake_encode)
    summary = export_run(rec, tmp_path / "export", approx, {"nprobe": 2} if approx == "ivf" else None)
    vectors = np.load(tmp_path / "export" / "items.npy")
    ids = json.loads((tmp_path / "export" / "item_ids.json").read_text())
    assert vectors.shape == (rec.n_items, 16) and ids == rec._raw_ids[1:]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # cosine model: normalised rows
    exact = faiss.read_index(str(tmp_path / "export" / "exact.index"))
    approx_index = faiss.read_index(str(tmp_path / "export" / "approx.index"))
    assert exact.ntotal == approx_index.ntotal == rec.n_items
    query = rec.user_vectors([[1, 2, 3]]).numpy()
    _, top = exact.search(query, 10)
    assert list(top[0]) == list(np.argsort(-(vectors @ query[0]), kind="stable")[:10])
    assert 0.0 <= summary["recall@10"] <= 1.0 and summary["recall_queries"] > 0
    if approx == "hnsw":
        assert summary["recall@10"] > 0.9  # 60 items: HNSW is practically exact
    saved = json.loads((tmp_path / "export" / "export.json").read_text())
    assert saved["approx"]["kind"] == approx and saved["recall@10"] == summary["recall@10"]
    # the recommender can serve through the same kind of index, cold-start additions included
    served = Recommender.load(copy_run(runs["ccfrec"], tmp_path / "run"), encoder=fake_encode, retrieval=approx,
                              retrieval_params={"nprobe": 100} if approx == "ivf" else None)
    histories = [["i1", "i2"], ["i10"], ["nope"]]
    exact_top = rec.recommend_batch(histories, k=5)
    approx_top = served.recommend_batch(histories, k=5)
    assert [r.fallback for r in approx_top] == [None, None, "popularity"]
    for a, b in zip(exact_top, approx_top):
        assert [i.raw_id for i in a.items] == [i.raw_id for i in b.items]
        assert np.allclose([i.score for i in a.items], [i.score for i in b.items], atol=1e-5)
    served.add_items([{"raw_id": "copy1", "title": "item 1", "brand": "brand 1"}])
    assert "copy1" in {i.raw_id for i in served.recommend(["i1"], k=3).items}  # i1's twin is its nearest item


def test_index_parameters_are_checked(ccfrec):
    from semrec.serve.index import approx_index

    with pytest.raises(SemrecError, match="unknown approximate index"):
        ccfrec.set_retrieval("annoy")
    with pytest.raises(SemrecError, match="unknown index parameter 'efSearch'"):
        approx_index(np.zeros((10, 4), np.float32), "hnsw", {"efSearch": 3})
    with pytest.raises(SemrecError, match="must be an integer"):
        approx_index(np.zeros((10, 4), np.float32), "ivf", {"nprobe": "x"})


def test_cli_recommend_and_export(runs, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["recommend", str(runs["ccfrec"]), "--history", "i1, i2,nope", "--k", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("top-3 for the history (3 items; ccfrec on tiny") and len(lines) == 4
    assert lines[1].split()[0] == "1" and "item " in lines[1]
    assert "ignored 1 unknown id(s): nope" in result.stderr
    result = runner.invoke(app, ["recommend", str(runs["ccfrec"]), "--user", "u0", "--json", "--k", "2"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["items"]) == 2
    for args, message in [([], "exactly one of"), (["--history", "i1", "--k", "0"], "at least 1"),
                          (["--user", "nobody"], "unknown user")]:
        result = runner.invoke(app, ["recommend", str(runs["ccfrec"]), *args])
        assert result.exit_code == 2 and message in result.stderr, result.output
    result = runner.invoke(app, ["recommend", str(tmp_path), "--history", "i1"])
    assert result.exit_code == 2 and "not a run folder" in result.stderr
    result = runner.invoke(app, ["export", str(runs["ccfrec"]), "-o", str(tmp_path / "ex"), "--approx", "ivf",
                                 "-p", "nlist=2", "--queries", "50"])
    assert result.exit_code == 0, result.output
    assert "recall@10" in result.stdout and (tmp_path / "ex" / "approx.index").is_file()
    result = runner.invoke(app, ["export", str(runs["ccfrec"]), "-o", str(tmp_path / "ex2"), "-p", "M"])
    assert result.exit_code == 2 and "key=value" in result.stderr


@pytest.mark.slow
def test_cold_item_with_the_run_text_encoder(tmp_path):
    """Without an injected encoder the run's own (all-MiniLM-L6-v2, offline) encodes the new item: an item identical
    to a catalogue item gets that item's codes and (up to batching round-off) its vector."""
    from semrec.config import CodesConfig, EmbedConfig
    from semrec.data.dataset import CanonicalDataset
    from semrec.text.clean import clean_text
    from semrec.text.encode import embed_dataset
    from semrec.tokenizers.pipeline import fit_codes
    from tests.support import PQ, make_tiny_dataset, train_run

    folder = make_tiny_dataset(tmp_path / "data", n_users=60, n_items=30)
    dataset = CanonicalDataset.load(folder)
    # distinct brands: with 7 brand texts the whitened PCA of that view has ~zero-variance axes that amplify
    # float round-off (a one-row product vs the catalogue's matrix product) into different codes
    dataset.items["brand"] = [clean_text(f"maker {r}") for r in dataset.items["raw_id"]]
    dataset.save(folder)
    embed_dataset(folder, EmbedConfig(), progress=False)
    fit_codes(folder, CodesConfig(tokenizer="pq", params=dict(PQ)), progress=False)
    run = train_run(folder, "ccfrec", tmp_path / "run", epochs=1)
    rec = Recommender.load(run)
    added = rec.add_items([{"raw_id": "copy3", "title": "item 3", "brand": "maker i3"}])
    i3 = rec.item_id("i3")
    assert added[0]["codes"] == load_run_data(rec.config).items.codes[i3].tolist()
    assert float(rec._candidate[i3] @ rec._candidate[rec.item_id("copy3")]) > 0.999
