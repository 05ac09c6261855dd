"""Serving: no request pays a one-off load (the text encoder and tokenizer are loaded at start-up, /health says
when; issue 16, case 12), and excluding the history covers all of it, not only the last max_len items the model
reads (case 14)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import semrec.serve.items as items_module
from semrec.errors import SemrecError
from semrec.serve import Recommender
from semrec.serve.app import ServerThread, create_app
from tests.support import copy_run, fake_encode, serving_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return serving_runs(tmp_path_factory.getbasetemp() / "serving")  # shared with the other serving tests


class CountingEncoder:
    """A text encoder whose model 'loads' on the first call (as sentence-transformers' does), optionally held
    until ``release`` is set, or failing."""

    def __init__(self, hold: bool = False, fail: bool = False):
        self.loads, self.calls, self.fail = 0, 0, fail
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.loads == 0:
            self.release.wait(30)
            if self.fail:
                raise SemrecError("cannot load text encoder 'x' (OSError: no such file)")
            self.loads += 1
        self.calls += 1
        return fake_encode(texts)


NEW = {"items": [{"raw_id": "NEW1", "title": "a new item", "brand": "brand 3"}]}


def test_the_encoder_is_loaded_at_start_up_not_by_the_first_request(runs, tmp_path):
    encoder = CountingEncoder()
    rec = Recommender.load(copy_run(runs["ccfrec"], tmp_path / "run"), encoder=encoder)
    assert not rec.encoder_loaded and encoder.loads == 0  # loading the run does not load the encoder
    app = create_app(rec)
    assert app.state.readiness.wait(30)
    assert rec.encoder_loaded and encoder.loads == 1 and rec._featurizer.tokenizer is not None
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["detail"] is None and health["warmup_seconds"] >= 0
        calls = encoder.calls
        reply = client.post("/items", json=NEW)
        assert reply.status_code == 201, reply.text
        assert encoder.loads == 1 and encoder.calls == calls + 1  # the request only encoded its item


def test_the_run_encoder_is_loaded_by_the_warm_up(runs, tmp_path, monkeypatch):
    """Without an injected encoder, the run's own TextEncoder is built and its model loaded by the warm-up."""
    built = []

    class FakeTextEncoder:
        def __init__(self, model, device=None, batch_size=64, max_seq_length=None):
            self.model_name, self.loaded = model, False
            built.append(self)

        def encode(self, texts, progress=True):
            self.loaded = True  # what sentence-transformers' lazy load would do here
            return fake_encode(texts)

    monkeypatch.setattr(items_module, "TextEncoder", FakeTextEncoder)
    rec = Recommender.load(copy_run(runs["ccfrec"], tmp_path / "run"))
    assert rec.warm_up() >= 0
    assert len(built) == 1 and built[0].loaded and built[0].model_name == "all-MiniLM-L6-v2"
    assert rec.encoder_loaded


def test_health_says_loading_and_items_wait_until_ready(runs, tmp_path):
    encoder = CountingEncoder(hold=True)
    rec = Recommender.load(copy_run(runs["ccfrec"], tmp_path / "run"), encoder=encoder)
    app = create_app(rec)
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["status"] == "loading" and health["warmup_seconds"] is None
        reply = client.post("/items", json=NEW)
        assert reply.status_code == 503 and reply.headers["retry-after"] == "5"
        assert "still loading the text encoder" in reply.json()["detail"]
        # routes that need nothing more are served meanwhile
        assert client.post("/recommend", json={"history": ["i1", "i2"], "k": 3}).status_code == 200
        assert client.get("/items/i1").status_code == 200
        encoder.release.set()
        assert app.state.readiness.wait(30)
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/items", json=NEW).status_code == 201
        assert encoder.loads == 1


def test_a_failed_warm_up_is_reported_not_retried_in_requests(runs, tmp_path):
    encoder = CountingEncoder(fail=True)
    rec = Recommender.load(copy_run(runs["ccfrec"], tmp_path / "run"), encoder=encoder)
    app = create_app(rec)
    assert app.state.readiness.wait(30)
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert health["detail"] == "items cannot be added: cannot load text encoder 'x' (OSError: no such file)"
        reply = client.post("/items", json=NEW)
        assert reply.status_code == 503 and reply.json()["detail"] == health["detail"]
        assert "retry-after" not in reply.headers
        assert client.post("/recommend", json={"history": ["i1"], "k": 2}).status_code == 200


def test_an_encoder_that_does_not_fit_the_tokenizer_is_found_at_start_up(runs, tmp_path):
    rec = Recommender.load(copy_run(runs["ccfrec"], tmp_path / "run"), encoder=lambda texts: fake_encode(texts)[:, :16])
    app = create_app(rec)
    assert app.state.readiness.wait(30)
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert health["detail"] == ("items cannot be added: view 'title' has dim 16, but the tokenizer was fitted "
                                    "on dim 32")
        assert client.post("/items", json=NEW).status_code == 503


def test_id_only_models_are_ready_at_once_and_still_refuse_items(runs):
    rec = Recommender.load(runs["sasrec"])
    app = create_app(rec)
    assert app.state.readiness.wait(30) and app.state.readiness.status == "ok"
    with TestClient(app) as client:
        assert client.get("/health").json()["status"] == "ok"
        reply = client.post("/items", json=NEW)
        assert reply.status_code == 409 and "cannot be ranked" in reply.json()["detail"]


def test_server_thread_waits_for_the_warm_up(runs, tmp_path):
    encoder = CountingEncoder(hold=True)
    rec = Recommender.load(copy_run(runs["ccfrec"], tmp_path / "run"), encoder=encoder)
    threading.Timer(0.5, encoder.release.set).start()
    with ServerThread(create_app(rec)) as server:
        assert server.app.state.readiness.status == "ok" and encoder.loads == 1


# ----- excluding the history: all of it ---------------------------------------------------------------------

@pytest.mark.parametrize("retrieval", ["exact", "hnsw"])
def test_exclude_seen_covers_the_whole_history_longer_than_max_len(runs, retrieval):
    rec = Recommender.load(runs["ccfrec"], encoder=fake_encode, retrieval=retrieval)
    history = [f"i{j}" for j in range(0, 50, 2)]  # 25 items, the model reads the last 8
    assert len(history) > rec.max_len == 8
    k = rec.n_items - len(history)  # every item that is not in the history
    result = rec.recommend(history, k=k)
    assert result.history_used == rec.max_len
    returned = [i.raw_id for i in result.items]
    assert not set(returned) & set(history)
    if retrieval == "exact":  # exact search returns every other item
        assert sorted(returned) == sorted(set(rec.item_matrix()[1]) - set(history))
    scores = rec.score_histories([history])[0]
    assert all(scores[rec.item_id(h)] == float("-inf") for h in history)
    # the user vector is still that of the last max_len items
    same = rec.recommend(history[-rec.max_len:], k=5, exclude_seen=False)
    assert [i.raw_id for i in rec.recommend(history, k=5, exclude_seen=False).items] == [
        i.raw_id for i in same.items]


def test_http_recommend_excludes_the_whole_history(runs):
    rec = Recommender.load(runs["ccfrec"], encoder=fake_encode)
    history = [f"i{j}" for j in range(1, 60, 3)]  # 20 items > max_len 8
    with TestClient(create_app(rec, warm_up=False)) as client:
        reply = client.post("/recommend", json={"history": history, "k": rec.n_items - len(history)})
        assert reply.status_code == 200, reply.text
        (result,) = reply.json()["results"]
        assert result["history_used"] == 8
        assert len(result["items"]) == rec.n_items - len(history)
        assert not {i["raw_id"] for i in result["items"]} & set(history)
