"""The scoring contract every model implements, so one trainer / evaluator / exporter serves all.

* ``item_embeddings()`` -> ``[N+1, d]`` candidate-side item vectors (row 0 = padding), computed once per
  evaluation;
* ``encode_sequence(items, lengths, history_table=None)`` -> ``[B, d]`` user vectors from right-padded
  histories ``[B, L]``; ``history_table`` is the optional input-side table from ``eval_tables()``;
* ``similarity``: how a user vector scores an item vector, ``dot`` or ``cosine``;
* ``max_len``: how many recent history items the model reads;
* ``loss(batch)`` -> ``(scalar, {name: float})`` on a training batch.
A model receives a typed config and tensors, never a dataset object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
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
    semantic: torch.Tensor | None = None  # [N+1] long semantic (cluster) id 1..K of each item, row 0 = 0 (SOLID)
    codebook: torch.Tensor | None = None  # [K+1, d] float frozen semantic embedding table (SOLID)


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

    @property
    def max_len(self) -> int:
        """How many of a history's most recent items the model reads (longer histories are cut to their last
        ``max_len``): its config's ``max_len``."""
        return int(self.config.max_len)

    @classmethod
    def cold_start_refusal(cls, config: Any) -> str | None:
        """None when an item added after training can be given vectors from its data (codes, text) alone with this
        config, else why not (one sentence with a way out). Called only for models that read item data (the
        registry's ``needs``); ID-only models are refused by :func:`semrec.models.cold_start_refusal`."""
        return None

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
