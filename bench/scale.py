"""Growth curves of the training loss (issue 20, part 1): SASRec's step time and peak RSS against the catalogue size
under each loss, on synthetic batches (random item ids; the loss's cost does not depend on what the ids mean).

Every (items, loss) cell runs in a process of its own (one thread), so its peak RSS (``ru_maxrss``) is its own: a
SASRec with ``--hidden`` dims over N items, Adam, ``--windows`` user windows of ``--max-len`` positions, every
position a target; ``--steps`` timed steps after one warm-up step. The dense full softmax is skipped where its
``[positions x items]`` logits (with their gradient and softmax, about 3 float32 copies) would pass
``--dense-limit-gb``; the skip is written in the table. Losses: ``full`` (dense), ``chunked`` (the same exact loss
over ``--chunk`` items at a time), ``uniform`` / ``popularity`` / ``in_batch`` / ``mixed`` (sampled softmax with
logQ correction, ``--negatives`` shared negatives). Writes ``bench/results/scale_losses.md`` and a PNG of both curves.

    python bench/scale.py                                   # 10^4, 10^5, 10^6 items
    python bench/scale.py --items 10000 --steps 1 --out /tmp/scale.md   # a smoke run
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
LOSSES = ["full", "chunked", "uniform", "popularity", "in_batch", "mixed"]


def cell(n_items: int, loss: str, args: argparse.Namespace) -> dict:
    """One measurement, in this process: ``{"step_s": median seconds per step, "rss_gb": peak RSS}``."""
    import torch

    from semrec.models import ItemInputs, build_model
    from semrec.train.memory import keep_freed_memory

    # train.malloc_reuse or train.cpu_block_cache, before any large allocation
    if args.allocator == "reuse" and not keep_freed_memory():
        raise SystemExit("--allocators reuse: not applied (not glibc, or MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ "
                         "set)")
    if args.allocator == "cache":
        from semrec.config import TrainConfig
        from semrec.train import block_cache

        reason = block_cache.install(TrainConfig().cpu_block_cache_headroom)
        if reason is not None:
            raise SystemExit(f"--allocators cache: {reason}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    popularity = torch.cat([torch.zeros(1, dtype=torch.long),
                            (1e6 * torch.arange(1, n_items + 1, dtype=torch.float64) ** -1.0).long() + 1])
    params = {"hidden_size": args.hidden, "inner_size": 4 * args.hidden, "max_len": args.max_len,
              "loss": "full" if loss == "chunked" else loss, "num_negatives": args.negatives,
              "ce_chunk_size": args.chunk if loss == "chunked" else 0}
    device = torch.device(args.device)
    model = build_model("sasrec", params, ItemInputs(n_items=n_items, popularity=popularity)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for step in range(args.steps + 1):
        g = torch.Generator().manual_seed(step)
        items = torch.randint(1, n_items + 1, (args.windows, args.max_len + 1), generator=g)
        batch = {"items": items[:, :-1], "targets": items[:, 1:],
                 "lengths": torch.full((args.windows,), args.max_len)}
        batch = {key: value.to(device) for key, value in batch.items()}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        value, _ = model.loss(batch)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    times.sort()
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"step_s": times[len(times) // 2], "rss_gb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="10000,100000,1000000", help="catalogue sizes, comma-separated")
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--windows", type=int, default=64, help="user windows per batch")
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8192, help="items per chunk of the chunked loss")
    parser.add_argument("--negatives", type=int, default=1024, help="shared negatives of the sampled losses")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda: step times synchronised, peak = torch.cuda.max_memory_allocated (GPU "
                             "memory, not RSS)")
    parser.add_argument("--dense-limit-gb", type=float, default=8.0)
    parser.add_argument("--allocators", default="glibc",
                        help="comma-separated: glibc (its defaults), reuse (train.malloc_reuse: every tensor "
                             "from the heap, freed pages kept for the next step) and/or cache (the CPU block cache, "
                             "train.cpu_block_cache, at its default headroom); one row per size and allocator")
    parser.add_argument("--allocator", default="glibc", help=argparse.SUPPRESS)  # the cell's own
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # "N,loss": measure one cell, print JSON
    parser.add_argument("--note", default="", help="a line on the machine's conditions, written under the command")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale_losses.md"))
    args = parser.parse_args()
    if args.cell:
        n, loss = args.cell.split(",")
        print(json.dumps(cell(int(n), loss, args)))
        return
    sizes = [int(x) for x in args.items.split(",")]
    losses = args.losses.split(",")
    allocators = args.allocators.split(",")
    if set(allocators) - {"glibc", "reuse", "cache"}:
        parser.error(f"--allocators: glibc, reuse and/or cache, got {args.allocators}")
    bad = [x for x in losses if x not in LOSSES]
    if bad or not sizes or min(sizes) < 2 or args.steps < 1 or args.windows < 1:
        parser.error(f"--losses: known {', '.join(LOSSES)} (got {', '.join(bad) or 'ok'}); --items >= 2, "
                     "--steps and --windows >= 1")
    if args.device != "cpu":
        import torch

        if not args.device.startswith("cuda") or not torch.cuda.is_available():
            parser.error(f"--device: cpu, or cuda on a machine with a CUDA GPU (got {args.device!r}; CUDA available: "
                         f"{torch.cuda.is_available()})")
    positions = args.windows * args.max_len
    results: dict[tuple[int, str, str], dict | str] = {}
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
                                                            "MALLOC_MMAP_THRESHOLD_")}  # each row sets its own
    for n in sizes:
        for allocator in allocators:
            for loss in losses:
                dense_gb = 3 * positions * n * 4 / 2**30
                if loss == "full" and dense_gb > args.dense_limit_gb:
                    results[n, loss, allocator] = f"skipped: logits ~{dense_gb:.0f} GB"
                    print(n, loss, allocator, results[n, loss, allocator], flush=True)
                    continue
                forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                             if k in ("windows", "max_len", "hidden", "chunk", "negatives", "steps", "device")]
                done = subprocess.run([sys.executable, __file__, "--cell", f"{n},{loss}", f"--allocator={allocator}",
                                       *forwarded], capture_output=True, text=True, cwd=ROOT,
                                      env={**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
                results[n, loss, allocator] = (json.loads(done.stdout.strip().splitlines()[-1])
                                               if done.returncode == 0
                                               else f"failed: {done.stderr.strip().splitlines()[-1][:80]}")
                print(n, loss, allocator, results[n, loss, allocator], flush=True)
    write(args, sizes, losses, allocators, results, positions)


def write(args, sizes, losses, allocators, results, positions) -> None:
    from semrec.io import atomic_path

    def show(value, key, fmt):
        return value if isinstance(value, str) else format(value[key], fmt)

    lines = ["# Training loss against catalogue size (issue 20)", "",
             f"Command: `python bench/scale.py --items {args.items} --losses {','.join(losses)} --windows "
             f"{args.windows} --max-len {args.max_len} --hidden {args.hidden} --chunk {args.chunk} --negatives "
             f"{args.negatives} --steps {args.steps} --allocators {','.join(allocators)}"
             f"{' --device ' + args.device if args.device != 'cpu' else ''}`. SASRec ({args.hidden} "
             f"dims, 2 layers), Adam, {positions:,} target positions per step, one thread, each cell in its own "
             "process: median seconds per step "
             "(forward, backward, Adam) and "
             + ("the process's peak RSS (model, Adam state and the step)." if args.device == "cpu" else
                f"peak GPU memory on {args.device} (torch.cuda.max_memory_allocated: model, Adam state and the step; "
                "the dense-logits skip rule reads this memory too).")
             + " Allocator: `glibc`, glibc's defaults; `reuse`, `train.malloc_reuse` (every tensor from the heap, "
             "freed pages kept for the next step: fewer page faults, more resident memory); `cache`, the CPU block "
             "cache (`train.cpu_block_cache`, the trainer's default since issue 20; tensors of 1 MiB and more)."
             + (f" {args.note}" if args.note else ""), "",
             "| items | allocator | " + " | ".join(f"{loss} s/step | {loss} peak GB" for loss in losses) + " |",
             "|---" * (2 + 2 * len(losses)) + "|"]
    for n in sizes:
        for a in allocators:
            lines.append(f"| {n:,} | {a} | " + " | ".join(f"{show(results[n, loss, a], 'step_s', '.3f')} | "
                                                         f"{show(results[n, loss, a], 'rss_gb', '.2f')}"
                                                         for loss in losses) + " |")
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    plot = Path(args.out).with_suffix(".png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for loss in losses:
        for a, style in zip(allocators, ("-", "--")):
            xs = [n for n in sizes if isinstance(results[n, loss, a], dict)]
            for ax, key in zip(axes, ("step_s", "rss_gb")):
                ax.plot(xs, [results[n, loss, a][key] for n in xs], marker="o", linestyle=style,
                        label=loss if len(allocators) == 1 else f"{loss} ({a})")
    memory = "peak RSS (GB)" if args.device == "cpu" else "peak GPU memory (GB)"
    for ax, label in zip(axes, ("seconds per step", memory)):
        ax.set_xscale("log")
        ax.set_xlabel("items")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(plot) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    print(f"wrote {args.out} and {plot}")


if __name__ == "__main__":
    main()
