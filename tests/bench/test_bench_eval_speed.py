"""bench/eval_speed.py (issue 20): our side of the pass, the RecBole atomic file, and refused arguments. The RecBole
side needs its own virtualenv and is exercised by the benchmark itself, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "bench" / "eval_speed.py")


def test_our_pass_and_the_atomic_file(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds")
    done = subprocess.run([sys.executable, SCRIPT, str(ds), "--recbole-python", sys.executable, "--ours-only",
                           "--repeats", "1", "--max-len", "8"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["users"] > 0 and out["seconds"] > 0 and 0 <= out["ndcg@10"] <= 1
    sys.path.insert(0, str(ROOT / "bench"))
    import eval_speed

    name = eval_speed.write_atomic_files(ds, tmp_path / "atomic")
    lines = (tmp_path / "atomic" / name / f"{name}.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    from semrec.data.dataset import CanonicalDataset

    first = CanonicalDataset.load(ds).sequences[0]
    assert [line.split("\t")[1] for line in lines[1:1 + len(first)]] == [f"i{i}" for i in first]


def test_bad_arguments_are_refused(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, str(tmp_path), "--recbole-python", sys.executable],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "is not a prepared dataset" in done.stderr
    ds = make_tiny_dataset(tmp_path / "ds")
    done = subprocess.run([sys.executable, SCRIPT, str(ds), "--recbole-python", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "does not exist" in done.stderr
