"""Training-curve PNG: training loss and the validation metric per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from semrec.io import atomic_path  # noqa: E402


def plot_curve(history: list[dict[str, Any]], path: str | Path, metric: str = "ndcg@10") -> None:
    epochs = [r["epoch"] for r in history]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(epochs, [r.get("loss", float("nan")) for r in history], color="tab:blue", label="train loss")
    left.set_xlabel("epoch")
    left.set_ylabel("train loss", color="tab:blue")
    right = left.twinx()
    points = [(r["epoch"], r[f"valid_{metric}"]) for r in history if f"valid_{metric}" in r]
    if points:
        right.plot(*zip(*points), color="tab:orange", marker="o", label=f"valid {metric}")
    right.set_ylabel(f"valid {metric}", color="tab:orange")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
