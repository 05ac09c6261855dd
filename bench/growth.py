"""Growth curves of the pipeline's stages (issue 20, part 2): time and peak RSS of every stage but training against
the catalogue size, on synthetic catalogues with text (``bench/synthetic.py``). Training's curve is
``bench/scale.py`` (SASRec under each loss); serving's ``bench/serve_latency.py`` (HTTP ``/recommend`` p50/p99).

For each size N (``--items``; users = ``--users-per-item`` x N, sequences of 5 + geometric(mean 8) items) the
Amazon-2023-style files are generated once, then every stage runs in a process of its own (one thread, so its peak
RSS, ``ru_maxrss``, is its own):

* ``prepare``: ``semrec prepare`` of the files (streaming readers), seconds and peak RSS;
* ``prepare_splits``: the same sequences written as Amazon's ``last_out_w_his`` files (``synthetic.py --layout
  splits``: every row carries the user's history before it, so the files grow with the square of a user's length),
  prepared the same way (two streaming passes over the files; memory per interaction, not per history item);
* ``load``: ``CanonicalDataset.load`` of the prepared folder (what training, evaluation and serving start with);
* ``embed``: MiniLM (``all-MiniLM-L6-v2``) throughput on the first ``--embed-sample`` item texts of view ``all``
  (texts/s after a warm-up batch; a full encoding of N items takes N / throughput, shown as "projected"); then the
  view ``all`` of every item is written as random 384-d vectors (model ``random-384``), standing in for MiniLM's
  in the stages below: a tokenizer's and the evaluator's cost depend on the shapes, not the values;
* ``pq``, ``opq``, ``rq``, ``kmeans``: ``semrec codes`` on view ``all`` (fit, then encode every item; faiss's
  k-means trains on at most 256 points per centroid, so a fit's cost stops growing with N), seconds and peak RSS;
  OPQ with ``niter=10, polysemous=False`` (:data:`TOKENIZERS`);
* ``eval``: one full-ranking pass (exclude-history, items scored 65,536 at a time) of a randomly initialised SASRec
  (64 dims) over all N items for the validation rows of ``--eval-users`` random users: seconds per 1,000 users and
  peak RSS (the scores of a batch against one item chunk: bounded by the chunk, not N).

Each cell is kept in ``<work>/n<N>/cells/<stage>.json`` with the commit it was measured at, and reused by a later
call unless named in ``--remeasure`` (after a change to one stage, measure that stage again). Writes
``bench/results/growth.md`` and a PNG (seconds and peak RSS per stage against N).

    python bench/growth.py                                     # 10^4, 10^5, 10^6 items (an hour or more on 2 cores)
    python bench/growth.py --items 2000 --embed-sample 64 --eval-users 200 --out /tmp/growth.md   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "prepare_splits", "load", "embed", "pq", "opq", "rq", "kmeans", "eval"]
# OPQ: 10 alternations without the polysemous renumbering (defaults 50 and on: a fit of 50 on faiss's capped sample
# of 65,536 points would take about an hour on this machine; the cost per alternation is what grows, if anything)
TOKENIZERS = {"pq": {"views": ["all"]}, "opq": {"niter": 10, "polysemous": False}, "rq": {"views": ["all"]},
              "kmeans": {"views": ["all"]}}
STAND_IN = "random-384"


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _RandomModel:
    """Stands in for MiniLM in the embed stage's write measurement: unit vectors from a seeded generator."""

    def __init__(self, dim: int = 384):
        import numpy as np

        self.rng, self.dim = np.random.default_rng(0), dim

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts, **_kwargs):
        import numpy as np

        vectors = self.rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _StandIn():
    from semrec.text.encode import TextEncoder

    class StandIn(TextEncoder):
        identity = f"{STAND_IN}-seed0"  # its own cache key

    encoder = StandIn(batch_size=64)
    encoder._model = _RandomModel()
    return encoder


def run_stage(stage: str, n: int, args: argparse.Namespace) -> dict:
    """One stage at catalogue size ``n``, in this process; returns its figures (seconds, peak RSS and more)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    work = Path(args.work) / f"n{n}"
    dataset = work / "data" / "Synthetic"
    start = time.perf_counter()
    if stage in ("prepare", "prepare_splits"):
        from semrec import api
        from semrec.config import PrepareConfig

        splits = stage == "prepare_splits"
        ds, _ = api.prepare(PrepareConfig(source=str(work / ("files-splits" if splits else "files")),
                                          out=str(dataset.with_name("Synthetic-splits") if splits else dataset)))
        counts = ds.manifest["counts"]
        return {"seconds": time.perf_counter() - start, "rss_gb": rss_gb(), "items": counts["items"],
                "users": counts["users"], "interactions": counts["interactions"]}
    from semrec.data.dataset import CanonicalDataset

    ds = CanonicalDataset.load(dataset)
    if stage == "load":  # what training, evaluation and serving start with
        return {"seconds": time.perf_counter() - start, "rss_gb": rss_gb()}
    if stage == "embed":
        from semrec.config import EmbedConfig
        from semrec.text.encode import TextEncoder, embed_dataset

        texts = ds.view_texts("all")[:args.embed_sample]
        encoder = TextEncoder(batch_size=64)
        encoder.encode(texts[:64], progress=False)  # loads the model, warms up
        start = time.perf_counter()
        encoder.encode(texts, progress=False)
        rate = len(texts) / (time.perf_counter() - start)
        measured = rss_gb()
        import shutil
        import tempfile

        from semrec.artifacts import DatasetFolder

        # written afresh each time (no reuse of an earlier folder or of the content-hash cache), so that the stage's
        # peak includes making and writing the N vectors
        shutil.rmtree(DatasetFolder(dataset).embeddings(STAND_IN).path, ignore_errors=True)
        os.environ["SEMREC_CACHE"] = tempfile.mkdtemp(prefix="growth-cache-")
        # the real TextEncoder path (distinct texts, length-sorted chunks, rows written into the file as they come)
        # with a random stand-in for MiniLM's forward pass, whose own memory is measured above
        embed_dataset(dataset, EmbedConfig(model=STAND_IN, views=["all"]), progress=False, encoder=_StandIn())
        write_gb = rss_gb()  # peak of the whole stage: the N vectors made (by the stand-in) and written
        shutil.rmtree(os.environ["SEMREC_CACHE"], ignore_errors=True)
        return {"seconds": ds.n_items / rate, "rss_gb": measured, "texts_per_s": rate, "sample": len(texts),
                "write_gb": write_gb}
    if stage in TOKENIZERS:
        from semrec import api
        from semrec.config import CodesConfig

        report, _ = api.codes(dataset, CodesConfig(tokenizer=stage, name=f"growth-{stage}", model=STAND_IN,
                                                   params=TOKENIZERS[stage]), progress=False)
        return {"seconds": time.perf_counter() - start, "rss_gb": rss_gb(), "codebooks": len(report.codebook_sizes)}
    if stage == "eval":
        from semrec.data.splits import EvalRows, leave_last_out
        from semrec.eval.evaluator import evaluate
        from semrec.models import ItemInputs, build_model

        torch.manual_seed(0)
        valid = leave_last_out(ds.sequences).valid
        pick = np.sort(np.random.default_rng(0).choice(len(valid.targets), min(args.eval_users, len(valid.targets)),
                                                       replace=False))
        rows = EvalRows(valid.users[pick], [valid.histories[i] for i in pick], valid.targets[pick])
        model = build_model("sasrec", {"hidden_size": 64, "inner_size": 256, "max_len": 50},
                            ItemInputs(n_items=ds.n_items))
        start = time.perf_counter()
        evaluate(model, rows, 50, 1024, exclude_history=True)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "rss_gb": rss_gb(), "per_1000_users_s": 1000 * seconds / len(rows.targets),
                "users": len(rows.targets)}
    raise ValueError(f"unknown stage {stage}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="10000,100000,1000000", help="catalogue sizes, comma-separated")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--users-per-item", type=float, default=1.0)
    parser.add_argument("--embed-sample", type=int, default=2000, help="texts timed through MiniLM")
    parser.add_argument("--eval-users", type=int, default=5000, help="validation rows ranked over all items")
    parser.add_argument("--work", default="/tmp/semrec-growth", help="generated files and datasets (kept: a rerun "
                                                                     "reuses the files)")
    parser.add_argument("--remeasure", default="",
                        help="stages to measure again (comma-separated, or all): every other cell measured before "
                             "under --work (<work>/n<N>/cells/<stage>.json, with the commit it ran at) is reused")
    parser.add_argument("--note", default="", help="a line on the machine's conditions, written under the command")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "growth.md"))
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # "N,stage": one stage, print JSON
    args = parser.parse_args()
    if args.stage:
        n, stage = args.stage.split(",")
        print(json.dumps(run_stage(stage, int(n), args)))
        return
    stages = args.stages.split(",")
    bad = [s for s in stages if s not in STAGES]
    try:
        sizes = [int(x) for x in args.items.split(",")]
    except ValueError:
        parser.error(f"--items: comma-separated integers, got {args.items!r}")
    if bad or min(sizes) < 100 or args.users_per_item <= 0 or args.embed_sample < 1 or args.eval_users < 1:
        parser.error(f"--stages: known {', '.join(STAGES)} (got {', '.join(bad) or 'ok'}); --items >= 100; "
                     "--users-per-item > 0; --embed-sample and --eval-users >= 1")
    remeasure = set(stages) if args.remeasure == "all" else set(filter(None, args.remeasure.split(",")))
    if remeasure - set(STAGES) - {"all"}:
        parser.error(f"--remeasure: all or stages of {', '.join(STAGES)}, got {args.remeasure}")
    sys.path.insert(0, str(ROOT / "bench"))
    from synthetic import generate

    from semrec.io import write_json

    git = [subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=ROOT).stdout.strip()
           for cmd in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])]
    commit = (git[0] or "unknown") + ("+changes" if git[1] else "")

    results: dict[tuple[int, str], dict | str] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    for n in sizes:
        files = Path(args.work) / f"n{n}" / "files"
        if not (files / "meta_Synthetic.jsonl.gz").is_file():
            start = time.perf_counter()
            made = generate(files, n, max(1, round(args.users_per_item * n)), topics=max(1, n // 50))
            print(f"{n}: generated {made} in {time.perf_counter() - start:.0f} s", flush=True)
        splits = Path(args.work) / f"n{n}" / "files-splits"
        if "prepare_splits" in stages and not (splits / "meta_Synthetic.jsonl.gz").is_file():
            generate(splits, n, max(1, round(args.users_per_item * n)), topics=max(1, n // 50), layout="splits")
        for stage in stages:
            saved = Path(args.work) / f"n{n}" / "cells" / f"{stage}.json"
            if saved.is_file() and stage not in remeasure:
                results[n, stage] = json.loads(saved.read_text(encoding="utf-8"))
                print(n, stage, "(measured earlier)", results[n, stage], flush=True)
                continue
            done = subprocess.run([sys.executable, __file__, "--stage", f"{n},{stage}",
                                   f"--embed-sample={args.embed_sample}", f"--eval-users={args.eval_users}",
                                   f"--work={args.work}"], capture_output=True, text=True, cwd=ROOT, env=env)
            if done.returncode == 0:
                results[n, stage] = {**json.loads(done.stdout.strip().splitlines()[-1]), "commit": commit}
                saved.parent.mkdir(parents=True, exist_ok=True)
                write_json(saved, results[n, stage])
            else:
                results[n, stage] = f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:100]}"
            print(n, stage, results[n, stage], flush=True)
    write(args, sizes, stages, results)


def write(args: argparse.Namespace, sizes: list[int], stages: list[str], results: dict) -> None:
    from semrec.io import atomic_path

    def cell(n: int, stage: str, key: str, fmt: str) -> str:
        value = results[n, stage]
        return value if isinstance(value, str) else format(value[key], fmt)

    lines = ["# Growth curves of the pipeline's stages (issue 20)", "",
             f"Command: `python bench/growth.py --items {args.items} --stages {','.join(stages)} --users-per-item "
             f"{args.users_per_item} --embed-sample {args.embed_sample} --eval-users {args.eval_users}`. Synthetic "
             "catalogues (`bench/synthetic.py`), one process of one thread per cell: seconds and peak RSS (GB). "
             "`embed` seconds are projected (N / the texts/s measured on the sample) and its GB are the model's "
             "/ the whole stage's (`semrec embed` of view `all` through TextEncoder, each chunk's rows written into "
             "the file as they come, MiniLM's forward pass replaced by random unit vectors); `prepare`: the "
             "streaming readers and the out-of-core build (DuckDB, default memory_limit 256MB); "
             "`load`: CanonicalDataset.load; "
             "tokenizers fit and encode view `all` (random 384-d stand-in vectors; OPQ with niter 10, no polysemous "
             "training); `eval` ranks all N items for "
             f"{args.eval_users} validation rows (exclude-history), its seconds per 1,000 users in parentheses."
             + (f" {args.note}" if args.note else ""), ""]
    prepared = {n: results.get((n, "prepare")) for n in sizes}
    lines += ["| items | users | interactions | " + " | ".join(f"{s} s | {s} GB" for s in stages) + " |",
              "|---" * (3 + 2 * len(stages)) + "|"]
    for n in sizes:
        p = prepared[n] if isinstance(prepared[n], dict) else {}
        row = [f"{n:,}", f"{p.get('users', 0):,}" if p else "", f"{p.get('interactions', 0):,}" if p else ""]
        for stage in stages:
            seconds = cell(n, stage, "seconds", ".1f")
            value = results[n, stage]
            rss = cell(n, stage, "rss_gb", ".2f")
            if isinstance(value, dict) and stage == "embed":
                seconds = f"{seconds} ({value['texts_per_s']:.0f} texts/s)"
                rss += f" / {value['write_gb']:.2f}" if "write_gb" in value else ""
            elif isinstance(value, dict) and stage == "eval":
                seconds = f"{seconds} ({value['per_1000_users_s']:.2f})"
            row += [seconds, rss]
        lines.append("| " + " | ".join(row) + " |")
    commits = sorted({v.get("commit", "?") for v in results.values() if isinstance(v, dict)})
    lines += ["", f"Cells measured at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)} (per cell: "
              f"`{args.work}/n<N>/cells/<stage>.json`)."]
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for stage in stages:
        xs = [n for n in sizes if isinstance(results[n, stage], dict)]
        for ax, key in zip(axes, ("seconds", "rss_gb")):
            ax.plot(xs, [results[n, stage][key] for n in xs], marker="o",
                    label=f"{stage} (projected)" if stage == "embed" and key == "seconds" else stage)
    for ax, label in zip(axes, ("seconds", "peak RSS (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log" if label == "seconds" else "linear")
        ax.set_xlabel("items")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    plot = Path(args.out).with_suffix(".png")
    with atomic_path(plot) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    print(f"wrote {args.out} and {plot}")


if __name__ == "__main__":
    main()
