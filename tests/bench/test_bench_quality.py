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
