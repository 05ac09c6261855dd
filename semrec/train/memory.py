"""Host-memory hygiene for long CPU trainings.

glibc's malloc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), so after
the first steps the multi-megabyte activations of every step come from the heap, which fragments: a
CCFRec run on Scientific at batch 400 grew from 3.4 GB peak RSS after a few steps to 7.2 GB by epoch 10.
A fixed threshold keeps large tensors on mmap (returned to the system when freed), which stops most of the growth.
Fresh mmapped blocks cost page faults (a 20-step CCFRec probe at batch 400 was 12% slower); PyTorch's
transparent huge pages for CPU tensors (THP_MEM_ALLOC_ENABLE) cut those faults 512-fold and win the time back.
The blocks below the threshold still come from the heap, which keeps freed pages resident: between CCFRec
steps at batch 400 about 1 GB of the heap was free but resident, and the in-step peak kept creeping as the heap
fragmented (4.02 to 4.26 GiB between epochs 19 and 29 of a long run). ``release_free_heap`` after each step
(glibc's malloc_trim) hands those pages back; bench/results/train_memory.md: peak 3.35 GiB over 90 steps with it,
4.08 GiB without, and no slower (the next step re-faults the pages it needs).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameter numbers (malloc.h)
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"  # glibc's own tunable; when set, the user's value wins
TORCH_THP = "THP_MEM_ALLOC_ENABLE"  # PyTorch: 2 MiB-aligned CPU tensors >= 2 MiB, madvise(MADV_HUGEPAGE)


@functools.cache
def _glibc_function(name: str, argtypes: tuple, restype: type) -> Callable[..., int] | None:
    """A glibc function with its signature set, or None off Linux / without glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = list(argtypes), restype
    return function


def fix_mmap_threshold(threshold_mb: float) -> bool:
    """Serve allocations of ``threshold_mb`` MiB and more with mmap (glibc only).

    Returns True when the setting was applied; False when ``threshold_mb`` <= 0, the user set
    ``MALLOC_MMAP_THRESHOLD_`` already, or the C library is not glibc (macOS, Windows, musl).
    """
    if threshold_mb <= 0 or ENV_OVERRIDE in os.environ:
        return False
    mallopt = _glibc_function("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, int(threshold_mb * 2**20)) == 1


def keep_freed_memory() -> bool:
    """Serve every allocation from glibc's heap and never return its free pages on its own (glibc only).

    ``mallopt(M_MMAP_MAX, 0)`` (no mmapped blocks, so a freed block is never unmapped) and the largest trim
    threshold: a training step's tensors reuse the pages the previous step freed instead of faulting in fresh,
    zero-filled ones (the kernel's share of a step's CPU time, see bench/results/train_kernel.md). The price is
    resident memory: freed pages stay, and the heap can fragment over a long run; :func:`release_free_heap`
    (``train.malloc_trim``) hands them back. Returns False where not applied (not glibc, or the user set
    ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_``: their values are kept).
    """
    if {"MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    mallopt = _glibc_function("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    return mallopt is not None and mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def free_heap_bytes() -> int | None:
    """Bytes of glibc's heap that are free (``mallinfo2().fordblks``, all arenas); None where unknown."""
    mallinfo2 = _glibc_function("mallinfo2", (), _MallInfo2)
    return None if mallinfo2 is None else int(mallinfo2().fordblks)


def enable_huge_pages() -> bool:
    """Ask PyTorch to back large CPU tensors with transparent huge pages (Linux).

    PyTorch reads the variable once, at its first large CPU allocation: call this before one. Returns False
    off Linux or when the user set ``THP_MEM_ALLOC_ENABLE`` (their value is kept).
    """
    if not sys.platform.startswith("linux") or TORCH_THP in os.environ:
        return False
    os.environ[TORCH_THP] = "1"
    return True


def release_free_heap() -> bool:
    """Return the free pages of glibc's heap to the system (``malloc_trim(0)``); False where unavailable.

    Cheap (a walk over the free chunks): the trainer calls it after every CPU training step, so the memory a
    step freed is not kept resident into the next one.
    """
    malloc_trim = _glibc_function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


def peak_rss_gb() -> float | None:
    """Peak resident set size of this process so far, in GB (2**30 bytes); None where unknown (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux
