"""The HTTP server for real: uvicorn on a free localhost port, httpx clients, bad payloads, concurrent additions,
a schemathesis run against the OpenAPI schema (no 5xx), and ``semrec serve`` as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from semrec.serve import Recommender
from semrec.serve.app import MAX_BATCH, MAX_HISTORY, MAX_ITEMS, MAX_K, MAX_TEXT, ServerThread, create_app
from tests.support import copy_run, fake_encode, serving_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return serving_runs(tmp_path_factory.getbasetemp() / "serving")


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """A CCFRec run (private copy: the tests add items) served on a free port."""
    run = copy_run(runs["ccfrec"], tmp_path_factory.mktemp("http") / "run")
    rec = Recommender.load(run, encoder=fake_encode)
    with ServerThread(create_app(rec)) as srv:
        srv.rec = rec
        yield srv


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_health_docs_and_recommend(server, client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "ccfrec" and health["cold_start"] is True
    assert client.get("/docs").status_code == 200
    assert {"/recommend", "/items", "/items/{raw_id}", "/health"} <= set(client.get("/openapi.json").json()["paths"])
    reply = client.post("/recommend", json={"history": ["i1", "nope", "i2"], "k": 4})
    assert reply.status_code == 200, reply.text
    (result,) = reply.json()["results"]
    expected = server.rec.recommend(["i1", "nope", "i2"], k=4)
    assert [i["raw_id"] for i in result["items"]] == [i.raw_id for i in expected.items]
    assert result["unknown"] == ["nope"] and result["history_used"] == 2 and result["fallback"] is None
    assert all(i["title"].startswith("item") for i in result["items"])
    batch = client.post("/recommend", json={"histories": [["i1"], ["zzz"], []], "k": 2, "exclude_seen": False})
    assert batch.status_code == 200
    assert [r["fallback"] for r in batch.json()["results"]] == [None, "popularity", "popularity"]


def test_items_over_http(server, client):
    reply = client.post("/items", json={"items": [{"raw_id": "web/1", "title": "Glass beaker set", "brand": "Lab"}]})
    assert reply.status_code == 201, reply.text
    # 4 PQ codes and the dedup digit (pq's default: more than 5% of the small catalogue's codes collide)
    assert server.rec._tokenizer.dedup and server.rec._tokenizer.n_levels == 5
    assert reply.json()["added"][0]["raw_id"] == "web/1" and len(reply.json()["added"][0]["codes"]) == 5
    item = client.get("/items/web/1").json()
    assert item == {"raw_id": "web/1", "cold_start": True, "texts": {"title": "Glass beaker set", "brand": "Lab."},
                    "added_at": item["added_at"]}
    assert client.get("/items/i3").json()["cold_start"] is False
    ranked = client.post("/recommend", json={"history": ["i1"], "k": MAX_K}).json()["results"][0]["items"]
    assert "web/1" in {i["raw_id"] for i in ranked}
    again = client.post("/items", json={"items": [{"raw_id": "web/1", "title": "again"}]})
    assert again.status_code == 409 and "already in the catalogue" in again.json()["detail"]
    missing = client.get("/items/nope")
    assert missing.status_code == 404 and "unknown item" in missing.json()["detail"]


BAD_RECOMMEND = [
    {}, {"k": 3}, {"history": ["i1"], "histories": [["i1"]]}, {"history": "i1,i2"}, {"history": [1, 2]},
    {"history": ["i1"], "k": 0}, {"history": ["i1"], "k": MAX_K + 1}, {"history": ["i1"], "k": "ten"},
    {"history": ["i1"], "k": 2.5}, {"history": ["i1"], "exclude_seen": "maybe"}, {"history": [""]},
    {"history": ["x" * 300]}, {"history": ["i1"] * (MAX_HISTORY + 1)}, {"histories": []},
    {"histories": [["i1"]] * (MAX_BATCH + 1)}, {"histories": ["i1"]}, {"history": ["i1"], "user": "u1"},
    [], "text", None,
]
BAD_ITEMS = [
    ({}, 422), ({"items": []}, 422), ({"items": [{"title": "x"}]}, 422),
    ({"items": [{"raw_id": "", "title": "x"}]}, 422),
    ({"items": [{"raw_id": "n", "title": 3}]}, 422), ({"items": [{"raw_id": "n", "title": "x" * (MAX_TEXT + 1)}]}, 422),
    ({"items": [{"raw_id": f"n{i}", "title": "x"} for i in range(MAX_ITEMS + 1)]}, 422),
    ({"items": [{"raw_id": "n", **{f"f{i}": "x" for i in range(40)}}]}, 422), ({"items": "x"}, 422),
    ({"items": [{"raw_id": "n", "titel": "x"}]}, 400), ({"items": [{"raw_id": "n", "title": ""}]}, 400),
    ({"items": [{"raw_id": "n", "title": "a"}, {"raw_id": "n", "title": "b"}]}, 409),
]


def test_bad_payloads_get_4xx_with_a_message(server, client):
    for body in BAD_RECOMMEND:
        reply = client.post("/recommend", json=body)
        assert reply.status_code == 422, (body, reply.text)
        assert reply.json()["detail"]
    for body, status in BAD_ITEMS:
        reply = client.post("/items", json=body)
        assert reply.status_code == status, (body, reply.text)
        assert reply.json()["detail"]
    for raw in (b"{not json", b"\xff\xfe", b""):
        reply = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
        assert reply.status_code == 422, reply.text
    assert client.post("/recommend", data={"history": "i1"}).status_code == 422  # form, not JSON
    assert client.get("/recommend").status_code == 405
    assert client.get("/health").json()["n_cold_items"] == server.rec.n_cold_items


def test_concurrent_recommendations_while_adding(server):
    errors: list[str] = []
    stop = threading.Event()
    start_items = server.rec.n_items

    def reader() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                reply = c.post("/recommend", json={"histories": [["i1", "i2"], ["i5"]], "k": 1000})
                if reply.status_code != 200:
                    errors.append(reply.text)
                    return
                for result in reply.json()["results"]:
                    ids = [i["raw_id"] for i in result["items"]]
                    if len(ids) != len(set(ids)) or not ids:
                        errors.append(f"bad result {ids[:5]}")

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for b in range(5):
            items = [{"raw_id": f"conc{b}-{j}", "title": f"concurrent thing {b} {j}"} for j in range(10)]
            reply = c.post("/items", json={"items": items})
            assert reply.status_code == 201, reply.text
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert server.rec.n_items == start_items + 50
    ranked = server.rec.recommend(["i1"], k=server.rec.n_items).items
    assert {f"conc{b}-{j}" for b in range(5) for j in range(10)} <= {i.raw_id for i in ranked}


def test_id_only_model_refuses_items_over_http(runs):
    rec = Recommender.load(runs["sasrec"], encoder=fake_encode)
    with ServerThread(create_app(rec)) as srv, httpx.Client(base_url=srv.url) as c:
        reply = c.post("/items", json={"items": [{"raw_id": "new", "title": "x"}]})
        assert reply.status_code == 409 and "retrain" in reply.json()["detail"]
        assert c.get("/health").json()["cold_start"] is False
        assert c.post("/recommend", json={"history": ["i1"]}).status_code == 200


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_server_error(server, mode):
    """Schemathesis generates valid (positive) and invalid (negative) requests for every operation of the live
    server's OpenAPI schema: never a 5xx."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/health", "/recommend", "/items", "/items/{raw_id}"}
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call_and_validate(checks=[not_a_server_error], timeout=30)
            statuses.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)

        try:
            check()
        except Unsatisfiable:  # negative mode: an operation whose every input is valid (/health, a path string)
            assert mode == "negative" and operation.method == "get", operation.path
    assert {"POST /recommend", "POST /items"} <= set(statuses)
    codes = set().union(*statuses.values())
    assert max(codes) < 500 and (min(codes) < 300 if mode == "positive" else min(codes) >= 400), statuses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_subprocess(runs):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "semrec.cli", "serve", str(runs["ccfrec"]), "--port", str(port),
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "semrec serve did not come up"
            time.sleep(0.3)
        reply = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"history": ["i1", "i2"], "k": 3})
        assert reply.status_code == 200 and len(reply.json()["results"][0]["items"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
