"""The trainer's allocator settings: glibc keeps large blocks on mmap after one is freed (the dynamic threshold
that fragments the heap over long CPU runs is switched off), PyTorch backs large CPU tensors with transparent
huge pages, freed heap pages go back to the system, the user's environment wins, and 0 opts out."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from semrec.train.memory import peak_rss_gb

TRIM_PROBE = """
import ctypes, sys
from semrec.train.memory import fix_mmap_threshold, release_free_heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss_mib():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
fix_mmap_threshold(4)  # as the trainer: 1 MiB blocks come from the heap
blocks = [libc.malloc(1 << 20) for _ in range(256)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)  # resident
for b in blocks[:-1]:  # the last one stays live, so the heap top cannot shrink by itself
    libc.free(b)
freed = rss_mib()
released = release_free_heap() if sys.argv[1] == "trim" else False
print(released, round(freed - rss_mib()))
"""

THP_PROBE = """
import sys
import torch
from semrec.train.memory import enable_huge_pages
applied = enable_huge_pages()
block = torch.ones(64 << 18)  # 64 MiB, PyTorch's first large CPU allocation in this process
huge_kb = [int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages")]
print(applied, huge_kb[0] > 0)
"""

PROBE = """
import ctypes, sys
from semrec.train.memory import fix_mmap_threshold
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = fix_mmap_threshold(float(sys.argv[1]))
def on_mmap(size):
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblkhd > before
    libc.free(block)
    return mapped
print(applied, on_mmap(8 << 20), on_mmap(8 << 20), on_mmap(1 << 20))
"""


def _glibc_with_mallinfo2() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


def _probe(threshold_mb: float, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(threshold_mb)], capture_output=True, text=True,
                         env={**clean, **env}, check=True).stdout
    return out.split()


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_fixed_threshold_keeps_large_blocks_on_mmap():
    # glibc default: freeing an 8 MiB mmapped block raises the threshold, the next 8 MiB block comes from the heap
    assert _probe(0) == ["False", "True", "False", "False"]
    # fixed at 4 MiB: every 8 MiB block is mmapped (and unmapped when freed); 1 MiB blocks use the heap
    assert _probe(4) == ["True", "True", "True", "False"]
    # the user's own glibc tunable (512 KiB) wins: nothing applied, 1 MiB blocks mmapped as the user asked
    assert _probe(4, MALLOC_MMAP_THRESHOLD_=str(512 << 10)) == ["False", "True", "True", "True"]


def test_peak_rss_is_reported_where_the_platform_has_it():
    rss = peak_rss_gb()
    if sys.platform.startswith("linux"):
        assert rss is not None and 0.01 < rss < 1024


def _thp_mode() -> str:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return "absent"
    return text.split("[", 1)[1].split("]", 1)[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux feature")
def test_huge_pages_back_large_tensors_unless_the_user_chose():
    clean = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    run = lambda env: subprocess.run([sys.executable, "-c", THP_PROBE], capture_output=True, text=True,  # noqa: E731
                                     env=env, check=True).stdout.split()
    applied, huge = run(clean)
    assert applied == "True"
    if _thp_mode() in ("always", "madvise"):  # the kernel honours madvise(MADV_HUGEPAGE)
        assert huge == "True"
    applied, huge = run({**clean, "THP_MEM_ALLOC_ENABLE": "0"})  # the user's choice is kept
    assert applied == "False"
    if _thp_mode() == "madvise":  # only PyTorch's madvise would have asked for huge pages
        assert huge == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_release_free_heap_hands_freed_heap_pages_back():
    run = lambda mode: subprocess.run([sys.executable, "-c", TRIM_PROBE, mode], capture_output=True,  # noqa: E731
                                      text=True, check=True).stdout.split()
    kept, kept_mib = run("keep")  # without it, 256 MiB of freed heap stay resident
    assert kept == "False" and int(kept_mib) < 32
    released, released_mib = run("trim")
    assert released == "True" and int(released_mib) > 200


REUSE_PROBE = """
import ctypes, resource, sys
from semrec.train.memory import free_heap_bytes, keep_freed_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = keep_freed_memory()
size = 64 << 20  # far above glibc's largest mmap threshold (32 MiB)
def faults_of_one_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)  # a step writes its tensor
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
first, second = faults_of_one_step(), faults_of_one_step()
print(applied, first > 10000, second < 1000, free_heap_bytes() >= size)
"""


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_reuse_serves_the_next_step_from_the_pages_the_last_one_freed():
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")}
    run = lambda env: subprocess.run([sys.executable, "-c", REUSE_PROBE], capture_output=True, text=True,  # noqa: E731
                                     env=env, check=True).stdout.split()
    # applied: the 64 MiB block comes from the heap, stays resident when freed, and the second "step" reuses its
    # pages (no fresh zero-filled pages: a few faults instead of 16,384)
    assert run(clean) == ["True", "True", "True", "True"]
    # without it (the user's own glibc tunable wins: nothing applied) the block is mmapped, unmapped when freed
    # and faulted in again by the next step
    applied, first, second, kept = run({**clean, "MALLOC_MMAP_MAX_": "65536"})
    assert (applied, first, second, kept) == ("False", "True", "False", "False")
