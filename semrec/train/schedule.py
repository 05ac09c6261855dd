"""The learning-rate schedule of the trainer: linear warm-up, then constant, linear or cosine decay."""

from __future__ import annotations

import math
from collections.abc import Callable

from semrec.errors import SemrecError

SCHEDULES = ("constant", "linear", "cosine")


def lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step s, for ``torch.optim.lr_scheduler.LambdaLR``.

    HF-style warm-up: s / ``warmup`` for s < ``warmup`` (0 at step 0), then 1 ('constant') or a decay from 1 at
    ``warmup`` to 0 at ``total`` steps ('linear', 'cosine'; held at 0 past ``total``).
    Raises SemrecError for any other ``schedule``."""
    if schedule not in SCHEDULES:
        raise SemrecError(f"unknown schedule '{schedule}' (constant | linear | cosine)")

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
