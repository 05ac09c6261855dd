"""bench/train_speed.py allocator settings: MiB[+thp][+trim|+trimN][+reuse], refused with a clear message otherwise."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_train_speed", ROOT / "bench" / "train_speed.py")
train_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_speed)


def _settings(threshold, thp=False, trim=False, every=1, reuse=False, cache=False, headroom=0.05):
    return [("train.malloc_mmap_threshold_mb", threshold), ("train.huge_pages", thp), ("train.malloc_trim", trim),
            ("train.malloc_trim_every", every), ("train.malloc_reuse", reuse), ("train.cpu_block_cache", cache),
            ("train.cpu_block_cache_headroom", headroom)]


def test_allocator_settings_parse():
    assert train_speed.parse_allocator("4+thp+trim") == _settings(4.0, thp=True, trim=True)
    assert train_speed.parse_allocator("0") == _settings(0.0)
    assert train_speed.parse_allocator("16+thp") == _settings(16.0, thp=True)
    assert train_speed.parse_allocator("0+reuse+trim10") == _settings(0.0, trim=True, every=10, reuse=True)
    # the CPU block cache at the trainer's default headroom, or at one given
    assert train_speed.parse_allocator("4+thp+trim+cache") == _settings(4.0, thp=True, trim=True, cache=True)
    assert train_speed.parse_allocator("4+cache0.2") == _settings(4.0, cache=True, headroom=0.2)


@pytest.mark.parametrize("bad", ["thp", "4+huge", "-1+thp", "", "4+thp+", "0+trim0", "0+trimx", "0+trim+trim5",
                                 "4+cache-1", "4+cachex", "4+cache+cache0.1"])
def test_bad_allocator_setting_is_refused(bad):
    with pytest.raises(SystemExit, match="--allocators"):
        train_speed.parse_allocator(bad)


def test_bad_allocator_fails_before_any_measurement():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_speed.py"), "--allocators", "4+thp,4+typo",
                           "--out", str(ROOT / "bench" / "results" / "never-written.md")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "'4+typo'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (ROOT / "bench" / "results" / "never-written.md").exists()


def test_unknown_model_fails_before_any_measurement(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_speed.py"), "--models",
                           "sasrec@model_params.ce_chunk_size=4096,sasrek", "--out", str(tmp_path / "t.md")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "'sasrek'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.md").exists()
