"""Shared helpers of the serving tests (no tests here): a tiny dataset whose embeddings come from a deterministic
fake text encoder (so cold-start items can be encoded consistently without a PLM), and tiny trained runs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from semrec.config import CodesConfig, RunConfig, TrainConfig
from semrec.data.dataset import CanonicalDataset
from semrec.io import read_json, write_json
from semrec.text.clean import clean_text, clean_title
from semrec.text.encode import DEFAULT_MODEL, embeddings_dir, write_view_matrix
from semrec.tokenizers.pipeline import fit_codes
from semrec.train.trainer import Trainer
from tests.tiny import make_tiny_dataset

DIM = 32
OPQ = {"M": 4, "nbits": 3, "niter": 5, "polysemous": False}
PQ = {"pca_dim": 16, "codes_per_view": 2, "nbits": 3}
SMALL = {"max_len": 8, "inner_size": 32}
MODELS = {
    "ccfrec": dict(model_params={**SMALL, "embedding_size": 16, "neg_num": 30}, codes="pq"),
    "vqrec": dict(model_params={**SMALL, "hidden_size": 16, "dropout": 0.1, "attn_dropout": 0.1,
                                "reassign_epochs": 1}, codes="opq"),
    "unisrec": dict(model_params={**SMALL, "hidden_size": 16, "n_exps": 2, "train_stage": "inductive"}),
    "sasrec": dict(model_params={**SMALL, "hidden_size": 16}),
}
_RUNS: dict[str, dict[str, Path]] = {}


def fake_encode(texts: list[str]) -> np.ndarray:
    """A deterministic 'text encoder': one unit vector per distinct text (seeded by its hash)."""
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(DIM)
        out[i] = vector / np.linalg.norm(vector)
    return out


def make_serving_dataset(folder: Path) -> Path:
    """The tiny dataset with cleaned texts (as the sources write them) and fake-encoder embeddings, codes fitted."""
    make_tiny_dataset(folder)
    dataset = CanonicalDataset.load(folder)
    dataset.items["title"] = [clean_title(t) for t in dataset.items["title"]]
    # one brand per item: a view with a few distinct texts has ~zero-variance PCA axes, and whitening them turns
    # float round-off into different codes for identical texts
    dataset.items["brand"] = [clean_text(f"brand {r[1:]}") for r in dataset.items["raw_id"]]
    dataset.save(folder)
    emb = embeddings_dir(folder, DEFAULT_MODEL)
    manifest = read_json(emb / "embeddings.json")
    for view in ("title", "brand", "all"):
        write_view_matrix(emb, view, fake_encode(dataset.view_texts(view)))
    write_json(emb / "embeddings.json", manifest)
    fit_codes(folder, CodesConfig(tokenizer="pq", params=dict(PQ)), progress=False)
    fit_codes(folder, CodesConfig(tokenizer="opq", params=dict(OPQ)), progress=False)
    return folder


def train_run(dataset: Path, model: str, out: Path, epochs: int = 2) -> Path:
    spec = MODELS[model]
    cfg = RunConfig(model=model, dataset=str(dataset), codes=spec.get("codes", "pq"),
                    model_params=dict(spec["model_params"]), out=str(out),
                    train=TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, warmup_steps=2, progress=False))
    Trainer(cfg).fit()
    return out


def serving_runs(base: Path) -> dict[str, Path]:
    """Tiny trained runs of every model above under ``base`` (built once per test session)."""
    key = str(base)
    if key not in _RUNS:
        dataset = make_serving_dataset(base / "data")
        _RUNS[key] = {"dataset": dataset, **{m: train_run(dataset, m, base / m) for m in MODELS}}
    return _RUNS[key]


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a run folder (tests that add items must not change the shared runs)."""
    shutil.copytree(run, dest)
    return dest
