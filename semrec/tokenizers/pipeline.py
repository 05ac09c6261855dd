"""``semrec codes``: fit a tokenizer on a prepared dataset's view embeddings and write its codes.

Output folder ``<dataset>/codes/<name>/``: ``codes.npy`` (int64 ``[N+1, levels]``, row ``i`` = item id
``i``, row 0 = -1 padding), ``tokenizer/`` (the fitted tokenizer, enough to encode new items),
``report.json`` and ``codes.json`` (what the codes were made from), ``codes_config.yaml``. What the fit
adapted to a small or degenerate catalogue (a clamped PCA size, a fallback training algorithm, views without
variance) is in the report's ``notes`` and printed with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from semrec.artifacts import CODES_FIX, CodesFolder, DatasetFolder
from semrec.config import CodesConfig, save_config
from semrec.data.dataset import load_sequences, peek_dataset, train_items
from semrec.errors import SemrecError
from semrec.io import require_artifact, write_json, write_padded_npy
from semrec.text.encode import load_view_embeddings
from semrec.tokenizers import build_tokenizer, load_tokenizer, tokenizer_class
from semrec.tokenizers.report import CodeReport, code_report


def _default_params(kind: str, params: dict[str, Any], dataset_views: list[str]) -> dict[str, Any]:
    """``params`` completed with the dataset's views where the tokenizer class takes them from the dataset."""
    params = dict(params)
    if tokenizer_class(kind).views_from_dataset and "views" not in params:
        params["views"] = list(dataset_views)
    return params


def fit_codes(dataset_dir: str | Path, config: CodesConfig, progress: bool = True) -> tuple[CodeReport, Path]:
    """Fit ``config.tokenizer`` on the dataset's embeddings, encode all items, write the codes folder."""
    dataset_dir = Path(dataset_dir)
    dataset_views, n_items = peek_dataset(dataset_dir)  # the sequences are read only for fit_on: train
    kind = config.tokenizer
    tokenizer = build_tokenizer(kind, dedup=config.dedup, **_default_params(kind, config.params, dataset_views))
    folder = DatasetFolder(dataset_dir)
    emb = folder.embeddings(config.model)
    emb_dir = emb.path
    # read from disk in blocks (semrec.io.NpyRows), never whole: the fit sees samples, encoding goes block by block
    views = load_view_embeddings(emb_dir, list(tokenizer.input_views), lazy=True)
    for name, matrix in views.items():
        if matrix.shape[0] != n_items:
            raise SemrecError(f"{emb_dir}: view '{name}' has {matrix.shape[0]} rows but the dataset has "
                              f"{n_items} items; re-run 'semrec embed'")
    fit_on = config.fit_on or tokenizer.default_fit_on
    if fit_on not in ("all", "train"):
        raise SemrecError(f"fit_on must be 'all' or 'train', got {fit_on!r}")
    fit_rows = train_items(load_sequences(dataset_dir)) - 1 if fit_on == "train" else None
    tokenizer.fit(views, fit_rows, seed=config.seed)
    # fitted on every item, the fit codes are the catalogue's codes (encode reproduces them): no second pass
    codes = tokenizer.fit_codes if fit_rows is None else tokenizer.encode(views)
    report = code_report(tokenizer, codes, views)

    target = folder.codes(config.name or kind)
    out = target.path
    tokenizer.save(target.tokenizer)
    write_padded_npy(target.codes, codes.astype(np.int64, copy=False), pad_value=-1)  # row 0: -1 padding
    write_json(target.report, report.to_dict())
    emb_manifest = emb.read_manifest()
    write_json(target.manifest, {
        "tokenizer": kind,
        "n_items": n_items,
        "n_levels": int(codes.shape[1]),
        "codebook_sizes": [int(s) for s in tokenizer.codebook_sizes],
        "padding_row": 0,
        "fit_on": fit_on,
        "n_fit_items": int(n_items if fit_rows is None else len(fit_rows)),
        "dataset_manifest_sha256": folder.manifest_sha256(),
        "embeddings": {"model": config.model,
                       "keys": {v: emb_manifest["views"][v]["key"] for v in tokenizer.input_views}},
    })
    save_config(config, target.config)
    return report, out


def pca_text(tokenizer: Any, matrices: Mapping[str, np.ndarray]) -> np.ndarray:
    """CCFRec's frozen text vectors ``[n, views, dim]``: a pq tokenizer's PCA of each input view, stacked in the
    tokenizer's view order (the trainer prepends the padding row; serving uses it for cold-start items)."""
    text = tokenizer.transform({v: matrices[v] for v in tokenizer.input_views})
    return np.stack([text[v] for v in tokenizer.input_views], axis=1).astype(np.float32)


def codes_command(codes_dir: str | Path) -> str:
    """The `semrec codes` line that makes the folder ``<dataset>/codes/<name>`` (a name other than a tokenizer
    kind also needs the tokenizer and settings it was meant to have: the configs say them in a comment)."""
    path = Path(codes_dir)
    dataset, name = path.parent.parent, path.name
    if name == "pq":
        return f"'semrec codes {dataset}'"
    if name in ("opq", "rq", "kmeans"):
        return f"'semrec codes {dataset} -t {name}'"
    return f"'semrec codes {dataset} --name {name}' with the tokenizer and settings meant for it"


def load_codes(codes_dir: str | Path) -> tuple[np.ndarray, Any]:
    """Codes ``[N+1, levels]`` (row 0 padding) and the fitted tokenizer of a codes folder."""
    folder = CodesFolder(codes_dir)
    if not folder.codes.is_file():
        raise SemrecError(f"{folder.path}: no codes.npy; run {codes_command(folder.path)} first")
    require_artifact(folder.tokenizer / "tokenizer.json", "codes", CODES_FIX)
    try:
        codes = np.load(folder.codes)
    except (OSError, ValueError) as exc:  # truncated or foreign file
        raise SemrecError(f"{folder.codes}: cannot read ({type(exc).__name__}: {exc}); "
                          f"{CODES_FIX}") from None
    return codes, load_tokenizer(folder.tokenizer)


def read_codes_json(codes_dir: str | Path) -> dict[str, Any]:
    """The ``codes.json`` of a codes folder (what the codes were made from); SemrecError naming it if missing."""
    return CodesFolder(codes_dir).read_manifest()


def format_report(report: CodeReport) -> str:
    """Human-readable code report."""
    util = report.utilisation
    lines = [
        f"tokenizer     {report.tokenizer}: {report.n_levels} levels, codebook sizes "
        f"{sorted(set(report.codebook_sizes))}, {report.n_items:,} items",
        f"utilisation   mean {np.mean(util):.1%}, min {np.min(util):.1%} (per level: "
        + " ".join(f"{u:.0%}" for u in util) + ")",
        f"perplexity    mean {np.mean(report.perplexity):.1f}",
        f"collisions    {report.collision_rate:.2%} of items share their full code with another item "
        f"(largest group {report.max_collision_group})",
    ]
    if report.reconstruction_error is not None:
        lines.append(f"recon. error  {report.reconstruction_error:.4f} (relative squared error)")
    if report.layout:
        lines.append("layout        " + ", ".join(f"{v}: {s[0]}-{s[-1]}" for v, s in report.layout.items()))
    if report.dedup_level:
        lines.append("dedup         last level is the de-duplication digit")
    lines.extend(f"{'note' if i == 0 else '':<13} {note}" for i, note in enumerate(report.notes))
    return "\n".join(lines)
