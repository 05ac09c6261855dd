"""Dynamic sequential recommenders for the CTR task (SOLID's baselines, spec solid 5.1, 7, 7.4): a backbone that
encodes the history, then a head that is static (**Base**) or whose parameters a hypernetwork generates from the
history (**DUET**, **APG**). SOLID itself (semantic generator + clipped item correction) is :mod:`semrec.models.solid`.

Backbones (ids of ``embedding_size`` = 32; item table shared by all):
* ``sasrec``: ``seq_tower(emb(h) + pos(0..L-1))`` -> one post-LN Transformer layer (4 heads, FFN 128, no dropout),
  bidirectional like the reference but with a key padding mask (the reference attends to padding too, spec solid
  10.10: with batches trimmed to their longest row its output would depend on the batch) -> state at the last item;
* ``gru4rec``: ``seq_tower(emb(h))`` -> GRU -> state at the last item;
* ``bert4rec`` (no reference exists, spec 7.4: a decision): as ``sasrec`` with two layers and BERT4Rec's inference
  recipe, a learned [MASK] appended after the last item, whose output is the state;
* ``din`` (spec 7.4): target attention of the candidate over the history (bias-free Q/K/V, scale sqrt(D), padding
  masked), ``x = [target, pooled]`` ``[B, 2D]``, and the classifier ``2D -> 128 -> 64 -> 1`` (Tanh between) gives the
  logit itself.
``seq_tower`` = Linear-Tanh; target tower = Linear-Tanh-Linear (DIN: Linear-Tanh) over the candidate's embedding.

Heads: the layers after the backbone, ``D -> D -> D`` (Tanh between) on the state ``s`` for the sequence backbones,
DIN's classifier for ``din``:
* ``base``: sequence backbones ``u = s`` (the plain backbone, as the reference's ``base``); DIN a static classifier;
* ``duet``: every layer's weight and bias generated from the history (spec 7.1);
* ``apg``: low-rank generated layers ``x <- Out_j(In_j(x) S_j)``, ``S_j`` ``K x K`` (``apg_rank`` = 16), no generated
  bias and, as the reference, no activation between the layers (spec 7.2).
The generators' condition is ``MLP(GRU(history tower output)[last])``; with ``vqvae_size`` (DUET_VQVAE, spec 7.3) the
GRU reads the history through a learned item-only VQ-VAE (:class:`semrec.models.layers.LearnedVQ`) whose loss is
added with weight ``vqvae_weight``. Sequence backbones score ``logit = <u,
target>``; loss BCE-with-logits. ``frozen_projections`` keeps the generators' projection matrices at their random
start, as the references do (spec 5.3, 10.2).

For the sequence backbones the user vector does not depend on the candidate, so the model also honours the ranking
contract: full ranking over all items (``semrec evaluate``, ``recommend``, ``serve``) scores ``u`` against every
item's target vector. DIN refuses full ranking (its score needs the candidate inside the attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semrec.errors import SemrecError
from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.layers import LearnedVQ, ParameterGenerator, gather_last

BACKBONES = ("sasrec", "gru4rec", "bert4rec", "din")
DIN_CLASSIFIER = (128, 64)  # spec solid 3.3: classifier [128, 64]
HEADS = ("base", "duet", "apg")


@dataclass
class DSRConfig:
    backbone: str = "sasrec"  # sasrec | gru4rec | bert4rec | din
    head: str = "duet"  # base | duet | apg
    embedding_size: int = 32
    n_heads: int = 4  # sasrec
    inner_size: int = 128  # sasrec FFN width
    apg_rank: int = 16  # apg: K
    # True: the references' fixed random generator projections (spec solid 10.2). Default False (trained): on ml-100k
    # (SASRec backbone, DUET, seed 2020, 5 epochs) valid UAUC 0.9145 trained vs 0.9137 frozen
    # (bench/results/solid_frozen_projections.md; one seed, a margin within seed noise)
    frozen_projections: bool = False
    projection_seed: int = 0
    max_len: int = 30  # <= the history length of the CTR samples
    rows: str = "item"  # item | semantic: every id read as its semantic id (SOLID's codebook model, spec solid 4.5)
    vqvae_size: int = 0  # duet + a learned item-only VQ-VAE of this many codewords (DUET_VQVAE, spec 7.3: 450); 0 = off
    vqvae_weight: float = 0.1  # lambda of its loss


class CtrEncoder(nn.Module):
    """Item table, target tower and sequence backbone of the CTR models (this module's docstring)."""

    def __init__(self, config: DSRConfig, n_items: int):
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {config.backbone!r}")
        d = config.embedding_size
        self.backbone = config.backbone
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.target_tower = (nn.Sequential(nn.Linear(d, d), nn.Tanh()) if self.backbone == "din" else
                             nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d)))
        self.seq_tower = nn.Sequential(nn.Linear(d, d), nn.Tanh())
        if self.backbone == "din":
            self.qkv = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(3))
        elif self.backbone in ("sasrec", "bert4rec"):
            bert = self.backbone == "bert4rec"
            self.position = nn.Embedding(config.max_len + bert, d)
            layer = nn.TransformerEncoderLayer(d, config.n_heads, config.inner_size, dropout=0.0, batch_first=True)
            self.layer = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False) if bert else layer
            if bert:
                self.mask_token = nn.Parameter(torch.empty(1, d).uniform_(-0.1, 0.1))
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
        if self.backbone in ("sasrec", "bert4rec"):
            h = h + self.position.weight[: items.size(1)]
        return self.seq_tower(h)

    def attend(self, hist: torch.Tensor, items: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """DIN: ``[target, attention-pooled history]`` ``[B, 2D]`` (padding masked; an empty history pools zeros)."""
        q, k, v = (layer(x) for layer, x in zip(self.qkv, (target, hist, hist)))
        scores = (k @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(q.size(-1))
        weights = torch.softmax(scores.masked_fill(items == 0, -torch.inf), dim=-1).nan_to_num(0.0)
        return torch.cat([target, (weights.unsqueeze(-1) * v).sum(1)], dim=-1)

    def state(self, hist: torch.Tensor, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.backbone == "bert4rec":  # the history with a [MASK] after its last item, read at the mask
            rows = torch.arange(items.size(0), device=items.device)
            x = torch.cat([hist, hist.new_zeros(hist.size(0), 1, hist.size(-1))], dim=1)
            x[rows, lengths] = self.seq_tower(self.mask_token + self.position(lengths))
            padding = torch.arange(x.size(1), device=items.device)[None, :] > lengths[:, None]
            return self.layer(x, src_key_padding_mask=padding)[rows, lengths]
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
        dims = [2 * d, *DIN_CLASSIFIER, 1] if config.backbone == "din" else [d, d, d]
        self.layer_dims = list(zip(dims[:-1], dims[1:]))
        self.generator = None
        k = config.apg_rank
        if config.head == "base" and config.backbone == "din":
            self.static = nn.ModuleList(nn.Linear(i, o) for i, o in self.layer_dims)
        elif config.head == "duet":
            self.generator = ParameterGenerator(d, self.layer_dims, frozen=config.frozen_projections,
                                                seed=config.projection_seed)
        elif config.head == "apg":
            self.generator = ParameterGenerator(d, [(k, k)] * len(self.layer_dims), bias=False,
                                                frozen=config.frozen_projections, seed=config.projection_seed)
            self.apg_in = nn.ModuleList(nn.Linear(i, k) for i, _ in self.layer_dims)
            self.apg_out = nn.ModuleList(nn.Linear(k, o) for _, o in self.layer_dims)
        self.vqvae = None
        if config.vqvae_size:
            if config.head != "duet" or config.vqvae_size < 1:
                raise ValueError(f"vqvae_size is the DUET_VQVAE ablation: head duet and >= 1 codewords, got head "
                                 f"{config.head!r} and {config.vqvae_size}")
            self.vqvae = LearnedVQ(d, config.vqvae_size)

    # ----- the user vector --------------------------------------------------------------------------
    def apply_head(self, x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor | None]] | None,
                   ) -> torch.Tensor:
        """The head's layers on ``x`` ``[B, in]`` (generated ones: one weight per row, a batched mat-vec); Tanh
        between layers for base / duet, none for apg (spec solid 7.2)."""
        if layers is None:  # base
            if self.config.backbone != "din":
                return x
            layers = [(None, None)] * len(self.static)
        for j, (weight, bias) in enumerate(layers):
            if self.config.head == "apg":
                x = self.apg_out[j](torch.bmm(self.apg_in[j](x).unsqueeze(1), weight).squeeze(1))
                continue
            x = self.static[j](x) if weight is None else torch.bmm(x.unsqueeze(1), weight).squeeze(1) + bias
            x = torch.tanh(x) if j < len(layers) - 1 else x
        return x

    def generated(self, hist: torch.Tensor, items: torch.Tensor, lengths: torch.Tensor,
                  ) -> tuple[list | None, torch.Tensor | None]:
        """(the head's generated layers for these histories or None for base, the VQ-VAE loss or None)."""
        if self.generator is None:
            return None, None
        aux = None
        if self.vqvae is not None:  # DUET_VQVAE: the generator reads the reconstruction
            hist, aux = self.vqvae(hist, items != 0)
        return self.generator.generate(self.generator.condition(hist, lengths)), aux

    def ids(self, items: torch.Tensor) -> torch.Tensor:
        """The ids the tables read: item ids, or with ``rows=semantic`` their semantic ids (0 stays padding)."""
        return items if self.id_map is None else self.id_map[items]

    def user_vectors(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.config.backbone == "din":
            raise SemrecError("DIN scores each candidate inside its target attention, so it offers no user vector "
                              "and no full ranking; its quality is the CTR metrics (AUC, UAUC, NDCG@K on the "
                              "sampled candidates)")
        return self._user(items, lengths)[0]

    def _user(self, items: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        items = self.ids(items)
        hist = self.encoder.history(items)
        layers, aux = self.generated(hist, items, lengths)
        return self.apply_head(self.encoder.state(hist, items, lengths), layers), aux

    # ----- CTR ---------------------------------------------------------------------------------------
    def _logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        target = self.encoder.targets(self.ids(batch["candidates"]))
        if self.config.backbone == "din":
            items = self.ids(batch["items"])
            hist = self.encoder.history(items)
            layers, aux = self.generated(hist, items, batch["lengths"])
            return self.apply_head(self.encoder.attend(hist, items, target), layers).squeeze(-1), aux
        user, aux = self._user(batch["items"], batch["lengths"])
        return (user * target).sum(-1), aux

    def ctr_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B]`` of the rows' candidates (probability = sigmoid)."""
        return self._logits(batch)[0]

    @property
    def scores_by_user_vector(self) -> bool:
        """True when a row's logit is ``<user vector of its history, candidate vector>`` (every backbone but DIN):
        rows sharing a history can then share one user vector (:meth:`grouped_ctr_logits`)."""
        return self.config.backbone != "din"

    def grouped_ctr_logits(self, items: torch.Tensor, lengths: torch.Tensor, candidates: torch.Tensor,
                           group: torch.Tensor) -> torch.Tensor:
        """Logits ``[R]`` of ``R`` rows whose histories are the ``G`` distinct ones ``items`` ``[G, L]`` /
        ``lengths`` ``[G]``; ``group`` ``[R]`` says each row's history, ``candidates`` ``[R]`` its candidate. The
        same values as :meth:`ctr_logits` on the expanded rows, with one user vector per history (an evaluation
        split holds 1 positive + 99 negatives per history). Raises SemrecError for DIN."""
        user = self.user_vectors(items, lengths)
        return (user[group] * self.encoder.targets(self.ids(candidates))).sum(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, aux = self._logits(batch)
        bce = F.binary_cross_entropy_with_logits(logits, batch["labels"])
        if aux is None:
            return bce, {"bce": bce.detach()}
        return bce + self.config.vqvae_weight * aux, {"bce": bce.detach(), "vqvae": aux.detach()}

    # ----- ranking contract (full ranking, recommend, serve) ----------------------------------------
    def item_embeddings(self) -> torch.Tensor:
        every = torch.arange(self.id_map.size(0) if self.id_map is not None else self.encoder.item.num_embeddings,
                             device=self.encoder.item.weight.device)
        return self.encoder.targets(self.ids(every))

    def encode_sequence(self, items: torch.Tensor, lengths: torch.Tensor,
                        history_table: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_vectors(items, lengths)
