"""bench/solid.py on a tiny dataset: every backbone x method row is trained or marked not built, the table has the
CTR metrics and full-ranking NDCG@10 (n/a for DIN), and a second call reuses the runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import embed_vectors, make_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_solid_bench_smoke(tmp_path):
    from semrec.data.dataset import CanonicalDataset

    ds = make_tiny_dataset(tmp_path / "data" / "tiny")
    n = CanonicalDataset.load(ds).n_items
    embed_vectors(ds, {"all": np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)}, "tests.bench")
    out = tmp_path / "solid.md"
    args = [sys.executable, str(ROOT / "bench" / "solid.py"), "--datasets", "tiny", "--data", str(tmp_path / "data"),
            "--backbones", "din,sasrec", "--methods", "base,duet_vqvae,duet+fusion,duet+solid", "--seeds", "1",
            "--runs", str(tmp_path / "runs"), "--out", str(out), "--set", "train.epochs=1", "--set",
            "model_params.max_len=8", "--set", "train.batch_size=256", "--eval-negatives", "19", "--history", "8",
            "--solid-set", "model_params.clip=0.1"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in table.splitlines()
            if line.startswith("| tiny")}
    assert set(rows) == {("tiny", b, m) for b in ("din", "sasrec")
                         for m in ("base", "duet_vqvae", "duet+fusion", "duet+solid")}
    assert "not built" in rows[("tiny", "din", "duet+solid")] and "not built" in rows[("tiny", "din", "duet+fusion")]
    assert "not built" not in rows[("tiny", "din", "duet_vqvae")]
    assert "| n/a |" in rows[("tiny", "din", "base")] and "| n/a |" not in rows[("tiny", "sasrec", "duet+solid")]
    chain = "solid-tiny-sasrec-duet-id+text"
    tag = "@train.epochs=1@model_params.max_len=8@train.batch_size=256"  # --set values name the folders too
    solid = tmp_path / "runs" / f"tiny-sasrec-duet+solid{tag}@model_params.clip=0.1-s2020" / chain
    assert "clip: 0.1" in (solid / "4-solid" / "config.yaml").read_text()
    fusion = tmp_path / "runs" / f"tiny-sasrec-duet+fusion{tag}@model_params.clip=0.1-s2020" / chain
    assert "vq: false" in (fusion / "4-solid" / "config.yaml").read_text()
    assert "vqvae_size: 450" in (tmp_path / "runs" / f"tiny-sasrec-duet_vqvae{tag}-s2020" / "config.yaml").read_text()
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and out.read_text() == table  # reused, not retrained


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "duet,dual"], "--methods: unknown dual"),
    (["--backbones", "lstm"], "--backbones: unknown lstm"),
    (["--semantics", "image"], "--semantics: unknown image"),
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
])
def test_bad_bench_arguments_are_refused_before_any_run(tmp_path, args, message):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "solid.py"), "--runs", str(tmp_path / "runs"),
                           "--out", str(tmp_path / "out.md"), *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()
