"""A bounded caching allocator for CPU tensors (``train.cpu_block_cache``; issue 20, kernel time).

A CPU training step frees and re-allocates the same multi-megabyte activations every step. With glibc they are
either mmapped (unmapped when freed, so every step faults in fresh pages that the kernel zero-fills: 20-60% of a
step's CPU time in ``bench/results/train_kernel.md``) or heap blocks (kept, but the heap fragments under varying
shapes and resident memory grows without bound). ``block_cache.cpp`` keeps the memory of freed tensors of 1 MiB and
more mapped for later requests, as PyTorch's CUDA caching allocator does on the GPU (best fit, block splitting,
coalescing): from 2 MiB up, free memory is kept as address-range extents that a request splits (the smallest extent
that holds it) and a freed block merges back into, so free memory serves any size up to its largest extent, not only
the sizes that were freed; 1-2 MiB blocks are reused whole by requests of their size class (four per power of two).
The bytes it maps (in use plus free) stay within a limit: a request that would go past it first unmaps as few free
bytes as make room (the smallest free blocks first, then the tail of a large extent), and a block freed while the
blocks in use alone exceed it is unmapped. The limit is (1 + ``train.cpu_block_cache_headroom``) times the most bytes
in use at once so far: these blocks never hold more than that headroom above the large tensors alive at once.
It is installed as PyTorch's CPU allocator (``c10::SetCPUAllocator``) from a small shared library built on first use
with the system's C++ compiler against the installed torch (about a second; kept under ``$SEMREC_CACHE/native/``).
Where it cannot be built or loaded (no compiler, not Linux), :func:`install` returns the reason and training goes on
with glibc's settings (:mod:`semrec.train.memory`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from semrec.io import cache_root

SOURCE = Path(__file__).with_name("block_cache.cpp")
MAX_HEADROOM = 1000.0  # (1 + headroom) x the in-use peak must stay a representable byte count
_LIBRARY: ctypes.CDLL | None = None


class Unavailable(RuntimeError):
    """The block cache cannot be built or loaded here (the message says why)."""


@dataclass(frozen=True)
class BlockCacheStats:
    """Counters of the block cache: requests served from free memory (``hits``) or by a fresh mapping
    (``misses``), unmappings of free blocks or extent tails to stay within the limit (``evictions``), bytes held
    free (``cached_bytes``) and mapped, free or in use (``mapped_bytes``), the most mapped and the most in use at
    once, and the ``limit`` on mapped bytes now."""

    hits: int
    misses: int
    evictions: int
    cached_bytes: int
    mapped_bytes: int
    peak_mapped_bytes: int
    peak_used_bytes: int
    limit: int


def _torch_paths() -> tuple[Path, Path, int]:
    import torch

    root = Path(torch.__file__).parent
    return root / "include", root / "lib", int(torch._C._GLIBCXX_USE_CXX11_ABI)


def _compiler(compiler: str | None) -> list[str]:
    """The C++ compiler command (``compiler``, else ``$CXX`` split into words, e.g. ``ccache g++``, else ``c++`` or
    ``g++`` on PATH); empty when there is none."""
    if compiler:
        return [compiler]
    if os.environ.get("CXX", "").strip():
        return shlex.split(os.environ["CXX"])
    found = shutil.which("c++") or shutil.which("g++")
    return [found] if found else []


def library_path(cxx: list[str] | None = None) -> Path:
    """Where the library for this source, torch build and compiler lives (a hash of them in the name)."""
    import torch

    include, lib, abi = _torch_paths()
    header = include / "c10" / "core" / "Allocator.h"
    parts = [SOURCE.read_bytes(), header.read_bytes() if header.exists() else b"",
             f"{torch.__version__}|{lib}|{abi}|{' '.join(cxx or [])}".encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return cache_root() / "native" / f"block_cache-{key}.so"


def build(compiler: str | None = None) -> Path:
    """Compile ``block_cache.cpp`` (once; reused while the source, torch and the compiler stay the same). Raises
    :class:`Unavailable` naming the reason (not Linux, no C++ compiler, torch's headers missing, compiler error, the
    cache folder not writable)."""
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"the CPU block cache needs Linux (this is {sys.platform})")
    cxx = _compiler(compiler)
    if not cxx:
        raise Unavailable("no C++ compiler found (set CXX, or install g++)")
    try:
        return _build(cxx)
    except OSError as exc:  # the cache folder (SEMREC_CACHE) cannot be made or written, the source is missing
        raise Unavailable(f"building the CPU block cache failed: {exc}") from None


def _build(cxx: list[str]) -> Path:
    target = library_path(cxx)
    if target.exists():
        return target
    include, lib, abi = _torch_paths()
    if not (include / "c10" / "core" / "CPUAllocator.h").exists():
        raise Unavailable(f"torch's C++ headers are missing under {include}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    command = [*cxx, "-O2", "-std=c++17", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{include}",
               str(SOURCE), f"-L{lib}", "-lc10", f"-Wl,-rpath,{lib}", "-o", tmp]
    try:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"compiling the CPU block cache failed: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise Unavailable(f"compiling the CPU block cache failed ({' '.join(cxx)}): {last}")
        os.replace(tmp, target)  # atomic: a concurrent build writes the same bytes
    finally:
        Path(tmp).unlink(missing_ok=True)  # an interrupted or failed build leaves nothing behind
    return target


def _load() -> ctypes.CDLL:
    global _LIBRARY
    if _LIBRARY is None:
        path = build()
        try:
            library = ctypes.CDLL(str(path))
        except OSError as exc:
            raise Unavailable(f"loading {path} failed: {exc}") from None
        library.semrec_block_cache_install.argtypes = [ctypes.c_uint64, ctypes.c_double, ctypes.c_int]
        library.semrec_block_cache_install.restype = ctypes.c_int
        library.semrec_block_cache_stats.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
        library.semrec_block_cache_stats.restype = None
        library.semrec_block_cache_empty.restype = None
        _LIBRARY = library
    return _LIBRARY


def install(headroom: float = 0.1, limit_mb: float | None = None, huge_pages: bool = True) -> str | None:
    """Make the block cache PyTorch's CPU allocator, keeping freed blocks while the blocks it maps (in use plus
    free) stay within ``(1 + headroom)`` times the most bytes in use at once so far, or within ``limit_mb`` MiB
    when given (calling again changes the limit); ``huge_pages``: transparent huge pages for blocks of 2 MiB and
    more. Tensors allocated before keep their own allocator. Returns None
    when installed, else the reason it is not (training then goes on with glibc's settings). Raises ValueError
    on a ``headroom`` outside 0..:data:`MAX_HEADROOM` or a ``limit_mb`` outside 1..2**40 (NaN included)."""
    if not 0 <= headroom <= MAX_HEADROOM:
        raise ValueError(f"the CPU block cache's headroom must be a number from 0 to {MAX_HEADROOM}, got {headroom}")
    if limit_mb is not None and not 1 <= limit_mb <= 2**40:
        raise ValueError(f"the CPU block cache's limit must be from 1 to 2**40 MiB, got {limit_mb}")
    try:
        library = _load()
    except Unavailable as exc:
        return str(exc)
    library.semrec_block_cache_install(int((limit_mb or 0) * 2**20), float(headroom), int(bool(huge_pages)))
    return None


def installed() -> bool:
    """True once :func:`install` succeeded in this process."""
    return _LIBRARY is not None


def stats() -> BlockCacheStats | None:
    """The cache's counters, or None when it is not installed."""
    if _LIBRARY is None:
        return None
    values = (ctypes.c_uint64 * 8)()
    _LIBRARY.semrec_block_cache_stats(values)
    return BlockCacheStats(*(int(v) for v in values))


def empty() -> None:
    """Unmap every block the cache holds free (no-op when not installed)."""
    if _LIBRARY is not None:
        _LIBRARY.semrec_block_cache_empty()
