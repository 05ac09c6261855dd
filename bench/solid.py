"""SOLID's main comparison (issue 19; spec solid 7, "main table"): for each dataset and backbone, Base, APG, APG+SOLID,
DUET and DUET+SOLID on the CTR task, several seeds, mean +- std of test AUC, UAUC, log-loss, NDCG@10 and HR@10 on the
sampled candidates (model selection on validation UAUC), and full-ranking test NDCG@10 over all items for every model
that offers a user vector (all but DIN). Epochs and seconds per epoch beside them.

Every run is a normal run folder under ``runs/bench/solid/``: ``<dataset>-<backbone>-<method>-s<seed>`` for Base /
APG / DUET (model ``dsr``) and ``<dataset>-<backbone>-<head>+solid-s<seed>/`` holding the four stages of
``semrec solid`` for X+SOLID (stage 1 is the seed's DUET row). ``X-semantic`` rows report the chain's stage 3, X
trained on semantic rows alone (the model whose table becomes SOLID's codebook). Finished runs are reused,
interrupted ones resumed, so the script can be stopped and restarted (on a lent GPU: ``bench/gpu_queue.sh``);
``--report-only`` tabulates what has finished without training.

    python bench/solid.py                                              # everything (days on a CPU)
    python bench/solid.py --datasets ml-100k --backbones sasrec --seeds 1
    python bench/solid.py --set train.epochs=1 --seeds 1 --out /tmp/smoke.md   # smoke run, NOT for reporting
    python bench/solid.py --datasets Scientific --backbones sasrec --methods duet,duet+fusion,duet_vqvae,duet+solid \
        --out bench/results/solid_ablations.md                         # spec 7's ablations (+ --semantics id|text)
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["base", "apg", "apg+solid", "duet", "duet+solid"]
# ablations (spec solid 7): duet_vqvae (item-only learned VQ-VAE, 450 codewords) and X+fusion (SOLID without VQ)
ABLATIONS = {"duet_vqvae": ["model_params.head=duet", "model_params.vqvae_size=450"]}
BACKBONES = ["din", "gru4rec", "sasrec", "bert4rec"]
METRICS = ["auc", "uauc", "logloss", "ndcg@10", "hr@10"]


class NotFinished(Exception):
    """--report-only: this seed's run has no results yet."""


def _finished(run: Path) -> tuple[dict, Path]:
    import json

    if not (run / "results.json").is_file():
        raise NotFinished(str(run))
    return json.loads((run / "results.json").read_text(encoding="utf-8")), run


def train_row(dataset: Path, backbone: str, method: str, seed: int, runs: Path, sets: list[str],
              sources: str, solid_sets: list[str] = (), report_only: bool = False) -> tuple[dict, Path] | None:
    """Train (or reuse) one row's run; returns (results, run folder), None when the combination is not built. With
    ``report_only`` nothing trains: a run without results raises :class:`NotFinished`."""
    from semrec import api
    from semrec.config import RunConfig, load_config
    from semrec.models.solid import BACKBONES as SOLID_BACKBONES

    overrides = [f"train.seed={seed}", "train.progress=false", *sets]
    tag = "".join(f"@{o}" for o in sets)  # runs with other settings get folders of their own
    if method.endswith(("+solid", "+fusion", "-semantic")):
        if backbone not in SOLID_BACKBONES:
            return None
        head, kind = method.replace("-", "+").split("+")
        extra = ["model_params.vq=false"] if kind == "fusion" else []
        # the fusion ablation and the lambda / t grid: SOLID runs of their own beside the chain's 4-solid, sharing
        # its item, semantic-id and codebook stages
        suffix = "".join(f"@{o}" for o in [*extra, *solid_sets])
        chain_root = (runs / f"{dataset.name}-{backbone}-{head}+solid{tag}-s{seed}"
                      / f"solid-{dataset.name}-{backbone}-{head}-{sources}")
        if report_only:
            return _finished(chain_root / ("3-semantic" if kind == "semantic" else f"4-solid{suffix}"))
        # stage 1 is this seed's DUET row (spec solid 4 step 1): trained once, shared by the chains of both heads
        item_run = None
        if "id" in sources.split("+"):
            item_run = train_row(dataset, backbone, "duet", seed, runs, sets, sources)[1]
        chain = api.solid(dataset, backbone, head, sources, None,
                          runs / f"{dataset.name}-{backbone}-{head}+solid{tag}-s{seed}", overrides,
                          say=lambda _: None, solid_overrides=[*extra, *solid_sets], item_run=item_run,
                          solid_name=f"4-solid{suffix}")
        if kind == "semantic":  # the chain's stage 3: X on semantic rows alone (its table is SOLID's codebook)
            return chain.results["semantic"], chain.semantic_run
        return chain.results["solid"], chain.solid_run
    out = runs / f"{dataset.name}-{backbone}-{method}{tag}-s{seed}"
    if report_only:
        return _finished(out)
    template = ROOT / "configs" / "dsr" / f"{dataset.name}.yaml"  # the settings do not depend on the dataset
    head = ABLATIONS.get(method, [f"model_params.head={method}"])
    config = load_config(RunConfig, template if template.is_file() else ROOT / "configs" / "dsr" / "ml-100k.yaml",
                         [f"dataset={dataset}", f"out={out}", f"model_params.backbone={backbone}", *head, *overrides])
    return api.ensure_trained(config, out), out


def popularity(dataset: Path) -> dict[str, float | None]:
    """The model-free floor on the same test candidates: a candidate's score is its number of training positives
    (ties by item id, as every row of the table); no log-loss (counts are not probabilities)."""
    import numpy as np

    from semrec.artifacts import DatasetFolder
    from semrec.data.ctr import load_ctr_samples
    from semrec.eval.ctr_metrics import ctr_metrics

    samples, _ = load_ctr_samples(DatasetFolder(dataset).ctr("ctr").path, dataset)
    train, test = samples.part("train"), samples.part("test")
    counts = np.bincount(train["candidate"].to_numpy()[train["label"].to_numpy() == 1],
                         minlength=int(samples.frame["candidate"].max()) + 1)
    candidates = test["candidate"].to_numpy()
    out = ctr_metrics(test["user"].to_numpy(), test["label"].to_numpy(), counts[candidates].astype(np.float64),
                      candidates)
    return {**out, "logloss": None}  # counts are not probabilities


def full_ranking_ndcg(run: Path, backbone: str) -> float | None:
    """Test NDCG@10 of full ranking over all items (None for DIN: no user vector without the candidate)."""
    if backbone == "din":
        return None
    from semrec import api

    return api.evaluate(run, device="cpu").metrics["test"]["ndcg@10"]


def fmt(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="Scientific,ml-100k", help="folders under --data")
    parser.add_argument("--data", default=str(ROOT / "data"))
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=2020)
    parser.add_argument("--eval-negatives", type=int, default=99, help="CTR samples: negatives per user (valid, test)")
    parser.add_argument("--history", type=int, default=30, help="CTR samples: history length L")
    parser.add_argument("--semantics", default="id+text", help="SOLID's semantic sources: id | text | id+text")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "bench" / "solid"))
    parser.add_argument("--set", action="append", default=[], help="key=value for every run (e.g. train.epochs=1)")
    parser.add_argument("--solid-set", action="append", default=[],
                        help="key=value for the SOLID runs only, e.g. model_params.vq_weight=1 or "
                             "model_params.clip=0.1 (the lambda / t grids; such rows train into folders of their own)")
    parser.add_argument("--note", default="", help="a line on the machine's conditions, written under the command")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the seeds whose runs have finished (the seeds column says how "
                             "many)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of --out this call does not tabulate (and their commands): one table of "
                             "ablations built by several calls (different --solid-set / --semantics)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "solid.md"))
    args = parser.parse_args()
    known = [*METHODS, *ABLATIONS, "duet+fusion", "apg+fusion", "duet-semantic", "apg-semantic"]
    for flag, given, allowed in (("--methods", args.methods, known), ("--backbones", args.backbones, BACKBONES),
                                 ("--semantics", args.semantics, ["id", "text", "id+text"])):
        bad = [v for v in given.split(",") if v not in allowed]
        if bad:
            parser.error(f"{flag}: unknown {', '.join(bad)} (known: {', '.join(allowed)})")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    from semrec import api
    from semrec.artifacts import DatasetFolder
    from semrec.config import CtrConfig
    from semrec.io import atomic_path

    kept_text, kept_rows = previous_table(Path(args.out)) if args.merge else ([], {})
    lines = ["# SOLID's comparison on the CTR task (issue 19)", "", *kept_text,
             f"{'Then' if kept_text else 'Command'}: `python bench/solid.py --datasets {args.datasets} "
             f"--backbones {args.backbones} --methods "
             f"{args.methods} --seeds {args.seeds} --semantics {args.semantics}"
             f"{''.join(' --set ' + s for s in args.set)}{''.join(' --solid-set ' + s for s in args.solid_set)}"
             f"{' --report-only' if args.report_only else ''}{' --merge' if args.merge else ''}`."
             + ("" if kept_text else " Test metrics of the best validation-UAUC epoch on the sampled candidates (1 "
                f"positive + {args.eval_negatives} unseen negatives per user, L = {args.history}), mean ± std over "
                "seeds; `full NDCG@10`: the same checkpoint ranking all items (n/a for DIN).")
             + (f" {args.note}" if args.note else ""), ""]
    header = "| dataset | backbone | method | seeds | " + " | ".join(METRICS) + " | full NDCG@10 | epochs | s/epoch |"
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    table_start = len(lines)

    def write() -> None:  # after every row: a stopped benchmark leaves the rows it finished
        new = {row_key(line): line for line in lines[table_start:]}
        rows = [new.pop(key, line) for key, line in kept_rows.items()] + list(new.values())
        with atomic_path(args.out) as tmp:
            datasets = list(dict.fromkeys(row_key(row).split("|")[0] for row in rows))  # merged rows' too
            tmp.write_text("\n".join(lines[:table_start] + rows + anchors(datasets)) + "\n")

    def label(method: str) -> str:  # a SOLID row names the settings it was trained with
        if not method.endswith(("+solid", "+fusion", "-semantic")):
            return method
        tags = [f"semantics {args.semantics}"] if args.semantics != "id+text" else []
        tags += args.solid_set if not method.endswith("-semantic") else []
        return f"{method} ({', '.join(tags)})" if tags else method

    for name in args.datasets.split(","):
        dataset = Path(args.data) / name
        if not DatasetFolder(dataset).ctr("ctr").is_current(DatasetFolder(dataset)):
            api.ctr_data(dataset, CtrConfig(history=args.history, eval_negatives=args.eval_negatives))
        pop = popularity(dataset)
        lines.append(f"| {name} | (none) | popularity | 1 | " + " | ".join(fmt([pop.get(m)]) for m in METRICS)
                     + " | | 0 | 0 |")
        for backbone in args.backbones.split(","):
            for method in args.methods.split(","):
                rows, unfinished = [], False
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    try:
                        done = train_row(dataset, backbone, method, seed, Path(args.runs), args.set, args.semantics,
                                         args.solid_set, args.report_only)
                    except NotFinished:
                        unfinished = True
                        continue
                    if done is None:
                        break
                    results, run = done
                    epochs = results.get("epochs_run") or 1
                    rows.append({**results["test"], "full": full_ranking_ndcg(run, backbone),
                                 "epochs": results.get("epochs_run"),
                                 "s_epoch": results.get("train_wall_seconds", 0.0) / epochs})
                    print(name, backbone, method, seed, {m: round(results["test"][m], 4) for m in METRICS
                                                         if results["test"].get(m) is not None}, flush=True)
                if not rows:
                    cell = "not run" if unfinished else "not built"
                    lines.append(f"| {name} | {backbone} | {label(method)} | 0 | " + " | ".join([cell] * len(METRICS))
                                 + " | | | |")
                    continue
                cells = [fmt([r.get(m) for r in rows]) for m in METRICS]
                lines.append(f"| {name} | {backbone} | {label(method)} | {len(rows)} | " + " | ".join(cells)
                             + f" | {fmt([r['full'] for r in rows])} | {statistics.mean(r['epochs'] for r in rows):.0f}"
                             f" | {statistics.mean(r['s_epoch'] for r in rows):.0f} |")
                write()
    write()
    print(f"wrote {args.out}")


def row_key(line: str) -> str:
    """A table row's identity: dataset, backbone and method (with its settings)."""
    return "|".join(cell.strip() for cell in line.strip().strip("|").split("|")[:3])


def previous_table(path: Path) -> tuple[list[str], dict[str, str]]:
    """``--merge``: the command paragraphs and the table rows (by :func:`row_key`) of an earlier results file;
    nothing when there is none."""
    if not path.is_file():
        return [], {}
    text, rows, in_table = [], {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| dataset |"):
            in_table = True
        elif in_table and line.startswith("| ") and not line.startswith("|---"):
            rows[row_key(line)] = line
        elif in_table and not line.startswith("|"):
            break  # the anchors below the table are written again
        elif not in_table and line.startswith(("Command:", "Then:")):
            text += [line, ""]
    return text, rows


def anchors(datasets: list[str]) -> list[str]:
    """The next-item models' full-ranking test NDCG@10 of ``bench/results/quality.md`` (SASRec, CCFRec: trained for
    full ranking, so the ceiling the CTR-trained models' full NDCG@10 column is read against)."""
    quality = ROOT / "bench" / "results" / "quality.md"
    if not quality.is_file():
        return []
    text = quality.read_text().split("## test", 1)
    if len(text) < 2:
        return []
    rows = [line for line in text[1].splitlines() if line.startswith("| ")
            and line.split("|")[1].strip().split("/")[0] in ("sasrec", "ccfrec")
            and any(f"{line.split('|')[1].strip()}-".split("/")[1].startswith(f"{d}-") for d in datasets)]
    header = [line for line in text[1].splitlines() if line.startswith("| config")][:1]
    if not rows or not header:
        return []
    cols = [c.strip() for c in header[0].strip("|").split("|")]
    keep = [cols.index(c) for c in ("config", "seeds", "ndcg@10", "recall@10") if c in cols]
    out = ["", "Full-ranking anchors, test (from `bench/results/quality.md`: next-item models trained with full "
           "softmax / sampled negatives over all items, selected on valid NDCG@10):", "",
           "| " + " | ".join(cols[i] for i in keep) + " |", "|---" * len(keep) + "|"]
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out.append("| " + " | ".join(cells[i] for i in keep) + " |")
    return out


if __name__ == "__main__":
    main()
