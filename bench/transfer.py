"""VQ-Rec transfer: pre-train on other datasets, fine-tune on a target, against training from scratch.

Rows (one run folder each under ``runs/bench/transfer/``; finished runs are reused, interrupted ones resumed):
* ``pretrain``: VQ-Rec pre-trained on the merged ``--pretrain`` datasets (joint OPQ tokenizer), for reference;
* ``scratch``: VQ-Rec on the target without pre-training (configs/vqrec/<target>-scratch.yaml; the run folder
  is bench/quality.py's ``runs/bench/vqrec-<target>-scratch-s<seed>``);
* ``finetune-learned``: fine-tuned from the pre-trained run with the learned permutation (the default);
* ``finetune-reference``: the same with the reference's zero-gradient re-assignment;
* ``finetune-none``: fine-tuned without any re-assignment stage (codes of the two quantisers matched by id).
Writes ``bench/results/transfer.md`` with valid and test Recall/NDCG@10/20, epochs and wall time.

    python bench/transfer.py --pretrain data/ml-100k,data/All_Beauty --target data/Scientific
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]


def main() -> None:
    from semrec import api
    from semrec.config import CodesConfig, RunConfig, load_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain", default="data/ml-100k,data/All_Beauty")
    parser.add_argument("--target", default="data/Scientific")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="config override for every run")
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="cap on pre-training epochs (a CPU budget; default: the config's 300 with early stop)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "bench" / "transfer"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "transfer.md"))
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    runs = Path(args.runs)
    sources = [Path(p) for p in args.pretrain.split(",")]
    target = Path(args.target)
    merged = api.ensure_merged(sources, ROOT / "data" / ("pretrain-" + "+".join(p.name for p in sources)),
                               say=print)
    for dataset in (merged, target):
        api.ensure_codes(dataset, CodesConfig(tokenizer="opq"))
    common = ["train.progress=false", *args.set]
    table: dict[str, list[dict]] = {}
    for seed in range(2020, 2020 + args.seeds):
        pre_run = runs / f"pretrain-s{seed}"
        pre_cfg = load_config(RunConfig, ROOT / "configs/vqrec/pretrain.yaml",
                              [f"dataset={merged}", f"train.seed={seed}", *common,
                               *([f"train.epochs={args.pretrain_epochs}"] if args.pretrain_epochs else [])])
        table.setdefault("pretrain (merged valid)", []).append(api.ensure_trained(pre_cfg, pre_run))
        scratch = load_config(RunConfig, ROOT / f"configs/vqrec/{target.name}-scratch.yaml",
                              [f"dataset={target}", f"train.seed={seed}", *common])
        # the same run folder as bench/quality.py's row for this config, so it is trained once
        scratch_run = ROOT / "runs" / "bench" / f"vqrec-{target.name}-scratch-s{seed}"
        table.setdefault("scratch", []).append(api.ensure_trained(scratch, scratch_run))
        for mode in ("learned", "reference", "none"):
            overrides = [f"dataset={target}", f"train.seed={seed}", f"init_from={pre_run}", *common]
            if mode == "none":
                overrides += ["model_params.permutation=none", "model_params.reassign_epochs=0"]
            else:
                overrides += [f"model_params.permutation={mode}"]
            cfg = load_config(RunConfig, ROOT / f"configs/vqrec/{target.name}.yaml", overrides)
            table.setdefault(f"finetune-{mode}", []).append(api.ensure_trained(cfg, runs / f"finetune-{mode}-s{seed}"))
        for name, results in table.items():
            print(name, seed, {k: round(v, 4) for k, v in results[-1]["test"].items() if k in METRICS}, flush=True)

    def fmt(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    lines = [f"# VQ-Rec transfer: pre-train on {', '.join(p.name for p in sources)}, fine-tune on {target.name}", "",
             f"Command: `python bench/transfer.py --pretrain {args.pretrain} --target {args.target} --seeds "
             f"{args.seeds}{''.join(' --set ' + s for s in args.set)}"
             f"{f' --pretrain-epochs {args.pretrain_epochs}' if args.pretrain_epochs else ''}`. Full ranking, "
             "leave-last-out; the pretrain row is measured on the merged pre-training datasets, every other row "
             "on the target.",
             *([args.note] if args.note else []), ""]
    for split in ("valid", "test"):
        lines += [f"## {split}", "", "| run | seeds | " + " | ".join(METRICS) + " | epochs | wall s |",
                  "|---" * (len(METRICS) + 4) + "|"]
        for name, results in table.items():
            cells = [fmt([r[split][m] for r in results]) for m in METRICS]
            epochs = statistics.mean(r.get("epochs_run", 0) for r in results)
            wall = statistics.mean(r.get("train_wall_seconds", 0.0) for r in results)
            lines.append(f"| {name} | {len(results)} | " + " | ".join(cells) + f" | {epochs:.0f} | {wall:.0f} |")
        lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
