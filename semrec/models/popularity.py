"""Popularity baseline: every user gets the items ranked by training frequency (the sanity floor)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from semrec.models.base import ItemInputs, SequentialRecommender


@dataclass
class PopularityConfig:
    pass


class Popularity(SequentialRecommender):
    sample_style = "sequence"
    max_len = 50  # reads no history; histories are cut to this length like any model's (serving reports it)

    def __init__(self, config: PopularityConfig, items: ItemInputs):
        super().__init__()
        if items.popularity is None:
            raise ValueError("Popularity needs item training frequencies")
        self.register_buffer("counts", items.popularity.float().clone())
        self.dummy = nn.Parameter(torch.zeros(1))  # lets the generic trainer build an optimizer

    def item_embeddings(self) -> torch.Tensor:
        return self.counts.view(-1, 1)

    def encode_sequence(self, items, lengths, history_table=None) -> torch.Tensor:
        return torch.ones(items.size(0), 1, device=self.counts.device)

    def loss(self, batch):
        # nothing to learn: a zero loss that still touches the parameter
        return (self.dummy * 0.0).sum(), {}
