"""The ``semrec`` command line: prepare -> embed -> codes -> train -> evaluate (recommend and serve come later)."""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

import typer

from semrec.errors import SemrecError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="semrec: sequential recommendation with semantic codes.\n\n"
         "Pipeline: prepare (raw data -> canonical dataset) -> embed (text views -> PLM vectors) -> "
         "codes (vectors -> semantic codes). 'semrec quickstart' runs it all on MovieLens-100K.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def friendly_errors(func):
    """Turn user-facing errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SemrecError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file; CLI options and --set override it.")
SetOpt = typer.Option(None, "--set", help="Override any config key: --set key=value (repeatable).")


def _overrides(pairs: dict[str, object], extra: list[str] | None) -> list[str]:
    return [f"{k}={v}" for k, v in pairs.items() if v is not None] + list(extra or [])


@app.command()
@friendly_errors
def prepare(
    source: str = typer.Argument(..., help="Input folder/file, or 'recbole:NAME' for a RecBole example "
                                          "dataset (e.g. recbole:ml-100k, fetched from the recbole wheel)."),
    format: str = typer.Option("auto", "--format", "-f",
                               help="amazon2023 | lcrec | recbole | movielens | auto (detect)."),
    name: str | None = typer.Option(None, help="Dataset name (default: from the input files)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: data/<name>)."),
    meta: Path | None = typer.Option(None, help="amazon2023: item metadata file (jsonl[.gz] or CSV)."),
    missing_meta: str = typer.Option("drop", help="Interactions on items without metadata: drop | keep."),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
):
    """Read raw data into a canonical dataset (parquet + manifest) and print its statistics."""
    from semrec.config import PrepareConfig, load_config
    from semrec.data.prepare import format_stats, prepare_dataset

    cfg = load_config(PrepareConfig, config, _overrides(
        {"source": source, "format": format, "name": name, "out": out, "meta": meta,
         "missing_meta": missing_meta}, set_))
    dataset, folder = prepare_dataset(cfg)
    typer.echo(format_stats(dataset))
    typer.echo(f"written to  {folder}")


@app.command()
@friendly_errors
def info(dataset_dir: Path = typer.Argument(..., help="A folder written by 'semrec prepare'.")):
    """Print the statistics of a prepared dataset."""
    from semrec.data.dataset import CanonicalDataset
    from semrec.data.prepare import format_stats

    typer.echo(format_stats(CanonicalDataset.load(dataset_dir)))


@app.command()
@friendly_errors
def embed(
    dataset_dir: Path = typer.Argument(..., help="A folder written by 'semrec prepare'."),
    model: str | None = typer.Option(None, help="sentence-transformers model name or local path "
                                                   "(default all-MiniLM-L6-v2, shipped offline by PyPI)."),
    views: str | None = typer.Option(None, help="Comma-separated views (default: all views + 'all')."),
    batch_size: int | None = typer.Option(None, help="Encoding batch size (default 64)."),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
):
    """Encode each text view with a PLM into one float32 matrix per view (cached by content hash)."""
    from semrec.config import EmbedConfig, load_config
    from semrec.text.encode import embed_dataset, embeddings_dir

    cfg = load_config(EmbedConfig, config, _overrides(
        {"model": model, "views": views, "batch_size": batch_size, "device": device}, set_))
    manifest = embed_dataset(dataset_dir, cfg)
    for view, entry in manifest["views"].items():
        typer.echo(f"{view:<12} dim {entry['dim']}  distinct texts {entry['distinct_texts']:,}"
                   f"{'  (cached)' if entry.get('cache_hit') else ''}")
    typer.echo(f"written to  {embeddings_dir(dataset_dir, cfg.model)}")


@app.command()
@friendly_errors
def codes(
    dataset_dir: Path = typer.Argument(..., help="A prepared dataset with embeddings ('semrec embed')."),
    tokenizer: str | None = typer.Option(None, "--tokenizer", "-t",
                                            help="pq (CCFRec layout, default) | opq (VQ-Rec layout) | rq | kmeans."),
    name: str | None = typer.Option(None, help="Output folder under <dataset>/codes/ (default: the kind)."),
    model: str | None = typer.Option(None, help="Whose embeddings to use (default all-MiniLM-L6-v2)."),
    param: list[str] | None = typer.Option(None, "--param", "-p",
                                              help="Tokenizer parameter key=value (repeatable), e.g. "
                                                   "-p codes_per_view=4 -p nbits=8 -p views=title,brand."),
    fit_on: str | None = typer.Option(None, help="all | train (items in training sequences); "
                                                    "default: all for pq/rq/kmeans, train for opq."),
    dedup: bool | None = typer.Option(None, "--dedup/--no-dedup", help="Append a de-duplication digit."),
    seed: int | None = typer.Option(None, help="Random seed of the fit (default 0)."),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
):
    """Fit an item tokenizer on the view embeddings, encode every item, and print the code report."""
    from semrec.config import CodesConfig, load_config
    from semrec.tokenizers.pipeline import fit_codes, format_report

    overrides = _overrides({"tokenizer": tokenizer, "name": name, "model": model, "fit_on": fit_on,
                            "dedup": dedup, "seed": seed}, set_)
    overrides += [f"params.{p}" for p in (param or [])]
    cfg = load_config(CodesConfig, config, overrides)
    report, folder = fit_codes(dataset_dir, cfg)
    typer.echo(format_report(report))
    typer.echo(f"written to  {folder}")


def format_metrics(rows: dict[str, dict[str, float]]) -> str:
    """A small table: one row per split, Recall/NDCG at 5/10/20, MRR and head/tail NDCG@10."""
    cols = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr", "head_ndcg@10",
            "tail_ndcg@10"]
    lines = ["split  " + " ".join(f"{c:>12}" for c in cols)]
    for split, metrics in rows.items():
        lines.append(f"{split:<6} " + " ".join(f"{metrics.get(c, float('nan')):>12.4f}" for c in cols))
    return "\n".join(lines)


@app.command()
@friendly_errors
def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="Run YAML (e.g. configs/ccfrec/ml-100k.yaml)."),
    model: str | None = typer.Option(None, help="popularity | sasrec | ccfrec."),
    dataset: str | None = typer.Option(None, help="Prepared dataset folder."),
    codes: str | None = typer.Option(None, help="Codes folder name under <dataset>/codes (default pq)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/<dataset>-<model>-<time>)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs."),
    batch_size: int | None = typer.Option(None, help="Global training batch size."),
    lr: float | None = typer.Option(None, help="Learning rate."),
    seed: int | None = typer.Option(None, help="Random seed."),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    resume: Path | None = typer.Option(None, help="Continue the interrupted run in this folder."),
    set_: list[str] | None = SetOpt,
):
    """Train a model with early stopping on validation NDCG@10; checkpoints every epoch, resumable.

    Runs unchanged under torchrun --nproc_per_node=N (DistributedDataParallel).
    """
    from semrec.config import RunConfig, load_config
    from semrec.train.trainer import Trainer, load_run_config

    if resume is not None:
        if config or set_ or any(v is not None for v in (model, dataset, codes, out, epochs, batch_size, lr, seed)):
            raise SemrecError("--resume continues a run with its saved config; drop the other options")
        trainer = Trainer(load_run_config(resume), run_dir=resume, resume=True)
    else:
        cfg = load_config(RunConfig, config, _overrides(
            {"model": model, "dataset": dataset, "codes": codes, "out": out, "train.epochs": epochs,
             "train.batch_size": batch_size, "train.lr": lr, "train.seed": seed, "train.device": device}, set_))
        trainer = Trainer(cfg)
    results = trainer.fit()
    if results:
        typer.echo(format_metrics({"valid": results["valid"], "test": results["test"]}))
        typer.echo(f"best epoch {results['best_epoch']}, run folder {trainer.run_dir}")


@app.command()
@friendly_errors
def evaluate(
    run: Path = typer.Argument(..., help="A run folder written by 'semrec train'."),
    checkpoint: str = typer.Option("best", help="best | last."),
    exclude_history: bool | None = typer.Option(None, "--exclude-history/--include-history",
                                                   help="Remove history items from the ranking."),
):
    """Evaluate a trained run on valid and test (full ranking over all items)."""
    from semrec.models import build_model
    from semrec.train.checkpoint import load_checkpoint
    from semrec.train.evaluator import evaluate as run_evaluation
    from semrec.train.trainer import load_run_config, load_run_data

    if checkpoint not in ("best", "last"):
        raise SemrecError(f"--checkpoint must be best or last, got {checkpoint!r}")
    cfg = load_run_config(run)
    data = load_run_data(cfg)
    model = build_model(cfg.model, cfg.model_params, data.items)
    path = run / "checkpoints" / f"{checkpoint}.pt"
    if path.is_file() or cfg.model != "popularity":
        model.load_state_dict(load_checkpoint(path)["model"])
    max_len = int(getattr(getattr(model, "config", None), "max_len", 50))
    excl = cfg.train.exclude_history if exclude_history is None else exclude_history
    rows = {split: run_evaluation(model, getattr(data.split, split), max_len, cfg.train.eval_batch_size, excl,
                                  data.head_mask) for split in ("valid", "test")}
    typer.echo(format_metrics(rows))


QUICK_CCFREC = {"dropout": 0.3, "dropout_cross": 0.3, "neg_num": 1500, "mlm_weight": 0.6, "cl_weight": 0.4}


@app.command()
@friendly_errors
def quickstart(
    source: str = typer.Option("recbole:ml-100k", help="Dataset to run on (default: MovieLens-100K "
                                                       "from the recbole wheel)."),
    data_dir: Path = typer.Option(Path("data"), help="Where prepared datasets go."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where the training run goes."),
    epochs: int = typer.Option(3, help="CCFRec epochs (a demo budget, not a converged model)."),
    steps_per_epoch: int = typer.Option(20, help="Training steps per epoch (batch 128)."),
):
    """End-to-end demo: prepare, embed, codes (CCFRec layout), train CCFRec briefly, evaluate, print metrics."""
    from semrec.config import CodesConfig, EmbedConfig, PrepareConfig, RunConfig, TrainConfig
    from semrec.data.prepare import format_stats, prepare_dataset
    from semrec.text.encode import embed_dataset
    from semrec.tokenizers.pipeline import fit_codes, format_report
    from semrec.train.trainer import Trainer

    name = source.replace("recbole:", "").replace("/", "_").replace(":", "_")
    typer.echo(f"== 1/4 prepare {source}")
    dataset, folder = prepare_dataset(PrepareConfig(source=source, out=str(data_dir / name)))
    typer.echo(format_stats(dataset))
    typer.echo("== 2/4 embed text views (all-MiniLM-L6-v2)")
    manifest = embed_dataset(folder, EmbedConfig())
    typer.echo(", ".join(f"{v}: {e['dim']}-d{' (cached)' if e.get('cache_hit') else ''}"
                         for v, e in manifest["views"].items()))
    typer.echo("== 3/4 semantic codes (CCFRec layout: per-view PCA + product quantisation)")
    report, codes_dir = fit_codes(folder, CodesConfig(tokenizer="pq"))
    typer.echo(format_report(report))
    typer.echo(f"== 4/4 train CCFRec for {epochs} x {steps_per_epoch} steps (demo budget), evaluate")
    run = RunConfig(model="ccfrec", dataset=str(folder), codes="pq", model_params=dict(QUICK_CCFREC),
                    out=str(runs_dir / f"quickstart-{name}-ccfrec"),
                    train=TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, warmup_steps=20,
                                      max_steps_per_epoch=steps_per_epoch))
    shutil.rmtree(run.out, ignore_errors=True)  # the demo run is rebuilt from scratch every time
    trainer = Trainer(run)
    results = trainer.fit()
    typer.echo(format_metrics({"valid": results["valid"], "test": results["test"]}))
    typer.echo(f"done: dataset {folder}, codes {codes_dir}, run {trainer.run_dir}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
