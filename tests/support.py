"""A tiny synthetic dataset with learnable structure, plus fake text embeddings (no PLM needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from semrec.data.dataset import SourceData, build_dataset
from semrec.io import write_json
from semrec.text.encode import DEFAULT_MODEL, embeddings_dir, write_view_matrix


def similarity_scores(model, user, table):
    """``[B, N+1]`` scores of user vectors against an item table under the model's similarity (dot or cosine)."""
    import torch.nn.functional as F

    if model.similarity == "cosine":
        return F.normalize(user, dim=-1) @ F.normalize(table, dim=-1).T
    return user @ table.T


def make_tiny_dataset(folder: Path, n_users: int = 120, n_items: int = 60, seed: int = 0) -> Path:
    """Users walk through items mostly in steps of +1 (mod n), so next-item prediction is learnable."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        item = int(rng.integers(0, n_items))
        seen = set()
        for t in range(int(rng.integers(5, 12))):
            if item not in seen:
                rows.append((f"u{u}", f"i{item}", float(t)))
                seen.add(item)
            item = (item + (1 if rng.random() < 0.8 else int(rng.integers(2, 6)))) % n_items
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    items = pd.DataFrame({"raw_id": [f"i{i}" for i in range(n_items)],
                          "title": [f"item {i}" for i in range(n_items)],
                          "brand": [f"brand {i % 7}" for i in range(n_items)]})
    dataset = build_dataset(SourceData("tiny", "synthetic", inter, items, ["title", "brand"], []))
    dataset.save(folder)
    # fake, deterministic "text embeddings": a smooth function of the item index plus noise
    out = embeddings_dir(folder, DEFAULT_MODEL)
    manifest = {"model": DEFAULT_MODEL, "dataset": "tiny", "n_items": dataset.n_items, "padding_row": 0, "views": {}}
    idx = np.array([int(r[1:]) for r in dataset.items["raw_id"]])
    for k, view in enumerate(["title", "brand", "all"]):
        base = np.stack([np.sin(idx * (j + 1) / n_items * 2 * np.pi + k) for j in range(32)], axis=1)
        vectors = (base + 0.1 * rng.standard_normal(base.shape)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        name = write_view_matrix(out, view, vectors)
        manifest["views"][view] = {"file": name, "key": f"fake-{view}", "dim": 32, "distinct_texts": len(idx)}
    write_json(out / "embeddings.json", manifest)
    return folder


def train_losses(model, steps: int = 60, style: str = "prefix", lr: float = 3e-3) -> list[float]:
    """Adam on a learnable in-memory pattern (item i is followed by item i + 1); the loss of every step."""
    import torch

    from semrec.data.batching import build_train_samples, train_batches

    rng = np.random.default_rng(0)
    train = [np.arange(s, s + 6) for s in rng.integers(1, 24, size=40)]
    samples = build_train_samples(train, 6, style)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        for batch in train_batches(samples, 32, seed=0, epoch=epoch):
            loss, _ = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        epoch += 1
    return losses


def train_tiny_sasrec(folder: Path, epochs: int = 3) -> tuple[Path, dict]:
    """A small SASRec run on the tiny dataset under ``folder``: (run folder, its results)."""
    from semrec.config import RunConfig, TrainConfig
    from semrec.train.trainer import Trainer

    data = make_tiny_dataset(folder / "ds")
    out = folder / "run"
    cfg = RunConfig(model="sasrec", dataset=str(data), out=str(out),
                    model_params={"hidden_size": 16, "inner_size": 32, "max_len": 10},
                    train=TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, warmup_steps=2, progress=False))
    return out, Trainer(cfg).fit()


def train_tiny_ccfrec(base: Path) -> tuple[Path, Path]:
    """A one-epoch CCFRec run on the tiny dataset (pq codes fitted): (dataset folder, run folder) under ``base``."""
    from semrec.config import CodesConfig, RunConfig, TrainConfig
    from semrec.tokenizers.pipeline import fit_codes
    from semrec.train.trainer import Trainer

    ds = make_tiny_dataset(base / "ds")
    fit_codes(ds, CodesConfig(tokenizer="pq", params={"pca_dim": 16, "codes_per_view": 2, "nbits": 3}),
              progress=False)
    cfg = RunConfig(model="ccfrec", dataset=str(ds), out=str(base / "run"), model_params={
        "embedding_size": 16, "inner_size": 32, "neg_num": 30, "max_len": 8},
        train=TrainConfig(epochs=1, batch_size=64, lr=3e-3, warmup_steps=5, progress=False))
    Trainer(cfg).fit()
    return ds, base / "run"


def table_model(table, mean: bool = False):
    """A stand-in model for evaluation tests: a fixed item table ``[N+1, d]``; the user vector is the sum (or, with
    ``mean=True``, the mean) of the table rows of the history it reads (integer tables give exact scores)."""
    import torch

    class TableModel(torch.nn.Module):
        similarity = "dot"

        def __init__(self):
            super().__init__()
            self.table = table

        def eval_tables(self):
            return self.table, None

        def encode_sequence(self, items, lengths, history_table=None):
            summed = (self.table[items] * (items > 0).unsqueeze(-1)).sum(1)
            return summed / lengths.unsqueeze(1) if mean else summed

    return TableModel()
