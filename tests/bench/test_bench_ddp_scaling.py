"""bench/ddp_scaling.py (issue 20): 1 and 2 gloo processes train the same config at the same global batch and the
table gives seconds per epoch and the speed-up; bad arguments are refused before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from semrec.config import RunConfig, TrainConfig
from semrec.typed import save_config
from tests.support import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "bench" / "ddp_scaling.py")


def test_ddp_scaling_smoke(tmp_path):
    tiny = make_tiny_dataset(tmp_path / "ds")
    config = tmp_path / "cfg.yaml"
    save_config(RunConfig(model="sasrec", dataset=str(tiny), out=str(tmp_path / "unused"),
                          model_params={"hidden_size": 16, "inner_size": 32, "max_len": 10},
                          train=TrainConfig(epochs=1, batch_size=32, device="cpu")), config)
    out = tmp_path / "ddp.md"
    done = subprocess.run([sys.executable, SCRIPT, "--config", str(config), "--epochs", "2", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.read_text().splitlines()
            if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert [(r[0], r[1], r[4]) for r in rows] == [("1", "32", "2"), ("2", "16", "2")]  # same global batch
    assert rows[0][3] == "1.00x" and float(rows[1][3].rstrip("x")) > 0 and 0 <= float(rows[1][5]) <= 1
    assert out.with_suffix(".png").stat().st_size > 1000
    assert not (tmp_path / "unused").exists()  # the runs live in a temporary folder


@pytest.mark.parametrize(("args", "message"), [
    (["--procs", "1,two"], "--procs: comma-separated process counts"),
    (["--procs", "0,1"], "must be at least 1"),
    (["--config", "nowhere.yaml"], "--config: nowhere.yaml not found"),
    (["--procs", "1,3"], "must split evenly over 3 processes"),
])
def test_bad_arguments_are_refused_before_any_training(tmp_path, args, message):
    done = subprocess.run([sys.executable, SCRIPT, *args, "--out", str(tmp_path / "x.md")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.md").exists()
