"""Process-wide state of a training process, in one place.

:func:`prepare_process` applies the allocator settings of ``train`` (glibc's mmap threshold, PyTorch's
transparent huge pages; see :mod:`semrec.train.memory`). They belong to the process, not to a run: they must
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

import random
from typing import Any

import numpy as np
import torch

from semrec.config import TrainConfig
from semrec.train.memory import enable_huge_pages, fix_mmap_threshold, keep_freed_memory


def prepare_process(train: TrainConfig) -> dict[str, Any]:
    """Apply ``train.malloc_mmap_threshold_mb`` (ignored with ``train.malloc_reuse``), ``train.malloc_reuse`` and
    ``train.huge_pages`` to this process; call once, before
    loading data or building a model. Safe to call again (the same settings are applied again).

    Returns what was applied: ``mmap_threshold_mb`` (MiB, or None when not applied: 0 in the config, the user's
    ``MALLOC_MMAP_THRESHOLD_`` set, or not glibc) and ``huge_pages`` (False when off, not Linux, or the user's
    ``THP_MEM_ALLOC_ENABLE`` set) and ``malloc_reuse`` (False when off, not glibc, or the user's ``MALLOC_MMAP_MAX_``
    / ``MALLOC_TRIM_THRESHOLD_`` set)."""
    reuse = bool(train.malloc_reuse) and keep_freed_memory()
    fixed = not train.malloc_reuse and fix_mmap_threshold(train.malloc_mmap_threshold_mb)
    huge = bool(train.huge_pages) and enable_huge_pages()
    return {"mmap_threshold_mb": train.malloc_mmap_threshold_mb if fixed else None, "huge_pages": huge,
            "malloc_reuse": reuse}


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator (``seed`` mod 2**32) and PyTorch's (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
