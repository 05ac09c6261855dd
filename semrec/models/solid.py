"""SOLID (Semantic codebook learning for dynamic recommendation models, ACM MM 2024; spec solid section 5): a
dynamic-parameter recommender (DUET or APG head, :mod:`semrec.models.dsr`) whose generated weights come mainly from
the history's **semantic** sequence, with a small, clipped correction from the item sequence seen through a frozen
semantic codebook.

Inputs besides item ids (tensors, from the data layer): ``semantic`` ``[N+1]`` the semantic id 1..K of every item (0 =
padding) and ``codebook`` ``[K+1, D]`` the frozen semantic embedding table of a DUET model trained on semantic rows
(spec 4, step 5). Per batch (B rows, L positions, D dims):

* item branch as the backbone: ``H_i = seq_tower(emb(h) [+ pos])`` ``[B, L, D]``, state ``s = backbone(H_i)[last]``;
* semantic branch: ``H_c = cat_tower(cat_emb(semantic[h]) [+ cat_pos])`` ``[B, L, D]`` (its own tables and tower);
* quantisation (``vq``): each position of ``H_i`` is replaced by its nearest codeword of the codebook (rows 1..K:
  the padding row and never-trained rows are not codewords, a documented departure from the reference, spec 10.4),
  found with a distance matrix ``||h||^2 - 2 h C^T + ||C||^2`` (never the reference's ``B x L x K x D`` broadcast),
  then decoded ``r = Dec(q)`` (Linear D->64, LeakyReLU 0.1, Linear 64->D); no straight-through gradient. Without
  ``vq`` (the "fusion" ablation) the item generator reads ``H_i`` itself;
* dual generation: the item generator (conditioned on ``r``) and the semantic generator (on ``H_c``) each produce the
  head's layers; fused ``W = clip(W_item, -t, t) + W_sem`` (biases alike, DUET), ``t`` = ``clip`` (0.01);
* ``u = head(s)``, ``logit = <u, target_tower(emb(candidate))>``; with the DIN backbone (spec 7.4: SOLID on DIN is
  inferred there, not released) the fused layers are DIN's classifier ``2D -> 128 -> 64 -> 1`` on ``[target,
  attention-pooled history]``, whose output is the logit (no user vector, so no full ranking);
* loss ``BCE + lambda * MSE(H_c, stopgrad(q))`` over real (non-padding) positions (the reference averages over
  padding too), ``lambda`` = ``vq_weight`` (0.1). The codebook is a buffer: never trained, saved in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semrec.models.base import ItemInputs
from semrec.models.dsr import DSR, DSRConfig
from semrec.models.layers import ParameterGenerator, clip_fuse

BACKBONES = ("sasrec", "gru4rec", "bert4rec", "din")


@dataclass
class SOLIDConfig(DSRConfig):
    head: str = "duet"  # duet | apg (SOLID on top of that dynamic-parameter method)
    clip: float = 0.01  # t: bound of the item generator's element-wise correction
    vq_weight: float = 0.1  # lambda: weight of the semantic alignment loss
    vq: bool = True  # False: the "fusion" ablation (item generator on the raw item sequence, no alignment loss)


def nearest_codewords(h: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index ``[...]`` of the nearest row of ``codebook`` ``[K, D]`` (Euclidean) for each vector of ``h`` ``[..., D]``,
    through one ``[*, K]`` distance matrix; ties go to the smaller index."""
    flat = h.reshape(-1, h.size(-1))
    dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)[None, :]
    return dist.argmin(dim=1).view(h.shape[:-1])


class SOLID(DSR):
    def __init__(self, config: SOLIDConfig, items: ItemInputs):
        if config.vqvae_size:
            raise ValueError("vqvae_size is the DUET_VQVAE ablation of dsr; SOLID quantises with its frozen codebook")
        if config.rows != "item":
            raise ValueError("SOLID reads item rows (rows=item); its codebook model is a dsr run with rows=semantic")
        if config.head not in ("duet", "apg"):
            raise ValueError(f"SOLID generates the parameters of a duet or apg head, got head {config.head!r}")
        if config.backbone not in BACKBONES:
            raise ValueError(f"SOLID's backbone must be one of {', '.join(BACKBONES)}, got {config.backbone!r}")
        if items.semantic is None or items.codebook is None:
            raise ValueError("SOLID needs the items' semantic ids and the frozen semantic codebook")
        if not config.clip >= 0 or not config.vq_weight >= 0:
            raise ValueError(f"clip and vq_weight must be >= 0, got {config.clip} and {config.vq_weight}")
        super().__init__(config, items)
        d = config.embedding_size
        codebook = items.codebook.float()
        if codebook.dim() != 2 or codebook.size(1) != d or codebook.size(0) < 2:
            raise ValueError(f"the codebook must be [K+1, {d}] with K >= 1, got {tuple(codebook.shape)}")
        n_semantic = codebook.size(0) - 1
        if int(items.semantic.max()) > n_semantic or int(items.semantic[1:].min()) < 1:
            raise ValueError(f"semantic ids must lie in 1..{n_semantic} (the codebook's rows), 0 only for padding")
        self.register_buffer("semantic", items.semantic.long().clone())
        self.register_buffer("codebook", codebook.clone())  # frozen: a buffer, never a parameter
        self.cat = nn.Embedding(n_semantic + 1, d, padding_idx=0)
        self.cat_tower = nn.Sequential(nn.Linear(d, d), nn.Tanh())
        self.cat_position = nn.Embedding(config.max_len, d) if config.backbone in ("sasrec", "bert4rec") else None
        self.decoder = nn.Sequential(nn.Linear(d, 64), nn.LeakyReLU(0.1), nn.Linear(64, d))
        shapes = self.layer_dims if config.head == "duet" else [(config.apg_rank,) * 2] * len(self.layer_dims)
        self.sem_generator = ParameterGenerator(d, shapes, bias=config.head == "duet",
                                                frozen=config.frozen_projections, seed=config.projection_seed + 1)
        for module in (self.cat, self.cat_position, self.cat_tower[0]):
            if module is not None:
                nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(self.cat_tower[0].bias)

    def semantic_history(self, items: torch.Tensor) -> torch.Tensor:
        """``H_c`` ``[B, L, D]``: the semantic sequence of the history (item ids mapped to semantic ids here, so the
        two sequences are aligned by construction)."""
        h = self.cat(self.semantic[items])
        if self.cat_position is not None:
            h = h + self.cat_position.weight[: items.size(1)]
        return self.cat_tower(h)

    def quantise(self, hist: torch.Tensor) -> torch.Tensor:
        """Each position's nearest codeword (rows 1..K), ``[B, L, D]``, without gradient."""
        with torch.no_grad():
            index = nearest_codewords(hist, self.codebook[1:]) + 1
        return self.codebook[index]

    def generated(self, hist: torch.Tensor, items: torch.Tensor, lengths: torch.Tensor,
                  ) -> tuple[list, torch.Tensor | None]:
        """The head's fused layers ``W = clip(W_item, -t, t) + W_sem`` (biases alike) for these histories and the
        alignment loss (None without ``vq``). Every route of :class:`DSR` reads its layers here: the user vector of
        the sequence backbones (CTR logits, full ranking, the loss) and DIN's classifier on ``[target, pooled]``."""
        sem = self.semantic_history(items)
        align = None
        if self.config.vq:
            q = self.quantise(hist)
            item_input = self.decoder(q)
            real = (items != 0).unsqueeze(-1).to(sem.dtype)
            align = ((sem - q).pow(2) * real).sum() / (real.sum() * sem.size(-1)).clamp(min=1)
        else:
            item_input = hist
        item_layers = self.generator.generate(self.generator.condition(item_input, lengths))
        sem_layers = self.sem_generator.generate(self.sem_generator.condition(sem, lengths))
        t = self.config.clip
        return [(clip_fuse(wi, ws, t), clip_fuse(bi, bs, t))
                for (wi, bi), (ws, bs) in zip(item_layers, sem_layers)], align

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, align = self._logits(batch)
        bce = F.binary_cross_entropy_with_logits(logits, batch["labels"])
        if align is None:
            return bce, {"bce": bce.detach()}
        return bce + self.config.vq_weight * align, {"bce": bce.detach(), "vq": align.detach()}
