"""bench/gpu_solid.sh and bench/gpu_stage.sh (issue 19, run on a lent GPU): bad arguments are refused with a message
naming them before anything is written, staged data removed or a training started."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize(("args", "message"), [
    (["600", "Scientific:lstm:2020"], "bad row 'Scientific:lstm:2020'"),
    (["600", "Scientific:sasrec:first"], "bad row 'Scientific:sasrec:first'"),
    (["600", "Nowhere:sasrec:2020"], "bad row 'Nowhere:sasrec:2020'"),
    (["600", "Scientific:sasrec"], "bad row 'Scientific:sasrec'"),
    (["ten", "Scientific:sasrec:2020"], "BUDGET must be a positive number of seconds, got 'ten'"),
])
def test_gpu_solid_refuses_bad_rows_before_writing(tmp_path, args, message):
    (tmp_path / "data" / "Scientific").mkdir(parents=True)  # a dataset that is there: the row itself is bad
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_solid.sh"), *args], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "OUT": str(tmp_path / "out")}, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no out/, no runs/


def test_gpu_stage_refuses_missing_datasets_before_removing_the_staging():
    staged = (ROOT / ".gpu").exists()
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_stage.sh")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage: bash bench/gpu_stage.sh DATASET" in done.stderr
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_stage.sh"), "no-such-dataset"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "data/no-such-dataset: needs CTR samples and MiniLM vectors" in done.stderr
    assert (ROOT / ".gpu").exists() == staged  # an earlier staging is left as it was
