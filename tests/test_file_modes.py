"""Artifacts follow the umask like ordinary files (issue 16, case 14): atomic writes used to leave every artifact
at mode 0600 (the temporary-file default), unreadable by another account or a serving user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from semrec.io import atomic_path, write_json, write_npy


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    write_npy(tmp_path / "a.npy", np.zeros(3))
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("hello")
    for name in ("a.json", "a.npy", "a.txt"):
        assert mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy", "a.txt"]  # no temporary left


def test_a_failed_atomic_write_leaves_nothing(tmp_path):
    (tmp_path / "keep.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "keep.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"] and (tmp_path / "keep.json").read_text() == "old"


def test_every_artifact_of_a_pipeline_follows_the_umask(tmp_path, umask):
    """Dataset (parquet, manifest), embeddings, codes and tokenizer (npz, faiss index), a run (config, checkpoints,
    metrics, curve, results, fingerprints, TensorBoard), cold-start items and an export: all 0640 under umask 027."""
    from semrec.config import CodesConfig, RunConfig, TrainConfig
    from semrec.serve import Recommender
    from semrec.serve.export import export_run
    from semrec.tokenizers.pipeline import fit_codes
    from semrec.train.trainer import Trainer
    from tests.support import PQ, fake_encode, make_tiny_dataset

    umask(0o027)
    ds = make_tiny_dataset(tmp_path / "data")
    fit_codes(ds, CodesConfig(tokenizer="pq", params=dict(PQ)), progress=False)
    run = tmp_path / "run"
    Trainer(RunConfig(model="ccfrec", dataset=str(ds), out=str(run), model_params={
        "embedding_size": 16, "inner_size": 32, "neg_num": 30, "max_len": 8},
        train=TrainConfig(epochs=1, batch_size=64, max_steps_per_epoch=3, progress=False))).fit()
    rec = Recommender.load(run, encoder=fake_encode)
    rec.add_items([{"raw_id": "new", "title": "a new item", "brand": "brand 1"}])
    export_run(rec, run / "export", "hnsw", max_queries=20)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"items.parquet", "sequences.parquet", "manifest.json", "title.npy", "codes.npy", "state.npz",
            "config.yaml", "best.pt", "last.pt", "metrics.jsonl", "curve.png", "results.json", "fingerprints.json",
            "cold_items.npz", "items.npy", "approx.index"} <= names, names
    assert "pq.faiss" in names, names
    wrong = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) != 0o640}
    assert not wrong
    folders = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in tmp_path.rglob("*") if p.is_dir()}
    assert all(m == oct(0o750) for m in folders.values()), folders
