"""bench/quality.py row specs: ``CONFIG@key=value`` ablation rows get their own run folders."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
