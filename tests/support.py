"""Shared helpers of the tests (fixtures live in tests/conftest.py): source files written in a test, the tiny
synthetic dataset with learnable structure and stand-in text embeddings (no PLM needed, written by
``embed_dataset`` with a stand-in encoder), tiny trained runs, the serving dataset and runs, and small checks."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semrec.data.build import build_dataset
from semrec.data.dataset import SourceData

REPO = Path(__file__).resolve().parents[1]


# ----- the real datasets ------------------------------------------------------------------------------

def shared_data_root() -> Path:
    return Path(os.environ.get("SEMREC_TEST_DATA", REPO.parent / "shared" / "data"))


def real_dataset(shared: Path, folder: str) -> Path:
    path = shared / folder
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


# ----- source files -----------------------------------------------------------------------------------

def write(path: Path, text: str | bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def amazon_ratings(folder: Path, extra: str = "") -> Path:
    rows = ["user_id,parent_asin,rating,timestamp"]
    for user, items in {"U2": ["B1", "B2", "B3", "B4"], "U1": ["B3", "B1", "B2"]}.items():
        rows += [f"{user},{item},5.0,{100 + k}" for k, item in enumerate(items)]
    write(folder / "Toy.csv.gz", "\n".join(rows) + "\n" + extra, gz=True)
    meta = [
        {"parent_asin": "B1", "title": "First &amp; best!", "details": {"Brand": "Acme"},
         "features": ["fast", "<b>small</b>"], "categories": ["Tools", "Hand"], "description": ["d1"]},
        {"parent_asin": "B2", "title": "Second", "details": {}, "features": [], "categories": [], "description": []},
        {"parent_asin": "B3", "title": "Third", "details": {"Brand": "Zed"}, "features": [], "categories": ["X"],
         "description": []},
        {"parent_asin": "B4", "title": "Fourth", "features": [], "categories": [], "description": ["four"]},
        {"parent_asin": "B9", "title": "never bought"},
    ]
    write(folder / "meta_Toy.jsonl.gz", "\n".join(json.dumps(m) for m in meta) + "\n", gz=True)
    return folder


def lcrec(folder: Path, inter: str | None = None, items: str | None = None) -> Path:
    write(folder / "S.inter.json", inter or json.dumps({"0": [2, 0, 1], "1": [1, 2, 10, 0], "2": [0, 1, 2, 1]}))
    write(folder / "S.item.json", items or json.dumps({
        str(i): {"title": f"Item {i}.", "brand": "B", "categories": "A,B", "description": f"about {i}"}
        for i in range(11)
    }))
    return folder


def movielens(folder: Path) -> Path:
    write(folder / "u.data", "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n1\t30\t4\t881250952\n")
    write(folder / "u.genre", "unknown|0\nAction|1\nComedy|2\n\n")
    write(folder / "u.item", (
        "10|Heat (1995)|01-Jan-1995||http://x|0|1|0\n"
        "20|Babe (1995)|01-Jan-1995||http://x|0|0|1\n"
        "30|Caf\xe9 Society|01-Jan-1997||http://x|1|0|0\n"
    ).encode("latin-1"))
    return folder


def recbole_files(folder: Path) -> Path:
    write(folder / "r.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                              "7\t1\t5\t10\n7\t2\t4\t9\n8\t2\t3\t1\n7\t3\t1\t11\n")
    write(folder / "r.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                             "1\tAlpha\t1990\tDrama\n2\tBeta\t1991\tComedy Drama\n3\tGamma\t1992\tAction\n")
    return folder


# ----- checks ---------------------------------------------------------------------------------------

def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def similarity_scores(model, user, table):
    """``[B, N+1]`` scores of user vectors against an item table under the model's similarity (dot or cosine)."""
    import torch.nn.functional as F

    if model.similarity == "cosine":
        return F.normalize(user, dim=-1) @ F.normalize(table, dim=-1).T
    return user @ table.T


# ----- stand-in text embeddings -----------------------------------------------------------------------

def embed_vectors(folder: Path, matrices: dict[str, np.ndarray], name: str) -> dict:
    """``semrec embed`` of a prepared dataset with a stand-in encoder that answers each view's texts with the given
    rows (``{view: float32 [N, dim]}``, item order): ``embed_dataset`` writes the files and manifest as for a real
    model. The encoder's identity is ``name`` plus a hash of the matrices, so the cache never mixes two of them."""
    from semrec.config import EmbedConfig
    from semrec.data.dataset import CanonicalDataset
    from semrec.text.encode import FunctionEncoder, embed_dataset

    dataset = CanonicalDataset.load(folder)
    by_texts: dict[tuple[str, ...], np.ndarray] = {}
    digest = hashlib.sha256()
    for view, matrix in matrices.items():
        texts = tuple(dataset.view_texts(view))
        matrix = np.asarray(matrix, dtype=np.float32)
        if texts in by_texts and not np.array_equal(by_texts[texts], matrix):
            raise ValueError(f"view {view!r} has the texts of another view but other vectors")
        by_texts[texts] = matrix
        digest.update(f"{view}:{matrix.shape}".encode())
        digest.update(matrix.tobytes())
    encoder = FunctionEncoder(lambda texts: by_texts[tuple(texts)], f"{name}:{digest.hexdigest()}")
    return embed_dataset(folder, EmbedConfig(views=list(matrices)), progress=False, encoder=encoder)


# ----- the tiny dataset and runs ------------------------------------------------------------------

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
    idx = np.array([int(r[1:]) for r in dataset.items["raw_id"]])
    matrices = {}
    for k, view in enumerate(["title", "brand", "all"]):
        base = np.stack([np.sin(idx * (j + 1) / n_items * 2 * np.pi + k) for j in range(32)], axis=1)
        vectors = (base + 0.1 * rng.standard_normal(base.shape)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        matrices[view] = vectors
    embed_vectors(folder, matrices, "tests.support.make_tiny_dataset")
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


# ----- serving: a dataset encoded by a deterministic fake text encoder, tiny trained runs ------------------

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
    from semrec.config import CodesConfig, EmbedConfig
    from semrec.data.dataset import CanonicalDataset
    from semrec.text.clean import clean_text, clean_title
    from semrec.text.encode import FunctionEncoder, embed_dataset
    from semrec.tokenizers.pipeline import fit_codes

    make_tiny_dataset(folder)
    dataset = CanonicalDataset.load(folder)
    dataset.items["title"] = [clean_title(t) for t in dataset.items["title"]]
    # one brand per item: a view with a few distinct texts has ~zero-variance PCA axes, and whitening them turns
    # float round-off into different codes for identical texts
    dataset.items["brand"] = [clean_text(f"brand {r[1:]}") for r in dataset.items["raw_id"]]
    dataset.save(folder)
    embed_dataset(folder, EmbedConfig(views=["title", "brand", "all"]), progress=False,
                  encoder=FunctionEncoder(fake_encode, "tests.support.fake_encode", DIM))
    fit_codes(folder, CodesConfig(tokenizer="pq", params=dict(PQ)), progress=False)
    fit_codes(folder, CodesConfig(tokenizer="opq", params=dict(OPQ)), progress=False)
    return folder


def train_run(dataset: Path, model: str, out: Path, epochs: int = 2) -> Path:
    """A short run of ``model`` (settings from MODELS) on ``dataset``, written to ``out``."""
    from semrec.config import RunConfig, TrainConfig
    from semrec.train.trainer import Trainer

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
