"""Where the test target lands in each model's ranking, and what outranks it.

Tests one hypothesis about the models without item-ID embeddings (CCFRec, VQ-Rec, UniSRec inductive): they
reach higher Recall@10/20 than SASRec but lower NDCG@5/10 because items with similar text get near-identical
vectors, so the target is often in the list but behind a text-similar neighbour. For each run (its
``best.pt``, test split, full ranking as ``semrec evaluate``) it reports:

* the rank distribution of the target (rank 1, 2-5, 6-10, 11-20, > 20);
* how many of the user's own history items outrank the target (rows with the target in the top 20), and the
  rank-1 share and NDCG@10 once they are removed from the ranking (as ``semrec evaluate --exclude-history``);
* how often the rank-1 item is one of the user's own history items (never a target here: repeats are dropped
  from sequences), and how many history items a top-10 list holds (the evaluation does not exclude them, as the
  references; ``semrec evaluate --exclude-history`` does);
* for "near misses" (target ranked 2-10), the text similarity between the target and the items ranked above
  it, in one model-independent space (the dataset's raw MiniLM ``all``-view vectors, cosine), and the share
  of those rows whose rank-1 item is a text near-duplicate of the target (cosine >= ``--dup``);
* the text redundancy of the top-10 lists (mean pairwise text cosine) and of random item pairs;
* crowding of the model's own item space: mean cosine to the nearest other item, share of items whose
  nearest neighbour is above cosine 0.95.

Usage: ``python bench/ranking_anatomy.py [--runs runs/bench/sasrec-Scientific-s2020,...] [--out F]``.
Writes ``bench/results/ranking_anatomy.md`` by default; runs that are missing are skipped with a message.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT = [
    "sasrec-Scientific-s2020",
    "unisrec-Scientific-s2020",
    "unisrec-Scientific-inductive-s2020",
    "vqrec-Scientific-scratch-s2020",
    "ccfrec-Scientific-cpu-s2020",
    "ccfrec-Scientific-seq-s2020",
]
BUCKETS = [(0, 1, "rank 1"), (1, 5, "2-5"), (5, 10, "6-10"), (10, 20, "11-20"), (20, None, ">20")]


def load_model(run_dir: Path):
    """Model (best.pt, eval mode), the run's data and its config."""
    from semrec.runs import load_run

    run = load_run(run_dir)  # refused when the run's data changed since training
    return run.model, run.data, run.config


def text_vectors(dataset: Path, model_name: str = "all-MiniLM-L6-v2") -> torch.Tensor:
    """Unit-norm raw PLM vectors of the ``all`` view, rows 1..N (0-based item index = id - 1)."""
    from semrec.text.encode import embeddings_dir, load_view_embeddings

    matrix = load_view_embeddings(embeddings_dir(dataset, model_name), ["all"])["all"]
    return F.normalize(torch.from_numpy(np.ascontiguousarray(matrix[1:], dtype=np.float32)), dim=-1)


@torch.no_grad()
def nearest_neighbour_cosine(table: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Cosine of each row of ``table`` to its nearest other row."""
    unit = F.normalize(table, dim=-1)
    out = torch.empty(len(unit))
    for start in range(0, len(unit), chunk):
        sims = unit[start:start + chunk] @ unit.T
        idx = torch.arange(start, min(len(unit), start + chunk))
        sims[idx - start, idx] = -2.0
        out[start:start + chunk] = sims.max(1).values
    return out


@torch.no_grad()
def anatomy(run_dir: Path, dup: float, k: int = 10, seed: int = 0) -> dict[str, float]:
    """The figures of one run (see the module docstring)."""
    from semrec.data.batching import eval_batches
    from semrec.eval.ranking import history_pairs, item_scores, outranks, scoring_vectors, top_k

    model, data, cfg = load_model(run_dir)
    text = text_vectors(Path(cfg.dataset))
    candidate, history_table = model.eval_tables()
    table = scoring_vectors(candidate, model.similarity)
    candidate = table[1:]
    max_len = model.max_len
    ranks, above_sims, top1_dup, redundancy, top1_seen, seen_in_top, history_above = [], [], [], [], [], [], []
    pair_mask = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    rows = data.split.test
    for first, batch in zip(range(0, len(rows.targets), 1024), eval_batches(rows, max_len, 1024)):
        user = scoring_vectors(model.encode_sequence(batch["items"], batch["lengths"], history_table),
                               model.similarity)
        scores = item_scores(user, table)  # [B, N]: column j = item j + 1, as the evaluator
        targets = batch["targets"] - 1
        above_target = outranks(scores, scores.gather(1, targets.unsqueeze(1)), batch["targets"], start=1)
        rank = above_target.sum(1)
        # the user's whole history (the model reads only its last max_len items), as a [B, N] mask
        part = slice(first, first + len(user))
        seen_mask = torch.zeros_like(scores, dtype=torch.bool)
        seen_rows, seen_items = history_pairs(rows.histories[part], rows.targets[part])
        seen_mask[seen_rows, seen_items - 1] = True
        history_above.append((above_target & seen_mask).sum(1))
        top = top_k(scores, k, start=1)[1] - 1  # 0-based; ties by smaller id first, as the evaluator
        top_text = text[top]  # [B, k, D]
        target_text = text[targets]
        sim_to_target = (top_text * target_text.unsqueeze(1)).sum(-1)  # [B, k]
        near = (rank >= 1) & (rank < k)
        for row in torch.nonzero(near).flatten().tolist():
            above_sims.append(sim_to_target[row, : int(rank[row])].mean().item())
            top1_dup.append(float(sim_to_target[row, 0] >= dup))
        seen = seen_mask.gather(1, top)  # [B, k]: a history item
        top1_seen.append(seen[:, 0].float())
        seen_in_top.append(seen.float().sum(1))
        pairwise = top_text @ top_text.transpose(1, 2)
        redundancy.append(pairwise[:, pair_mask].mean(1))
        ranks.append(rank)
    rank = torch.cat(ranks).numpy()
    hist_above = torch.cat(history_above).numpy()
    rank_excluded = rank - hist_above  # the rank once the user's history items are removed from the ranking
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randint(len(text), (2, 20000), generator=gen)
    nn_cos = nearest_neighbour_cosine(candidate)
    out = {name: float(((rank >= lo) & (rank < (hi if hi is not None else len(candidate) + 1))).mean())
           for lo, hi, name in BUCKETS}
    out.update({
        "ndcg@10": float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean()),
        "recall@10": float((rank < 10).mean()),
        "history_above_target": float(hist_above[rank < 20].mean()),
        "rank 1 excl. history": float((rank_excluded == 0).mean()),
        "ndcg@10 excl. history": float(np.where(rank_excluded < 10, 1.0 / np.log2(rank_excluded + 2.0), 0.0).mean()),
        "top1_is_history_item": float(torch.cat(top1_seen).mean()),
        "history_items_in_top10": float(torch.cat(seen_in_top).mean()),
        "near_miss_rows": float(len(above_sims)),
        "text_cos_above_target": float(np.mean(above_sims)) if above_sims else float("nan"),
        "top1_text_duplicate": float(np.mean(top1_dup)) if top1_dup else float("nan"),
        "top10_text_redundancy": float(torch.cat(redundancy).mean()),
        "random_pair_text_cos": float((text[a] * text[b]).sum(-1).mean()),
        "nn_cos_model_space": float(nn_cos.mean()),
        "share_nn_cos_0.95": float((nn_cos >= 0.95).float().mean()),
    })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(DEFAULT),
                        help="run folders (names under --root, or paths), comma-separated")
    parser.add_argument("--root", default=str(ROOT / "runs" / "bench"))
    parser.add_argument("--dup", type=float, default=0.9, help="text cosine from which an item is a near-duplicate")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ranking_anatomy.md"))
    args = parser.parse_args()
    if not 0.0 < args.dup <= 1.0:
        parser.error(f"--dup must be in (0, 1], got {args.dup}")
    from semrec.errors import SemrecError
    from semrec.io import atomic_path

    torch.set_grad_enabled(False)
    rows = []
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        run = Path(name) if Path(name).is_dir() else Path(args.root) / name
        if not run.is_dir():
            print(f"skipping {name}: no run folder {run}", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            figures = anatomy(run, args.dup)
        except SemrecError as exc:
            print(f"skipping {name}: {exc}", flush=True)
            continue
        print(f"{name}: {time.perf_counter() - t0:.0f} s  " + "  ".join(f"{k}={v:.4f}" for k, v in figures.items()),
              flush=True)
        rows.append((run.name, figures))
    if not rows:
        sys.exit("no run could be analysed")
    cols = list(rows[0][1])
    lines = [
        "# Ranking anatomy: where the test target lands and what outranks it",
        "",
        f"Command: `python bench/ranking_anatomy.py --runs {','.join(r for r, _ in rows)} --dup {args.dup}`. "
        "Each run's best.pt on the test split, full ranking (ties by item id, as the evaluator). Rank columns: "
        "share of test rows whose target lands there. `history_above_target`: mean count of the user's history items "
        "ranked above the target, over rows with the target in the top 20; `... excl. history`: the same ranking "
        "with those items removed. `top1_is_history_item`: share of rows whose rank-1 item is in "
        "the user's whole history; `history_items_in_top10`: mean count per top-10 list. Text cosines "
        "are in one model-independent space (raw "
        "MiniLM `all`-view vectors): `text_cos_above_target` is the mean cosine between the target and the items "
        "ranked above it over the near-miss rows (target ranked 2-10); `top1_text_duplicate` is the share of those "
        f"rows whose rank-1 item has text cosine >= {args.dup} with the target; `top10_text_redundancy` is the mean "
        "pairwise text cosine within a top-10 list, `random_pair_text_cos` the same for random item pairs. "
        "`nn_cos_model_space`: mean cosine of each item's scoring vector to its nearest other item's.",
        "",
        "| run | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for run, figures in rows:
        lines.append(f"| {run} | " + " | ".join(f"{figures[c]:.0f}" if c == "near_miss_rows" else f"{figures[c]:.4f}"
                                                 for c in cols) + " |")
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
