"""Cold-start items: how well are items that no model was trained with ranked once added through the API?

1. A derived dataset drops a seeded random ``--holdout`` fraction (5%) of the items *entirely* (catalogue and
   sequences) and keeps the rest as they are; its text embeddings are the source dataset's rows (the same
   vectors ``semrec embed`` would compute), and its pq / opq codes are fitted on it, so neither the tokenizers
   nor the models ever see a held-out item.
2. CCFRec, VQ-Rec and UniSRec (inductive) are trained on it (``configs/`` settings, ``--set`` overrides).
3. Each run is served on a local port and the held-out items are added with ``POST /items`` (texts from the
   source dataset, encoded by the run's text encoder, coded by its tokenizer).
4. Evaluation rows: every position of the source dataset's sequences whose item is a held-out one (history = the
   items before it, raw ids, oldest first; held-out items in the history are known after step 3). The target's
   0-based rank among all items (history items excluded, ties broken by id) gives Recall/NDCG@10, Recall@50
   and MRR; "new-item R@10" ranks the target among the added items only; "cold share" is the share of the
   top-10 slots that go to added items. Random = uniform scores through the same masking.

    python bench/cold_start.py                                       # full: Scientific, 5%, three models
    python bench/cold_start.py --set train.epochs=3 --out /tmp/c.md  # a budget run (say so with --note)
Finished runs are reused (delete ``<work>/<model>`` to retrain).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ccfrec": "ccfrec/Scientific-cpu", "vqrec": "vqrec/Scientific-scratch",
           "unisrec": "unisrec/Scientific-inductive"}


def holdout_dataset(src: Path, dst: Path, fraction: float, seed: int):
    """(source dataset, derived dataset, held-out item ids of the source); the derived folder is reused when its
    manifest records the same hold-out."""
    from semrec.artifacts import DatasetFolder
    from semrec.data.dataset import CanonicalDataset

    full = CanonicalDataset.load(src)
    n = full.n_items
    held = np.sort(np.random.default_rng(seed).choice(np.arange(1, n + 1), max(1, round(fraction * n)), False))
    spec = {"source": str(src), "source_manifest": full.manifest.get("created_at"), "fraction": fraction,
            "seed": seed, "n_held_out": int(len(held))}
    if DatasetFolder(dst).exists():
        derived = CanonicalDataset.load(dst)
        if derived.manifest.get("cold_start_holdout") == spec:
            return full, derived, held
    keep = np.setdiff1d(np.arange(1, n + 1), held)
    new_id = np.zeros(n + 1, dtype=np.int64)
    new_id[keep] = np.arange(1, len(keep) + 1)
    items = full.items.iloc[keep - 1].copy()
    items["item_id"] = np.arange(1, len(keep) + 1)
    users, sequences, stamps = [], [], []
    for u, seq in enumerate(full.sequences):
        mask = new_id[seq] > 0
        if mask.any():
            users.append(u)
            sequences.append(new_id[seq[mask]])
            if full.timestamps is not None:
                stamps.append(full.timestamps[u][mask])
    user_frame = full.users.iloc[users].copy()
    user_frame["user_id"] = np.arange(len(users))
    manifest = {**full.manifest, "name": f"{full.name}-cold", "cold_start_holdout": spec}
    derived = CanonicalDataset(items, user_frame, sequences, stamps if full.timestamps is not None else None, manifest)
    manifest["counts"] = {k: v for k, v in derived.stats().items() if k in ("users", "items", "interactions")}
    derived.save(dst)
    slice_embeddings(src, dst, keep, derived)
    return full, derived, held


def slice_embeddings(src: Path, dst: Path, keep: np.ndarray, derived) -> None:
    """The source's view matrices restricted to the kept items, with the manifest ``semrec embed`` would write."""
    from semrec.artifacts import DatasetFolder, EmbeddingsFolder
    from semrec.io import sha256_text, write_json
    from semrec.text.encode import TextEncoder, write_view_matrix

    for source in DatasetFolder(src).embeddings_folders():
        manifest = source.read_manifest()
        identity = TextEncoder(manifest["model"]).identity
        target = EmbeddingsFolder(DatasetFolder(dst).embeddings_root / source.path.name)
        out = target.path
        views = {}
        for view, entry in manifest["views"].items():
            name = write_view_matrix(out, view, np.load(source.path / entry["file"])[keep])
            texts = derived.view_texts(view)
            views[view] = {**entry, "file": name, "key": sha256_text(identity, *texts),
                           "distinct_texts": len(set(texts))}
        write_json(target.manifest, {**manifest, "dataset": derived.name, "n_items": derived.n_items,
                                     "views": views})
        if source.settings.is_file():
            shutil.copy(source.settings, target.settings)


def ensure_codes(src: Path, dst: Path, kind: str, params: dict) -> None:
    """Fit the derived dataset's ``kind`` codes with the source dataset's settings (plus ``params``)."""
    import yaml

    from semrec import api
    from semrec.artifacts import DatasetFolder
    from semrec.config import CodesConfig

    source = DatasetFolder(src).codes(kind).config
    base = (yaml.safe_load(source.read_text(encoding="utf-8")) or {}).get("params", {}) if source.is_file() else {}
    api.ensure_codes(dst, CodesConfig(tokenizer=kind, params={**base, **params}))


def train(model: str, config: str, dst: Path, out: Path, sets: list[str]) -> Path:
    from semrec import api
    from semrec.config import RunConfig, load_config

    mine = [s.split(":", 1)[1] for s in sets if s.startswith(f"{model}:")]
    common = [s for s in sets if ":" not in s.split("=", 1)[0]]
    cfg = load_config(RunConfig, ROOT / "configs" / f"{config}.yaml",
                      [f"dataset={dst}", f"out={out}", "train.progress=false", *common, *mine])
    api.ensure_trained(cfg, out)
    return out


def add_over_http(rec, full, held: np.ndarray) -> float:
    """POST the held-out items to a live server of ``rec``; return the seconds it took."""
    import httpx

    from semrec.serve.app import MAX_ITEMS, ServerThread, create_app

    items = [{"raw_id": str(row["raw_id"]), **{v: str(row[v]) for v in full.views if str(row[v])}}
             for _, row in full.items.iloc[held - 1].iterrows()]
    t0 = time.perf_counter()
    with ServerThread(create_app(rec)) as server, httpx.Client(base_url=server.url, timeout=600) as client:
        for start in range(0, len(items), MAX_ITEMS):
            reply = client.post("/items", json={"items": items[start:start + MAX_ITEMS]})
            if reply.status_code != 201:
                raise SystemExit(f"POST /items failed ({reply.status_code}): {reply.text[:500]}")
    return time.perf_counter() - t0


def eval_rows(full, held: np.ndarray) -> tuple[list[list[str]], list[str]]:
    """(histories, targets): every sequence position whose item is held out (non-empty history)."""
    is_held = np.zeros(full.n_items + 1, dtype=bool)
    is_held[held] = True
    raw = full.items["raw_id"].astype(str).to_numpy()
    histories, targets = [], []
    for seq in full.sequences:
        for i in np.flatnonzero(is_held[seq]):
            if i >= 1:
                histories.append(list(raw[seq[:i] - 1]))
                targets.append(str(raw[seq[i] - 1]))
    return histories, targets


def summarize(ranks: list[torch.Tensor], cold_ranks: list[torch.Tensor], cold_slots: int) -> dict[str, float]:
    """Metrics of the rows' ranks among all items and among the added items, plus the added items' top-10 share."""
    from semrec.eval.metrics import metrics_from_ranks

    ranks_np, cold_np = torch.cat(ranks).numpy(), torch.cat(cold_ranks).numpy()
    out = metrics_from_ranks(ranks_np, (10, 50))
    out["new_recall@10"] = metrics_from_ranks(cold_np, (10,))["recall@10"]
    out["cold_share@10"] = cold_slots / (10 * len(ranks_np))
    out["median_rank"] = float(np.median(ranks_np))
    return out


def rank_rows(rec, histories, targets, random_seed: int | None = None, batch: int = 256) -> dict[str, float]:
    from semrec.eval.metrics import ranks_from_scores
    from semrec.eval.ranking import top_k

    cold = torch.arange(rec.n_items + 1 - rec.n_cold_items, rec.n_items + 1)
    gen = None if random_seed is None else torch.Generator().manual_seed(random_seed)
    ranks, cold_ranks, cold_slots = [], [], 0
    for s in range(0, len(histories), batch):
        scores = rec.score_histories(histories[s:s + batch]).cpu()
        if gen is not None:  # uniform scores, same masking (padding and history items)
            scores = torch.where(torch.isinf(scores), scores, torch.rand(scores.shape, generator=gen))
        tgt = torch.tensor([rec.item_id(t) for t in targets[s:s + batch]])
        ranks.append(ranks_from_scores(scores, tgt))
        cold_ranks.append(ranks_from_scores(scores[:, cold], tgt - int(cold[0])))
        cold_slots += int((top_k(scores, 10)[1] >= int(cold[0])).sum())
    return summarize(ranks, cold_ranks, cold_slots)


def text_knn_rows(src: Path, full, held: np.ndarray, histories, targets, text_model: str = "all-MiniLM-L6-v2",
                  view: str = "all", batch: int = 256) -> dict[str, float]:
    """Content baseline with no training: score = cosine of the frozen text vectors of the history's last item
    and each candidate (the same masking and rank functions as the models)."""
    from semrec.eval.metrics import ranks_from_scores
    from semrec.eval.ranking import top_k
    from semrec.text.encode import embeddings_dir, load_view_embeddings

    vectors = torch.from_numpy(load_view_embeddings(embeddings_dir(src, text_model), [view])[view])
    vectors = torch.nn.functional.normalize(vectors, dim=-1)
    index = {raw: i + 1 for i, raw in enumerate(full.items["raw_id"].astype(str))}
    cold = torch.from_numpy(held)
    ranks, cold_ranks, cold_slots = [], [], 0
    for s in range(0, len(histories), batch):
        rows = [[index[r] for r in h] for h in histories[s:s + batch]]
        scores = vectors[[r[-1] for r in rows]] @ vectors.T
        scores[:, 0] = -torch.inf
        for i, r in enumerate(rows):
            scores[i, r] = -torch.inf
        tgt = torch.tensor([index[t] for t in targets[s:s + batch]])
        ranks.append(ranks_from_scores(scores, tgt))
        position = torch.searchsorted(cold, tgt)  # every target is a held-out item
        cold_ranks.append(ranks_from_scores(scores[:, cold], position))
        cold_slots += int(torch.isin(top_k(scores, 10)[1], cold).sum())
    return summarize(ranks, cold_ranks, cold_slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT / "data" / "Scientific"), help="prepared + embedded dataset")
    parser.add_argument("--holdout", type=float, default=0.05, help="fraction of items held out entirely")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hold-out draw and of the random baseline")
    parser.add_argument("--models", default="ccfrec,vqrec,unisrec")
    parser.add_argument("--config", action="append", default=[], help="MODEL=configs-relative name (no .yaml)")
    parser.add_argument("--set", action="append", default=[],
                        help="config override for every run (key=value) or one model (MODEL:key=value)")
    parser.add_argument("--codes-param", action="append", default=[], help="KIND:key=value (pq or opq)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "cold_start"), help="derived dataset and runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cold_start.md"))
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    configs = {**CONFIGS, **dict(c.split("=", 1) for c in args.config)}
    models = [m for m in args.models.split(",") if m]
    src, work = Path(args.dataset), Path(args.work)
    full, derived, held = holdout_dataset(src, work / "data" / f"{src.name}-cold", args.holdout, args.seed)
    dst = work / "data" / f"{src.name}-cold"
    print(f"held out {len(held)} of {full.n_items} items; derived dataset {dst} ({derived.n_items} items, "
          f"{derived.n_users} users)", flush=True)
    codes_params: dict[str, dict] = {"pq": {}, "opq": {}}
    for item in args.codes_param:
        kind, _, pair = item.partition(":")
        key, _, value = pair.partition("=")
        try:
            codes_params[kind][key] = json.loads(value)
        except ValueError:
            codes_params[kind][key] = value
    histories, targets = eval_rows(full, held)
    print(f"{len(histories)} evaluation rows (histories whose next item is held out)", flush=True)
    from semrec.artifacts import RunFolder
    from semrec.serve import Recommender

    rows: dict[str, dict] = {}
    for model in models:
        from semrec.config import RunConfig, load_config

        codes = load_config(RunConfig, ROOT / "configs" / f"{configs[model]}.yaml").codes
        if model in ("ccfrec", "vqrec"):
            ensure_codes(src, dst, codes, codes_params.get(codes, {}))
        run = train(model, configs[model], dst, work / model, args.set)
        RunFolder(run).cold_items.unlink(missing_ok=True)  # the bench adds the held-out items afresh
        rec = Recommender.load(run, device=args.device)
        seconds = add_over_http(rec, full, held)
        warm = RunFolder(run).read_results()["test"]["ndcg@10"]
        rows[model] = {**rank_rows(rec, histories, targets), "add_seconds": seconds, "warm_test_ndcg@10": warm}
        print(model, {k: round(v, 4) for k, v in rows[model].items()}, flush=True)
    rows["text kNN (last item)"] = text_knn_rows(src, full, held, histories, targets)
    rows["random"] = rank_rows(rec, histories, targets, random_seed=args.seed)
    write_report(Path(args.out), rows, args, full, derived, held, len(histories), configs)


def write_report(out: Path, rows, args, full, derived, held, n_rows: int, configs) -> None:
    cols = [("recall@10", "R@10"), ("ndcg@10", "NDCG@10"), ("recall@50", "R@50"), ("mrr", "MRR"),
            ("median_rank", "median rank"), ("new_recall@10", "new-item R@10"), ("cold_share@10", "cold share"),
            ("warm_test_ndcg@10", "warm test NDCG@10"), ("add_seconds", "POST /items s")]
    lines = [f"# Cold-start items ({full.name}, {args.holdout:.0%} of items held out of training entirely)", "",
             f"{len(held)} of {full.n_items} items held out (seed {args.seed}); models trained on the other "
             f"{derived.n_items} items ({derived.n_users} users), then the held-out items were added through "
             f"`POST /items` of a live server. {n_rows} evaluation rows: every history whose next item is a "
             "held-out one; the target is ranked among all items, history items excluded.", "",
             "Configs: " + ", ".join(f"{m} = configs/{configs[m]}.yaml" for m in rows if m in configs)
             + (f"; overrides: {' '.join(args.set)}" if args.set else ""), ""]
    if args.note:
        lines += [f"**Note:** {args.note}", ""]
    lines += ["| model | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for model, row in rows.items():
        cells = [("-" if k not in row else f"{row[k]:.1f}" if k in ("median_rank", "add_seconds") else f"{row[k]:.4f}")
                 for k, _ in cols]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "new-item R@10: the target ranked among the added items only. cold share: share of the top-10 "
              f"slots taken by added items (they are {len(held) / full.n_items:.1%} of the catalogue). warm test "
              "NDCG@10: the run's own leave-last-out test on the items it was trained with. text kNN (last item): no "
              "training, cosine of the MiniLM 'all' vectors of the history's last item and each candidate."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
