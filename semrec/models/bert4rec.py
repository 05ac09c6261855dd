"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained with a cloze (masked item) task,
as RecBole's ``BERT4Rec`` (post-LN blocks, N(0, 0.02) init, output FFN -> GELU -> LayerNorm, dot product
with the item table plus a per-item output bias, cross-entropy at masked positions only).

Training (sample style "sequence"): each training window of ``max_len + 1`` items is rebuilt from the
batch as ``cat(items[:, :1], targets)``; a window longer than ``max_len`` drops its oldest item (that
item is the last one of the previous, overlapping window, so nothing is lost). Every real item is
replaced by [MASK] (id ``n_items + 1``) with probability ``mask_ratio``; padding is never masked; a row
where no item was drawn gets its last real item masked (so every row contributes to the loss). The
draw uses the torch RNG of the batch's device (seeded and checkpointed by the trainer).

Prediction: [MASK] is appended right after the last real item (dropping the oldest item first when the
history already holds ``max_len`` items) and the hidden state at [MASK] is the user vector. The output
bias is folded into the contract: ``encode_sequence`` returns ``[u, 1]`` and ``item_embeddings`` returns
``[E, b]`` (rows 0..N, no [MASK] row), so ``user @ table.T = u . e + b`` exactly as in training.

Deviations from RecBole: all selected items become [MASK] (no 80/10/10, as RecBole); no
``ft_ratio`` "fine-tuning" samples (RecBole >= 1.2 masks only the last item in half of the batches);
RecBole's test-time reconstruction always drops the first item, here only a full history drops it;
attention uses a key-padding mask only, as RecBole's bidirectional mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.layers import TransformerEncoder, init_weights
from semrec.models.losses import item_softmax_loss, register_item_loss


@dataclass
class BERT4RecConfig:
    hidden_size: int = 64
    inner_size: int = 256
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    attn_dropout: float = 0.2
    mask_ratio: float = 0.2
    max_len: int = 50
    ce_chunk_size: int = 0  # > 0: the same exact full softmax over item chunks (bounded memory); 0: dense logits
    loss: str = "full"  # full | uniform | popularity | in_batch | mixed (sampled softmax + logQ, models.losses)
    num_negatives: int = 1024  # shared negatives per batch of the sampled losses (mixed: + the batch targets)


class BERT4Rec(SequentialRecommender):
    sample_style = "sequence"
    similarity = "dot"

    def __init__(self, config: BERT4RecConfig, items: ItemInputs):
        super().__init__()
        register_item_loss(self, config.loss, config.num_negatives, config.ce_chunk_size, items.popularity)
        if not 0.0 < config.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {config.mask_ratio}")
        self.config = config
        self.n_items = items.n_items
        self.mask_id = items.n_items + 1
        d = config.hidden_size
        self.item_embedding = nn.Embedding(items.n_items + 2, d, padding_idx=0)  # + [MASK]
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.input_norm = nn.LayerNorm(d, eps=1e-12)
        self.input_dropout = nn.Dropout(config.dropout)
        self.encoder = TransformerEncoder(config.n_layers, d, config.n_heads, config.inner_size, config.dropout,
                                          config.attn_dropout)
        self.output_ffn = nn.Linear(d, d)
        self.output_norm = nn.LayerNorm(d, eps=1e-12)
        self.output_bias = nn.Parameter(torch.zeros(items.n_items + 1))
        self.apply(init_weights)

    # ----- encoder ----------------------------------------------------------------------------------
    def _fit(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the last ``max_len`` items of each right-padded row (drop the oldest ones)."""
        max_len = self.config.max_len
        drop = (lengths - max_len).clamp(min=0)
        width = min(seq.size(1), max_len)
        positions = torch.arange(width, device=seq.device)
        index = (positions + drop[:, None]).clamp(max=seq.size(1) - 1)
        lengths = lengths - drop
        return seq.gather(1, index).masked_fill(positions >= lengths[:, None], 0), lengths

    def _hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L <= max_len] ids (0 = padding) -> [B, L, d] encoder states (bidirectional, padding masked)."""
        positions = torch.arange(seq.size(1), device=seq.device)
        x = self.input_dropout(self.input_norm(self.item_embedding(seq) + self.position_embedding(positions)))
        key_mask = (seq > 0)[:, None, None, :]  # [B, 1, 1, L]: True = may be attended to
        return self.encoder(x, attn_mask=key_mask, is_causal=False)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output transform (Linear -> GELU -> LayerNorm), applied only where a prediction is read."""
        return self.output_norm(F.gelu(self.output_ffn(hidden)))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = hidden @ self.item_embedding.weight[: self.n_items + 1].T + self.output_bias
        logits[:, 0] = float("-inf")
        return logits

    # ----- contract ---------------------------------------------------------------------------------
    def item_embeddings(self) -> torch.Tensor:
        """[N+1, d+1]: item vectors with the output bias as the last column (row 0 = padding)."""
        return torch.cat([self.item_embedding.weight[: self.n_items + 1], self.output_bias[:, None]], 1)

    def with_mask_token(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append [MASK] after the last real item; returns (ids [B, <= max_len], [MASK] position [B])."""
        seq = torch.cat([items, torch.zeros_like(items[:, :1])], 1)
        seq = seq.scatter(1, lengths[:, None], self.mask_id)
        seq, new_lengths = self._fit(seq, lengths + 1)
        return seq, new_lengths - 1

    def encode_sequence(self, items, lengths, history_table=None) -> torch.Tensor:
        seq, position = self.with_mask_token(items, lengths)
        hidden = self._hidden(seq)
        user = self._head(hidden[torch.arange(len(seq), device=seq.device), position])
        return torch.cat([user, torch.ones_like(user[:, :1])], 1)

    def cloze(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked input [B, <= max_len], original ids, chosen positions) of a training batch."""
        window = torch.cat([batch["items"][:, :1], batch["targets"]], 1)
        lengths = batch["lengths"]
        window, lengths = self._fit(window, torch.where(lengths > 0, lengths + 1, 0))
        real = torch.arange(window.size(1), device=window.device) < lengths[:, None]
        chosen = (torch.rand(window.shape, device=window.device) < self.config.mask_ratio) & real
        none = ~chosen.any(1) & (lengths > 0)
        last = (lengths - 1).clamp(min=0)[:, None]
        chosen = chosen | (torch.zeros_like(chosen).scatter(1, last, True) & none[:, None])
        return window.masked_fill(chosen, self.mask_id), window, chosen

    def loss(self, batch):
        masked, window, chosen = self.cloze(batch)
        hidden = self._hidden(masked)
        cfg = self.config
        if cfg.loss != "full" or cfg.ce_chunk_size:  # the output bias as a last column: [h, 1] . [e, b] = h . e + b
            user = self._head(hidden[chosen])
            loss = item_softmax_loss(torch.cat([user, torch.ones_like(user[:, :1])], 1), self.item_embeddings(),
                                     window[chosen], cfg.loss, cfg.num_negatives, cfg.ce_chunk_size, self.train_counts)
            return loss, {"rec": loss.detach()}
        loss = F.cross_entropy(self._logits(self._head(hidden[chosen])), window[chosen])
        return loss, {"rec": loss.detach()}
