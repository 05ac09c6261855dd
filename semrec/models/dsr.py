"""Dynamic sequential recommenders for the CTR task (SOLID's baselines, spec solid 5.1, 7, 7.4): a backbone that
encodes the history, then a head that is static (**Base**) or whose parameters a hypernetwork generates from the
history (**DUET**, **APG**). SOLID itself (semantic generator + clipped item correction) is :mod:`semrec.models.solid`.

Backbones (ids of ``embedding_size`` = 32; item table and target tower shared by all):
* ``sasrec``: ``seq_tower(emb(h) + pos(0..L-1))`` -> one post-LN Transformer layer (4 heads, FFN 128, no dropout),
  bidirectional like the reference but with a key padding mask (the reference attends to padding too, spec solid
  10.10: with batches trimmed to their longest row its output would depend on the batch) -> state at the last item;
* ``gru4rec``: ``seq_tower(emb(h))`` -> GRU -> state at the last item.
``seq_tower`` = Linear-Tanh, target tower = Linear-Tanh-Linear over the candidate's embedding.

Heads, applied to the state ``s`` ``[B, D]`` (the generator's condition is the history's tower output):
* ``base``: ``u = s``;
* ``duet``: two generated ``D x D`` layers with generated biases, Tanh between (spec 7.1);
* ``apg``: two low-rank generated layers ``x <- Out_j(In_j(x) S_j)``, ``S_j`` ``K x K`` (``apg_rank`` = 16), no bias and
  no activation between them (spec 7.2).
``logit = <u, target_tower(emb(candidate))>``; loss BCE-with-logits. ``frozen_projections`` keeps the generators'
projection matrices at their random start, as the references do (spec 5.3, 10.2).

The user vector does not depend on the candidate, so the model also honours the ranking contract: full ranking
over all items (``semrec evaluate``, ``recommend``, ``serve``) scores ``u`` against the target tower of every item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.layers import ParameterGenerator, gather_last

BACKBONES = ("sasrec", "gru4rec")
HEADS = ("base", "duet", "apg")


@dataclass
class DSRConfig:
    backbone: str = "sasrec"  # sasrec | gru4rec
    head: str = "duet"  # base | duet | apg
    embedding_size: int = 32
    n_heads: int = 4  # sasrec
    inner_size: int = 128  # sasrec FFN width
    apg_rank: int = 16  # apg: K
    frozen_projections: bool = True  # the references' fixed random generator projections (spec solid 10.2)
    projection_seed: int = 0
    max_len: int = 30  # <= the history length of the CTR samples
    rows: str = "item"  # item | semantic: every id read as its semantic id (SOLID's codebook model, spec solid 4.5)


class CtrEncoder(nn.Module):
    """Item table, target tower and sequence backbone of the CTR models (this module's docstring)."""

    def __init__(self, config: DSRConfig, n_items: int):
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {config.backbone!r}")
        d = config.embedding_size
        self.backbone = config.backbone
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.target_tower = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d))
        self.seq_tower = nn.Sequential(nn.Linear(d, d), nn.Tanh())
        if self.backbone == "sasrec":
            self.position = nn.Embedding(config.max_len, d)
            self.layer = nn.TransformerEncoderLayer(d, config.n_heads, config.inner_size, dropout=0.0,
                                                    batch_first=True)
        else:
            self.gru = nn.GRU(d, d, batch_first=True)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.xavier_uniform_(module.weight)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def targets(self, ids: torch.Tensor) -> torch.Tensor:
        return self.target_tower(self.item(ids))

    def history(self, items: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids -> the history's tower output ``[B, L, D]`` (the generators' input)."""
        h = self.item(items)
        if self.backbone == "sasrec":
            h = h + self.position.weight[: items.size(1)]
        return self.seq_tower(h)

    def state(self, hist: torch.Tensor, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.backbone == "sasrec":
            padding = items == 0
            padding[:, 0] = False  # an empty history attends to its padding rather than to nothing (NaN)
            out = self.layer(hist, src_key_padding_mask=padding)
        else:
            out = self.gru(hist)[0]
        return gather_last(out, lengths)


class DSR(SequentialRecommender):
    sample_style = "ctr"
    similarity = "dot"

    def __init__(self, config: DSRConfig, items: ItemInputs):
        super().__init__()
        if config.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {config.head!r}")
        if config.max_len < 1 or config.embedding_size < 1 or config.apg_rank < 1:
            raise ValueError("max_len, embedding_size and apg_rank must be >= 1")
        self.config = config
        d = config.embedding_size
        vocab = items.n_items
        if config.rows not in ("item", "semantic"):
            raise ValueError(f"rows must be item or semantic, got {config.rows!r}")
        if config.rows == "semantic":
            if items.semantic is None:
                raise ValueError("rows=semantic reads the items' semantic ids: set the run's semantic codes folder")
            self.register_buffer("id_map", items.semantic.long().clone())
            vocab = int(items.codebook_sizes[0]) if items.codebook_sizes else int(items.semantic.max())
        else:
            self.id_map = None
        self.encoder = CtrEncoder(config, vocab)
        self.generator = None
        if config.head == "duet":
            self.generator = ParameterGenerator(d, (d, d), frozen=config.frozen_projections,
                                                seed=config.projection_seed)
        elif config.head == "apg":
            k = config.apg_rank
            self.generator = ParameterGenerator(d, (k, k), bias=False, frozen=config.frozen_projections,
                                                seed=config.projection_seed)
            self.apg_in = nn.ModuleList(nn.Linear(d, k) for _ in range(2))
            self.apg_out = nn.ModuleList(nn.Linear(k, d) for _ in range(2))

    # ----- the user vector --------------------------------------------------------------------------
    def apply_head(self, state: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        """The generated layers applied to ``state`` ``[B, D]`` (one weight per row: batched mat-vec)."""
        x = state
        for j, (weight, bias) in enumerate(layers):
            if self.config.head == "duet":
                x = torch.bmm(x.unsqueeze(1), weight).squeeze(1) + bias
                x = torch.tanh(x) if j < len(layers) - 1 else x
            else:  # apg: low rank, no bias, no activation (spec solid 7.2)
                x = self.apg_out[j](torch.bmm(self.apg_in[j](x).unsqueeze(1), weight).squeeze(1))
        return x

    def ids(self, items: torch.Tensor) -> torch.Tensor:
        """The ids the tables read: item ids, or with ``rows=semantic`` their semantic ids (0 stays padding)."""
        return items if self.id_map is None else self.id_map[items]

    def user_vectors(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        items = self.ids(items)
        hist = self.encoder.history(items)
        state = self.encoder.state(hist, items, lengths)
        if self.generator is None:
            return state
        return self.apply_head(state, self.generator.generate(self.generator.condition(hist, lengths)))

    # ----- CTR ---------------------------------------------------------------------------------------
    def ctr_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B]`` of the rows' candidates (probability = sigmoid)."""
        user = self.user_vectors(batch["items"], batch["lengths"])
        return (user * self.encoder.targets(self.ids(batch["candidates"]))).sum(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        bce = F.binary_cross_entropy_with_logits(self.ctr_logits(batch), batch["labels"])
        return bce, {"bce": bce.detach()}

    # ----- ranking contract (full ranking, recommend, serve) ----------------------------------------
    def item_embeddings(self) -> torch.Tensor:
        every = torch.arange(self.id_map.size(0) if self.id_map is not None else self.encoder.item.num_embeddings,
                             device=self.encoder.item.weight.device)
        return self.encoder.targets(self.ids(every))

    def encode_sequence(self, items: torch.Tensor, lengths: torch.Tensor,
                        history_table: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_vectors(items, lengths)
