"""semrec as plain Python functions: every command of the CLI is one call here, and so is every benchmark step.

Each function takes typed configs (:mod:`semrec.config`) or paths and returns what it made; none prints. Where a
step has something to say while it works (a dataset merged, a run resumed, the stages of the quickstart) it calls
``say`` (default: the ``semrec.api`` logger at INFO); the CLI passes its printer. Errors a user can fix raise
:class:`semrec.errors.SemrecError` with a one-line message naming the file, key or value.

Pipeline: :func:`prepare` (raw data -> canonical dataset) -> :func:`embed` (text views -> PLM vectors) ->
:func:`codes` (vectors -> semantic codes) -> :func:`train` / :func:`pretrain` / :func:`finetune` ->
:func:`evaluate` -> :func:`recommend` / :func:`export` / :func:`serve`; :func:`quickstart` runs it all.
The ``ensure_*`` functions make a step idempotent (reuse what is current, else finish or redo it): what the
benchmarks use to resume a table.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semrec.artifacts import DatasetFolder, RunFolder
from semrec.config import (
    CodesConfig,
    CtrConfig,
    EmbedConfig,
    Override,
    PrepareConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from semrec.errors import SemrecError

logger = logging.getLogger(__name__)

Say = Callable[[str], None]


def _log(message: str) -> None:
    logger.info(message)


# ------------------------------------------------------------------------------------------------ data and codes


def prepare(config: PrepareConfig) -> tuple[Any, Path]:
    """Read raw data into a canonical dataset folder; returns ``(PreparedDataset, folder)`` (the manifest with its
    statistics; ``.load()`` gives the :class:`~semrec.data.dataset.CanonicalDataset`). See
    :func:`semrec.data.prepare.prepare_dataset` for the formats and the errors raised."""
    from semrec.data.prepare import prepare_dataset

    return prepare_dataset(config)


def load_dataset(folder: str | Path) -> Any:
    """The :class:`~semrec.data.dataset.CanonicalDataset` of a prepared folder (SemrecError when incomplete)."""
    from semrec.data.dataset import CanonicalDataset

    return CanonicalDataset.load(folder)


def embed(dataset_dir: str | Path, config: EmbedConfig, encoder: Any | None = None,
          progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Encode the text views of a prepared dataset (float32 ``[n_items + 1, dim]`` per view, row 0 padding,
    cached by content hash); returns ``(manifest, embeddings folder)``. ``encoder``: an object with the
    :class:`semrec.text.encode.TextEncoder` interface, to use instead of loading ``config.model``."""
    from semrec.text.encode import embed_dataset

    kwargs = {"encoder": encoder} if encoder is not None else {}
    manifest = embed_dataset(dataset_dir, config, progress=progress, **kwargs)
    return manifest, DatasetFolder(dataset_dir).embeddings(config.model).path


def codes(dataset_dir: str | Path, config: CodesConfig, progress: bool = True) -> tuple[Any, Path]:
    """Fit ``config.tokenizer`` on the view embeddings and encode every item; returns ``(CodeReport, codes
    folder)``. See :func:`semrec.tokenizers.pipeline.fit_codes`."""
    from semrec.tokenizers.pipeline import fit_codes

    return fit_codes(dataset_dir, config, progress=progress)


def ctr_data(dataset_dir: str | Path, config: CtrConfig) -> tuple[Any, dict[str, Any], Path]:
    """Pointwise CTR samples (SOLID's task) of a prepared dataset, written to ``<dataset>/ctr/<config.name>/``;
    returns ``(CtrSamples, manifest, folder)``. See :mod:`semrec.data.ctr`."""
    from semrec.data.ctr import write_ctr_samples

    samples, folder = write_ctr_samples(dataset_dir, config)
    return samples, DatasetFolder(dataset_dir).ctr(config.name).read_manifest(), folder


def ensure_codes(dataset_dir: str | Path, config: CodesConfig) -> Path:
    """The codes folder ``config.name or config.tokenizer`` of a dataset, fitted only when it is missing or was
    made from another dataset manifest (see :meth:`semrec.artifacts.CodesFolder.is_current`)."""
    dataset = DatasetFolder(dataset_dir)
    folder = dataset.codes(config.name or config.tokenizer)
    if folder.exists() and folder.is_current(dataset):
        return folder.path
    return codes(dataset_dir, config, progress=False)[1]


# ------------------------------------------------------------------------------------------------------ training


@dataclass
class Trained:
    """What a training call made: the run folder, its config and its results (``results.json``: best epoch,
    valid/test metrics, stop reason, ...; empty on a non-zero ``torchrun`` rank or when nothing was evaluated)."""

    run_dir: Path
    config: RunConfig
    results: dict[str, Any]
    init_report: dict[str, list[str]] | None = None  # finetune: {"loaded": [...], "skipped": [...]} tensor names
    resumed_after: int | None = None  # resume: the last epoch the interrupted run had finished

    def describe(self) -> str:
        """One line on how the run ended (best epoch and how it was chosen, why training stopped)."""
        from semrec.train.trainer import describe_results

        return describe_results(self.results, self.config)


def _fit(config: RunConfig, run_dir: str | Path | None = None, resume: bool = False,
         before_fit: Callable[[Any], None] | None = None, setup: bool = True) -> Trained:
    """Build the trainer (after setting the process up for ``config.train`` unless ``setup`` is False: the caller
    did it once for several trainings), let ``before_fit`` see it, train."""
    from semrec.train.process import prepare_process
    from semrec.train.trainer import Trainer

    if setup:
        prepare_process(config.train)
    trainer = Trainer(config, run_dir=run_dir, resume=resume)
    if before_fit is not None:
        before_fit(trainer)
    resumed_after = trainer.epoch - 1 if resume else None
    results = trainer.fit()
    return Trained(trainer.run_dir, trainer.config, results, trainer.init_report, resumed_after)


def train(config: RunConfig) -> Trained:
    """Train ``config.model`` on ``config.dataset`` into ``config.out`` (default
    :meth:`semrec.artifacts.RunFolder.default_path`): early stopping on validation NDCG@10, a checkpoint every
    epoch, results on valid and test. Sets this process up for the run (seeds, allocator, threads:
    :func:`semrec.train.process.prepare_process`). Raises SemrecError on bad settings or data, and when the
    folder already holds a run (continue it with :func:`resume`)."""
    return _fit(config)


def resume(run_dir: str | Path, overrides: list[Override] | None = None, say: Say = _log) -> Trained:
    """Continue the interrupted run in ``run_dir`` with its saved config; ``overrides`` may change only the epoch
    cap, patience and time budget (SemrecError for any other key: the checkpoints depend on it)."""
    from semrec.train.trainer import resume_config

    config = resume_config(run_dir, overrides)

    def announce(trainer: Any) -> None:
        say(f"resuming {run_dir} after epoch {trainer.epoch - 1} (best so far: epoch {trainer.best_epoch})")

    return _fit(config, run_dir=run_dir, resume=True, before_fit=announce)


def finetune(config: RunConfig, say: Say = _log) -> Trained:
    """Train ``config`` starting from the parameters of ``config.init_from`` (a run folder's best.pt or a
    checkpoint file) that match this model in name and shape; the rest (e.g. the target's item codes) stays
    fresh. SemrecError when ``init_from`` is unset or nothing matches."""
    if not config.init_from:
        raise SemrecError("finetune needs init_from: the pre-trained run folder or checkpoint")

    def announce(trainer: Any) -> None:
        report = trainer.init_report
        say(f"initialised {len(report['loaded'])} tensors from {config.init_from}; kept fresh: "
            f"{', '.join(report['skipped']) or 'none'}")

    return _fit(config, before_fit=announce)


def ensure_merged(datasets: Sequence[str | Path], merged: str | Path | None = None,
                  text_model: str = "all-MiniLM-L6-v2", say: Say = _log) -> Path:
    """The multi-domain dataset of ``datasets`` (prepared folders with ``text_model``'s embeddings) in ``merged``
    (default ``data/pretrain-<names>``): merged again only when missing or when a source's manifest changed.
    See :func:`semrec.data.merge.merge_datasets` (item ids renumbered per domain, one embedding table)."""
    from semrec.data.dataset import CanonicalDataset
    from semrec.data.merge import merge_datasets
    from semrec.data.prepare import format_stats

    folders = [Path(f) for f in datasets]
    if not folders:
        raise SemrecError("merging needs at least one prepared dataset folder")
    target = Path(merged) if merged is not None else Path("data") / ("pretrain-" + "+".join(f.name for f in folders))
    shas = [DatasetFolder(f).manifest_sha256() if DatasetFolder(f).exists() else None for f in folders]
    current = CanonicalDataset.load(target).manifest.get("domains") if DatasetFolder(target).exists() else None
    if current is None or [d["manifest_sha256"] for d in current] != shas:
        say(f"merging {len(folders)} datasets into {target}")
        say(format_stats(merge_datasets(folders, target, text_model)))
    return target


def pretrain(datasets: Sequence[str | Path], config: RunConfig, merged: str | Path | None = None,
             codes_overrides: list[Override] | None = None, say: Say = _log) -> Trained:
    """Multi-domain pre-training (VQ-Rec, spec ``vqrec.md`` section pre-training): merge ``datasets`` into one
    dataset (``merged``, default ``data/pretrain-<names>``; rebuilt only when a source changed), fit the model's
    joint tokenizer (its registry entry's ``pretrain_tokenizer``) on the training items of every domain when the
    codes folder ``config.codes`` is missing (``codes_overrides``: its ``params.*`` settings), then train
    ``config`` on the merged dataset with mixed-domain batches."""
    from semrec.models import model_entry
    from semrec.tokenizers.pipeline import format_report

    target = ensure_merged(datasets, merged, config.text_model, say)
    joint_tokenizer = model_entry(config.model).pretrain_tokenizer  # VQ-Rec: opq; None: the model fits no codes
    if joint_tokenizer is not None and not DatasetFolder(target).codes(config.codes).exists():
        say(f"fitting the joint tokenizer ({config.codes}) on the training items of every domain")
        codes_cfg = load_config(CodesConfig, None, list(codes_overrides or []))
        codes_cfg.tokenizer, codes_cfg.name, codes_cfg.model = joint_tokenizer, config.codes, config.text_model
        say(format_report(codes(target, codes_cfg)[0]))
    config.dataset = str(target)
    return _fit(config)


def ensure_trained(config: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """The results of ``config`` trained into ``run_dir``: its ``results.json`` when the run finished (re-ranked
    with the current evaluator, and rewritten, when an older one made it), else the run resumed from its last
    checkpoint, else trained from the start. Returns the results (as ``results.json`` holds them).

    Raises what :func:`train` raises (a resumed run refuses changed data)."""
    from semrec.eval.evaluator import EVALUATOR_VERSION
    from semrec.runs import evaluate_run

    folder = RunFolder(run_dir)
    results = folder.read_results()
    if results is not None:
        if results.get("evaluator") != EVALUATOR_VERSION:  # an older evaluator: re-rank the same checkpoint
            results.update(evaluate_run(folder.path), evaluator=EVALUATOR_VERSION)
            folder.write_results(results)
        return results
    return _fit(config, run_dir=folder.path, resume=folder.has_started()).results


# ------------------------------------------------------------------------------------------------- SOLID's chain


def _check_item_run(run: Path, dataset_dir: str | Path, backbone: str) -> None:
    """SemrecError unless ``run`` is a DUET ``dsr`` run on item rows of ``dataset_dir`` with ``backbone``."""
    from semrec.runs import load_run_config

    cfg = load_run_config(run)
    params = cfg.model_params or {}
    found = (cfg.model, params.get("head", "duet"), params.get("rows", "item"), params.get("backbone", "sasrec"))
    if found != ("dsr", "duet", "item", backbone) or Path(cfg.dataset).resolve() != Path(dataset_dir).resolve():
        raise SemrecError(f"{run}: SOLID's item stage must be a dsr DUET run on item rows of {dataset_dir} with the "
                          f"{backbone} backbone; this run is model {found[0]}, head {found[1]}, rows {found[2]}, "
                          f"backbone {found[3]}, dataset {cfg.dataset}")


@dataclass
class SolidChain:
    """The stages of :func:`solid`: run folders (item-level DSR, semantic-level DSR, SOLID), the semantic codes
    folder, and each run's results."""

    item_run: Path
    semantic_codes: Path
    semantic_run: Path
    solid_run: Path
    results: dict[str, dict[str, Any]]


SOLID_TRAIN = {"epochs": 10, "batch_size": 1024, "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0}  # spec solid 6


def solid(dataset_dir: str | Path, backbone: str = "sasrec", head: str = "duet", sources: str = "id+text",
          k: int | None = None, runs_dir: str | Path = "runs", overrides: list[Override] | None = None,
          say: Say = _log, solid_overrides: list[Override] | None = None,
          item_run: str | Path | None = None, solid_name: str = "4-solid") -> SolidChain:
    """SOLID end to end on a dataset with CTR samples (spec solid 4): (1) a ``dsr`` DUET run on item rows (DUET for
    either head, spec 4 step 1), (2) its item vectors (with ``sources`` id+text: beside the items' text vectors)
    clustered into semantic ids, (3) a ``dsr`` run of ``head`` on semantic rows, whose item table is the codebook
    (spec 4 step 5: the APG version loads a semantic-level APG), (4) the ``solid`` run. Every stage is a normal run
    folder under ``<runs_dir>/solid-<dataset>-<backbone>-<head>-<sources>/``; finished stages are reused, interrupted
    ones resumed. ``item_run``: an existing DUET run on item rows (same dataset and backbone) to use as stage 1
    instead of training one (the DUET row of a benchmark: chains of both heads then share it and its semantic ids).
    ``overrides`` (``key=value``) apply to every run (e.g. ``train.epochs=2``), ``solid_overrides`` to the SOLID run
    only (e.g. ``model_params.clip=0.1``: give such a run its own ``solid_name``, the stage-4 folder's name, and it
    shares the chain's earlier stages); the default training is the reference's (:data:`SOLID_TRAIN`). Raises
    SemrecError on bad settings or data."""
    from semrec.data.semantics import SOURCES, semantic_ids_current, write_semantic_ids
    from semrec.io import sha256_text
    from semrec.models import model_entry
    from semrec.models.solid import BACKBONES
    from semrec.runs import load_run_config
    from semrec.typed import from_dict

    if sources not in SOURCES:
        raise SemrecError(f"semantic sources must be one of {', '.join(SOURCES)}, got {sources!r}")
    if head not in ("duet", "apg"):
        raise SemrecError(f"SOLID generates the parameters of a duet or apg head, got head {head!r}")
    if backbone not in BACKBONES:
        raise SemrecError(f"SOLID's backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    if not solid_name or Path(solid_name).name != solid_name or solid_name in ("1-item", "3-semantic"):
        raise SemrecError(f"the SOLID run's folder name must be a plain name other than 1-item and 3-semantic, "
                          f"got {solid_name!r}")
    name = Path(dataset_dir).name
    root = Path(runs_dir) / f"solid-{name}-{backbone}-{head}-{sources}"

    def config(model: str, out: Path, params: dict[str, Any], extra: list[Override] | None = None,
               **keys: Any) -> RunConfig:
        base = {"model": model, "dataset": str(dataset_dir), "out": str(out), **keys,
                "model_params": {"backbone": backbone, "head": head, **params},
                "train": dict(SOLID_TRAIN)}
        return load_config(RunConfig, None, [*(overrides or []), *(extra or [])], base=base)

    results: dict[str, dict[str, Any]] = {}
    given = item_run is not None
    item_run = Path(item_run) if given else root / "1-item"
    # the semantic ids belong to the item run they were clustered from: another item run (another seed, another
    # runs_dir) gets its own; text-only ids depend on the chain alone
    owner = item_run if "id" in SOURCES[sources] else root
    codes_name = f"solid-{backbone}-{sources}-{sha256_text(str(owner.resolve()))[:8]}"
    # every stage's config is resolved (and its keys checked) before anything trains
    semantic_run, solid_run = root / "3-semantic", root / solid_name
    semantic_config = config("dsr", semantic_run, {"rows": "semantic"}, semantic=codes_name)
    solid_config = config("solid", solid_run, {}, list(solid_overrides or []), semantic=codes_name,
                          codebook_from=str(semantic_run))
    item_config = config("dsr", item_run, {"head": "duet"})
    for checked in (item_config, semantic_config, solid_config):  # model_params keys and types
        from_dict(model_entry(checked.model).config_class, checked.model_params or {}, prefix="model_params.")
    if "id" in SOURCES[sources] and given:
        _check_item_run(item_run, dataset_dir, backbone)
        item_config = load_run_config(item_run)
    if "id" in SOURCES[sources]:
        say(f"== 1/4 duet on item rows: {'the given run ' if given else '-> '}{item_run}")
        results["item"] = ensure_trained(item_config, item_run)
    codes_folder = DatasetFolder(dataset_dir).codes(codes_name)
    say(f"== 2/4 semantic ids ({sources}) -> {codes_folder.path}")
    if not semantic_ids_current(dataset_dir, codes_name, item_run if "id" in SOURCES[sources] else None):
        report, _ = write_semantic_ids(dataset_dir, item_run if "id" in SOURCES[sources] else None, sources, k,
                                       codes_name)
        say(f"   {report.codebook_sizes[0]} clusters, utilisation {report.utilisation[0]:.0%}")
    say(f"== 3/4 {head} on semantic rows (its item table becomes the codebook) -> {semantic_run}")
    results["semantic"] = ensure_trained(semantic_config, semantic_run)
    say(f"== 4/4 SOLID ({head}) -> {solid_run}")
    results["solid"] = ensure_trained(solid_config, solid_run)
    return SolidChain(item_run, codes_folder.path, semantic_run, solid_run, results)


# ----------------------------------------------------------------------------------------- evaluation and serving


@dataclass
class Evaluation:
    """Valid and test metrics of a checkpoint (``{"valid": {...}, "test": {...}}``, None where a split has no
    rows) and whether each user's history items were excluded from the ranking."""

    metrics: dict[str, dict[str, float | None]]
    exclude_history: bool


def evaluate(run_dir: str | Path, checkpoint: str = "best", exclude_history: bool | None = None,
             device: str | None = None) -> Evaluation:
    """Full-ranking evaluation of a run's ``best`` or ``last`` checkpoint on valid and test with the current
    evaluator; ``exclude_history`` None keeps the run's own setting. SemrecError when the folder is incomplete or
    its data changed since training."""
    from semrec.runs import evaluate_run, load_run_config

    metrics = evaluate_run(run_dir, checkpoint, exclude_history, device=device)
    excluded = load_run_config(run_dir).train.exclude_history if exclude_history is None else exclude_history
    return Evaluation(metrics, bool(excluded))


def interim_results(run_dir: str | Path, exclude_history: bool | None = None,
                    device: str | None = None) -> dict[str, Any] | None:
    """Where an unfinished (or finished) run stands: the valid/test metrics of its current ``best.pt`` (chosen on
    valid, as a finished run's are), ``best_epoch`` (read from the checkpoint), ``epochs_run`` so far,
    ``train_wall_seconds`` (training + evaluation seconds of the epochs logged) and ``seconds_to_best``. None when
    the run has no best checkpoint or no metrics log yet. ``exclude_history`` as :func:`evaluate`."""
    from semrec.train.checkpoint import load_checkpoint

    folder = RunFolder(run_dir)
    if not folder.best.is_file() or not folder.metrics.is_file():
        return None
    rows = folder.read_metrics()
    best_epoch = int(load_checkpoint(folder.best)["epoch"])
    return {**evaluate(run_dir, exclude_history=exclude_history, device=device).metrics,
            "best_epoch": best_epoch, "epochs_run": len(rows),
            "train_wall_seconds": sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in rows),
            "seconds_to_best": seconds_to_best(run_dir, best_epoch)}


def seconds_to_best(run_dir: str | Path, best_epoch: int | None = None) -> float | None:
    """Training + evaluation seconds a run spent up to and including its best epoch (from ``metrics.jsonl``;
    ``best_epoch`` default: the one in ``results.json``): the time to a converged model when early stopping
    picks that epoch. None when the run has no metrics log or no best epoch yet."""
    folder = RunFolder(run_dir)
    if best_epoch is None:
        best_epoch = (folder.read_results() or {}).get("best_epoch")
    if best_epoch is None or not folder.metrics.is_file():
        return None
    return sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in folder.read_metrics()
               if r.get("epoch", -1) <= best_epoch)


def best_within(run_dir: str | Path, seconds: float, metric: str = "ndcg@10") -> float | None:
    """The best validation ``metric`` a run had reached within ``seconds`` of training + evaluation (from
    ``metrics.jsonl``): runs compared at an equal time budget. None when no validation pass ended by then."""
    folder = RunFolder(run_dir)
    if not folder.metrics.is_file():
        return None
    spent, best = 0.0, None
    for record in folder.read_metrics():
        spent += record.get("train_seconds", 0.0) + record.get("eval_seconds", 0.0)
        value = record.get(f"valid_{metric}")
        if spent > seconds:
            break
        if value is not None and (best is None or value > best):
            best = value
    return best


def load_recommender(run_dir: str | Path, device: str = "cpu", **kwargs: Any) -> Any:
    """A :class:`semrec.serve.Recommender` for a run folder (keyword arguments as ``Recommender.load``)."""
    from semrec.serve import Recommender

    return Recommender.load(run_dir, device=device, **kwargs)


@dataclass
class Recommended:
    """Top-k of one history: the history used (raw ids, oldest first), the
    :class:`semrec.serve.types.Recommendation` and the recommender that made it."""

    history: list[str]
    result: Any
    recommender: Any


def recommend(run_dir: str | Path, history: Sequence[str] | None = None, user: str | None = None, k: int = 10,
              exclude_seen: bool = True, device: str = "cpu") -> Recommended:
    """Top-``k`` next items for a history of raw item ids, or for a dataset user's whole sequence (``user``, a raw
    user id): give exactly one. Unknown ids are reported in the result and ignored. SemrecError on a bad ``k``,
    both or neither of ``history`` / ``user``, or an unknown user."""
    if (history is None) == (user is None):
        raise SemrecError("give exactly one of a history (raw item ids) or a user (raw user id)")
    if k < 1:
        raise SemrecError(f"k must be at least 1, got {k}")
    rec = load_recommender(run_dir, device=device)
    ids = rec.user_history(user) if user is not None else list(history or [])
    return Recommended(ids, rec.recommend(ids, k=k, exclude_seen=exclude_seen), rec)


def export(run_dir: str | Path, out: str | Path | None = None, approx: str = "hnsw",
           params: dict[str, Any] | None = None, queries: int = 5000, device: str = "cpu") -> dict[str, Any]:
    """Write item vectors and faiss indexes (exact and ``approx``: hnsw | ivf) of a run to ``out`` (default
    ``<run>/export``) with the approximate index's recall@10 against exact search on ``queries`` validation
    histories; returns the summary (also ``export.json``). See :func:`semrec.serve.export.export_run`."""
    from semrec.serve.export import export_run

    summary = export_run(load_recommender(run_dir, device=device), out, approx, params or {}, max_queries=queries)
    summary["folder"] = str(out or Path(run_dir) / "export")
    return summary


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, retrieval: str = "exact",
          params: dict[str, Any] | None = None, device: str = "cpu", log_level: str = "info",
          say: Say = _log) -> None:
    """Serve a run over HTTP until interrupted (see :mod:`semrec.serve.app` for the routes)."""
    from semrec.serve.app import serve as serve_app

    rec = load_recommender(run_dir, device=device, retrieval=retrieval, retrieval_params=params or {})
    say(f"serving {rec.config.model} on {rec.dataset.name} ({rec.n_items:,} items, {retrieval} retrieval) "
        f"at http://{host}:{port} (docs: /docs)")
    if rec.cold_start_refusal is None:
        say("loading the text encoder for POST /items in the background: GET /health says 'loading' until it is "
            "ready")
    serve_app(rec, host, port, log_level)


# ---------------------------------------------------------------------------------------------------- quickstart

# The quickstart's CCFRec setting (ml-100k, 2 CPU cores). Why each choice, measured on this project's 2-core machine:
# * sample_style=sequence: a training row is a user window of 20 items with a target at every position (5,299 windows
#   on ml-100k) instead of the reference's one row per target (97k prefix rows): the same targets, ~18x fewer rows.
# * neg_num=0: the full softmax over all 1,682 items. With windows, each step already encodes most of the catalogue,
#   so sampling 1,500 negatives saves almost nothing, and every history item is a negative of the rows it is not the
#   target of (the reference's batch-wide exclusion hides a window's own history items from its negatives).
# * MCM and MSA (the auxiliary losses) cost 86% of a step (1.3 s -> 9-10 s of CPU per step at batch 256): their masked
#   pass encodes every history position again, and MCM scores every masked code slot against all code ids.
QUICK_CCFREC = {"dropout": 0.3, "dropout_cross": 0.3, "neg_num": 0, "sample_style": "sequence",
                "mlm_weight": 0.0, "cl_weight": 0.0}
QUICK_AUX_LOSSES = {"mlm_weight": 0.6, "cl_weight": 0.4}  # the paper's weights of MCM and MSA
# Gradient norm clipped at 1.0: without it this short, high-lr run collapsed on one seed to a popularity-like user
# vector (valid NDCG@10 0.0181, loss stuck at 6.8) when text vectors 3e-7 apart (MiniLM on PyTorch's AVX2
# kernels instead of AVX-512) changed the PQ codes of the near-constant 'year' and 'genre' views; clipped, valid
# NDCG@10 rose on each of 5 seed / code pairs measured (0.0181 -> 0.0554, 0.0528 -> 0.0603, 0.0495 -> 0.0574,
# 0.0504 -> 0.0601, 0.0510 -> 0.0602).
QUICK_GRAD_CLIP = 1.0


@dataclass
class QuickstartSettings:
    """The quickstart's knobs (the CLI's options): the source (``recbole:NAME`` or a folder), where datasets and
    runs go, CCFRec's epochs / batch size / learning rate, whether MCM and MSA are trained, and ``--set``
    overrides of the CCFRec run config."""

    source: str = "recbole:ml-100k"
    data_dir: Path = Path("data")
    runs_dir: Path = Path("runs")
    epochs: int = 6
    batch_size: int = 256
    lr: float = 2e-3
    aux_losses: bool = False
    overrides: list[Override] = field(default_factory=list)

    def check(self) -> None:
        """SemrecError naming the option when a setting no run can use is given."""
        if self.epochs < 1:
            raise SemrecError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SemrecError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SemrecError(f"--lr must be a positive number, got {self.lr}")


@dataclass
class QuickstartResult:
    """What the quickstart made: the dataset and its folders, each model's results (``valid`` / ``test`` with the
    history kept, ``test_exclude_history``), one user's top-10 and the wall seconds."""

    dataset: Any
    dataset_dir: Path
    codes_dir: Path
    runs: dict[str, Path]
    results: dict[str, dict[str, Any]]
    user: str
    recommended: Recommended
    seconds: float


def quickstart_ccfrec_config(settings: QuickstartSettings, dataset_dir: Path, name: str) -> RunConfig:
    """The CCFRec run config of the quickstart (:data:`QUICK_CCFREC` plus the settings and overrides)."""
    params = dict(QUICK_CCFREC)
    if settings.aux_losses:
        params.update(QUICK_AUX_LOSSES)
    base = {"model": "ccfrec", "dataset": str(dataset_dir), "codes": "pq", "model_params": params,
            "out": str(settings.runs_dir / f"quickstart-{name}-ccfrec"),
            "train": {"epochs": settings.epochs, "batch_size": settings.batch_size, "lr": settings.lr,
                      "warmup_steps": 10, "grad_clip": QUICK_GRAD_CLIP, "patience": settings.epochs}}
    return load_config(RunConfig, None, list(settings.overrides), base=base)


def quickstart(settings: QuickstartSettings, say: Say = _log) -> QuickstartResult:
    """End to end on one dataset: prepare, embed (all-MiniLM-L6-v2), PQ codes, train Popularity and CCFRec (the
    fast setting :data:`QUICK_CCFREC`), evaluate both with the history kept and excluded, and recommend the top-10
    for the first user. Both runs are rebuilt from scratch each time; dataset, embeddings and codes are reused
    when current. ``say`` gets each stage's header and report."""
    from semrec.data.prepare import format_stats
    from semrec.runs import evaluate_run
    from semrec.tokenizers.pipeline import format_report
    from semrec.train.process import prepare_process
    from semrec.train.trainer import check_train_settings

    settings.check()
    started = time.perf_counter()

    def elapsed() -> str:
        return f"[at {time.perf_counter() - started:.0f} s]"

    source = settings.source
    name = source.split(":", 1)[1] if source.startswith("recbole:") else Path(source).name
    run = quickstart_ccfrec_config(settings, settings.data_dir / name, name)  # a bad --set fails before the work
    check_train_settings(run.train)
    say(f"== 1/5 prepare {source}")
    prepared, folder = prepare(PrepareConfig(source=source, out=str(settings.data_dir / name)))
    say(format_stats(prepared))
    dataset = prepared.load()
    say(f"== 2/5 embed text views (all-MiniLM-L6-v2) {elapsed()}")
    manifest, _ = embed(folder, EmbedConfig())
    say(", ".join(f"{v}: {e['dim']}-d{' (cached)' if e.get('cache_hit') else ''}"
                  for v, e in manifest["views"].items()))
    say(f"== 3/5 semantic codes (CCFRec layout: per-view PCA + product quantisation) {elapsed()}")
    # 256 centroids per codebook (nbits 8) need 256 items; a smaller source gets smaller codebooks
    nbits = min(8, max(1, dataset.n_items.bit_length() - 1))
    report, codes_dir = codes(folder, CodesConfig(tokenizer="pq", params={} if nbits == 8 else {"nbits": nbits}))
    say(format_report(report))

    say(f"== 4/5 baseline: Popularity {elapsed()}")
    popular = RunConfig(model="popularity", dataset=str(folder),
                        out=str(settings.runs_dir / f"quickstart-{name}-popularity"),
                        train=TrainConfig(progress=run.train.progress))
    shutil.rmtree(popular.out, ignore_errors=True)
    prepare_process(run.train)  # the allocator settings of the CCFRec run, for both trainings
    baseline = _fit(popular, setup=False)
    mp = run.model_params
    say(f"== 5/5 train CCFRec: {run.train.epochs} epochs, batch {run.train.batch_size}, lr {run.train.lr}, "
        f"{f'gradient norm clipped at {run.train.grad_clip}, ' if run.train.grad_clip else ''}"
        f"sample_style {mp.get('sample_style', 'prefix')}, "
        f"{'full softmax' if mp.get('neg_num', 1) <= 0 else str(mp.get('neg_num')) + ' negatives'}, "
        f"MCM x {mp.get('mlm_weight', 0.6)}, MSA x {mp.get('cl_weight', 0.4)} {elapsed()}")
    shutil.rmtree(run.out, ignore_errors=True)  # the demo run is rebuilt from scratch every time
    ccfrec = _fit(run, setup=False)
    runs = {"popularity": baseline.run_dir, "ccfrec": ccfrec.run_dir}
    results = {"popularity": baseline.results, "ccfrec": ccfrec.results}
    device = run.train.device or None
    for model, run_dir in runs.items():  # the serving protocol too: the user's history items never ranked
        results[model]["test_exclude_history"] = evaluate_run(run_dir, exclude_history=True, device=device)["test"]
    say(f"== results: full ranking over {dataset.n_items:,} items, best epoch on valid NDCG@10 {elapsed()}")
    user = str(dataset.users["raw_id"].iloc[0])
    recommended = recommend(ccfrec.run_dir, user=user, k=10)
    return QuickstartResult(dataset, Path(folder), Path(codes_dir), runs, results, user, recommended,
                            time.perf_counter() - started)
