"""Training and validation speed of SASRec and CCFRec on Scientific (the issue's anchor setting).

For each (model, batch size): median seconds per training step (``Trainer.train_step``: forward, backward, gradient
clipping when the config sets it, AdamW and learning-rate schedule steps, heap trim; after one warm-up step, on
CPU), seconds per full validation pass (all users, full ranking), and the peak RSS of the process. Every
configuration runs in its own subprocess so that peak RSS is its own. Peak RSS grows with the number of steps when
glibc's heap fragments; ``--allocators`` compares allocator settings: a glibc mmap threshold in MiB (0 = glibc's
dynamic default), with ``+thp`` for PyTorch's transparent huge pages and ``+trim`` for glibc's malloc_trim after
every step, ``+reuse`` for train.malloc_reuse (every tensor from the heap, freed pages kept for the next step; the
threshold is then ignored), ``+cache`` for the CPU block cache of semrec.train.block_cache (tensors of 1 MiB and
more; its blocks stay within 1.05 times the most in use at once, the default ``train.cpu_block_cache_headroom``;
``+cache0.2`` for 1.2; the glibc settings apply to the smaller tensors). The trainer's defaults
(train.cpu_block_cache=true, train.malloc_mmap_threshold_mb=4, train.huge_pages=true, train.malloc_trim=true) are
``4+thp+trim+cache``; before the block cache they were ``4+thp+trim``. Steps past the end of an epoch go on into the
next one after a validation pass, as in the trainer. Each row also gives the kernel's share of the process's CPU
time (all threads) and the minor page faults per step, over the measured steps only: freshly mapped memory is zero-
filled by the kernel on its first touch, once per page and step.

    python bench/train_speed.py                     # writes bench/results/train_speed.md
    python bench/train_speed.py --steps 3 --models ccfrec --batches 200
    python bench/train_speed.py --models ccfrec --batches 400 --steps 90 --allocators 4+thp+trim,4+thp,0+thp \
        --out bench/results/train_memory.md

Prerequisite: data/Scientific prepared, embedded and coded (see configs/ccfrec/Scientific.yaml).
"""

from __future__ import annotations

import argparse
import dataclasses
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
# each row sets its own allocator
ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "THP_MEM_ALLOC_ENABLE")
REFERENCE = ("Reference CCFRec (issue anchor, same machine kind, Scientific, MiniLM vectors): 28-31 s per "
             "training step at batch 200 with 3,900 negatives; about 90 s per validation pass; killed for "
             "memory at 24 GB RSS at batch 400.")


def parse_allocator(spec: str) -> list[tuple[str, object]]:
    """``MiB[+thp][+trim|+trimN][+reuse][+cache[H]]`` -> the train.* overrides it stands for; SystemExit naming the
    bad part otherwise. ``trimN``: a heap trim every N steps (``trim`` = every step); ``cacheH``: the CPU block
    cache (train.cpu_block_cache) with headroom H (train.cpu_block_cache_headroom; its default when not given)."""
    threshold, *flags = spec.strip().split("+")
    try:
        threshold_mb = float(threshold)
    except ValueError:
        raise SystemExit(f"--allocators: {spec!r} must start with an mmap threshold in MiB (0 = glibc's "
                         "default), e.g. 4+thp+trim") from None
    trims = [f for f in flags if f.startswith("trim")]
    every = trims[0][4:] or "1" if trims else "1"
    caches = [f for f in flags if f.startswith("cache")]
    from semrec.config import TrainConfig

    default = str(TrainConfig().cpu_block_cache_headroom)
    headroom = caches[0][5:] or default if caches else default
    unknown = set(flags) - {"thp", "reuse", *trims, *caches}
    try:
        bad_headroom = not float(headroom) >= 0
    except ValueError:
        bad_headroom = True
    if (threshold_mb < 0 or unknown or len(trims) > 1 or not every.isdigit() or int(every) < 1 or len(caches) > 1
            or bad_headroom):
        raise SystemExit(f"--allocators: bad setting {spec!r} (a threshold >= 0, then thp, trim or trimN with N >= "
                         "1, reuse, cache or cacheH with H >= 0): use MiB[+thp][+trim|+trimN][+reuse][+cache[H]]")
    return [("train.malloc_mmap_threshold_mb", threshold_mb), ("train.huge_pages", "thp" in flags),
            ("train.malloc_trim", bool(trims)), ("train.malloc_trim_every", int(every)),
            ("train.malloc_reuse", "reuse" in flags), ("train.cpu_block_cache", bool(caches)),
            ("train.cpu_block_cache_headroom", float(headroom))]


def _usage() -> tuple[float, float, int]:
    """(user CPU seconds, system CPU seconds, minor page faults) of this process so far, all threads; zeros where
    ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0, 0.0, 0
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime, u.ru_stime, u.ru_minflt


def measure(model: str, batch: int, steps: int, dataset: str | None, allocator: str,
            sets: list[str] = ()) -> dict:
    """Time ``steps`` calls of the trainer's own ``Trainer.train_step`` (forward, backward, clipping, AdamW and
    schedule steps, heap trim) on CPU, after one warm-up step, with the allocator set-up ``allocator``."""
    import tempfile

    import torch

    from semrec.config import RunConfig, load_config
    from semrec.eval.evaluator import evaluate
    from semrec.train import block_cache
    from semrec.train.memory import free_heap_bytes, peak_rss_gb, release_free_heap
    from semrec.train.process import prepare_process
    from semrec.train.trainer import Trainer

    overrides = [("dataset", dataset)] if dataset else []
    overrides += [("train.batch_size", batch), ("train.device", "cpu"), ("train.progress", False),
                  *parse_allocator(allocator), *sets]
    name, *row_sets = model.split("@")  # a row's own overrides: sasrec@model_params.ce_chunk_size=4096
    if name not in CONFIGS:
        raise SystemExit(f"--models: unknown model {name!r} (known: {', '.join(CONFIGS)})")
    cfg = load_config(RunConfig, ROOT / CONFIGS[name], [*overrides, *row_sets])
    applied = prepare_process(cfg.train)  # as `semrec train` does, before anything large is allocated
    with tempfile.TemporaryDirectory() as run_dir:  # the trainer writes its config and data record there
        trainer = Trainer(cfg, run_dir=run_dir)
    data, net = trainer.data, trainer.model
    times, rss_after_warmup, rss_half, spent = [], 0.0, 0.0, [0.0, 0.0, 0.0]
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
        before = _usage()
        t0 = time.perf_counter()
        trainer.train_step(b)
        if i > 0:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
            # CPU time (all threads) and page faults of the measured steps only (not the warm-up, not batching)
            spent = [a + (now - then) for a, now, then in zip(spent, _usage(), before)]
    user_s, system_s, minor_faults = spent
    free_after_steps = free_heap_bytes()
    t0 = time.perf_counter()
    valid = evaluate(net, data.split.valid, trainer.max_len, cfg.train.eval_batch_size)
    eval_seconds = time.perf_counter() - t0
    return {
        "model": model, "batch": cfg.train.batch_size, "steps": steps, "step_median_s": statistics.median(times),
        "step_min_s": min(times), "valid_pass_s": eval_seconds,
        "peak_rss_gb": peak_rss_gb(), "peak_rss_after_warmup_gb": rss_after_warmup,
        "peak_rss_half_gb": rss_half, "mmap_threshold_mb": applied["mmap_threshold_mb"],
        "huge_pages": applied["huge_pages"], "malloc_reuse": applied["malloc_reuse"],
        "cpu_block_cache_headroom": applied["cpu_block_cache_headroom"],
        "block_cache": None if block_cache.stats() is None else dataclasses.asdict(block_cache.stats()),
        "free_heap_gb": None if free_after_steps is None else free_after_steps / 2**30,
        # as the trainer: with malloc_reuse, trims only at an interval above 1 step
        "malloc_trim": (cfg.train.malloc_trim and (not cfg.train.malloc_reuse or cfg.train.malloc_trim_every > 1)
                        and release_free_heap()),
        "malloc_trim_every": cfg.train.malloc_trim_every,
        "grad_clip": cfg.train.grad_clip, "schedule": cfg.train.schedule, "warmup_steps": cfg.train.warmup_steps,
        "neg_num": getattr(net.config, "neg_num", None), "loss": getattr(net.config, "loss", None),
        "num_negatives": getattr(net.config, "num_negatives", None),
        "ce_chunk_size": getattr(net.config, "ce_chunk_size", None), "train_samples": trainer.task.n_samples(),
        "valid_rows": len(data.split.valid.targets), "n_items": data.dataset.n_items,
        "threads": torch.get_num_threads(), "epochs_crossed": trainer.epoch,
        "valid_ndcg@10_untrained": valid["ndcg@10"],
        "kernel_share": system_s / max(user_s + system_s, 1e-9), "minor_faults_per_step": minor_faults / max(steps, 1),
    }


def _negatives(row: dict) -> str:
    """The loss column: CCFRec's negatives per row, or the softmax of the item-table models (full, chunked, sampled)."""
    if row.get("neg_num"):
        return str(row["neg_num"])
    if row.get("loss") not in (None, "full"):
        return f"{row['num_negatives']} shared ({row['loss']}, logQ)"
    return f"all (softmax, chunks of {row['ce_chunk_size']:,})" if row.get("ce_chunk_size") else "all (softmax)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sasrec,ccfrec",
                        help="comma-separated; a model may carry overrides of its own after '@' "
                             "(sasrec@model_params.ce_chunk_size=4096@train.batch_size=2048)")
    parser.add_argument("--batches", default="200,400")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dataset", default=None, help="override the dataset folder of the configs")
    parser.add_argument("--allocators", default="4+thp+trim+cache",
                        help="comma-separated allocator settings: glibc mmap threshold in MiB (0 = glibc's dynamic "
                             "default), '+thp' adds PyTorch's transparent huge pages, '+trim' glibc's malloc_trim "
                             "after every step ('+trim10': every 10 steps), '+reuse' train.malloc_reuse (no mmap, "
                             "freed heap pages kept), '+cache' the CPU block cache (train.cpu_block_cache; "
                             "'+cache0.2': headroom 0.2 instead of the default)")
    parser.add_argument("--set", action="append", default=[],
                        help="key=value for every row's config (e.g. model_params.loss=uniform)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed.md"))
    parser.add_argument("--note", default="", help="a paragraph added to the table (e.g. what else ran meanwhile)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.steps, args.dataset, args.allocators,
                                 args.set)))
        return
    allocators = args.allocators.split(",")
    for spec in allocators:
        parse_allocator(spec)  # fail before any subprocess starts
    unknown = [m for m in args.models.split(",") if m.split("@")[0] not in CONFIGS]
    if unknown:
        raise SystemExit(f"--models: unknown model(s) {', '.join(map(repr, unknown))} (known: {', '.join(CONFIGS)})")
    rows = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for model in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            for threshold in allocators:
                cmd = [sys.executable, __file__, "--one", model, str(batch), "--steps", str(args.steps),
                       "--allocators", threshold]
                if args.dataset:
                    cmd += ["--dataset", args.dataset]
                cmd += [f"--set={s}" for s in args.set]
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
        "| peak RSS after warm-up (GiB) | after half the steps (GiB) | peak RSS (GiB) | kernel share of CPU time "
        "| minor faults per step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | | | {r['error']} | | | | | | | |")
            continue
        allocator = f"mmap >= {r['mmap_threshold_mb']:g} MiB" if r["mmap_threshold_mb"] else "glibc dynamic"
        allocator = "heap only, freed pages kept (reuse)" if r.get("malloc_reuse") else allocator
        allocator += " + THP" if r.get("huge_pages") else ""
        every = r.get("malloc_trim_every", 1)
        allocator += (" + trim" + (f" every {every} steps" if every > 1 else "")) if r.get("malloc_trim") else ""
        if r.get("cpu_block_cache_headroom") is not None:
            allocator = (f"block cache (>= 1 MiB; {r['cpu_block_cache_headroom']:.0%} headroom); "
                         f"smaller: {allocator}")
        lines.append(f"| {r['model']} | {r['batch']} | {_negatives(r)} | {allocator} "
                     f"| {r['step_median_s']:.2f} | {r['step_min_s']:.2f} | {r['valid_pass_s']:.2f} "
                     f"| {r['peak_rss_after_warmup_gb']:.2f} | {r.get('peak_rss_half_gb', 0.0):.2f} "
                     f"| {r['peak_rss_gb']:.2f} | {r['kernel_share']:.1%} | {r['minor_faults_per_step']:,.0f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)  # atomic: an interrupted run never leaves half a table
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
