"""bench/synthetic.py (issue 20): Amazon-2023-style files that `semrec prepare` reads, with a topic signal."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import synthetic  # noqa: E402


def test_the_files_prepare_and_users_walk_topics(tmp_path):
    from semrec import api
    from semrec.config import PrepareConfig

    counts = synthetic.generate(tmp_path / "raw", 500, 400, topics=20, seed=1, chunk=64)
    assert counts["items"] == 500 and counts["users"] == 400 and counts["interactions"] >= 5 * 400
    with gzip.open(tmp_path / "raw" / "meta_Synthetic.jsonl.gz", "rt") as f:
        meta = {row["parent_asin"]: row for row in map(json.loads, f)}
    assert len(meta) == 500 and all(row["title"] and row["details"]["Brand"] for row in meta.values())
    prepared, _ = api.prepare(PrepareConfig(source=str(tmp_path / "raw"), out=str(tmp_path / "ds")))
    ds = prepared.load()
    assert ds.n_users == 400 and 0 < ds.n_items <= 500
    topic = {i + 1: meta[raw]["categories"][2] for i, raw in enumerate(ds.items["raw_id"])}
    pairs = [(a, b) for seq in ds.sequences for a, b in zip(seq[:-1], seq[1:])]
    same = sum(topic[int(a)] == topic[int(b)] for a, b in pairs) / len(pairs)
    assert same > 0.5  # stay = 0.7 (random pairs would share a topic 1 time in 20)
    again = synthetic.generate(tmp_path / "raw2", 500, 400, topics=20, seed=1, chunk=200)  # chunking changes nothing
    assert again == counts


@pytest.mark.parametrize("kwargs", [{"n_items": 0}, {"topics": 600}, {"stay": 1.5}])
def test_bad_sizes_are_refused(tmp_path, kwargs):
    args = {"n_items": 500, "n_users": 10, "topics": 5, **kwargs}
    with pytest.raises(ValueError, match="need items, users >= 1"):
        synthetic.generate(tmp_path, **args)


def test_the_split_layout_prepares_to_the_same_dataset_as_the_rating_file(tmp_path):
    from semrec import api
    from semrec.config import PrepareConfig

    synthetic.generate(tmp_path / "ratings", 300, 200, topics=10, seed=3, chunk=64)
    synthetic.generate(tmp_path / "splits", 300, 200, topics=10, seed=3, chunk=64, layout="splits")
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [
        "Synthetic.test.csv.gz", "Synthetic.train.csv.gz", "Synthetic.valid.csv.gz", "meta_Synthetic.jsonl.gz"]
    datasets = []
    for layout in ("ratings", "splits"):
        prepared, _ = api.prepare(PrepareConfig(source=str(tmp_path / layout), out=str(tmp_path / f"ds-{layout}")))
        datasets.append(prepared.load())
    a, b = datasets
    assert a.items["raw_id"].tolist() == b.items["raw_id"].tolist()
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
    with pytest.raises(ValueError, match="layout must be ratings or splits"):
        synthetic.generate(tmp_path / "x", 10, 10, topics=2, layout="tsv")
