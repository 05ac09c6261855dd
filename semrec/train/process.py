"""Process-wide state of a training process, in one place.

:func:`prepare_process` applies the allocator settings of ``train`` (the CPU block cache of
:mod:`semrec.train.block_cache` for tensors of 1 MiB and more; glibc's mmap threshold, PyTorch's transparent huge
pages; see :mod:`semrec.train.memory`). They belong to the process, not to a run: they must
be in place before the first large allocation (PyTorch reads ``THP_MEM_ALLOC_ENABLE`` once), and cannot be
undone or differ between two trainers of one process. So the entry points (``semrec train / pretrain /
finetune / quickstart``, the bench scripts) call it first, and :class:`~semrec.train.trainer.Trainer` never
does: a Trainer built from Python without it trains to the same numbers, with glibc's and PyTorch's default
allocators (more resident memory on long CPU runs).

:func:`seed_everything` seeds Python's, NumPy's and PyTorch's global generators. The Trainer calls it with its
run's seed (plus its rank): a run's initial weights, batches and dropout come from those generators, its
checkpoints save and restore them, so the seed is part of the run, not of the process.
"""

from __future__ import annotations

import logging
import random
import sys
from typing import Any

import numpy as np
import torch

from semrec.config import TrainConfig
from semrec.errors import SemrecError
from semrec.train.block_cache import MAX_HEADROOM
from semrec.train.block_cache import install as block_cache_install
from semrec.train.memory import enable_huge_pages, fix_mmap_threshold, keep_freed_memory

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()  # reasons the block cache is unavailable, each logged once per process


def prepare_process(train: TrainConfig) -> dict[str, Any]:
    """Apply ``train.cpu_block_cache`` (Linux; with ``train.cpu_block_cache_headroom``),
    ``train.malloc_mmap_threshold_mb`` (ignored with ``train.malloc_reuse``), ``train.malloc_reuse`` and
    ``train.huge_pages`` to this process; call once, before
    loading data or building a model. Safe to call again (the same settings are applied again).

    Returns what was applied: ``mmap_threshold_mb`` (MiB, or None when not applied: 0 in the config, the user's
    ``MALLOC_MMAP_THRESHOLD_`` set, or not glibc) and ``huge_pages`` (False when off, not Linux, or the user's
    ``THP_MEM_ALLOC_ENABLE`` set) and ``malloc_reuse`` (False when off, not glibc, or the user's ``MALLOC_MMAP_MAX_``
    / ``MALLOC_TRIM_THRESHOLD_`` set) and ``cpu_block_cache_headroom`` (the headroom when the CPU block cache of
    :mod:`semrec.train.block_cache` is installed; None when off or unavailable here, with the reason logged once).
    Raises SemrecError on a negative or non-finite ``train.cpu_block_cache_headroom``."""
    headroom = train.cpu_block_cache_headroom
    if not (isinstance(headroom, (int, float)) and 0 <= headroom <= MAX_HEADROOM):
        raise SemrecError(f"train.cpu_block_cache_headroom must be a number >= 0 (at most {MAX_HEADROOM:g}), got "
                          f"{headroom!r}")
    reuse = bool(train.malloc_reuse) and keep_freed_memory()
    fixed = not train.malloc_reuse and fix_mmap_threshold(train.malloc_mmap_threshold_mb)
    huge = bool(train.huge_pages) and enable_huge_pages()
    block_cache = False
    if train.cpu_block_cache and sys.platform.startswith("linux"):  # elsewhere glibc's settings do not apply either
        reason = block_cache_install(headroom, huge_pages=bool(train.huge_pages))
        block_cache = reason is None
        if reason is not None and reason not in _WARNED:
            _WARNED.add(reason)
            logger.warning("train.cpu_block_cache: %s; training goes on with glibc's allocator settings "
                           "(train.cpu_block_cache=false silences this)", reason)
    return {"mmap_threshold_mb": train.malloc_mmap_threshold_mb if fixed else None, "huge_pages": huge,
            "malloc_reuse": reuse, "cpu_block_cache_headroom": headroom if block_cache else None}


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator (``seed`` mod 2**32) and PyTorch's (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
