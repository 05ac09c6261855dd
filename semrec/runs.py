"""A trained run, loaded once for every reader: config, data (checked against the recorded fingerprints) and model.

:func:`load_run` is how ``evaluate``, ``recommend``, ``serve``, ``export``, the Python API and the benchmarks open a
run folder: its saved config, its data (dataset, split, the item inputs of the model, checked against the
fingerprints the run recorded, see :mod:`semrec.train.run_folder`) and the model with a checkpoint's weights.
:func:`load_run_data` assembles the data of a config (the trainer uses it too). Nothing here imports the training
loop (``semrec.api.ensure_trained`` runs it: reuse results, else resume, else train).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semrec.artifacts import DatasetFolder, RunFolder
from semrec.config import RunConfig, from_dict
from semrec.data.dataset import CanonicalDataset
from semrec.data.splits import MIN_EVAL_LENGTH, LeaveLastOutSplit
from semrec.errors import SemrecError
from semrec.eval.metrics import head_items
from semrec.io import sha256_file, sha256_text
from semrec.models import ItemInputs, SequentialRecommender, build_model, model_entry
from semrec.models.inputs import build_item_inputs, item_features
from semrec.train.checkpoint import load_checkpoint
from semrec.train.run_folder import check_fingerprints

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    dataset: CanonicalDataset
    split: LeaveLastOutSplit
    items: ItemInputs
    head_mask: np.ndarray
    fingerprints: dict[str, str]  # sha256 of what the model depends on: dataset, codes, embeddings
    fingerprint_files: dict[str, Path] = field(default_factory=dict)  # the file (or folder) behind each
    tokenizer: Any | None = None  # the fitted tokenizer of the codes, for models that read codes or text
    ctr: Any | None = None  # CTR models: the sample table (semrec.data.ctr.CtrSamples) of config.ctr
    ctr_history: int = 0  # ... and the history length it was built with


def load_run_data(config: RunConfig) -> RunData:
    """Dataset, split and the item tensors the model needs (codes, frozen text vectors, popularity), with the
    fingerprints of the files they come from (see :mod:`semrec.train.run_folder`).

    Raises SemrecError naming the file when the dataset, codes or embeddings folder is missing or incomplete."""
    from semrec.text.encode import load_view_embeddings
    from semrec.tokenizers.pipeline import load_codes

    folder = DatasetFolder(config.dataset)
    dataset = CanonicalDataset.load(folder.root)
    split = dataset.split()
    train = np.concatenate(split.train) if split.train else np.zeros(0, dtype=np.int64)
    counts = np.bincount(train, minlength=dataset.n_items + 1)
    fingerprints = {"dataset": folder.manifest_sha256(), "dataset_content": dataset.content_fingerprint()}
    files = {"dataset": folder.manifest}
    needs = model_entry(config.model).needs
    tokenizer, codes, codebook_sizes, matrices = None, None, None, {}
    if model_entry(config.model).reads_codes_folder:
        codes_folder = folder.codes(config.codes)
        codes, tokenizer = load_codes(codes_folder.path)
        codebook_sizes = [int(s) for s in tokenizer.codebook_sizes]
        fingerprints["codes"] = sha256_file(codes_folder.codes)
        files["codes"] = codes_folder.codes
        embeddings_model = codes_folder.embeddings_model()  # codes.json is required of every codes folder
        if "text" in needs:
            if not hasattr(tokenizer, "transform"):
                raise SemrecError(f"{config.model} reads the PCA text vectors of a 'pq' tokenizer; "
                                  f"{codes_folder.path} holds a '{tokenizer.kind}' tokenizer")
            emb = folder.embeddings(embeddings_model)
            padded = load_view_embeddings(emb.path, list(tokenizer.input_views))
            fingerprints["embeddings"] = matrices_fingerprint(padded)
            files["embeddings"] = emb.path
            matrices = {v: m[1:] for v, m in padded.items()}
    if "plm" in needs:
        emb = folder.embeddings(config.text_model)
        plm = load_view_embeddings(emb.path, [config.text_view], mmap=True)[config.text_view]
        matrices = {config.text_view: plm[1:]}  # copied once, by build_item_inputs
        fingerprints["plm"] = sha256_file(emb.view_file(config.text_view))
        files["plm"] = emb.view_file(config.text_view)
    ctr, ctr_history = None, 0
    if model_entry(config.model).task == "ctr":
        from semrec.data.ctr import load_ctr_samples

        ctr_folder = folder.ctr(config.ctr)
        if not ctr_folder.exists():
            raise SemrecError(f"{ctr_folder.path}: no CTR samples; run 'semrec ctr-data {folder.root}"
                              f"{'' if config.ctr == 'ctr' else ' --name ' + config.ctr}' first")
        ctr, manifest = load_ctr_samples(ctr_folder.path, folder.root)
        ctr_history = int(manifest["history"])
        fingerprints["ctr"] = manifest["samples_sha256"]
        files["ctr"] = ctr_folder.samples
    features = item_features(needs, matrices, tokenizer, config.text_view, None if codes is None else codes[1:])
    items = build_item_inputs(features, codebook_sizes, counts, dataset.n_items)
    if config.semantic is not None or config.codebook_from is not None:
        load_semantics(config, folder, items, fingerprints, files)
    return RunData(dataset, split, items, head_items(split.train, dataset.n_items), fingerprints, files, tokenizer,
                   ctr, ctr_history)


def load_semantics(config: RunConfig, folder: DatasetFolder, items: ItemInputs, fingerprints: dict[str, str],
                   files: dict[str, Path]) -> None:
    """SOLID family (issue 19): set ``items.semantic`` (``[N+1]``: 1 + the one-level code of each item in codes folder
    ``config.semantic``, 0 for padding) and ``items.codebook`` (the item table of the run ``config.codebook_from``,
    trained on semantic rows), with their fingerprints. SemrecError naming the folder when either does not fit."""
    from semrec.tokenizers.pipeline import load_codes

    if config.semantic is None:
        raise SemrecError("codebook_from needs semantic: the codes folder of the items' semantic ids")
    codes_folder = folder.codes(config.semantic)
    codes, tokenizer = load_codes(codes_folder.path)
    if codes.shape[1] != 1:
        raise SemrecError(f"{codes_folder.path}: semantic ids are one code per item (k-means: semrec codes -t kmeans); "
                          f"these codes have {codes.shape[1]} levels")
    semantic = codes[:, 0] + 1
    semantic[0] = 0
    items.semantic = torch.from_numpy(semantic.astype(np.int64))
    items.codebook_sizes = [int(tokenizer.codebook_sizes[0])]
    fingerprints["semantic"] = sha256_file(codes_folder.codes)
    files["semantic"] = codes_folder.codes
    if config.codebook_from is not None:
        source = RunFolder(config.codebook_from)
        state = load_checkpoint(source.best, "cpu")["model"]
        table = state.get("encoder.item.weight")
        if table is None or table.size(0) != items.codebook_sizes[0] + 1:
            raise SemrecError(f"{source.path}: not a run trained on these semantic rows (its item table is "
                              f"{None if table is None else tuple(table.shape)}, the semantic ids need "
                              f"{items.codebook_sizes[0] + 1} rows); train dsr with rows=semantic first")
        items.codebook = table.float()
        fingerprints["codebook"] = sha256_file(source.best)
        files["codebook"] = source.best


def matrices_fingerprint(matrices: dict[str, np.ndarray]) -> str:
    """sha256 over named arrays (name, dtype, shape and bytes of each, in order)."""
    import hashlib

    parts = []
    for name, array in matrices.items():
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        parts += [name, str(array.dtype), str(array.shape), digest]
    return sha256_text(*parts)


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved in a run folder; SemrecError when it is not a run folder or the file is bad."""
    return from_dict(RunConfig, RunFolder(run_dir).read_config_dict())


@dataclass
class Run:
    """A trained run folder, loaded: its config, data and model (``eval`` mode, on the device it was loaded to)."""

    folder: RunFolder
    config: RunConfig
    data: RunData
    model: SequentialRecommender

    @property
    def tokenizer(self) -> Any | None:
        """The fitted tokenizer of the run's codes (None for models that read no codes)."""
        return self.data.tokenizer


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> Run:
    """The saved config, the data (checked against the fingerprints the run recorded) and the model of a trained
    run folder, with the weights of its ``best`` or ``last`` checkpoint (models without parameters to train have
    none), in eval mode on ``device``.

    Every command that uses a trained run (evaluate, recommend, serve, export, the benchmarks) loads it this way.
    Raises SemrecError when the folder is not a run, a file is missing or the checkpoint does not fit the data,
    :class:`~semrec.artifacts.MissingCheckpoint` when the checkpoint is absent, and
    :class:`~semrec.train.run_folder.RunDataChanged` when its dataset, codes or embeddings changed since training."""
    if checkpoint not in ("best", "last"):
        raise SemrecError(f"checkpoint must be best or last, got {checkpoint!r}")
    folder = RunFolder(run_dir)
    config = load_run_config(folder.path)
    data = load_run_data(config)
    check_fingerprints(folder.path, data.fingerprints, data.fingerprint_files)
    device = torch.device(device)
    model = build_model(config.model, config.model_params, data.items)
    if model_entry(config.model).trainable:
        state = load_checkpoint(folder.checkpoint(checkpoint), device)["model"]
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise SemrecError(f"{folder.path}: the checkpoint does not fit the dataset as it is now (was it "
                              f"re-prepared?): {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    return Run(folder, config, data, model)


def load_init_weights(model: torch.nn.Module, source: str | Path, device: torch.device) -> dict[str, list[str]]:
    """Copy matching weights from a run folder (its best.pt) or a checkpoint file into ``model``.

    Parameters whose name and shape match are loaded; the rest keep their initialisation (like
    ``strict=False``). Buffers (item codes, text vectors: the target dataset's own) are never copied.
    Returns the names that were loaded and skipped, for the run log."""
    path = Path(source)
    if path.is_dir():
        path = RunFolder(path).checkpoint("best")
    if not path.is_file():
        raise SemrecError(f"init_from: {source} is neither a checkpoint nor a run folder with checkpoints/best.pt")
    state = load_checkpoint(path, device)["model"]
    own = dict(model.named_parameters())
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise SemrecError(f"init_from: no parameter of {path} matches this model (wrong model or sizes?)")
    model.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "skipped": sorted(set(own) - set(loaded))}


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", exclude_history: bool | None = None,
                 device: str | torch.device | None = None) -> dict[str, dict[str, float]]:
    """Valid and test metrics of a run folder's ``best`` or ``last`` checkpoint with the current evaluator
    (on ``device``; default cuda when available). Metrics are None (n/a) for a split without rows.

    Raises SemrecError when the run folder is incomplete or its data changed since training (see :func:`load_run`)."""
    from semrec.eval.evaluator import evaluate

    if checkpoint not in ("best", "last"):
        raise SemrecError(f"checkpoint must be best or last, got {checkpoint!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run = load_run(run_dir, checkpoint, device)
    cfg, data = run.config, run.data
    warn_if_nothing_to_evaluate(data)
    excl = cfg.train.exclude_history if exclude_history is None else exclude_history
    return {split: evaluate(run.model, getattr(data.split, split), run.model.max_len, cfg.train.eval_batch_size,
                            excl, data.head_mask, device=device) for split in ("valid", "test")}


def warn_if_nothing_to_evaluate(data: RunData, consequence: str = "") -> bool:
    """Log a warning when the validation and test splits have no rows (every user has fewer than 3 interactions,
    leave-last-out's minimum); return whether they are empty."""
    if len(data.split.valid.targets) or len(data.split.test.targets):
        return False
    longest = max((len(s) for s in data.dataset.sequences), default=0)
    logger.warning("warning: dataset '%s' has nothing to evaluate: leave-last-out holds out the last two items of "
                   "users with at least %d interactions, and no user has that many (longest sequence: %d); every "
                   "metric is n/a%s", data.dataset.name, MIN_EVAL_LENGTH, longest,
                   f"; {consequence}" if consequence else "")
    return True
