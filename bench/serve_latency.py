"""Latency and throughput of ``POST /recommend`` (one history, k=10) over HTTP.

Two catalogues, each served by ``semrec.serve`` (FastAPI + uvicorn) in its own process, measured by a client
process with ``--concurrency`` parallel keep-alive connections:

* the run's own catalogue (e.g. Scientific, 4,344 items), exact retrieval (one matrix product per request);
* a synthetic catalogue of ``--synthetic`` items (default 1,000,000) through the approximate faiss index
  (``--approx ivf`` or ``hnsw``): the run's items plus synthetic item vectors (a random catalogue row plus
  Gaussian noise of relative size ``--noise``, added with ``Recommender.add_vectors``), so the request path is
  the real one (history encoding by the model, faiss search, seen-item filtering, raw ids). The approximate
  index's recall@10 against exact search over the same catalogue is measured on validation histories.

Histories are the dataset's validation histories (raw ids, the last ``--history-len`` items), drawn at random.
Latency is wall time per request at the client (p50 / p99); requests/s = completed requests / wall time.
Client and server share the machine (report its cores with the numbers).

    python bench/serve_latency.py --run runs/bench/ccfrec-Scientific-cpu-s2020
    python bench/serve_latency.py --run RUN --synthetic 0                   # the run's catalogue only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """Server process: load the run, optionally grow a synthetic catalogue, build the index, serve."""
    import torch

    from semrec.serve import Recommender
    from semrec.serve import index as faiss_index
    from semrec.serve.app import serve
    from semrec.serve.export import validation_queries

    params = dict(p.split("=", 1) for p in args.param)
    rec = Recommender.load(args.run)
    info = {"model": rec.config.model, "dataset": rec.dataset.name, "torch_threads": torch.get_num_threads()}
    if args.synthetic > rec.n_items:
        t0 = time.perf_counter()
        base = rec.item_matrix()[0]
        rng = np.random.default_rng(args.seed)
        extra = args.synthetic - rec.n_items
        vectors = np.empty((extra, base.shape[1]), dtype=np.float32)
        scale = args.noise * np.linalg.norm(base, axis=1).mean() / np.sqrt(base.shape[1])
        for s in range(0, extra, 100_000):
            n = min(100_000, extra - s)
            vectors[s:s + n] = base[rng.integers(0, len(base), n)] + rng.normal(0, scale, (n, base.shape[1]))
        rec.add_vectors([f"syn{i}" for i in range(extra)], vectors)
        del vectors
        info["synthesis_seconds"] = time.perf_counter() - t0
    if args.retrieval != "exact":
        t0 = time.perf_counter()
        rec.set_retrieval(args.retrieval, params)
        info["index_build_seconds"] = time.perf_counter() - t0
        info["index_params"] = {k: v for k, v in faiss_index.describe(rec.ann_index).items()
                                if k not in ("kind", "ntotal")}
        queries = validation_queries(rec, args.recall_queries, args.seed)
        vectors = rec.item_matrix()[0]
        info["recall@10"] = faiss_index.recall_at_k(faiss_index.exact_index(vectors), rec.ann_index, queries, 10)
        del vectors
    info["n_items"] = rec.n_items
    Path(args.info_file).write_text(json.dumps(info))
    serve(rec, "127.0.0.1", args.port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def histories(run: str, length: int, seed: int, n: int = 2000) -> list[list[str]]:
    from semrec.data.dataset import CanonicalDataset
    from semrec.runs import load_run_config

    dataset = CanonicalDataset.load(load_run_config(run).dataset)
    rows = [h for h in dataset.split().valid.histories if len(h)]
    pick = np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False)
    return [dataset.raw_item_ids(rows[i][-length:]) for i in pick]


def load(url: str, pool: list[list[str]], n_requests: int, concurrency: int, k: int, warmup: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(count: int, offset: int) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=120) as c:
            for j in range(count):
                body = {"history": pool[(offset + j * 7919) % len(pool)], "k": k}
                t0 = time.perf_counter()
                reply = c.post("/recommend", json=body)
                mine.append(time.perf_counter() - t0)
                if reply.status_code != 200 or len(reply.json()["results"][0]["items"]) != k:
                    errors.append(f"{reply.status_code}: {reply.text[:200]}")
        with lock:
            latencies.extend(mine)

    client(warmup, 0)
    latencies.clear()
    per = [n_requests // concurrency + (1 if i < n_requests % concurrency else 0) for i in range(concurrency)]
    threads = [threading.Thread(target=client, args=(c, 1000 * i)) for i, c in enumerate(per)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "req_per_s": len(ms) / wall}


def measure(args: argparse.Namespace, synthetic: int, retrieval: str, pool: list[list[str]]) -> list[dict]:
    import httpx

    port, info_file = free_port(), Path(args.tmp) / f"info-{os.getpid()}-{synthetic}.json"
    cmd = [sys.executable, __file__, "--worker", "--run", args.run, "--port", str(port), "--synthetic",
           str(synthetic), "--retrieval", retrieval, "--info-file", str(info_file), "--seed", str(args.seed),
           "--noise", str(args.noise), "--recall-queries", str(args.recall_queries)]
    for p in args.param:
        cmd += ["--param", p]
    print(f"starting server: {synthetic or 'run'} items, {retrieval} retrieval", flush=True)
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + args.startup_timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start in time (raise --startup-timeout)")
            time.sleep(1)
        info = json.loads(info_file.read_text(encoding="utf-8"))
        print(f"server up: {info}", flush=True)
        rows = []
        for c in args.concurrency:
            row = {**info, "retrieval": retrieval,
                   **load(f"http://127.0.0.1:{port}", pool, args.requests, c, args.k, args.warmup)}
            print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            rows.append(row)
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        info_file.unlink(missing_ok=True)


def report(rows: list[dict], args: argparse.Namespace) -> str:
    lines = ["# Serving latency: POST /recommend (one history, k=10)", "",
             f"Run `{args.run}` ({rows[0]['model']} on {rows[0]['dataset']}); {args.requests} requests per row "
             f"after {args.warmup} warm-up ones; histories = random validation histories (last {args.history_len} "
             f"items). Client and server on the same machine: {os.cpu_count()} cores "
             f"({platform.processor() or platform.machine()}), server torch threads {rows[0]['torch_threads']}.", ""]
    if args.note:
        lines += [f"**Note:** {args.note}", ""]
    lines += ["| catalogue | items | retrieval | concurrency | p50 ms | p99 ms | mean ms | requests/s | recall@10 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        recall = f"{r['recall@10']:.4f}" if "recall@10" in r else "exact"
        what = r["retrieval"] + (f" {r['index_params']}" if "index_params" in r else "")
        lines.append(f"| {'synthetic' if 'synthesis_seconds' in r else r['dataset']} | {r['n_items']:,} | {what} | "
                     f"{r['concurrency']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_ms']:.2f} | "
                     f"{r['req_per_s']:.1f} | {recall} |")
    builds = [r for r in rows if "index_build_seconds" in r]
    if builds:
        lines += ["", f"Index build {builds[0]['index_build_seconds']:.0f} s; recall@10 = mean share of the exact "
                  f"top-10 found by the approximate index ({args.recall_queries} validation histories). Synthetic "
                  f"items: a random catalogue vector plus Gaussian noise (relative size {args.noise})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "runs" / "bench" / "ccfrec-Scientific-cpu-s2020"))
    parser.add_argument("--synthetic", type=int, default=1_000_000, help="synthetic catalogue size (0: skip)")
    parser.add_argument("--approx", default="ivf", help="index of the synthetic catalogue: ivf | hnsw")
    parser.add_argument("--param", action="append", default=[], help="index parameter key=value")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--history-len", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup-timeout", type=float, default=3600)
    parser.add_argument("--tmp", default="/tmp")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_latency.md"))
    parser.add_argument("--note", default="")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--retrieval", default="exact", help=argparse.SUPPRESS)
    parser.add_argument("--info-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    pool = histories(args.run, args.history_len, args.seed)
    rows = measure(args, 0, "exact", pool)
    if args.synthetic:
        rows += measure(args, args.synthetic, args.approx, pool)
    text = report(rows, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
