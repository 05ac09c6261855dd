"""SASRec (Kang & McAuley, 2018): a causal Transformer over item-id embeddings.

Loss: cross-entropy over all items at every position of each training sequence (no prefix
materialisation), scores are dot products with the shared item embedding table. Post-LN blocks
and N(0, 0.02) initialisation as in RecBole; attention through SDPA with a causal mask (right
padding makes the key-padding mask redundant for every real position).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.layers import TransformerEncoder, gather_last, init_weights
from semrec.models.losses import item_softmax_loss, register_item_loss


@dataclass
class SASRecConfig:
    hidden_size: int = 64
    inner_size: int = 256
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    attn_dropout: float = 0.2
    max_len: int = 50
    ce_chunk_size: int = 0  # > 0: the same exact full softmax over item chunks (bounded memory); 0: dense logits
    loss: str = "full"  # full | uniform | popularity | in_batch | mixed (sampled softmax + logQ, models.losses)
    num_negatives: int = 1024  # shared negatives per batch of the sampled losses (mixed: + the batch targets)


class SASRec(SequentialRecommender):
    sample_style = "sequence"
    similarity = "dot"

    def __init__(self, config: SASRecConfig, items: ItemInputs):
        super().__init__()
        register_item_loss(self, config.loss, config.num_negatives, config.ce_chunk_size, items.popularity)
        self.config = config
        d = config.hidden_size
        self.item_embedding = nn.Embedding(items.n_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.input_norm = nn.LayerNorm(d, eps=1e-12)
        self.input_dropout = nn.Dropout(config.dropout)
        self.encoder = TransformerEncoder(config.n_layers, d, config.n_heads, config.inner_size, config.dropout,
                                          config.attn_dropout)
        self.apply(init_weights)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_embedding.weight

    def _hidden(self, items: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(items.size(1), device=items.device)
        x = self.input_dropout(self.input_norm(self.item_embedding(items) + self.position_embedding(positions)))
        return self.encoder(x, is_causal=True)

    def encode_sequence(self, items, lengths, history_table=None) -> torch.Tensor:
        return gather_last(self._hidden(items), lengths)

    def loss(self, batch):
        items, targets = batch["items"], batch["targets"]  # [B, L] each, 0 = padding
        hidden = self._hidden(items)
        mask = targets > 0
        cfg = self.config
        if cfg.loss != "full" or cfg.ce_chunk_size:
            loss = item_softmax_loss(hidden[mask], self.item_embedding.weight, targets[mask], cfg.loss,
                                     cfg.num_negatives, cfg.ce_chunk_size, self.train_counts)
            return loss, {"rec": loss.detach()}
        logits = hidden[mask] @ self.item_embedding.weight.T
        logits[:, 0] = float("-inf")
        loss = F.cross_entropy(logits, targets[mask])
        return loss, {"rec": loss.detach()}
