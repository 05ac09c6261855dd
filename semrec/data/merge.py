"""Merge prepared datasets into one multi-domain dataset (VQ-Rec pre-training, spec vqrec §1.1, §2.2).

Domain ``k`` (the k-th input, 0-based) keeps its items and users; raw ids become ``"<k>-<raw id>"`` as in
the reference's FHCKM files, dense item ids are offset so that domain k's items form one contiguous block.
Every domain's sequences, and so its leave-last-out split, are unchanged. The merged dataset has one text
view, ``text``: each item's joined ``all`` text of its own dataset (so the views of the inputs need not
agree), and the ``all`` embeddings of the inputs are concatenated, not recomputed: a joint tokenizer
(``semrec codes <merged> --tokenizer opq``) is then fitted on the training items of every domain at once.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from semrec import __version__
from semrec.artifacts import DatasetFolder
from semrec.data.dataset import ALL_VIEW, SCHEMA_VERSION, CanonicalDataset
from semrec.errors import SemrecError
from semrec.io import sha256_text, write_json
from semrec.text.encode import embeddings_dir, load_view_embeddings, write_view_matrix

TEXT_VIEW = "text"


def merge_datasets(folders: list[str | Path], out: str | Path, text_model: str,
                   name: str | None = None) -> CanonicalDataset:
    """Write the merged dataset of ``folders`` (and its ``all`` embeddings of ``text_model``) to ``out``."""
    if len(folders) < 1:
        raise SemrecError("merge: give at least one prepared dataset")
    datasets = [CanonicalDataset.load(f) for f in folders]
    matrices = []
    for folder, dataset in zip(folders, datasets):
        emb = embeddings_dir(folder, text_model)
        try:
            matrix = load_view_embeddings(emb, [ALL_VIEW])[ALL_VIEW]
        except SemrecError as exc:
            raise SemrecError(f"merge: {exc} (run 'semrec embed {folder} --model {text_model}')") from None
        if matrix.shape[0] != dataset.n_items + 1:
            raise SemrecError(f"{emb}: {matrix.shape[0] - 1} embedding rows but {dataset.n_items} items; "
                              f"re-run 'semrec embed {folder}'")
        matrices.append(matrix[1:])
    dims = {m.shape[1] for m in matrices}
    if len(dims) != 1:
        raise SemrecError(f"merge: the datasets' {text_model} embeddings have different dims {sorted(dims)}")

    items, users, sequences, timestamps, domains = [], [], [], [], []
    item_offset = user_offset = 0
    for k, dataset in enumerate(datasets):
        items.append(pd.DataFrame({
            "item_id": dataset.items["item_id"].to_numpy() + item_offset,
            "raw_id": [f"{k}-{r}" for r in dataset.items["raw_id"]],
            TEXT_VIEW: dataset.view_texts(ALL_VIEW),
        }))
        users.append(pd.DataFrame({"user_id": dataset.users["user_id"].to_numpy() + user_offset,
                                   "raw_id": [f"{k}-{r}" for r in dataset.users["raw_id"]]}))
        sequences += [s + item_offset for s in dataset.sequences]
        timestamps.append(dataset.timestamps)
        domains.append({"domain": k, "name": dataset.name, "first_item": item_offset + 1,
                        "last_item": item_offset + dataset.n_items, "users": dataset.n_users,
                        "manifest_sha256": DatasetFolder(folders[k]).manifest_sha256()})
        item_offset += dataset.n_items
        user_offset += dataset.n_users
    merged_ts = None if any(t is None for t in timestamps) else [t for part in timestamps for t in part]
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "semrec_version": __version__,
        "name": name or "+".join(d.name for d in datasets),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"format": "merge", "options": {"text_model": text_model}, "files": []},
        "domains": domains,
        "views": [TEXT_VIEW],
        "id_rule": "domain k's items and users keep their order, offset into one contiguous block; raw ids '<k>-<raw>'",
        "sequence_rule": "each domain's sequences unchanged",
        "missing_meta": "n/a",
        "skips": {},
    }
    merged = CanonicalDataset(pd.concat(items, ignore_index=True), pd.concat(users, ignore_index=True),
                              sequences, merged_ts, manifest)
    manifest["counts"] = {k: v for k, v in merged.stats().items() if k in ("users", "items", "interactions")}
    out = Path(out)
    merged.save(out)
    emb = DatasetFolder(out).embeddings(text_model)
    emb_out = emb.path
    matrix = np.concatenate(matrices)
    key = sha256_text("merge", *[d["manifest_sha256"] for d in domains], text_model)
    views = {}
    for view in (TEXT_VIEW, ALL_VIEW):
        views[view] = {"file": write_view_matrix(emb_out, view, matrix), "key": key, "dim": int(matrix.shape[1]),
                       "distinct_texts": len(set(merged.view_texts(view))), "cache_hit": True}
    write_json(emb.manifest, {"model": text_model, "dataset": merged.name, "n_items": merged.n_items,
                              "padding_row": 0, "views": views, "dim": int(matrix.shape[1])})
    return merged
