"""Quality of every model (configs/<model>/<dataset>.yaml) trained to early stop (full ranking, leave-last-out).

Each (model config, seed) is trained with ``semrec``'s one trainer into ``runs/bench/<config>-s<seed>``;
the table reports valid and test Recall/NDCG@5/10/20 as mean +- std over seeds (seed count shown),
head/tail NDCG@10, epochs to early stop, wall time and the seconds to the best (selected) epoch: training and
evaluation time of the epochs up to it, the time to a converged model. Finished runs are reused (delete the run folder
to retrain), so the script can be stopped and restarted.

    python bench/quality.py                                   # all rows, 3 seeds
    python bench/quality.py --configs sasrec/ml-100k --seeds 1
    python bench/quality.py --set train.max_steps_per_epoch=20   # quick smoke run (NOT for reporting)
    python bench/quality.py --configs ccfrec/Scientific@model_params.mlm_weight=0 --seeds 1   # an ablation row
    python bench/quality.py --report-only --exclude-history --out F   # same checkpoints, history items excluded

A config may carry its own overrides after ``@`` (``CONFIG@key=value@key=value``): an ablation is then a row
of its own, trained into ``runs/bench/<config>@<key=value...>-s<seed>``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["popularity/ml-100k", "sasrec/ml-100k", "gru4rec/ml-100k", "bert4rec/ml-100k", "unisrec/ml-100k",
           "vqrec/ml-100k", "ccfrec/ml-100k-seq", "ccfrec/ml-100k",
           "popularity/Scientific", "sasrec/Scientific", "gru4rec/Scientific", "bert4rec/Scientific",
           "unisrec/Scientific", "unisrec/Scientific-inductive", "vqrec/Scientific-scratch", "ccfrec/Scientific-seq",
           "ccfrec/Scientific-cpu", "ccfrec/Scientific"]
METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20"]


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``CONFIG@key=value@...`` -> (CONFIG, [key=value, ...])."""
    config, *own = spec.split("@")
    bad = [o for o in own if "=" not in o]
    if bad:
        raise SystemExit(f"{spec}: every '@' part must be key=value (got {bad[0]!r})")
    return config, own


# Codes folders the configs name, fitted the first time a run needs them: the defaults of `semrec codes` (pq: the
# dedup digit when more than 5% of items collide) and the reference's pq codes without that digit.
CODE_RECIPES = {"pq": {"tokenizer": "pq"}, "opq": {"tokenizer": "opq"},
                "pq-reference": {"tokenizer": "pq", "name": "pq-reference", "dedup": False}}


def run_folder(runs: Path, spec: str, seed: int) -> Path:
    return runs / f"{spec.replace('/', '-')}-s{seed}"


def run_one(spec: str, seed: int, overrides: list[str], runs: Path) -> dict:
    from semrec import api
    from semrec.artifacts import RunFolder
    from semrec.config import CodesConfig, RunConfig, load_config
    from semrec.models import model_entry

    config, own = split_spec(spec)
    out = run_folder(runs, spec, seed)
    cfg = load_config(RunConfig, ROOT / "configs" / f"{config}.yaml",
                      [f"train.seed={seed}", f"out={out}", "train.progress=false", *overrides, *own])
    if not RunFolder(out).is_finished() and model_entry(cfg.model).reads_codes_folder and cfg.codes in CODE_RECIPES:
        api.ensure_codes(cfg.dataset, CodesConfig(**CODE_RECIPES[cfg.codes]))
    return api.ensure_trained(cfg, out)


def history_excluded(out: Path, result: dict) -> dict:
    """``result`` with its valid/test metrics replaced by the same best checkpoint ranked with the user's history
    items excluded (model selection, epochs and wall time unchanged)."""
    from semrec import api

    return {**result, **api.evaluate(out, exclude_history=True).metrics}


def _sections(lines: list[str]) -> tuple[list[str], dict[str, tuple[list[str], dict[str, str]]]]:
    """(lines before the first ``## `` section, {section: (header lines, {config: row line})})."""
    head: list[str] = []
    sections: dict[str, tuple[list[str], dict[str, str]]] = {}
    current = None
    for line in lines:
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ([], {})
        elif current is None:
            head.append(line)
        elif line.startswith("| ") and not line.startswith("| config |"):
            sections[current][1][line.split("|")[1].strip()] = line
        elif line.startswith("|"):
            sections[current][0].append(line)
    return head, sections


def merged(old: list[str], new: list[str]) -> list[str]:
    """The new table with the old file's rows of other configs kept (old rows first, in their order; a row of the
    same config is replaced by the new one; old rows get ``n/a`` for the columns they lack)."""
    old_head, old_sections = _sections(old)
    new_head, new_sections = _sections(new)
    head = [line for line in old_head if line.strip()]
    head += [f"Rows updated or added later: {line[len('Command: '):]}" if line.startswith("Command: ") else line
             for line in new_head[1:] if line.strip()]
    out = [*head[:1], "", *head[1:], ""]
    for split, (header, rows) in new_sections.items():
        width = header[0].count("|") if header else 0
        old_rows = old_sections.get(split, ([], {}))[1]
        out += [f"## {split}", "", *header]
        for config, row in old_rows.items():
            out.append(rows[config] if config in rows else row + " n/a |" * max(0, width - row.count("|")))
        out += [row for config, row in rows.items() if config not in old_rows]
        out.append("")
    return out


def with_budget(result: dict, out: Path, minutes: float | None) -> dict:
    """``result`` with ``budget_valid``: the best valid NDCG@10 of the run within ``minutes`` (when given)."""
    if minutes is None:
        return result
    from semrec import api

    return {**result, "budget_valid": api.best_within(out, 60 * minutes)}


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(DEFAULT))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row: FIRST_SEED .. FIRST_SEED + SEEDS - 1")
    parser.add_argument("--first-seed", type=int, default=2020,
                        help="first seed (e.g. --first-seed 2022 --seeds 1 trains only that seed, so two processes "
                             "can train different seeds of one row at once)")
    parser.add_argument("--set", action="append", default=[], help="config override for every run")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "bench"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.md"))
    parser.add_argument("--note", default="", help="conditions to record in the results file")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the finished runs among --configs x --seeds (older "
                             "evaluations are still re-ranked)")
    parser.add_argument("--interim", action="store_true",
                        help="with --report-only: also tabulate unfinished runs from their current best.pt, each as "
                             "its own row marked 'unfinished' (never averaged with finished seeds)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of --out whose configs this call does not tabulate (their run folders may "
                             "be gone): a table grows over sessions; kept rows lack the columns they were made without")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="add a column: the best valid NDCG@10 each run had reached within this many minutes of "
                             "training + evaluation (rows compared at an equal time budget)")
    parser.add_argument("--exclude-history", action="store_true",
                        help="with --report-only: rank the same best checkpoints with each user's history items "
                             "excluded (the references, and the default, keep them; repeats never are targets)")
    args = parser.parse_args()
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        parser.error(f"--budget-minutes must be a positive number of minutes, got {args.budget_minutes:g}")
    if args.interim and not args.report_only:
        parser.error("--interim tabulates unfinished runs and needs --report-only")
    if args.exclude_history and not args.report_only:
        parser.error("--exclude-history re-ranks finished runs and needs --report-only")
    table: dict[str, list[dict]] = {}
    for spec in args.configs.split(","):
        config, _ = split_spec(spec)  # fail on a malformed spec before any training
        if not (ROOT / "configs" / f"{config}.yaml").is_file():
            raise SystemExit(f"configs/{config}.yaml not found")
    try:
        for config in args.configs.split(","):
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                if config.startswith("popularity") and seed > args.first_seed:
                    continue  # deterministic: one run is all seeds
                from semrec import api
                from semrec.artifacts import RunFolder

                finished = RunFolder(run_folder(Path(args.runs), config, seed)).is_finished()
                if args.report_only and not finished:
                    interim = (api.interim_results(run_folder(Path(args.runs), config, seed),
                                                   True if args.exclude_history else None) if args.interim else None)
                    if interim is not None:
                        interim = with_budget(interim, run_folder(Path(args.runs), config, seed), args.budget_minutes)
                        row = (f"{config} s{seed} (unfinished: best epoch {interim['best_epoch']} of "
                               f"{interim['epochs_run']} so far)")
                        table[row] = [interim]
                        print(row, {k: round(v, 4) for k, v in interim["test"].items() if k in METRICS}, flush=True)
                    continue
                result = run_one(config, seed, args.set, Path(args.runs))
                result["seconds_to_best"] = api.seconds_to_best(run_folder(Path(args.runs), config, seed),
                                                                result.get("best_epoch"))
                if args.exclude_history:
                    result = history_excluded(run_folder(Path(args.runs), config, seed), result)
                result = with_budget(result, run_folder(Path(args.runs), config, seed), args.budget_minutes)
                table.setdefault(config, []).append(result)
                print(config, seed, {k: round(v, 4) for k, v in result["test"].items() if k in METRICS}, flush=True)
    except KeyboardInterrupt:
        print("interrupted: finished epochs are checkpointed (run the same command to resume); "
              "the table below holds the finished runs only", flush=True)
    title = "# Quality (full ranking over all items, leave-last-out)"
    if args.exclude_history:
        title = "# Quality with the user's history items excluded from the ranking (full ranking, leave-last-out)"
    lines = [title, "",
             f"Command: `python bench/quality.py{' --report-only' if args.report_only else ''}"
             f"{' --interim' if args.interim else ''}{' --exclude-history' if args.exclude_history else ''}"
             f"{' --merge' if args.merge else ''}"
             f"{f' --budget-minutes {args.budget_minutes:g}' if args.budget_minutes else ''} "
             f"--configs {args.configs} "
             f"--seeds {args.seeds}{f' --first-seed {args.first_seed}' if args.first_seed != 2020 else ''}"
             f"{''.join(' --set ' + s for s in args.set)}`. Mean ± std over "
             "seeds; model selection on valid NDCG@10, patience 10.", *([args.note, ""] if args.note else [""])]
    for split in ("valid", "test"):
        budget_head = f" valid NDCG@10 within {args.budget_minutes:g} min |" if args.budget_minutes else ""
        lines += [f"## {split}", "", "| config | seeds | " + " | ".join(METRICS) + " | head NDCG@10 | tail NDCG@10 "
                  "| epochs | wall s | s to best |" + budget_head,
                  "|---" * (len(METRICS) + 7 + (1 if budget_head else 0)) + "|"]
        for config, results in table.items():
            cells = [fmt([r[split][m] for r in results]) for m in METRICS]
            cells += [fmt([r[split].get("head_ndcg@10", float("nan")) for r in results]),
                      fmt([r[split].get("tail_ndcg@10", float("nan")) for r in results])]
            epochs = statistics.mean(r.get("epochs_run", 0) for r in results)
            wall = statistics.mean(r.get("train_wall_seconds", r.get("wall_seconds", 0.0)) for r in results)
            to_best = [r["seconds_to_best"] for r in results if r.get("seconds_to_best") is not None]
            best_cell = f"{statistics.mean(to_best):.0f}" if len(to_best) == len(results) else "n/a"
            budget_cell = ""
            if budget_head:
                within = [r.get("budget_valid") for r in results]
                budget_cell = (f" {fmt(within)} |" if all(v is not None for v in within) else " n/a |")
            lines.append(f"| {config} | {len(results)} | " + " | ".join(cells) + f" | {epochs:.0f} | {wall:.0f} "
                         f"| {best_cell} |" + budget_cell)
        lines.append("")
    from semrec.io import atomic_path

    if args.merge and Path(args.out).is_file():
        lines = merged(Path(args.out).read_text().splitlines(), lines)
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
