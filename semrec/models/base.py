"""The scoring contract every model implements, so one trainer / evaluator / exporter serves all.

* ``item_embeddings()`` -> ``[N+1, d]`` candidate-side item vectors (row 0 = padding), computed once per
  evaluation;
* ``encode_sequence(items, lengths, history_table=None)`` -> ``[B, d]`` user vectors from right-padded
  histories ``[B, L]``; ``history_table`` is the optional input-side table from ``eval_tables()``;
* ``score(user, table)`` -> ``[B, N+1]`` (dot product or cosine, per model);
* ``loss(batch)`` -> ``(scalar, {name: float})`` on a training batch.
A model receives a typed config and tensors, never a dataset object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ItemInputs:
    """What a model may need about items, as tensors (built by the data layer, not the model)."""

    n_items: int
    codes: torch.Tensor | None = None  # [N+1, levels] long, row 0 = -1
    codebook_sizes: list[int] | None = None
    text: torch.Tensor | None = None  # [N+1, views, dim] float (frozen text vectors), row 0 = 0
    popularity: torch.Tensor | None = None  # [N+1] training frequency
    plm: torch.Tensor | None = None  # [N+1, dim] float raw PLM vectors of one text view, row 0 = 0


class SequentialRecommender(nn.Module):
    """Base class implementing the shared parts of the contract."""

    sample_style: ClassVar[str] = "sequence"  # "sequence": all-position loss; "prefix": last position only
    similarity: ClassVar[str] = "dot"  # "dot" or "cosine"

    def item_embeddings(self) -> torch.Tensor:
        raise NotImplementedError

    def eval_tables(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(candidate table, input-side table or None), computed once per evaluation."""
        return self.item_embeddings(), None

    def encode_sequence(self, items: torch.Tensor, lengths: torch.Tensor,
                        history_table: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def score(self, user: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        if self.similarity == "cosine":
            return F.normalize(user, dim=-1) @ F.normalize(table, dim=-1).T
        return user @ table.T

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to back-propagate, named detached parts for the log). Parts stay tensors: the trainer sums them
        on the device and reads them once per epoch, so a step needs no host sync."""
        raise NotImplementedError

    def begin_epoch(self, epoch: int) -> None:
        """Called by the trainer before each training epoch (staged schedules, e.g. VQ-Rec fine-tuning).

        Must depend only on ``epoch`` and the model state, so that a resumed run behaves identically."""

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``loss(batch)``: forward is the loss so that DistributedDataParallel can wrap any model."""
        return self.loss(batch)
