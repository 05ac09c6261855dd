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


def test_merge_keeps_other_rows_in_place_and_pads_missing_columns():
    from bench.quality import merged

    old = ["# Quality", "", "Command: `old`.", "", "## valid", "", "| config | seeds | ndcg@10 |", "|---|---|---|",
           "| a/x | 3 | 0.1 |", "| b/x | 3 | 0.2 |", "", "## test", "", "| config | seeds | ndcg@10 |", "|---|---|---|",
           "| a/x | 3 | 0.3 |", "| b/x | 3 | 0.4 |", ""]
    new = ["# Quality", "", "Command: `new`.", "", "## valid", "", "| config | seeds | ndcg@10 | s to best |",
           "|---|---|---|---|", "| b/x | 3 | 0.25 | 10 |", "| c/x | 1 | 0.5 | 20 |", "", "## test", "",
           "| config | seeds | ndcg@10 | s to best |", "|---|---|---|---|", "| b/x | 3 | 0.45 | 10 |",
           "| c/x | 1 | 0.6 | 20 |", ""]
    out = merged(old, new)
    assert out[:5] == ["# Quality", "", "Command: `old`.", "Rows updated or added later: `new`.", ""]
    valid = out[out.index("## valid"): out.index("## test")]
    assert valid[4:7] == ["| a/x | 3 | 0.1 | n/a |", "| b/x | 3 | 0.25 | 10 |", "| c/x | 1 | 0.5 | 20 |"]
    assert "| a/x | 3 | 0.3 | n/a |" in out and "| b/x | 3 | 0.4 |" not in out


def test_a_non_positive_budget_is_refused():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--report-only", "--budget-minutes",
                             "0", "--configs", "sasrec/Scientific"], capture_output=True, text=True)
    assert result.returncode == 2 and "--budget-minutes must be a positive number of minutes, got 0" in result.stderr
