"""CCFRec (Liu et al., KDD 2025): semantic codes fused with frozen text vectors, no item-ID embedding.

Item v with codes c_1..c_M and per-view text vectors t_1..t_V: H = Qformer(code_emb(c), t) (self-attention
over codes, cross-attention to the texts, FFN; 2 post-LN layers). History items use mean(H), candidates
mean(H) + mean(code_emb(c)) (``symmetric_pooling`` makes both sides the latter). A causal SASRec-style
backbone gives the user vector; scores are cosine similarities (divided by tau in the losses).
Loss = L_rec (softmax of the target against ``neg_num`` shared uniform negatives) + mlm_weight * L_MCM (masked
code modelling) + cl_weight * L_MSA (in-batch InfoNCE between original and masked sequence views).

Negatives (``negatives``: reference | per_row | full | auto, and ``history_negatives``): see
:mod:`semrec.models.negatives`; the faithful setting is ``reference`` with prefix rows.

Deliberate deviations from the reference (spec ccfrec sections 4-9):
* the fusion module runs once per unique item of a batch (histories, positives and negatives together)
  for the original view, so an item repeated in a batch shares one dropout mask; the reference runs
  history and candidate passes separately (``separate_dropout=True`` does too). Padding positions are never
  encoded.
* masking is drawn on the fly from the torch RNG (vectorised) instead of in the Dataset with numpy.
* MCM logits are computed for the masked slots of real items only (the reference computes all slots
  and ignores the rest: same loss, far less memory), and recomputed in backward rather than stored.
* the padding item is never ranked at evaluation, and with ``neg_num <= 0`` the full softmax covers
  items 1..N (the reference includes the pad row).
* the frozen text vectors are the PCA-whitened vectors of the code tokenizer (the reference fits a second,
  identically configured PCA).
* the crash bugs of the reference (collator keys, ``args.FN``, encode_emb paths) do not exist here.
* optional ``sample_style="sequence"`` (not the reference; default "prefix"): a training row is a user window
  with a target at every position, so each causal position gives the prefix row's user vector at once
  (L_rec over all positions, negatives shared by the batch and distinct from all its targets); MCM masks
  the window's items; MSA contrasts one random real position per window (in-batch negatives from the
  other windows). Several times cheaper per epoch on long histories; a named CPU setting, not the faithful one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.layers import CrossTransformerLayer, TransformerEncoder, gather_last, init_weights
from semrec.models.losses import chunked_cross_entropy
from semrec.models.negatives import history_logits, negative_pool, resolve_mode


@dataclass
class CCFRecConfig:
    embedding_size: int = 128
    inner_size: int = 512  # FFN inner size ("hidden_size" in the reference)
    n_layers: int = 2
    n_layers_cross: int = 2
    n_heads: int = 2
    dropout: float = 0.3
    dropout_cross: float = 0.3
    max_len: int = 20
    tau: float = 0.07
    neg_num: int = 24000  # size of the sampled pool; <= 0: full softmax over all items
    negatives: str = "auto"  # reference | per_row | full | auto (reference for prefix rows, per_row for sequence)
    history_negatives: bool = False  # the row's own history items as extra (hard) negatives
    separate_dropout: bool = False  # history-side and candidate-side item encodings from separate fusion passes
    mask_ratio: float = 0.5
    mlm_weight: float = 0.6
    cl_weight: float = 0.4
    symmetric_pooling: bool = False  # ablation: history side also adds mean(code embeddings)
    text_context: bool = True  # ablation: False drops the cross-attention to the text vectors
    sample_style: str = "prefix"  # prefix (reference: one target per row) | sequence (every position, cheaper)
    eval_chunk: int = 2048  # items per fusion-module chunk when building evaluation tables
    ce_chunk_size: int = 0  # negatives=full: > 0 computes the same softmax over item chunks (bounded memory)


def negative_mode(config: CCFRecConfig) -> str:
    """The negative sampling ``config`` trains with (:func:`semrec.models.negatives.resolve_mode`)."""
    return resolve_mode(config.negatives, config.neg_num, config.sample_style)


def _code_prediction_loss(hidden: torch.Tensor, table: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """MCM: cosine(fusion output, every code embedding incl. row 0) / tau, cross-entropy against the true code."""
    return F.cross_entropy(F.normalize(hidden, dim=-1) @ F.normalize(table, dim=-1).T / tau, labels)


class SemanticFusion(nn.Module):
    """The Q-Former-style fusion module: code tokens attend to each other and to the item's text vectors."""

    def __init__(self, config: CCFRecConfig):
        super().__init__()
        d = config.embedding_size
        self.layers = nn.ModuleList(
            CrossTransformerLayer(d, config.n_heads, config.inner_size, config.dropout_cross, config.dropout_cross)
            for _ in range(config.n_layers_cross)
        )
        self.text_context = config.text_context

    def forward(self, code_emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = code_emb
        for layer in self.layers:
            h = layer(h, text) if self.text_context else layer.ffn(layer.self_attention(h))
        return h


class CCFRec(SequentialRecommender):
    sample_style = "prefix"
    similarity = "cosine"

    def __init__(self, config: CCFRecConfig, items: ItemInputs):
        super().__init__()
        if items.codes is None or items.text is None or items.codebook_sizes is None:
            raise ValueError("CCFRec needs item codes, codebook sizes and per-view text vectors")
        if items.text.size(-1) != config.embedding_size:
            raise ValueError(f"text vectors have dim {items.text.size(-1)} but embedding_size is "
                             f"{config.embedding_size}; fit the codes with pca_dim={config.embedding_size}")
        if config.sample_style not in ("prefix", "sequence"):
            raise ValueError(f"sample_style must be 'prefix' or 'sequence', got {config.sample_style!r}")
        if negative_mode(config) == "full" and config.history_negatives:  # also refuses an unknown mode
            raise ValueError("history_negatives adds the row's history items to sampled negatives; the full "
                             "softmax (negatives full or neg_num <= 0) already has them")
        if config.ce_chunk_size < 0:
            raise ValueError(f"ce_chunk_size must be >= 0, got {config.ce_chunk_size}")
        self.config = config
        self.sample_style = config.sample_style  # instance attribute: read by the trainer
        d = config.embedding_size
        sizes = torch.tensor(items.codebook_sizes)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
        global_codes = items.codes + offsets + 1  # level l, code c -> offset_l + c + 1; 0 = pad/[MASK]
        global_codes[0] = 0
        self.register_buffer("codes", global_codes.long())
        self.register_buffer("text", items.text.float())
        self.n_code_ids = int(sizes.sum()) + 1
        self.code_embedding = nn.Embedding(self.n_code_ids, d, padding_idx=0)
        self.fusion = SemanticFusion(config)
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.input_norm = nn.LayerNorm(d, eps=1e-12)
        self.input_dropout = nn.Dropout(config.dropout)
        self.encoder = TransformerEncoder(config.n_layers, d, config.n_heads, config.inner_size, config.dropout,
                                          config.dropout)
        self.apply(init_weights)  # also re-randomises the pad/[MASK] row, as the reference does

    # ----- item side ------------------------------------------------------------------------------
    def fuse(self, item_ids: torch.Tensor, codes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fusion outputs H [n, M, d] and raw code embeddings Z [n, M, d] of items (optionally masked codes)."""
        z = self.code_embedding(self.codes[item_ids] if codes is None else codes)
        return self.fusion(z, self.text[item_ids]), z

    def _pool(self, h: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        candidate = h.mean(1) + z.mean(1)
        history = candidate if self.config.symmetric_pooling else h.mean(1)
        return candidate, history

    @torch.no_grad()
    def eval_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.codes.size(0)
        candidate = torch.zeros(n, self.config.embedding_size, device=self.codes.device)
        history = torch.zeros_like(candidate)
        for start in range(1, n, self.config.eval_chunk):
            ids = torch.arange(start, min(n, start + self.config.eval_chunk), device=self.codes.device)
            candidate[ids], history[ids] = self._pool(*self.fuse(ids))
        return candidate, history

    def item_embeddings(self) -> torch.Tensor:
        return self.eval_tables()[0]

    # ----- sequence side --------------------------------------------------------------------------
    def _hidden(self, item_vectors: torch.Tensor) -> torch.Tensor:
        """Causal backbone over right-padded item vectors: [B, L, d] -> [B, L, d]."""
        positions = torch.arange(item_vectors.size(1), device=item_vectors.device)
        x = self.input_dropout(self.input_norm(item_vectors + self.position_embedding(positions)))
        return self.encoder(x, is_causal=True)

    def _backbone(self, item_vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return gather_last(self._hidden(item_vectors), lengths)

    def encode_sequence(self, items, lengths, history_table=None) -> torch.Tensor:
        if history_table is None:
            unique, inverse = torch.unique(items, return_inverse=True)
            history_table = self._pool(*self.fuse(unique))[1]
            vectors = history_table[inverse]
        else:
            vectors = history_table[items]
        return self._backbone(vectors * (items > 0).unsqueeze(-1), lengths)

    # ----- training -------------------------------------------------------------------------------
    def negative_pool(self, targets: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(pool [K], mask [R, K] or None)`` of :func:`semrec.models.negatives.negative_pool` for ``targets [R]``."""
        return negative_pool(self.codes.size(0) - 1, targets, mode, self.config.neg_num)

    def mask_codes(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT-style masking of code slots: (masked codes, boolean selection)."""
        chosen = torch.rand(codes.shape, device=codes.device) < self.config.mask_ratio
        action = torch.rand(codes.shape, device=codes.device)
        random_ids = torch.randint(1, self.n_code_ids, codes.shape, device=codes.device)
        masked = torch.where(chosen & (action < 0.8), torch.zeros_like(codes), codes)
        masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
        return masked, chosen

    def _encode_items(self, history_ids: torch.Tensor, candidate_ids: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """History-side vectors of ``history_ids [n]`` and candidate-side vectors of ``candidate_ids [m]``: one
        fusion pass per unique item of both (one dropout draw shared by an item's two sides), or with
        ``separate_dropout`` one pass per side, as the reference runs them."""
        if self.config.separate_dropout:
            unique, inverse = torch.unique(history_ids, return_inverse=True)
            history = self._pool(*self.fuse(unique))[1][inverse]
            unique, inverse = torch.unique(candidate_ids, return_inverse=True)
            return history, self._pool(*self.fuse(unique))[0][inverse]
        n = history_ids.numel()
        unique, inverse = torch.unique(torch.cat([history_ids, candidate_ids]), return_inverse=True)
        candidate, history = self._pool(*self.fuse(unique))
        return history[inverse[:n]], candidate[inverse[n:]]

    def loss(self, batch):
        cfg = self.config
        items, lengths, targets = batch["items"], batch["lengths"], batch["targets"]
        real = items > 0
        per_position = targets.dim() == 2  # "sequence" rows: a target at every real position
        flat_targets = targets[targets > 0] if per_position else targets
        mode = negative_mode(cfg)
        pool, pool_mask = self.negative_pool(flat_targets, mode)
        n_tgt = flat_targets.numel()
        hard = items[real] if cfg.history_negatives else items.new_zeros(0)  # candidate vectors of the history
        history, candidate = self._encode_items(items[real], torch.cat([flat_targets, pool, hard]))
        seq_vectors = items.new_zeros(*items.shape, cfg.embedding_size, dtype=history.dtype)
        seq_vectors[real] = history
        hidden = self._hidden(seq_vectors)
        if per_position:
            user = F.normalize(hidden[targets > 0], dim=-1)
            # MSA anchors: one random real position per window (the prefix row it stands for)
            anchor = (torch.rand(lengths.shape, device=lengths.device) * lengths).long().clamp(max=lengths - 1) + 1
        else:
            user = F.normalize(gather_last(hidden, lengths), dim=-1)
            anchor = lengths
        candidate = F.normalize(candidate, dim=-1)
        pos, neg = candidate[:n_tgt], candidate[n_tgt: n_tgt + pool.numel()]
        if mode == "full" and cfg.ce_chunk_size:  # the same softmax, no [positions x items] matrix
            rec = chunked_cross_entropy(user, neg, flat_targets - 1, cfg.ce_chunk_size, first=0, scale=1 / cfg.tau)
        elif mode == "full":  # the softmax over items 1..N (the pool), the target's own column included
            rec = F.cross_entropy(user @ neg.T / cfg.tau, flat_targets - 1)
        else:  # the target first, then the pool (masked per row) and the row's history (hard negatives)
            logits = [(user * pos).sum(-1, keepdim=True), user @ neg.T]
            if pool_mask is not None:
                logits[1] = logits[1].masked_fill(pool_mask, float("-inf"))
            if cfg.history_negatives:
                logits.append(history_logits(F.normalize(hidden, dim=-1), candidate[n_tgt + pool.numel():],
                                             items, targets, lengths))
            rec = F.cross_entropy(torch.cat(logits, dim=1) / cfg.tau, torch.zeros_like(flat_targets))
        parts = {"rec": rec.detach()}
        total = rec
        if cfg.mlm_weight > 0 or cfg.cl_weight > 0:
            hist_items = items[real]
            masked, chosen = self.mask_codes(self.codes[hist_items])
            h_masked, z_masked = self.fuse(hist_items, masked)
            masked_vectors = items.new_zeros(*items.shape, cfg.embedding_size, dtype=h_masked.dtype)
            masked_vectors[real] = self._pool(h_masked, z_masked)[1]  # history-side pooling, masked codes
            if cfg.mlm_weight > 0 and chosen.any():
                # logits [masked slots, all code ids] are recomputed in backward instead of stored
                mcm = checkpoint(_code_prediction_loss, h_masked[chosen], self.code_embedding.weight,
                                 self.codes[hist_items][chosen], cfg.tau, use_reentrant=False)
                total = total + cfg.mlm_weight * mcm
                parts["mcm"] = mcm.detach()
            if cfg.cl_weight > 0:
                anchor_user = user if not per_position else F.normalize(gather_last(hidden, anchor), dim=-1)
                user_masked = F.normalize(self._backbone(masked_vectors, anchor), dim=-1)
                sim = anchor_user @ user_masked.T / cfg.tau
                labels = torch.arange(sim.size(0), device=sim.device)
                msa = 0.5 * (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels))
                total = total + cfg.cl_weight * msa
                parts["msa"] = msa.detach()
        return total, parts
