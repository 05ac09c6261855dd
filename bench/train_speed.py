"""Training and validation speed of SASRec and CCFRec on Scientific (the issue's anchor setting).

For each (model, batch size): median seconds per training step (``Trainer.train_step``: forward, backward,
gradient clipping when the config sets it, AdamW and learning-rate schedule steps, heap trim; after one warm-up
step, on CPU), seconds per full validation pass (all users, full ranking), and the peak RSS of the
process. Every configuration runs in its own subprocess so that peak RSS is its own. Peak RSS grows with
the number of steps when glibc's heap fragments; ``--allocators`` compares allocator settings: a glibc mmap
threshold in MiB (0 = glibc's dynamic default), with ``+thp`` for PyTorch's transparent huge pages and
``+trim`` for glibc's malloc_trim after every step. The trainer's defaults (train.malloc_mmap_threshold_mb=4,
train.huge_pages=true, train.malloc_trim=true) are ``4+thp+trim``. Steps past the end of an epoch go on into
the next one after a validation pass, as in the trainer.

    python bench/train_speed.py                     # writes bench/results/train_speed.md
    python bench/train_speed.py --steps 3 --models ccfrec --batches 200
    python bench/train_speed.py --models ccfrec --batches 400 --steps 90 --allocators 4+thp+trim,4+thp,0+thp \
        --out bench/results/train_memory.md

Prerequisite: data/Scientific prepared, embedded and coded (see configs/ccfrec/Scientific.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"sasrec": "configs/sasrec/Scientific.yaml", "ccfrec": "configs/ccfrec/Scientific.yaml"}
ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "THP_MEM_ALLOC_ENABLE")  # each row sets its own allocator
REFERENCE = ("Reference CCFRec (issue anchor, same machine kind, Scientific, MiniLM vectors): 28-31 s per "
             "training step at batch 200 with 3,900 negatives; about 90 s per validation pass; killed for "
             "memory at 24 GB RSS at batch 400.")


def parse_allocator(spec: str) -> tuple[float, set[str]]:
    """``MiB[+thp][+trim]`` -> (mmap threshold in MiB, flags); SystemExit naming the bad part otherwise."""
    threshold, *flags = spec.strip().split("+")
    try:
        threshold_mb = float(threshold)
    except ValueError:
        raise SystemExit(f"--allocators: {spec!r} must start with an mmap threshold in MiB (0 = glibc's "
                         "default), e.g. 4+thp+trim") from None
    unknown = set(flags) - {"thp", "trim"}
    if threshold_mb < 0 or unknown:
        raise SystemExit(f"--allocators: bad setting {spec!r} (threshold >= 0, flags thp and trim): "
                         "use MiB[+thp][+trim]")
    return threshold_mb, set(flags)


def measure(model: str, batch: int, steps: int, dataset: str | None, allocator: str) -> dict:
    """Time ``steps`` calls of the trainer's own ``Trainer.train_step`` (forward, backward, clipping, AdamW and
    schedule steps, heap trim) on CPU, after one warm-up step, with the allocator set-up ``allocator``."""
    import tempfile

    import torch

    from semrec.config import RunConfig, load_config
    from semrec.eval.evaluator import evaluate
    from semrec.train.memory import peak_rss_gb, release_free_heap
    from semrec.train.process import prepare_process
    from semrec.train.trainer import Trainer

    threshold_mb, flags = parse_allocator(allocator)
    overrides = [("dataset", dataset)] if dataset else []
    overrides += [("train.batch_size", batch), ("train.device", "cpu"), ("train.progress", False),
                  ("train.malloc_mmap_threshold_mb", threshold_mb), ("train.huge_pages", "thp" in flags),
                  ("train.malloc_trim", "trim" in flags)]
    cfg = load_config(RunConfig, ROOT / CONFIGS[model], overrides)
    applied = prepare_process(cfg.train)  # as `semrec train` does, before anything large is allocated
    with tempfile.TemporaryDirectory() as run_dir:  # the trainer writes its config and data record there
        trainer = Trainer(cfg, run_dir=run_dir)
    data, net = trainer.data, trainer.model
    times, rss_after_warmup, rss_half = [], 0.0, 0.0
    net.begin_epoch(trainer.epoch)
    net.train()
    batches = trainer.epoch_batches()
    for i in range(steps + 1):
        b = next(batches, None)
        if b is None:  # the epoch is over: validate as the trainer does, then the next epoch's batches
            evaluate(net, data.split.valid, trainer.max_len, cfg.train.eval_batch_size)
            trainer.epoch += 1
            net.begin_epoch(trainer.epoch)
            net.train()
            batches = trainer.epoch_batches()
            b = next(batches)
        if i == 1:
            rss_after_warmup = peak_rss_gb() or 0.0
        if i == steps // 2 + 1:
            rss_half = peak_rss_gb() or 0.0
        t0 = time.perf_counter()
        trainer.train_step(b)
        if i > 0:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    valid = evaluate(net, data.split.valid, trainer.max_len, cfg.train.eval_batch_size)
    eval_seconds = time.perf_counter() - t0
    return {
        "model": model, "batch": batch, "steps": steps, "step_median_s": statistics.median(times),
        "step_min_s": min(times), "valid_pass_s": eval_seconds,
        "peak_rss_gb": peak_rss_gb(), "peak_rss_after_warmup_gb": rss_after_warmup,
        "peak_rss_half_gb": rss_half, "mmap_threshold_mb": applied["mmap_threshold_mb"],
        "huge_pages": applied["huge_pages"], "malloc_trim": cfg.train.malloc_trim and release_free_heap(),
        "grad_clip": cfg.train.grad_clip, "schedule": cfg.train.schedule, "warmup_steps": cfg.train.warmup_steps,
        "neg_num": getattr(net.config, "neg_num", None), "train_samples": trainer.task.n_samples(),
        "valid_rows": len(data.split.valid.targets), "n_items": data.dataset.n_items,
        "threads": torch.get_num_threads(), "epochs_crossed": trainer.epoch,
        "valid_ndcg@10_untrained": valid["ndcg@10"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sasrec,ccfrec")
    parser.add_argument("--batches", default="200,400")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dataset", default=None, help="override the dataset folder of the configs")
    parser.add_argument("--allocators", default="4+thp+trim",
                        help="comma-separated allocator settings: glibc mmap threshold in MiB (0 = glibc's dynamic "
                             "default), '+thp' adds PyTorch's transparent huge pages, '+trim' glibc's malloc_trim "
                             "after every step")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed.md"))
    parser.add_argument("--note", default="", help="a paragraph added to the table (e.g. what else ran meanwhile)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.steps, args.dataset, args.allocators)))
        return
    allocators = args.allocators.split(",")
    for spec in allocators:
        parse_allocator(spec)  # fail before any subprocess starts
    rows = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for model in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            for threshold in allocators:
                cmd = [sys.executable, __file__, "--one", model, str(batch), "--steps", str(args.steps),
                       "--allocators", threshold]
                if args.dataset:
                    cmd += ["--dataset", args.dataset]
                env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    rows.append({"model": model, "batch": batch, "error": f"exit {proc.returncode}"})
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    load = ""
    if load_before is not None:  # other processes on the machine slow every row down: say how busy it was
        load = (f" Load average (1 min) of the machine: {load_before:.2f} before the first row, "
                f"{os.getloadavg()[0]:.2f} after the last, on {os.cpu_count()} cores.")
    argv = sys.argv[1:]  # the command as run, without the note (printed below it)
    shown = [a for i, a in enumerate(argv) if not a.startswith("--note") and (i == 0 or argv[i - 1] != "--note")]
    command = " ".join(["bench/train_speed.py", *shown])
    lines = [
        "# Training speed on Scientific", "",
        f"Machine: {platform.processor() or platform.machine()}, {rows[0].get('threads', '?')} torch threads, "
        f"CPU only. Command: `python {command}`.{load} Steps are `Trainer.train_step` (forward, backward, "
        "clipping when configured, AdamW, learning-rate schedule, heap trim).", "",
        *([args.note, ""] if args.note else []),
        REFERENCE, "",
        "Allocator: glibc mmap threshold, fixed (MiB) or glibc's dynamic default; THP: PyTorch's transparent huge "
        "pages for large CPU tensors; trim: glibc's malloc_trim after every step. Peak RSS (GiB, 2**30 bytes) is "
        "given after the warm-up step, after half the steps and at the end (all steps and one validation pass).", "",
        "| model | batch | negatives | allocator | median s/step | min s/step | s/validation pass "
        "| peak RSS after warm-up (GiB) | after half the steps (GiB) | peak RSS (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | | | {r['error']} | | | | | |")
            continue
        allocator = f"mmap >= {r['mmap_threshold_mb']:g} MiB" if r["mmap_threshold_mb"] else "glibc dynamic"
        allocator += " + THP" if r.get("huge_pages") else ""
        allocator += " + trim" if r.get("malloc_trim") else ""
        lines.append(f"| {r['model']} | {r['batch']} | {r['neg_num'] or 'all (softmax)'} | {allocator} "
                     f"| {r['step_median_s']:.2f} | {r['step_min_s']:.2f} | {r['valid_pass_s']:.2f} "
                     f"| {r['peak_rss_after_warmup_gb']:.2f} | {r.get('peak_rss_half_gb', 0.0):.2f} "
                     f"| {r['peak_rss_gb']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)  # atomic: an interrupted run never leaves half a table
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
