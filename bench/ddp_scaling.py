"""Data-parallel scaling (issue 20, part 4): seconds per training epoch with 1 and more processes.

Each process count trains the same config with ``torchrun --standalone --nproc_per_node=N -m semrec.cli train`` (gloo
on CPU, NCCL on GPUs), ``--threads`` intra-op threads per process, for ``--epochs`` epochs, at the config's batch
size: ``train.batch_size`` is global (each rank takes 1/N of every batch), so every run makes the same number of
updates of the same size. The table gives the median training seconds per epoch (the trainer's ``train_seconds``,
without validation), the speed-up over the first process count, and the last epoch's validation NDCG@10 (the runs
differ only in how the batch is split and in the ranks' dropout streams, so it should stay close). Writes ``--out``
and a PNG beside it.

    python bench/ddp_scaling.py                                   # SASRec on Scientific, 1 and 2 processes
    python bench/ddp_scaling.py --config configs/ccfrec/Scientific.yaml --epochs 1 --set train.max_steps_per_epoch=20

On a machine with C cores, N processes x T threads should stay <= C: the figure measures the processes, not the
contention between them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(config: Path, procs: int, batch: int, epochs: int, threads: int, sets: list[str], out: Path) -> list[dict]:
    """One ``torchrun`` training; returns its ``metrics.jsonl`` records. SystemExit with the run's last lines when
    it fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           "-m", "semrec.cli", "train", "-c", str(config), "-o", str(out), "--set", f"train.epochs={epochs}",
           "--set", f"train.batch_size={batch}", "--set", "train.progress=false", "--set", "train.patience=1000",
           *[x for s in sets for x in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"{procs} process(es): training failed (exit {done.returncode}):\n{tail}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "sasrec" / "Scientific.yaml"))
    parser.add_argument("--procs", default="1,2", help="process counts, comma-separated (the first is the anchor)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--set", action="append", default=[], help="key=value for every run's config")
    parser.add_argument("--note", default="", help="a line on the machine's conditions, written under the command")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ddp_scaling.md"))
    args = parser.parse_args()
    try:
        procs = [int(p) for p in args.procs.split(",")]
    except ValueError:
        parser.error(f"--procs: comma-separated process counts, got {args.procs!r}")
    if not procs or min(procs) < 1 or args.epochs < 1 or args.threads < 1:
        parser.error("--procs, --epochs and --threads must be at least 1")
    config = Path(args.config)
    if not config.is_file():
        parser.error(f"--config: {config} not found")

    from semrec.config import RunConfig, load_config
    from semrec.io import atomic_path

    base = load_config(RunConfig, config, list(args.set))
    if base.train.batch_size % max(procs):
        parser.error(f"the config's batch size {base.train.batch_size} must split evenly over {max(procs)} processes")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in procs:
            records = train(config, n, base.train.batch_size, args.epochs, args.threads, args.set,
                            Path(tmp) / f"p{n}")
            seconds = statistics.median(r["train_seconds"] for r in records)
            valid = next((r[k] for r in reversed(records) for k in ("valid_ndcg@10", "valid_uauc") if k in r), None)
            rows.append({"procs": n, "batch": base.train.batch_size // n, "s_epoch": seconds, "valid": valid,
                         "epochs": len(records)})
            print(json.dumps(rows[-1]), flush=True)
    anchor = rows[0]["s_epoch"]
    lines = ["# Data-parallel scaling (issue 20)", "",
             f"Command: `python bench/ddp_scaling.py --config {args.config} --procs {args.procs} --epochs "
             f"{args.epochs} --threads {args.threads}{''.join(' --set ' + s for s in args.set)}`. Machine: "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; torchrun --standalone, "
             f"{args.threads} thread(s) per process, global batch {base.train.batch_size} split over the processes. "
             "Median training seconds per epoch (validation excluded)." + (f" {args.note}" if args.note else ""), "",
             "| processes | batch per process | s/epoch (train) | speed-up | epochs | last valid metric |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        valid = "n/a" if r["valid"] is None else f"{r['valid']:.4f}"
        lines.append(f"| {r['procs']} | {r['batch']} | {r['s_epoch']:.1f} | {anchor / r['s_epoch']:.2f}x "
                     f"| {r['epochs']} | {valid} |")
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["procs"] for r in rows], [anchor / r["s_epoch"] for r in rows], marker="o", label="measured")
    ax.plot([r["procs"] for r in rows], [r["procs"] / procs[0] for r in rows], linestyle="--", label="linear")
    ax.set_xlabel("processes")
    ax.set_ylabel(f"speed-up over {procs[0]}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plot = Path(args.out).with_suffix(".png")
    with atomic_path(plot) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    print(f"wrote {args.out} and {plot}")


if __name__ == "__main__":
    main()
