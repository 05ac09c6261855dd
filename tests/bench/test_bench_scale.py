"""bench/scale.py (issue 20): a smoke run writes its table and plot; bad arguments are refused before any cell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scale_smoke_writes_the_table_and_plot(tmp_path):
    out = tmp_path / "scale.md"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--items", "300", "--losses",
                           "full,chunked,in_batch", "--steps", "1", "--windows", "2", "--max-len", "5", "--chunk", "64",
                           "--dense-limit-gb", "1e-9", "--allocators", "glibc,reuse", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 300 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["glibc", "reuse"]  # one row per allocator
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2].startswith("skipped: logits") and cells[3].startswith("skipped")  # over the dense limit
        times, rss = [float(c) for c in cells[4::2]], [float(c) for c in cells[5::2]]
        assert len(times) == len(rss) == 2 and min(times) >= 0 and min(rss) > 0  # chunked and in_batch measured
    assert out.with_suffix(".png").stat().st_size > 1000


def test_bad_scale_arguments_are_refused(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--losses", "full,softmax", "--out",
                           str(tmp_path / "x.md")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "--losses: known full, chunked" in done.stderr and "got softmax" in done.stderr
    assert not (tmp_path / "x.md").exists()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--allocators", "glibc,jemalloc", "--out",
                           str(tmp_path / "x.md")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "--allocators: glibc, reuse and/or cache" in done.stderr
    assert not (tmp_path / "x.md").exists()


def test_a_device_this_machine_lacks_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has a CUDA GPU: --device cuda is valid here")
    for device in ("cuda", "tpu"):
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--device", device, "--out",
                               str(tmp_path / "x.md")], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 2 and "--device: cpu, or cuda" in done.stderr and repr(device) in done.stderr
        assert not (tmp_path / "x.md").exists()
