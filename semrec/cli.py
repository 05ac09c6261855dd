"""The ``semrec`` command line: prepare, embed, codes, train, pretrain, finetune, evaluate, recommend, export, serve."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import typer

from semrec.errors import SemrecError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="semrec: sequential recommendation with semantic codes.\n\n"
         "Pipeline: prepare (raw data -> canonical dataset) -> embed (text views -> PLM vectors) -> "
         "codes (vectors -> semantic codes) -> train / pretrain / finetune -> evaluate -> recommend / export / "
         "serve. 'semrec quickstart' runs it all on MovieLens-100K.",
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
SetOpt = typer.Option(None, "--set", help="Override any config key: --set key=value (repeatable; the value is "
                                           "converted by the key's type: names and paths are kept as written).")


def _overrides(pairs: dict[str, object], extra: list[str] | None) -> list[tuple[str, object] | str]:
    """The config overrides of a command: its options as typed ``(key, value)`` pairs (taken literally: a name
    ``0123`` stays ``"0123"``), then the ``--set key=value`` texts (converted by each key's type)."""
    return [(k, v) for k, v in pairs.items() if v is not None] + list(extra or [])


def _param_overrides(param: list[str] | None) -> list[str]:
    """``-p key=value`` tokenizer parameters as ``params.key=value`` overrides (free-form: YAML-typed values)."""
    return [f"params.{key}={value}" for key, value in _key_values(param, "--param").items()]


@app.command()
@friendly_errors
def prepare(
    source: str = typer.Argument(..., help="Input folder/file, or 'recbole:NAME' for a RecBole example "
                                          "dataset (e.g. recbole:ml-100k, fetched from the recbole wheel)."),
    format: str | None = typer.Option(None, "--format", "-f",
                                      help="amazon2023 | lcrec | recbole | movielens | auto (detect; the default)."),
    name: str | None = typer.Option(None, help="Dataset name (default: from the input files)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: data/<name>)."),
    meta: Path | None = typer.Option(None, help="amazon2023: item metadata file (jsonl[.gz] or CSV)."),
    missing_meta: str | None = typer.Option(None, help="Interactions on items without metadata: drop (the default) "
                                                       "| keep."),
    memory_limit: str | None = typer.Option(None, help="Working memory of the sort that builds the sequences "
                                                       "(default 256MB; e.g. 1GB, 4GB); beyond it, it spills to a "
                                                       "temporary folder under TMPDIR."),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
):
    """Read raw data into a canonical dataset (parquet + manifest) and print its statistics.

    Interaction files are streamed and sorted out of core, so files larger than memory work: the peak follows the
    catalogue and --memory-limit, not the file (Amazon's train/valid/test split files are read whole)."""
    from semrec import api
    from semrec.config import PrepareConfig, load_config
    from semrec.data.prepare import format_stats

    cfg = load_config(PrepareConfig, config, _overrides(
        {"source": source, "format": format, "name": name, "out": out, "meta": meta,
         "missing_meta": missing_meta, "memory_limit": memory_limit}, set_))
    dataset, folder = api.prepare(cfg)
    typer.echo(format_stats(dataset))
    typer.echo(f"written to  {folder}")


@app.command()
@friendly_errors
def info(dataset_dir: Path = typer.Argument(..., help="A folder written by 'semrec prepare'.")):
    """Print the statistics of a prepared dataset."""
    from semrec.data.prepare import describe_dataset, format_stats

    typer.echo(format_stats(describe_dataset(dataset_dir)))


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
    from semrec import api
    from semrec.config import EmbedConfig, load_config

    cfg = load_config(EmbedConfig, config, _overrides(
        {"model": model, "views": views, "batch_size": batch_size, "device": device}, set_))
    manifest, folder = api.embed(dataset_dir, cfg)
    for view, entry in manifest["views"].items():
        typer.echo(f"{view:<12} dim {entry['dim']}  distinct texts {entry['distinct_texts']:,}"
                   f"{'  (cached)' if entry.get('cache_hit') else ''}")
    typer.echo(f"written to  {folder}")


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
                                                   "-p nbits=8 -p views=title,brand; pq: -p total_codes=20 (code "
                                                   "slots split over the views: 4 each for 3-5 views, 16 for one) "
                                                   "or -p codes_per_view=4."),
    fit_on: str | None = typer.Option(None, help="all | train (items in training sequences); "
                                                    "default: all for pq/rq/kmeans, train for opq."),
    dedup: bool | None = typer.Option(None, "--dedup/--no-dedup",
                                      help="Append a de-duplication digit that makes every item's code unique. "
                                           "Default: pq adds it when more than 5% of items share their full code "
                                           "(a model that reads only codes cannot tell them apart); opq, rq and "
                                           "kmeans do not (the references have no such digit). Also --set dedup=auto."),
    seed: int | None = typer.Option(None, help="Random seed of the fit (default 0)."),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
):
    """Fit an item tokenizer on the view embeddings, encode every item, and print the code report."""
    from semrec import api
    from semrec.config import CodesConfig, load_config
    from semrec.tokenizers.pipeline import format_report

    overrides = _overrides({"tokenizer": tokenizer, "name": name, "model": model, "fit_on": fit_on,
                            "dedup": dedup, "seed": seed}, set_)
    overrides += _param_overrides(param)
    report, folder = api.codes(dataset_dir, load_config(CodesConfig, config, overrides))
    typer.echo(format_report(report))
    typer.echo(f"written to  {folder}")


@app.command("ctr-data")
@friendly_errors
def ctr_data(
    dataset_dir: Path = typer.Argument(..., help="A prepared dataset ('semrec prepare')."),
    name: str | None = typer.Option(None, help="Output folder under <dataset>/ctr/ (default ctr)."),
    history: int | None = typer.Option(None, help="Items of history per row: the last L before the candidate "
                                                  "(default 30)."),
    train_negatives: int | None = typer.Option(None, help="Unseen items drawn per training positive (default 4)."),
    eval_negatives: int | None = typer.Option(None, help="Distinct unseen items per user beside its valid and its "
                                                         "test positive (default 99)."),
    seed: int | None = typer.Option(None, help="Seed of the negative draws (default 0)."),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
):
    """Build the pointwise CTR samples SOLID and its baselines train and are scored on: per row a user, the last L
    items before a candidate, the candidate and a 0/1 label. Leave-last-out split: training positives are every
    training item after the first, valid and test one positive per user; negatives are items the user never
    interacted with (fixed by the seed and written once, so every model is scored on the same candidates)."""
    from semrec import api
    from semrec.config import CtrConfig, load_config
    from semrec.data.ctr import format_ctr_report

    overrides = _overrides({"name": name, "history": history, "train_negatives": train_negatives,
                            "eval_negatives": eval_negatives, "seed": seed}, set_)
    _, manifest, folder = api.ctr_data(dataset_dir, load_config(CtrConfig, config, overrides))
    typer.echo(format_ctr_report(manifest))
    typer.echo(f"written to   {folder}")


@app.command("solid")
@friendly_errors
def solid_chain(
    dataset_dir: Path = typer.Argument(..., help="A prepared dataset with CTR samples ('semrec ctr-data') and, for "
                                                 "text semantics, embeddings ('semrec embed')."),
    backbone: str = typer.Option("sasrec", help="sasrec | gru4rec | bert4rec | din (DIN: CTR metrics only, no "
                                                "full ranking)."),
    head: str = typer.Option("duet", help="duet | apg: the dynamic-parameter method SOLID builds on."),
    semantics: str = typer.Option("id+text", help="What the semantic ids cluster: id (the item-level model's item "
                                                  "vectors) | text (the items' text vectors) | id+text."),
    k: int | None = typer.Option(None, "--k", help="Number of semantic ids (default: a tenth of the items, at most "
                                                   "256)."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where the stage run folders go."),
    item_run: Path | None = typer.Option(None, help="A finished DUET run on item rows (same dataset and backbone) to "
                                                    "use as stage 1 instead of training one."),
    set_: list[str] | None = SetOpt,
    solid_set: list[str] | None = typer.Option(None, "--solid-set", help="key=value for the SOLID run only (e.g. "
                                               "model_params.clip=0.1, model_params.vq_weight=1, model_params.vq="
                                               "false); it trains into 4-solid@key=value beside the chain's other "
                                               "stages, which it reuses."),
):
    """SOLID end to end: (1) DUET on item rows, (2) its item vectors (and text) clustered into semantic ids,
    (3) DUET/APG on semantic rows, whose item table becomes the frozen codebook, (4) SOLID. Finished stages are
    reused and interrupted ones resumed; --set applies to every run (e.g. --set train.epochs=2)."""
    from semrec import api

    extra = list(solid_set or [])
    chain = api.solid(dataset_dir, backbone, head, semantics, k, runs_dir, list(set_ or []), say=typer.echo,
                      item_run=item_run, solid_overrides=extra,
                      solid_name="4-solid" + "".join(f"@{o}" for o in extra))
    for stage, result in chain.results.items():
        test = result.get("test") or {}
        shown = ", ".join(f"{m} {test[m]:.4f}" for m in ("auc", "uauc", "ndcg@10", "hr@10") if test.get(m) is not None)
        typer.echo(f"{stage:<9} test {shown}")
    typer.echo(f"SOLID run  {chain.solid_run}")


def format_metrics(rows: dict[str, dict[str, float | None]]) -> str:
    """A small table: one row per split, Recall/NDCG at 5/10/20, MRR and head/tail NDCG@10. A metric that is None
    or absent (no row to evaluate) shows as n/a, with a note under the table."""
    cols = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr", "head_ndcg@10",
            "tail_ndcg@10"]
    lines = ["split  " + " ".join(f"{c:>12}" for c in cols)]
    missing = False
    for split, metrics in rows.items():
        cells = []
        for c in cols:
            value = metrics.get(c)
            missing |= value is None
            cells.append(f"{'n/a':>12}" if value is None else f"{value:>12.4f}")
        lines.append(f"{split:<6} " + " ".join(cells))
    if missing:
        lines.append("n/a: nothing to evaluate (valid and test rows come from users with 3+ interactions; head/tail: "
                     "no target in that group)")
    return "\n".join(lines)


@app.command()
@friendly_errors
def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="Run YAML (e.g. configs/ccfrec/ml-100k.yaml)."),
    model: str | None = typer.Option(None, help="popularity | sasrec | gru4rec | bert4rec | ccfrec | vqrec | unisrec "
                                                "(next-item ranking); dsr, solid (CTR: run semrec ctr-data first)."),
    dataset: str | None = typer.Option(None, help="Prepared dataset folder."),
    codes: str | None = typer.Option(None, help="Codes folder name under <dataset>/codes (default pq)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/<dataset>-<model>-<time>)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (with --resume: a new cap, higher or lower)."),
    patience: int | None = typer.Option(None, help="Validations without improvement before stopping (default 10)."),
    time_budget: float | None = typer.Option(None, "--time-budget", metavar="MIN",
                                             help="Wall-time budget in minutes (setup included): training stops in "
                                                  "time for the best checkpoint to be evaluated on valid and test "
                                                  "and results.json written; resumable."),
    batch_size: int | None = typer.Option(None, help="Global training batch size."),
    lr: float | None = typer.Option(None, help="Learning rate."),
    seed: int | None = typer.Option(None, help="Random seed."),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    resume: Path | None = typer.Option(None, help="Continue the interrupted run in this folder, with its saved "
                                                  "config; only --epochs, --patience and --time-budget may change."),
    set_: list[str] | None = SetOpt,
):
    """Train a model with early stopping on validation NDCG@10 (UAUC for the CTR models); checkpoints every epoch,
    resumable.

    Runs unchanged under torchrun --nproc_per_node=N (DistributedDataParallel).
    """
    from semrec import api
    from semrec.config import RunConfig, load_config

    given = {"train.epochs": epochs, "train.patience": patience, "train.time_budget_minutes": time_budget}
    if resume is not None:
        fixed = {"--config": config, "--model": model, "--dataset": dataset, "--codes": codes, "--out": out,
                 "--batch-size": batch_size, "--lr": lr, "--seed": seed, "--device": device}
        refused = [name for name, value in fixed.items() if value is not None]
        if refused:
            raise SemrecError(f"--resume continues a run with its saved config; drop {', '.join(refused)} (only "
                              "--epochs, --patience and --time-budget can change)")
        trained = api.resume(resume, _overrides(given, set_), say=typer.echo)
    else:
        trained = api.train(load_config(RunConfig, config, _overrides(
            {"model": model, "dataset": dataset, "codes": codes, "out": out, **given,
             "train.batch_size": batch_size, "train.lr": lr, "train.seed": seed, "train.device": device}, set_)))
    if trained.results:
        typer.echo(format_metrics({"valid": trained.results["valid"], "test": trained.results["test"]}))
        typer.echo(f"{trained.describe()}; run folder {trained.run_dir}")


@app.command()
@friendly_errors
def pretrain(
    datasets: str = typer.Option(..., help="Comma-separated prepared dataset folders (each with 'semrec embed' done)."),
    config: Path | None = typer.Option(Path("configs/vqrec/pretrain.yaml"), "--config", "-c",
                                       help="Run YAML of the pre-training stage."),
    merged: Path | None = typer.Option(None, help="Folder of the merged dataset (default data/pretrain-<names>)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/<merged>-<model>-<time>)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs."),
    seed: int | None = typer.Option(None, help="Random seed."),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    param: list[str] | None = typer.Option(None, "--param", "-p",
                                              help="Joint OPQ tokenizer parameter key=value (repeatable), e.g. "
                                                   "-p M=32 -p nbits=8 (used when the codes are first fitted)."),
    set_: list[str] | None = SetOpt,
):
    """Pre-train on several datasets at once (VQ-Rec): merge them into one multi-domain dataset, fit one joint
    OPQ tokenizer on the training items of all domains, then train with mixed-domain batches.

    The merged dataset and its codes are built once and reused. Fine-tune the result with 'semrec finetune'.
    """
    from semrec import api
    from semrec.config import RunConfig, load_config

    cfg = load_config(RunConfig, config, _overrides({"out": out, "train.epochs": epochs, "train.seed": seed,
                                                     "train.device": device}, set_))
    trained = api.pretrain([f for f in datasets.split(",") if f], cfg, merged, _param_overrides(param),
                           say=typer.echo)
    if trained.results:
        typer.echo(format_metrics({"valid": trained.results["valid"], "test": trained.results["test"]}))
        typer.echo(f"pre-trained run folder {trained.run_dir}; fine-tune with: semrec finetune {trained.run_dir} "
                   f"--dataset <prepared dataset>")


@app.command()
@friendly_errors
def finetune(
    pretrained: Path = typer.Argument(..., help="Pre-trained run folder (its best.pt) or a checkpoint file."),
    dataset: str = typer.Option(..., help="Prepared target dataset folder (with its own codes)."),
    config: Path | None = typer.Option(None, "--config", "-c",
                                       help="Run YAML of the fine-tuning stage (e.g. configs/vqrec/Scientific.yaml)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/<dataset>-<model>-<time>)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs."),
    lr: float | None = typer.Option(None, help="Learning rate."),
    seed: int | None = typer.Option(None, help="Random seed."),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
    set_: list[str] | None = SetOpt,
):
    """Fine-tune a pre-trained model on a target dataset: parameters of matching name and shape are copied from
    the pre-trained checkpoint (the target's own item codes are kept), then trained as 'semrec train' does."""
    from semrec import api
    from semrec.config import RunConfig, load_config

    cfg = load_config(RunConfig, config, _overrides(
        {"dataset": dataset, "out": out, "init_from": str(pretrained), "train.epochs": epochs, "train.lr": lr,
         "train.seed": seed, "train.device": device}, set_))
    trained = api.finetune(cfg, say=typer.echo)
    if trained.results:
        typer.echo(format_metrics({"valid": trained.results["valid"], "test": trained.results["test"]}))
        typer.echo(f"best epoch {trained.results['best_epoch']}, run folder {trained.run_dir}")


@app.command()
@friendly_errors
def evaluate(
    run: Path = typer.Argument(..., help="A run folder written by 'semrec train'."),
    checkpoint: str = typer.Option("best", help="best | last."),
    exclude_history: bool | None = typer.Option(None, "--exclude-history/--include-history",
                                                   help="Remove history items from the ranking."),
):
    """Evaluate a trained run on valid and test (full ranking over all items)."""
    from semrec import api

    if checkpoint not in ("best", "last"):
        raise SemrecError(f"--checkpoint must be best or last, got {checkpoint!r}")
    evaluation = api.evaluate(run, checkpoint, exclude_history)
    typer.echo(format_metrics(evaluation.metrics))
    typer.echo("each user's history items excluded from the ranking (the serving protocol)"
               if evaluation.exclude_history else
               "each user's history items kept in the ranking (the references' protocol; --exclude-history for "
               "the serving one)")


QUICKSTART_HELP = (
    "End-to-end demo on MovieLens-100K in about 3 minutes on 2 CPU cores: prepare, embed, semantic codes, train "
    "CCFRec and the Popularity baseline, print both side by side (valid and test NDCG@10, test Recall@10, full "
    "ranking; test NDCG@10 also with the user's history items excluded), then the top-10 recommendations (raw ids "
    "and titles) for one user.\n\n"
    "The demo trains CCFRec with a fast setting, not the paper's: user windows with a target at every position "
    "(sample_style=sequence; 18x fewer rows than one row per target on ml-100k), the full softmax over all items "
    "(neg_num=0), batch 256, lr 2e-3, gradient norm clipped at 1.0, 6 epochs, and without the auxiliary MCM/MSA "
    "losses (--aux-losses adds them back, about 7x slower per step).\n\n"
    "The faithful setting is 'semrec train -c configs/ccfrec/ml-100k.yaml'. --set overrides any key of the CCFRec "
    "run config, e.g. --set model_params.neg_num=500."
)


@app.command(help=QUICKSTART_HELP)
@friendly_errors
def quickstart(
    source: str = typer.Option("recbole:ml-100k", help="Dataset to run on (default: MovieLens-100K "
                                                       "from the recbole wheel)."),
    data_dir: Path = typer.Option(Path("data"), help="Where prepared datasets go."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where the training runs go."),
    epochs: int = typer.Option(6, help="CCFRec training epochs (whole passes over the user windows)."),
    batch_size: int = typer.Option(256, help="User windows per training step."),
    lr: float = typer.Option(2e-3, help="Learning rate (after a 10-step warm-up)."),
    aux_losses: bool = typer.Option(False, "--aux-losses/--no-aux-losses",
                                    help="Also train CCFRec's masked code modelling (weight 0.6) and masked "
                                         "sequence alignment (0.4) losses: the paper's full objective, about 7x "
                                         "the time per step."),
    set_: list[str] | None = SetOpt,
):
    """End-to-end demo on MovieLens-100K in about 3 minutes on 2 CPU cores (see QUICKSTART_HELP)."""
    import shlex

    from semrec import api

    settings = api.QuickstartSettings(source, data_dir, runs_dir, epochs, batch_size, lr, aux_losses, list(set_ or []))
    done = api.quickstart(settings, say=typer.echo)
    typer.echo(format_comparison(done.results))
    history, result = done.recommended.history, done.recommended.result
    typer.echo(f"== top-10 for user {done.user} (history of {len(history)} items, last: {history[-1]}; "
               f"history items excluded)")
    for rank, item in enumerate(result.items, 1):
        typer.echo(f"{rank:>3}  {item.raw_id:<10} {item.score:>8.4f}  {item.title or ''}")
    run = done.runs["ccfrec"]
    typer.echo(f"done in {done.seconds:.0f} s: dataset {done.dataset_dir}, codes {done.codes_dir}, run {run}")
    typer.echo(f"more: semrec recommend {shlex.quote(str(run))} --user {shlex.quote(done.user)} | "
               f"semrec serve {shlex.quote(str(run))}")


def format_comparison(results: dict[str, dict]) -> str:
    """Models side by side: valid/test NDCG@10 and test Recall@10 with the user's history items kept in the
    ranking (the references' protocol), test NDCG@10 with them excluded (``test_exclude_history``, the serving
    protocol) when given, and test NDCG@10 relative to the first row; ``n/a`` where a split has no rows."""

    def cell(value, width: int, fmt: str = ".4f") -> str:
        return f"{'n/a' if value is None else format(value, fmt):>{width}}"

    first = next(iter(results.values()))["test"].get("ndcg@10")
    lines = [f"{'':<12} {'history items kept in the ranking':^60}  {'excluded':>12}",
             f"{'model':<12} {'valid NDCG@10':>14} {'test NDCG@10':>13} {'test Recall@10':>15} {'vs first':>15}  "
             f"{'test NDCG@10':>12}"]
    for model, res in results.items():
        test = res["test"].get("ndcg@10")
        ratio = None if test is None or not first else test / first
        lines.append(f"{model:<12} {cell(res['valid'].get('ndcg@10'), 14)} {cell(test, 13)} "
                     f"{cell(res['test'].get('recall@10'), 15)} {cell(ratio, 14, '.2f')}x  "
                     f"{cell(res.get('test_exclude_history', {}).get('ndcg@10'), 12)}")
    return "\n".join(lines)


def _key_values(pairs: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SemrecError(f"{what} must be key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _history_file_ids(path: Path) -> list[str]:
    """``recommend --history-file``: one raw id per line (line endings removed, blank lines skipped), decoded as
    UTF-8, else latin-1 (see :mod:`semrec.text.decode`); ``-`` reads stdin."""
    from semrec.text.decode import TextDecodeError, decode_bytes

    if str(path) == "-":
        data = sys.stdin.buffer.read()
    else:
        if not path.is_file():
            raise SemrecError(f"{path}: history file not found")
        data = path.read_bytes()
    try:
        text = decode_bytes(data)[0]
    except TextDecodeError as exc:
        raise SemrecError(f"{path}: {exc}") from None
    return [line for line in text.splitlines() if line.strip()]


@app.command()
@friendly_errors
def recommend(
    run: Path = typer.Argument(..., help="A run folder written by 'semrec train'."),
    history: str | None = typer.Option(None, help="Comma-separated raw item ids (as in the source data), "
                                                  "oldest first. For ids that contain a comma use --item or "
                                                  "--history-file."),
    item: list[str] | None = typer.Option(None, "--item", help="One raw item id, taken whole (commas and spaces "
                                                               "included); repeat it for the history, oldest first."),
    history_file: Path | None = typer.Option(None, "--history-file",
                                             help="A text file with one raw item id per line, oldest first ('-' "
                                                  "reads stdin); each line is taken whole, blank lines skipped."),
    user: str | None = typer.Option(None, help="Use this dataset user's whole sequence as the history "
                                               "(raw user id, taken whole)."),
    k: int = typer.Option(10, help="How many items to recommend."),
    exclude_seen: bool = typer.Option(True, "--exclude-seen/--include-seen", help="Never recommend a history item."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
):
    """Top-k next items (raw ids, scores, titles) for a history of raw item ids.

    Give the history in exactly one way: --history a,b,c | --item a --item b | --history-file FILE | --user ID.
    Unknown ids are reported and ignored; cold-start items added to the run are ranked too.
    """
    import dataclasses
    import json

    from semrec import api

    given = [history is not None, bool(item), history_file is not None, user is not None]
    if sum(given) != 1:
        raise SemrecError("give exactly one of --history id1,id2,... | --item ID (repeatable) | --history-file FILE "
                          "| --user RAW_USER_ID")
    if k < 1:
        raise SemrecError(f"--k must be at least 1, got {k}")
    ids = None if user is not None else (
        _history_file_ids(history_file) if history_file is not None else
        list(item) if item else [h.strip() for h in (history or "").split(",") if h.strip()])
    recommended = api.recommend(run, ids, user=user, k=k, exclude_seen=exclude_seen, device=device)
    result, rec, ids = recommended.result, recommended.recommender, recommended.history
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(result), ensure_ascii=False, indent=2))
        return
    if result.unknown:
        shown = ", ".join(u if u and u == u.strip() and "," not in u and u.isprintable() else repr(u)
                          for u in result.unknown[:20])
        typer.echo(f"ignored {len(result.unknown)} unknown id(s): {shown}", err=True)
        if history is not None and any("," in raw for raw in rec.dataset.items["raw_id"]):
            typer.echo("note: this catalogue has ids that contain a comma, which --history splits; "
                       "pass such ids with --item ID or --history-file FILE", err=True)
    if result.fallback:
        typer.echo("no known item in the history: showing the most popular items", err=True)
    who = f"user {user}" if user is not None else "the history"
    typer.echo(f"top-{k} for {who} ({len(ids)} items; {rec.config.model} on {rec.dataset.name}, "
               f"{rec.similarity} scores)")
    for rank, scored in enumerate(result.items, 1):
        typer.echo(f"{rank:>3}  {scored.raw_id:<16} {scored.score:>9.4f}  {scored.title or ''}")


@app.command()
@friendly_errors
def export(
    run: Path = typer.Argument(..., help="A run folder written by 'semrec train'."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default <run>/export)."),
    approx: str = typer.Option("hnsw", help="Approximate index: hnsw | ivf."),
    param: list[str] | None = typer.Option(None, "--param", "-p",
                                           help="Index parameter key=value (repeatable): hnsw M, ef_construction, "
                                                "ef_search; ivf nlist (0 = about 4 sqrt(n)), nprobe."),
    queries: int = typer.Option(5000, help="Validation histories used to measure recall@10 (a seeded sample)."),
    device: str = typer.Option("cpu", help="cpu | cuda (user vectors of the recall queries)."),
):
    """Export item vectors and faiss indexes (exact + HNSW or IVF) with the approximate index's recall@10.

    Writes items.npy + item_ids.json, exact.index (inner product) and approx.index; recall@10 is measured
    against exact search on validation histories.
    """
    from semrec import api

    summary = api.export(run, out, approx, _key_values(param, "--param"), queries=queries, device=device)
    typer.echo(f"items       {summary['n_items']:,} x {summary['dim']} ({summary['similarity']}"
               f"{', L2-normalised' if summary['normalised'] else ''}; {summary['n_cold_items']} cold-start)")
    typer.echo(f"approx      {approx} {summary['approx']['params']} built in {summary['approx']['build_seconds']} s")
    typer.echo(f"recall@10   {summary['recall@10']:.4f} of exact search ({summary['recall_queries']:,} validation "
               f"histories)")
    typer.echo(f"written to  {summary['folder']}")


@app.command()
@friendly_errors
def serve(
    run: Path = typer.Argument(..., help="A run folder written by 'semrec train'."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    retrieval: str = typer.Option("exact", help="exact (score every item) | hnsw | ivf (approximate faiss index)."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="Index parameter key=value (see export)."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
):
    """Serve a run over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs.

    POST /recommend, POST /items (cold-start items), GET /items/{raw_id}, GET /health. One process: added
    items live in its memory (and in the run folder). The text encoder and tokenizer of POST /items load at
    start-up in the background (GET /health: 'loading', then 'ok'); /recommend is served at once.
    """
    from semrec import api

    api.serve(run, host, port, retrieval, _key_values(param, "--param"), device, log_level, say=typer.echo)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
