"""One full-ranking validation pass, ours against RecBole 1.2.1's, at equal threads (issue 20).

Both sides evaluate a randomly initialised SASRec of the same size (``--hidden`` dims, 2 layers, 2 heads, FFN 4x,
``--max-len``) on the same users: the dataset is written as RecBole atomic files (``user_id``, ``item_id`` and the
position in the user's sequence as ``timestamp``, so RecBole's time order is ours), RecBole runs in its own
virtualenv (``--recbole-python``; make one with ``python -m venv V && V/bin/pip install -c constraints.txt
recbole==1.2.1 'numpy<2'``) with ``eval_args: {split: {LS: valid_and_test}, order: TO, mode: full}`` and
``eval_batch_size`` users per batch, timing ``trainer.evaluate(valid_data)`` (scores over all items, top-k, Recall
and NDCG@10); ours times :func:`semrec.eval.evaluator.evaluate` on the validation rows (exact ranks of every target,
Recall/NDCG@5/10/20, MRR). The median of ``--repeats`` passes after one warm-up pass, each side in a process of its
own with ``--threads`` threads. Writes ``bench/results/eval_speed.md``.

    python bench/eval_speed.py data/Scientific --recbole-python /work/recbole-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RECBOLE = r"""
import json, sys, time, logging
import torch
torch.set_num_threads(int(sys.argv[4]))
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed
hidden, max_len, batch, repeats = int(sys.argv[3]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
config = Config(model="SASRec", dataset=sys.argv[2], config_dict={
    "data_path": sys.argv[1], "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": max_len,
    "hidden_size": hidden, "inner_size": 4 * hidden, "n_layers": 2, "n_heads": 2, "loss_type": "CE",
    "train_neg_sample_args": None, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    "metrics": ["Recall", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "eval_batch_size": batch,
    "use_gpu": False, "device": "cpu", "show_progress": False, "worker": 0, "seed": 0, "reproducibility": True,
    "checkpoint_dir": sys.argv[8], "log_wandb": False, "state": "WARNING"})
init_seed(config["seed"], config["reproducibility"])
logging.disable(logging.WARNING)
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
model = SASRec(config, train_data.dataset).to(config["device"])
trainer = Trainer(config, model)
times = []
for _ in range(repeats + 1):
    start = time.perf_counter()
    result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": sorted(times[1:])[len(times[1:]) // 2], "first": times[0],
                  "items": int(dataset.item_num) - 1, "users": len(valid_data.dataset),
                  "ndcg@10": float(result["ndcg@10"])}))
"""


def ours(dataset: Path, hidden: int, max_len: int, batch: int, repeats: int) -> dict:
    """Our pass, in this process (threads set by the caller)."""
    import torch

    from semrec.data.dataset import CanonicalDataset
    from semrec.data.splits import leave_last_out
    from semrec.eval.evaluator import evaluate
    from semrec.models import ItemInputs, build_model

    torch.manual_seed(0)
    ds = CanonicalDataset.load(dataset)
    rows = leave_last_out(ds.sequences).valid
    model = build_model("sasrec", {"hidden_size": hidden, "inner_size": 4 * hidden, "max_len": max_len},
                        ItemInputs(n_items=ds.n_items))
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        result = evaluate(model, rows, max_len, batch)
        times.append(time.perf_counter() - start)
    return {"seconds": sorted(times[1:])[len(times[1:]) // 2], "first": times[0], "items": ds.n_items,
            "users": len(rows.targets), "ndcg@10": result["ndcg@10"]}


def write_atomic_files(dataset: Path, folder: Path) -> str:
    """``<folder>/<name>/<name>.inter`` from the canonical dataset (position in the sequence as the timestamp)."""
    from semrec.data.dataset import CanonicalDataset

    ds = CanonicalDataset.load(dataset)
    name = "bench"
    (folder / name).mkdir(parents=True, exist_ok=True)
    with open(folder / name / f"{name}.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, seq in enumerate(ds.sequences):
            f.writelines(f"u{user}\ti{item}\t{pos}\n" for pos, item in enumerate(seq))
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="a prepared dataset folder")
    parser.add_argument("--recbole-python", required=True, help="python of a virtualenv with recbole 1.2.1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1024, help="users per evaluation batch, both sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ours-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--note", default="", help="a line on the machine's conditions")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_speed.md"))
    args = parser.parse_args()
    if args.ours_only:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(ours(Path(args.dataset), args.hidden, args.max_len, args.batch, args.repeats)))
        return
    if not Path(args.dataset, "manifest.json").is_file():
        parser.error(f"{args.dataset} is not a prepared dataset (no manifest.json)")
    if not Path(args.recbole_python).is_file():
        parser.error(f"--recbole-python {args.recbole_python} does not exist")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        name = write_atomic_files(Path(args.dataset), Path(tmp))
        rb = subprocess.run([args.recbole_python, "-c", RECBOLE, tmp, name, str(args.hidden), str(args.threads),
                             str(args.max_len), str(args.batch), str(args.repeats), tmp], capture_output=True,
                            text=True, env=env, cwd=tmp)
    if rb.returncode != 0:
        sys.exit(f"RecBole failed:\n{rb.stderr[-3000:]}")
    recbole = json.loads(rb.stdout.strip().splitlines()[-1])
    ou = subprocess.run([sys.executable, __file__, args.dataset, "--recbole-python", args.recbole_python,
                         "--threads", str(args.threads), "--hidden", str(args.hidden), "--max-len", str(args.max_len),
                         "--batch", str(args.batch), "--repeats", str(args.repeats), "--ours-only"],
                        capture_output=True, text=True, env=env, cwd=ROOT)
    if ou.returncode != 0:
        sys.exit(f"our evaluation failed:\n{ou.stderr[-3000:]}")
    mine = json.loads(ou.stdout.strip().splitlines()[-1])
    from semrec.io import atomic_path

    lines = ["# One full-ranking validation pass: semrec against RecBole 1.2.1 (issue 20)", "",
             f"Command: `python bench/eval_speed.py {args.dataset} --threads {args.threads} --hidden {args.hidden} "
             f"--max-len {args.max_len} --batch {args.batch} --repeats {args.repeats}`. A randomly initialised "
             f"SASRec ({args.hidden} dims, 2 layers) on both sides, {args.threads} thread(s), each side in its own "
             f"process; median of {args.repeats} passes after a warm-up pass.{' ' + args.note if args.note else ''}",
             "", "| side | items | users | seconds per pass | first pass | NDCG@10 (random model) |",
             "|---|---|---|---|---|---|"]
    for side, r in (("RecBole 1.2.1 (`trainer.evaluate`, top-k)", recbole), ("semrec (exact ranks)", mine)):
        lines.append(f"| {side} | {r['items']:,} | {r['users']:,} | {r['seconds']:.2f} | {r['first']:.2f} | "
                     f"{r['ndcg@10']:.4f} |")
    lines += ["", f"semrec is **{recbole['seconds'] / mine['seconds']:.2f}x** RecBole's speed on this pass."]
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
