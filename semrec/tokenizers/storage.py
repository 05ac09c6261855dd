"""The on-disk format of a fitted tokenizer: a folder with ``tokenizer.json``, ``state.npz`` and faiss index files.

``tokenizer.json`` holds ``format``/``format_version``, the ``kind``, the constructor ``params``, what the fit
found (``fitted``: view dims, codebook sizes, layout, notes, ... ) and the names of the other ``files``;
``state.npz`` the numpy arrays; each faiss index is ``<stem>.faiss``. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from semrec.errors import SemrecError
from semrec.io import atomic_path, read_json, require_artifact, write_json
from semrec.tokenizers.faiss_utils import read_index, write_index

FORMAT_NAME = "semrec.tokenizer"
FORMAT_VERSION = 1
TOKENIZER_JSON = "tokenizer.json"
STATE_NPZ = "state.npz"


def write_tokenizer_folder(folder: str | Path, kind: str, params: dict[str, Any], fitted: dict[str, Any],
                           arrays: Mapping[str, np.ndarray], indexes: Mapping[str, Any]) -> None:
    """Write a tokenizer folder: the faiss ``indexes`` (file stem -> index), ``arrays`` and ``tokenizer.json``
    (last, so a folder with a ``tokenizer.json`` has its other files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index_files: dict[str, str] = {}
    for stem, index in indexes.items():
        index_files[stem] = f"{stem}.faiss"
        write_index(index, folder / index_files[stem])
    with atomic_path(folder / STATE_NPZ) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    write_json(
        folder / TOKENIZER_JSON,
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "params": params,
            "fitted": fitted,
            "files": {"arrays": STATE_NPZ, "indexes": index_files},
        },
    )


def read_tokenizer_json(folder: str | Path) -> dict[str, Any]:
    """Read and check ``folder/tokenizer.json`` (format name and version)."""
    path = Path(folder) / TOKENIZER_JSON
    if not path.is_file():
        raise SemrecError(f"no tokenizer found: {path} does not exist")
    try:
        meta = read_json(path)
    except ValueError as exc:
        raise SemrecError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise SemrecError(f"{path}: not a semrec tokenizer file")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise SemrecError(f"{path}: format version {version} is not supported (this semrec reads {FORMAT_VERSION})")
    for key in ("kind", "params", "fitted", "files"):
        if key not in meta:
            raise SemrecError(f"{path}: missing field '{key}'")
    return meta


def read_tokenizer_state(folder: str | Path, meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and faiss indexes (file stem -> index; stand-ins without faiss) of the folder whose
    ``tokenizer.json`` is ``meta``; SemrecError naming a missing file."""
    folder = Path(folder)
    for name in [meta["files"]["arrays"], *meta["files"]["indexes"].values()]:
        require_artifact(folder / name, "tokenizer", "re-run 'semrec codes' to rebuild it")
    with np.load(folder / meta["files"]["arrays"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    indexes = {stem: read_index(folder / name) for stem, name in meta["files"]["indexes"].items()}
    return arrays, indexes
