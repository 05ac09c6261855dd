"""SOLID's semantic ids (spec solid section 4, steps 2-4): the item table of a trained CTR run (optionally beside the
items' text vectors) clustered by k-means into ids 1..K, written as a one-level codes folder that SOLID runs name in
``semantic``.

The run's item vectors (``encoder.item.weight`` rows 1..N of its best checkpoint) become view ``id`` of an
embeddings folder ``<dataset>/embeddings/<name>-vectors/``; for ``text`` the dataset's ``all``-view vectors of
``text_model`` are view ``text`` there. ``semrec codes -t kmeans`` then fits on the chosen views, each row-normalised so
that id and text weigh the same (spec 10.3 leaves the fusion unknown: this is concatenation after normalisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from semrec.artifacts import DatasetFolder, RunFolder
from semrec.errors import SemrecError
from semrec.io import sha256_file, write_json

SOURCES = {"id": ["id"], "text": ["text"], "id+text": ["id", "text"]}


def default_clusters(n_items: int) -> int:
    """K when none is given: a tenth of the catalogue, at most 256 and at least 2 (the spec does not know K)."""
    return max(2, min(256, n_items // 10))


def semantic_ids_current(dataset_dir: str | Path, name: str, run_dir: str | Path | None) -> bool:
    """Whether the codes folder ``name`` exists, was fitted on the dataset as it is, and (for the ``id`` sources) on
    the item vectors of ``run_dir``'s current best checkpoint (a retrained item run makes them stale)."""
    folder = DatasetFolder(dataset_dir)
    if not folder.codes(name).is_current(folder):
        return False
    vectors = folder.embeddings(f"{name}-vectors")
    if run_dir is None:
        return True
    best = RunFolder(run_dir).best
    if not (vectors.manifest.is_file() and best.is_file()):
        return False
    return vectors.read_manifest().get("views", {}).get("id", {}).get("key") == sha256_file(best)


def write_semantic_ids(dataset_dir: str | Path, run_dir: str | Path | None, sources: str = "id+text",
                       k: int | None = None, name: str = "semantic", text_model: str = "all-MiniLM-L6-v2",
                       seed: int = 0) -> tuple[Any, Path]:
    """Cluster the items into semantic ids; returns ``(CodeReport, codes folder)``. ``run_dir`` (a finished dsr run
    on item rows) is needed for the ``id`` sources. Raises SemrecError on an unknown source or a run that does not
    fit the dataset."""
    import torch

    from semrec.config import CodesConfig
    from semrec.data.dataset import CanonicalDataset
    from semrec.text.encode import load_view_embeddings, write_view_matrix
    from semrec.tokenizers.pipeline import fit_codes
    from semrec.train.checkpoint import load_checkpoint

    if sources not in SOURCES:
        raise SemrecError(f"semantic sources must be one of {', '.join(SOURCES)}, got {sources!r}")
    folder = DatasetFolder(dataset_dir)
    dataset = CanonicalDataset.load(dataset_dir)
    views: dict[str, np.ndarray] = {}
    keys: dict[str, str] = {}
    if "id" in SOURCES[sources]:
        if run_dir is None:
            raise SemrecError(f"semantic source {sources!r} clusters a trained model's item vectors: give its run")
        best = RunFolder(run_dir).best
        table = load_checkpoint(best, "cpu")["model"].get("encoder.item.weight")
        if table is None or table.size(0) != dataset.n_items + 1:
            shape = None if table is None else tuple(table.shape)
            raise SemrecError(f"{run_dir}: not a dsr run on this dataset's item rows (item table {shape}, the "
                              f"dataset has {dataset.n_items} items)")
        views["id"] = table[1:].detach().to(torch.float32).numpy()
        keys["id"] = sha256_file(best)
    if "text" in SOURCES[sources]:
        emb = folder.embeddings(text_model)
        views["text"] = np.asarray(load_view_embeddings(emb.path, ["all"])["all"][1:], dtype=np.float32)
        keys["text"] = emb.read_manifest()["views"]["all"]["key"]
    target = folder.embeddings(f"{name}-vectors")
    target.path.mkdir(parents=True, exist_ok=True)
    manifest = {"model": f"{name}-vectors", "dataset": dataset.name, "n_items": dataset.n_items, "padding_row": 0,
                "views": {}, "made_from": {"run": None if run_dir is None else str(run_dir), "text_model": text_model}}
    for view, matrix in views.items():
        manifest["views"][view] = {"file": write_view_matrix(target.path, view, matrix), "key": keys[view],
                                   "dim": int(matrix.shape[1])}
    write_json(target.manifest, manifest)
    k = default_clusters(dataset.n_items) if k is None else k
    config = CodesConfig(tokenizer="kmeans", name=name, model=f"{name}-vectors", dedup=False, seed=seed,
                         params={"views": SOURCES[sources], "k": k, "normalize": True})
    return fit_codes(dataset_dir, config, progress=False)
