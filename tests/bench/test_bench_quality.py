"""bench/quality.py row specs: ``CONFIG@key=value`` ablation rows get their own run folders."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


def test_spec_with_overrides_gets_its_own_folder(tmp_path):
    assert quality.split_spec("ccfrec/Scientific") == ("ccfrec/Scientific", [])
    assert quality.split_spec("ccfrec/Scientific@model_params.mlm_weight=0@train.lr=0.001") == (
        "ccfrec/Scientific", ["model_params.mlm_weight=0", "train.lr=0.001"])
    plain = quality.run_folder(tmp_path, "ccfrec/Scientific", 2020)
    ablation = quality.run_folder(tmp_path, "ccfrec/Scientific@model_params.mlm_weight=0", 2020)
    assert plain.name == "ccfrec-Scientific-s2020"
    assert ablation != plain and ablation.parent == tmp_path


def test_malformed_spec_is_refused():
    with pytest.raises(SystemExit, match="key=value"):
        quality.split_spec("ccfrec/Scientific@mlm_weight")


def test_interim_result_evaluates_the_best_checkpoint_of_an_unfinished_run(tmp_path):
    from tests.support import train_tiny_sasrec

    assert quality.interim_result(tmp_path / "missing") is None
    out, final = train_tiny_sasrec(tmp_path)
    (out / "results.json").unlink()  # as if the run were still going
    interim = quality.interim_result(out)
    assert interim["epochs_run"] == 3 and interim["best_epoch"] == final["best_epoch"]
    assert interim["test"]["ndcg@10"] == pytest.approx(final["test"]["ndcg@10"])
    assert interim["train_wall_seconds"] > 0
    # history items are never targets (repeats are dropped), so excluding them can only lift each target's rank
    excluded = quality.history_excluded(out, final)
    assert excluded["best_epoch"] == final["best_epoch"]
    for split in ("valid", "test"):
        for metric in ("ndcg@5", "ndcg@10", "recall@10", "mrr"):
            assert excluded[split][metric] >= final[split][metric] - 1e-9
    assert excluded["test"]["mrr"] > final["test"]["mrr"]
    assert quality.interim_result(out, exclude_history=True)["test"] == excluded["test"]


def test_interim_needs_report_only_and_unknown_configs_are_refused():
    import subprocess
    import sys

    script = str(ROOT / "bench" / "quality.py")
    result = subprocess.run([sys.executable, script, "--interim", "--configs", "sasrec/Scientific"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--interim" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, script, "--exclude-history", "--configs", "sasrec/Scientific"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--exclude-history" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, script, "--report-only", "--configs", "sasrec/Nowhere"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "configs/sasrec/Nowhere.yaml not found" in result.stderr
