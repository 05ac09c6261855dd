"""The CPU block cache (semrec.train.block_cache): freed blocks of 1 MiB and more are handed to the next request
of their size class, the bytes it maps stay within its limit, training numbers do not depend on it, and where it
cannot be built the process goes on with glibc's settings and says why. Each probe runs in its own process: the
cache becomes PyTorch's CPU allocator for the rest of the process that installs it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from semrec.config import RunConfig, TrainConfig, save_config
from semrec.errors import SemrecError
from semrec.train import block_cache, process
from tests.support import make_tiny_dataset

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the block cache is Linux only")

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20
needs_compiler = pytest.mark.skipif(
    not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")),
    reason="no C++ compiler here: the block cache cannot be built (training uses glibc's settings, tested below)")


def probe(code: str, env: dict | None = None, timeout: int = 300) -> dict:
    """Run ``code`` in a fresh interpreter (prelude: torch, block_cache, ``stats()``); its last line is JSON."""
    prelude = ("import json, torch\nfrom semrec.train import block_cache\n"
               "def stats():\n    return block_cache.stats().__dict__\n")
    done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_compiler
def test_freed_blocks_are_reused_by_their_size_class_and_hold_what_is_written():
    out = probe("""
assert block_cache.install(limit_mb=64) is None
a = torch.full((2 * 2**18,), 3.0)          # 2 MiB of float32
first = a.data_ptr()
del a
b = torch.empty(2 * 2**18 - 1000)          # a little smaller: the same class, the same block
same = b.data_ptr() == first
b.fill_(7.0)
c = torch.ones(2**16)                      # 256 KiB: below 1 MiB, not the cache's
small = stats()
print(json.dumps({"same": same, "b": float(b.sum()), "c": float(c.sum()), **small}))
""")
    assert out["same"] and out["b"] == 7.0 * (2 * 2**18 - 1000) and out["c"] == 2**16
    assert out["hits"] == 1 and out["misses"] == 1  # the 256 KiB tensor went to PyTorch's own allocation


@needs_compiler
def test_the_bytes_mapped_stay_within_a_fixed_limit():
    out = probe("""
assert block_cache.install(limit_mb=8) is None
live = [torch.ones(2**19) for _ in range(20)]    # 20 blocks of 2 MiB in use: 40 MiB, over the limit
over = stats()
del live                                          # freed: only 8 MiB of them are kept
after = stats()
again = [torch.empty(2**19) for _ in range(3)]   # served from the kept blocks
print(json.dumps({"over": over, "after": after, "again": stats()}))
""")
    assert out["over"]["mapped_bytes"] == 40 * MiB and out["over"]["cached_bytes"] == 0
    assert out["after"]["mapped_bytes"] <= 8 * MiB and out["after"]["cached_bytes"] == out["after"]["mapped_bytes"]
    assert out["after"]["evictions"] >= 16
    assert out["again"]["hits"] - out["after"]["hits"] == 3 and out["again"]["misses"] == out["after"]["misses"]


@needs_compiler
def test_the_headroom_limit_follows_the_most_in_use():
    out = probe("""
assert block_cache.install(headroom=0.5) is None
blocks = [torch.ones(2**20) for _ in range(10)]  # 10 x 4 MiB in use: peak 40 MiB, limit 60 MiB
del blocks                                        # all kept (40 <= 60)
kept = stats()
big = torch.ones(16 * 2**20)                      # 64 MiB, a new class: in use 64, limit 96, mapped 40 + 64
after = stats()
print(json.dumps({"kept": kept, "after": after}))
""")
    assert out["kept"]["cached_bytes"] == 40 * MiB and out["kept"]["limit"] == 60 * MiB
    after = out["after"]
    assert after["peak_used_bytes"] == 64 * MiB and after["limit"] == 96 * MiB
    # 104 -> 96 MiB: 8 MiB of the free 40 unmapped (two 4 MiB blocks, or the tail of the extent they merged into)
    assert after["mapped_bytes"] == after["limit"] and after["cached_bytes"] == 32 * MiB


TRAIN = """
import json, sys
from semrec.train import block_cache
from semrec.config import RunConfig, load_config
from semrec.train.process import prepare_process
from semrec.train.trainer import Trainer
cfg = load_config(RunConfig, sys.argv[1], [("train.cpu_block_cache", sys.argv[2] == "on"), ("out", sys.argv[3])])
applied = prepare_process(cfg.train)
Trainer(cfg).fit()
stats = block_cache.stats()
print(json.dumps({"applied": applied["cpu_block_cache_headroom"], "hits": stats.hits if stats else 0}))
"""


@needs_compiler
def test_training_gives_the_same_numbers_with_and_without_the_cache(tmp_path):
    # hidden 128 x 10 positions x batch 256: activations of 1.25 MiB and more, so the cache serves them
    data = make_tiny_dataset(tmp_path / "ds")
    cfg = RunConfig(model="sasrec", dataset=str(data), out=str(tmp_path / "unused"),
                    model_params={"hidden_size": 128, "inner_size": 256, "max_len": 10},
                    train=TrainConfig(epochs=3, batch_size=256, lr=3e-3, warmup_steps=2, progress=False,
                                      device="cpu"))
    save_config(cfg, tmp_path / "cfg.yaml")
    runs = {}
    for mode in ("on", "off"):
        done = subprocess.run([sys.executable, "-c", TRAIN,
                               str(tmp_path / "cfg.yaml"), mode, str(tmp_path / mode)], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        runs[mode] = (out, (tmp_path / mode / "metrics.jsonl").read_text())
    assert runs["on"][0]["applied"] == 0.05 and runs["on"][0]["hits"] > 0
    assert runs["off"][0] == {"applied": None, "hits": 0}

    def numbers(text: str) -> list[dict]:
        rows = [json.loads(line) for line in text.splitlines()]
        return [{k: v for k, v in r.items() if not any(w in k for w in ("time", "second", "rss", "_s"))}
                for r in rows]

    on = numbers(runs["on"][1])
    assert len(on) == 3 and {"loss", "valid_ndcg@10"} <= set(on[-1])
    assert on == numbers(runs["off"][1])


def test_without_a_compiler_the_reason_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(block_cache.Unavailable, match="compiling the CPU block cache failed"):
        block_cache.build(compiler=str(tmp_path / "no-such-c++"))
    monkeypatch.setattr(block_cache.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(block_cache.Unavailable, match="no C\\+\\+ compiler found"):
        block_cache.build()
    assert not list((tmp_path / "cache").rglob("*.so"))  # nothing half-written is left


def test_prepare_process_goes_on_without_the_cache_and_says_why_once(monkeypatch, caplog):
    monkeypatch.setattr(process, "block_cache_install", lambda headroom, **k: "no C++ compiler found (set CXX)")
    monkeypatch.setattr(process, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="semrec.train.process"):
        first = process.prepare_process(TrainConfig(huge_pages=False, malloc_mmap_threshold_mb=0))
        second = process.prepare_process(TrainConfig(huge_pages=False, malloc_mmap_threshold_mb=0))
    assert first["cpu_block_cache_headroom"] is None and second["cpu_block_cache_headroom"] is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "no C++ compiler found" in warnings[0] and "cpu_block_cache=false" in warnings[0]


@pytest.mark.parametrize("headroom", [-0.1, float("nan"), float("inf"), 1e30, "lots"])
def test_bad_headroom_is_named(headroom):
    with pytest.raises(SemrecError, match="train.cpu_block_cache_headroom must be a number >= 0"):
        process.prepare_process(TrainConfig(huge_pages=False, malloc_mmap_threshold_mb=0,
                                            cpu_block_cache_headroom=headroom))
    if isinstance(headroom, float):
        with pytest.raises(ValueError, match="headroom must be a number from 0 to"):
            block_cache.install(headroom=headroom)
    with pytest.raises(ValueError, match="limit must be from 1 to"):
        block_cache.install(limit_mb=0)


@needs_compiler
def test_making_room_unmaps_the_smallest_free_blocks_then_only_the_tail_of_a_large_extent():
    out = probe("""
assert block_cache.install(limit_mb=100) is None
big = torch.ones(16 * 2**20)                          # 64 MiB (a softmax's logits, asked for every step)
small = [torch.ones(3 * 2**17) for _ in range(6)]     # 6 x 1.5 MiB: whole blocks, never merged; 73 MiB in use
del big, small                                        # all free
other = torch.ones(20 * 2**20)                        # 80 MiB: no free extent holds it; 73 + 80 > 100
after = stats()
print(json.dumps({"after": after, "other": float(other.sum())}))
""")
    after = out["after"]
    # 53 MiB must go: the six small blocks (9 MiB), then 44 MiB off the end of the 64 MiB extent (20 MiB stay)
    assert after["mapped_bytes"] == 100 * MiB and after["cached_bytes"] == 20 * MiB
    assert after["evictions"] == 7 and after["misses"] == 8 and out["other"] == 20 * 2**20


@needs_compiler
def test_a_free_extent_is_split_for_smaller_requests_and_merged_again_when_they_are_freed():
    out = probe("""
assert block_cache.install(limit_mb=1024) is None
a = torch.ones(8 * 2**20)                             # 32 MiB
first = a.data_ptr()
del a
parts = [torch.full((2**21,), float(i)) for i in range(4)]   # 4 x 8 MiB, split off the 32 MiB extent in order
ptrs = [p.data_ptr() - first for p in parts]
sums = [float(p.sum()) for p in parts]                # each holds its own value: the pieces do not overlap
mid = stats()
del parts                                             # the four pieces merge back into one 32 MiB extent
b = torch.empty(8 * 2**20)
print(json.dumps({"ptrs": ptrs, "sums": sums, "mid": mid, "same": b.data_ptr() == first, "end": stats()}))
""")
    assert out["ptrs"] == [0, 8 * MiB, 16 * MiB, 24 * MiB]
    assert out["sums"] == [float(i * 2**21) for i in range(4)]
    assert out["mid"]["misses"] == 1 and out["mid"]["hits"] == 4 and out["mid"]["mapped_bytes"] == 32 * MiB
    assert out["same"] and out["end"]["misses"] == 1 and out["end"]["mapped_bytes"] == 32 * MiB


@needs_compiler
def test_random_allocations_never_overlap_and_the_books_balance():
    # sizes from 1 to 40 MiB (both pools), random frees: every live tensor keeps its own value, the bytes mapped
    # equal the bytes in use plus the bytes free, and stay within the limit whenever what is in use allows it
    out = probe("""
import random
rng = random.Random(7)
assert block_cache.install(headroom=0.1) is None
live, errors, over = {}, 0, 0
for step in range(1500):
    if live and (rng.random() < 0.45 or len(live) > 40):
        key = rng.choice(list(live))
        t = live.pop(key)
        errors += int(t.min() != key or t.max() != key)
        del t
    else:
        n = rng.randint(2**18, 10 * 2**20)              # float32: 1 MiB to 40 MiB
        live[step] = torch.full((n,), float(step))
    s = stats()
    in_use = sum(t.numel() * 4 for t in live.values())
    errors += int(s["mapped_bytes"] - s["cached_bytes"] < in_use)
    over += int(s["mapped_bytes"] > s["limit"] and s["cached_bytes"] > 0)
errors += sum(int(t.min() != k or t.max() != k) for k, t in live.items())
del live
block_cache.empty()
end = stats()
print(json.dumps({"errors": errors, "over": over, "end": end}))
""", timeout=600)
    assert out["errors"] == 0 and out["over"] == 0
    assert out["end"]["mapped_bytes"] == 0 and out["end"]["cached_bytes"] == 0
    assert out["end"]["hits"] > out["end"]["misses"]


@needs_compiler
def test_a_failed_large_allocation_does_not_raise_the_limit():
    out = probe("""
assert block_cache.install(headroom=0.05) is None
a = torch.ones(2**20)                                 # 4 MiB in use
before = stats()
try:
    torch.empty(2**50, dtype=torch.uint8)             # 1 PiB: no mapping, PyTorch's own error
except RuntimeError:
    pass
print(json.dumps({"before": before, "after": stats()}))
""")
    assert out["after"]["peak_used_bytes"] == out["before"]["peak_used_bytes"] == 4 * MiB
    assert out["after"]["limit"] == out["before"]["limit"]


def test_an_unwritable_cache_folder_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(block_cache.Unavailable, match="building the CPU block cache failed"):
        block_cache.build()


@needs_compiler
def test_cxx_may_be_a_command_of_several_words(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    monkeypatch.setenv("CXX", f"env {compiler}")
    built = block_cache.build()
    assert built.exists() and built.parent == tmp_path / "cache" / "native"
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temporary file left


@needs_compiler
def test_a_forked_child_allocates_and_frees_through_the_cache():
    out = probe("""
import os
torch.set_num_threads(1)                               # no OpenMP pool: it is not fork-safe (not the cache's matter)
assert block_cache.install(headroom=0.05) is None
a = torch.ones(2**20)
del a                                                  # one free 4 MiB block in the parent's cache
pid = os.fork()
if pid == 0:                                           # the child: the cache works on its copy
    b = torch.ones(2**20)
    ok = float(b.sum()) == 2**20 and block_cache.stats().hits == 1
    del b
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status)}))
""", timeout=60)
    assert out == {"child_exit": 0}
