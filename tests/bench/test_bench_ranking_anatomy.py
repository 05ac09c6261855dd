"""bench/ranking_anatomy.py: its ranks agree with the evaluator's, and its figures are consistent."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_ranking_anatomy", ROOT / "bench" / "ranking_anatomy.py")
anatomy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(anatomy)


def test_anatomy_matches_the_evaluator_on_a_tiny_run(tmp_path):
    from tests.support import train_tiny_sasrec

    out, final = train_tiny_sasrec(tmp_path)
    figures = anatomy.anatomy(out, dup=0.9)
    assert figures["ndcg@10"] == pytest.approx(final["test"]["ndcg@10"], abs=1e-6)
    assert figures["recall@10"] == pytest.approx(final["test"]["recall@10"], abs=1e-6)
    from semrec.runs import evaluate_run

    excluded = evaluate_run(out, exclude_history=True, device="cpu")["test"]
    assert figures["ndcg@10 excl. history"] == pytest.approx(excluded["ndcg@10"], abs=1e-6)
    assert figures["rank 1 excl. history"] >= figures["rank 1"]
    shares = [figures[name] for _, _, name in anatomy.BUCKETS]
    assert sum(shares) == pytest.approx(1.0)
    n_rows = 120  # one test row per user of the tiny dataset
    assert figures["near_miss_rows"] == pytest.approx((figures["2-5"] + figures["6-10"]) * n_rows)
    assert 0.0 <= figures["top1_is_history_item"] <= 1.0
    assert 0.0 <= figures["history_items_in_top10"] <= 10.0


def test_nearest_neighbour_cosine_matches_brute_force():
    table = torch.randn(50, 8)
    unit = torch.nn.functional.normalize(table, dim=-1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-2.0)
    assert torch.allclose(anatomy.nearest_neighbour_cosine(table, chunk=7), sims.max(1).values, atol=1e-6)


def test_bad_arguments_are_refused(tmp_path):
    script = str(ROOT / "bench" / "ranking_anatomy.py")
    result = subprocess.run([sys.executable, script, "--dup", "1.5"], capture_output=True, text=True)
    assert result.returncode == 2 and "--dup" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, script, "--runs", "nowhere", "--root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "skipping nowhere" in result.stdout and "Traceback" not in result.stderr
