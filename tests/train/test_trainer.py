"""Trainer, evaluator and run folders on a tiny synthetic dataset: logging, checkpoints, exact resume
after a kill, early stopping, CCFRec end to end, and 2-process DDP against a single process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from semrec.config import CodesConfig, RunConfig, TrainConfig, save_config
from semrec.errors import SemrecError
from semrec.runs import load_run_config
from semrec.tokenizers.pipeline import fit_codes
from semrec.train.trainer import Trainer
from tests.support import make_tiny_dataset

SASREC = {"hidden_size": 16, "inner_size": 32, "max_len": 10, "dropout": 0.1, "attn_dropout": 0.1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "ds")
    fit_codes(folder, CodesConfig(tokenizer="pq", params={"pca_dim": 16, "codes_per_view": 2, "nbits": 3}),
              progress=False)
    return folder


def run_config(tiny: Path, out: Path, **train) -> RunConfig:
    settings = {"epochs": 4, "batch_size": 32, "lr": 3e-3, "warmup_steps": 5, "patience": 100, "progress": False,
                **train}
    return RunConfig(model="sasrec", dataset=str(tiny), model_params=dict(SASREC), out=str(out),
                     train=TrainConfig(**settings))


def test_run_folder_contents(tiny, tmp_path):
    results = Trainer(run_config(tiny, tmp_path / "run")).fit()
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "curve.png", "results.json", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2, 3]
    assert all("valid_ndcg@10" in r and "loss" in r for r in lines)
    if sys.platform.startswith("linux"):
        assert all(0 < r["peak_rss_gb"] < 1024 for r in lines)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 4 and "rng" in state and "optimizer" in state
    assert set(results["test"]) >= {"recall@5", "ndcg@10", "recall@20", "mrr", "head_ndcg@10", "tail_ndcg@10"}
    assert results["valid"]["ndcg@10"] == pytest.approx(max(r["valid_ndcg@10"] for r in lines))
    assert load_run_config(run).train.epochs == 4
    # the model learned something: far better than the popularity floor on this sequential pattern
    pop = Trainer(RunConfig(model="popularity", dataset=str(tiny), out=str(tmp_path / "pop"),
                            train=TrainConfig(progress=False))).fit()
    assert results["test"]["ndcg@10"] > pop["test"]["ndcg@10"]


def test_early_stopping(tiny, tmp_path):
    results = Trainer(run_config(tiny, tmp_path / "run", epochs=50, lr=0.0, warmup_steps=0, patience=2)).fit()
    assert results["epochs_run"] == 3 and results["best_epoch"] == 0


def test_heap_is_released_after_every_cpu_step_unless_switched_off(tiny, tmp_path, monkeypatch):
    import semrec.train.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "release_free_heap", lambda: calls.append(1) or True)
    trainer = Trainer(run_config(tiny, tmp_path / "on", epochs=2, device="cpu"))
    trainer.fit()
    assert trainer.step > 0 and len(calls) == trainer.step
    calls.clear()
    Trainer(run_config(tiny, tmp_path / "off", epochs=2, device="cpu", malloc_trim=False)).fit()
    assert calls == []
    trainer = Trainer(run_config(tiny, tmp_path / "every3", epochs=2, device="cpu", malloc_trim_every=3))
    trainer.fit()  # after steps 3, 6, ...: the pages stay resident for the steps between
    assert trainer.step >= 3 and len(calls) == trainer.step // 3
    calls.clear()  # malloc_reuse keeps the freed pages: no trim after every step, only at an asked-for interval
    Trainer(run_config(tiny, tmp_path / "reuse", epochs=2, device="cpu", malloc_reuse=True)).fit()
    assert calls == []
    trainer = Trainer(run_config(tiny, tmp_path / "reuse3", epochs=2, device="cpu", malloc_reuse=True,
                                 malloc_trim_every=3))
    trainer.fit()
    assert len(calls) == trainer.step // 3


def test_a_trim_interval_below_one_step_is_refused(tiny, tmp_path):
    with pytest.raises(SemrecError, match="train.malloc_trim_every must be at least 1"):
        Trainer(run_config(tiny, tmp_path / "run", malloc_trim_every=0))


def _launch(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "semrec.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def test_resume_after_kill_matches_uninterrupted_run(tiny, tmp_path):
    cfg = run_config(tiny, tmp_path / "full", epochs=8)
    save_config(cfg, tmp_path / "cfg.yaml")
    full = _launch(["train", "-c", str(tmp_path / "cfg.yaml")])
    assert full.wait(timeout=600) == 0, full.stdout.read()
    killed = _launch(["train", "-c", str(tmp_path / "cfg.yaml"), "-o", str(tmp_path / "killed")])
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 600
    while time.time() < deadline and killed.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 3:
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = _launch(["train", "--resume", str(tmp_path / "killed")])
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()
    a = json.loads((tmp_path / "full" / "results.json").read_text())
    b = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert a["valid"] == b["valid"] and a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
    hist_a = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    hist_b = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items()  # noqa: E731
                           if "seconds" not in k and k != "peak_rss_gb"} for r in rows]
    assert strip(hist_a) == strip(hist_b)


def test_resume_refuses_a_non_run_folder_and_train_refuses_an_existing_run(tiny, tmp_path):
    with pytest.raises(SemrecError, match="not a run folder"):
        load_run_config(tmp_path)
    Trainer(run_config(tiny, tmp_path / "run", epochs=1)).fit()
    with pytest.raises(SemrecError, match="already holds a run"):
        Trainer(run_config(tiny, tmp_path / "run", epochs=1))


def test_ccfrec_trains_end_to_end(tiny, tmp_path):
    cfg = RunConfig(model="ccfrec", dataset=str(tiny), out=str(tmp_path / "ccf"), model_params={
        "embedding_size": 16, "inner_size": 32, "neg_num": 30, "max_len": 8},
        train=TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_steps=5, progress=False))
    results = Trainer(cfg).fit()
    assert 0 <= results["test"]["ndcg@10"] <= 1
    history = [json.loads(x) for x in (tmp_path / "ccf" / "metrics.jsonl").read_text().splitlines()]
    assert {"rec", "mcm", "msa"} <= set(history[0])


def test_a_ddp_run_resumed_under_ddp_ends_as_an_uninterrupted_one(tiny, tmp_path):
    """Exact resume under DDP (issue 20): every rank restarts from its own RNG stream (dropout draws), so 2 epochs
    then --resume to 4 equal 4 epochs straight, metric for metric."""
    def torchrun(*args: str, port: int) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
               "-m", "semrec.cli", "train", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stdout + done.stderr

    save_config(run_config(tiny, tmp_path / "straight", epochs=4), tmp_path / "straight.yaml")
    save_config(run_config(tiny, tmp_path / "cut", epochs=2), tmp_path / "cut.yaml")
    torchrun("-c", str(tmp_path / "straight.yaml"), port=29535)
    torchrun("-c", str(tmp_path / "cut.yaml"), port=29536)
    torchrun("--resume", str(tmp_path / "cut"), "--epochs", "4", port=29537)
    strip = lambda path: [{k: v for k, v in json.loads(r).items() if "seconds" not in k and k != "peak_rss_gb"}  # noqa: E731
                          for r in (path / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "straight") == strip(tmp_path / "cut") and len(strip(tmp_path / "cut")) == 4


def test_ddp_two_cpu_processes_match_a_single_process(tiny, tmp_path):
    """Same global batch: 2 gloo ranks x 16 vs 1 process x 32, no dropout. Tolerance: valid/test NDCG@10 and
    Recall@10 within 0.02 absolute (float summation order and per-shard loss means differ slightly)."""
    params = {**SASREC, "dropout": 0.0, "attn_dropout": 0.0}
    single = run_config(tiny, tmp_path / "single", epochs=3)
    single.model_params = params
    save_config(single, tmp_path / "single.yaml")
    ddp = run_config(tiny, tmp_path / "ddp", epochs=3)
    ddp.model_params = params
    save_config(ddp, tmp_path / "ddp.yaml")
    one = _launch(["train", "-c", str(tmp_path / "single.yaml")])
    assert one.wait(timeout=600) == 0, one.stdout.read()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "semrec.cli", "train", "-c", str(tmp_path / "ddp.yaml")]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stdout + two.stderr
    a = json.loads((tmp_path / "single" / "results.json").read_text())
    b = json.loads((tmp_path / "ddp" / "results.json").read_text())
    for split in ("valid", "test"):
        for metric in ("ndcg@10", "recall@10"):
            assert abs(a[split][metric] - b[split][metric]) <= 0.02, (split, metric, a[split], b[split])
    assert yaml.safe_load((tmp_path / "ddp" / "config.yaml").read_text())["train"]["batch_size"] == 32
    # every rank's RNG state is checkpointed, so a resumed rank continues its own stream (seeded seed + rank)
    state = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    ranks = state["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    assert torch.equal(ranks[0]["torch"], state["rng"]["torch"])
