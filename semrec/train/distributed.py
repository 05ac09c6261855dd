"""DistributedDataParallel set-up under ``torchrun`` (gloo on CPU, nccl on GPU).

Both functions change process-wide state (the default process group, the current CUDA device); a process
trains as one rank, so they are idempotent: a second Trainer in the same process finds the group in place."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) alone; under ``torchrun`` (``WORLD_SIZE`` > 1) the default
    process group is initialised once (nccl when CUDA is available, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def rank_device(requested: str | None, world: int) -> torch.device:
    """The device this rank trains on: ``requested`` (e.g. 'cpu', 'cuda'), default cuda when available. Under
    DDP on CUDA, the GPU of ``LOCAL_RANK``, made the current device so that this rank's collectives run on it."""
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device
