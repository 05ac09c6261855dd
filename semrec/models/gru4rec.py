"""GRU4Rec (Hidasi et al., ICLR 2016; Tan et al., "Improved Recurrent Neural Networks for Session-based
Recommendations", DLRS 2016): a GRU over item-id embeddings, as RecBole's ``GRU4Rec``.

Embedding (padding_idx 0) -> dropout -> GRU (``num_layers``, no bias) -> Linear to the embedding size;
the user vector is the output at the last real position, scores are dot products with the item table.
The GRU runs over the right-padded input as is: a recurrence only looks backwards, so every position
up to the last real one is computed exactly as without padding (no packing needed).

Deviations from RecBole:
* loss: cross-entropy over all items at every position of each training window (sample style
  "sequence", like SASRec here) instead of RecBole's one loss per augmented prefix;
  the padding item is never a class (logit column 0 = -inf);
* init: xavier_uniform on the input/hidden weights of *every* GRU layer (RecBole only re-initialises
  layer 0), and the padding row of the embedding is zeroed after xavier_normal (never used as a score).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.layers import gather_last
from semrec.models.losses import item_softmax_loss, register_item_loss


@dataclass
class GRU4RecConfig:
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.3
    max_len: int = 50
    ce_chunk_size: int = 0  # > 0: the same exact full softmax over item chunks (bounded memory); 0: dense logits
    loss: str = "full"  # full | uniform | popularity | in_batch | mixed (sampled softmax + logQ, models.losses)
    num_negatives: int = 1024  # shared negatives per batch of the sampled losses (mixed: + the batch targets)


class GRU4Rec(SequentialRecommender):
    sample_style = "sequence"
    similarity = "dot"

    def __init__(self, config: GRU4RecConfig, items: ItemInputs):
        super().__init__()
        register_item_loss(self, config.loss, config.num_negatives, config.ce_chunk_size, items.popularity)
        if config.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {config.num_layers}")
        self.config = config
        self.item_embedding = nn.Embedding(items.n_items + 1, config.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.embedding_size, config.hidden_size, num_layers=config.num_layers, bias=False,
                          batch_first=True)
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for name, weight in self.gru.named_parameters():
            if name.startswith(("weight_ih", "weight_hh")):
                nn.init.xavier_uniform_(weight)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_embedding.weight

    def _hidden(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] right-padded ids -> [B, L, embedding_size] outputs (valid up to each row's last real item)."""
        output, _ = self.gru(self.emb_dropout(self.item_embedding(items)))
        return self.dense(output)

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
