"""VQ-Rec (Hou et al., WWW 2023): items are 32 discrete OPQ codes; an item vector is the mean of its codes'
embeddings (no item-ID embedding), encoded by a SASRec-style Transformer; scores are cosine / tau.

Stages (``stage``):
* ``pretrain``: in-batch sequence-item contrastive loss on mixed-domain batches (one joint tokenizer), with
  same-target entries set to logit 0 (exp(0)=1, as the reference) and one semi-synthetic hard negative per row
  (the target's codes, each replaced w.p. ``fake_ratio`` by a uniform code of the same sub-codebook).
* ``finetune``: cross-entropy over all items. With ``reassign_epochs > 0`` the first epochs train only the
  code permutation (:mod:`semrec.models.permutation`), whose result is then baked into the code table; after it
  only the code table and the input LayerNorm train when ``fix_enc`` (positions and Transformer frozen).
  Training from scratch: ``permutation: none``, ``fix_enc: false`` (everything trains).

Deliberate deviations from the reference (spec vqrec §3-5):
* the permutation learns by default (straight-through Gumbel-Sinkhorn, a true bijection at the end);
  ``permutation: reference`` reproduces the reference's zero-gradient random many-to-one re-assignment;
* ``fix_enc`` is honoured: the reference freezes the Transformer after the assignment stage even when
  training from scratch (a random frozen encoder); here that happens only with ``fix_enc: true``;
* both pre-training bugs fixed in the reference's March 2023 commits are fixed (no B x B broadcast, no
  zeroed first-row negative); the padding item is never a class or ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.layers import TransformerEncoder, by_length, gather_last, init_weights
from semrec.models.losses import item_softmax_loss, register_item_loss
from semrec.models.permutation import CodePermutation


@dataclass
class VQRecConfig:
    hidden_size: int = 300
    inner_size: int = 256
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.5
    attn_dropout: float = 0.5
    max_len: int = 50
    tau: float = 0.07
    stage: str = "finetune"  # pretrain | finetune
    fake_ratio: float = 0.75  # pretrain: probability of replacing each code of the semi-synthetic negative
    reassign_epochs: int = 5  # finetune: epochs that train only the code permutation (0: none)
    permutation: str = "learned"  # learned | reference | none
    sinkhorn_iters: int = 3
    sinkhorn_temperature: float = 0.7
    fix_enc: bool = True  # finetune, after the assignment stage: freeze positions and Transformer
    sample_style: str = "prefix"  # finetune: prefix rows (the reference) | sequence (all positions, cheaper)
    ce_chunk_size: int = 0  # > 0: the same exact full softmax over item chunks (bounded memory); 0: dense logits
    loss: str = "full"  # full | uniform | popularity | in_batch | mixed (sampled softmax + logQ, models.losses)
    num_negatives: int = 1024  # shared negatives per batch of the sampled losses (mixed: + the batch targets)


class VQRec(SequentialRecommender):
    sample_style = "prefix"
    similarity = "cosine"

    def __init__(self, config: VQRecConfig, items: ItemInputs):
        super().__init__()
        register_item_loss(self, config.loss, config.num_negatives, config.ce_chunk_size, items.popularity)
        if items.codes is None or items.codebook_sizes is None:
            raise ValueError("VQ-Rec needs item codes (fit them with 'semrec codes <dataset> --tokenizer opq')")
        if config.stage not in ("pretrain", "finetune"):
            raise ValueError(f"stage must be 'pretrain' or 'finetune', got {config.stage!r}")
        if config.permutation not in ("learned", "reference", "none"):
            raise ValueError(f"permutation must be learned | reference | none, got {config.permutation!r}")
        if config.sample_style not in ("prefix", "sequence") or (
                config.stage == "pretrain" and config.sample_style != "prefix"):
            raise ValueError("sample_style must be 'prefix' or 'sequence' ('prefix' for pre-training: in-batch "
                             f"negatives are per row), got {config.sample_style!r}")
        self.config = config
        self.sample_style = config.sample_style
        d = config.hidden_size
        sizes = torch.tensor(items.codebook_sizes)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), (sizes + 1).cumsum(0)[:-1]])
        global_codes = items.codes + offsets + 1  # block k, code c -> offset_k + c + 1; row offset_k reserved
        global_codes[0] = 0  # the padding item: global row 0
        self.register_buffer("codes", global_codes.long())
        self.register_buffer("code_offsets", offsets)
        self.register_buffer("code_sizes", sizes)
        self.register_buffer("reassigned", torch.zeros((), dtype=torch.bool))  # baked permutation (resume-safe)
        self.code_embedding = nn.Embedding(int((sizes + 1).sum()), d, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.input_norm = nn.LayerNorm(d, eps=1e-12)
        self.input_dropout = nn.Dropout(config.dropout)
        self.encoder = TransformerEncoder(config.n_layers, d, config.n_heads, config.inner_size, config.dropout,
                                          config.attn_dropout)
        self.apply(init_weights)
        self.permutation: CodePermutation | None = None
        if config.stage == "finetune" and config.permutation != "none" and config.reassign_epochs > 0:
            if len(set(items.codebook_sizes)) != 1:
                raise ValueError("the code permutation needs equal codebook sizes")
            self.permutation = CodePermutation(len(items.codebook_sizes), int(sizes[0]), config.permutation,
                                               config.sinkhorn_temperature, config.sinkhorn_iters)

    # ----- code table and item vectors ------------------------------------------------------------
    def _blocks(self) -> torch.Tensor:
        """Row indices ``[levels, size]`` of each block's real codes in the code table."""
        return self.code_offsets.unsqueeze(1) + 1 + torch.arange(int(self.code_sizes[0]), device=self.codes.device)

    def code_table(self) -> torch.Tensor:
        """The code embedding table, re-assigned by the current permutation until it is baked in."""
        table = self.code_embedding.weight
        if self.permutation is None or bool(self.reassigned):
            return table
        rows = self._blocks()
        permuted = self.permutation(table[rows])  # [levels, size, d]
        return table.index_put((rows.reshape(-1),), permuted.reshape(-1, table.size(1)))

    def item_vectors(self, codes: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the code embeddings of global codes ``[..., levels]``."""
        return F.embedding(codes, self.code_table() if table is None else table, padding_idx=0).mean(-2)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_vectors(self.codes)

    # ----- sequence side --------------------------------------------------------------------------
    def _transformer(self, vectors: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(vectors.size(1), device=vectors.device)
        x = self.input_dropout(self.input_norm(vectors + self.position_embedding(positions)))
        return self.encoder(x, is_causal=True)

    def _hidden(self, vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return by_length(self._transformer, vectors, lengths)

    def _encode(self, vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return gather_last(self._hidden(vectors, lengths), lengths)

    def encode_sequence(self, items, lengths, history_table=None) -> torch.Tensor:
        table = self.item_embeddings() if history_table is None else history_table
        return self._encode(table[items], lengths)

    def eval_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.item_embeddings()
        return table, table

    # ----- training -------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """Finetune schedule: permutation-only epochs, then bake it in and train the code table (+ LN)."""
        cfg = self.config
        if cfg.stage != "finetune":
            return
        if self.permutation is not None and epoch < cfg.reassign_epochs and not bool(self.reassigned):
            for p in self.parameters():
                p.requires_grad_(False)
            self.permutation.trans_matrix.requires_grad_(True)
            return
        if self.permutation is not None and not bool(self.reassigned):
            self.bake_permutation()
        for p in self.parameters():
            p.requires_grad_(True)
        if self.permutation is not None:
            self.permutation.trans_matrix.requires_grad_(False)
        if cfg.fix_enc:
            for module in (self.position_embedding, self.encoder):
                module.requires_grad_(False)

    @torch.no_grad()
    def bake_permutation(self) -> None:
        """Copy the final permutation of each block into the code table (once)."""
        rows = self._blocks()
        order = self.permutation.final()  # [levels, size]: new row r <- old row order[r]
        table = self.code_embedding.weight
        table[rows.reshape(-1)] = table[rows.gather(1, order).reshape(-1)]
        table[0] = 0.0  # the reference zeroes the padding row when baking
        self.reassigned.fill_(True)

    def fake_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Semi-synthetic negatives: each code replaced w.p. ``fake_ratio`` by a uniform code of its block."""
        random_codes = (torch.rand(codes.shape, device=codes.device) * self.code_sizes).long()
        random_codes = random_codes + self.code_offsets + 1
        replace = torch.rand(codes.shape, device=codes.device) < self.config.fake_ratio
        return torch.where(replace, random_codes, codes)

    def loss(self, batch):
        cfg = self.config
        items, lengths, targets = batch["items"], batch["lengths"], batch["targets"]
        table = self.code_table()
        if cfg.stage == "pretrain":
            unique, inverse = torch.unique(torch.cat([items.reshape(-1), targets]), return_inverse=True)
            vectors = self.item_vectors(self.codes[unique], table)
            user = F.normalize(self._encode(vectors[inverse[: items.numel()]].view(*items.shape, -1), lengths), dim=-1)
            target_vectors = F.normalize(vectors[inverse[items.numel():]], dim=-1)
            logits = user @ target_vectors.T / cfg.tau
            same = (targets.unsqueeze(0) == targets.unsqueeze(1)) & ~torch.eye(
                len(targets), dtype=torch.bool, device=targets.device)
            logits = logits.masked_fill(same, 0.0)  # the reference: same-target entries contribute exp(0) = 1
            fake = F.normalize(self.item_vectors(self.fake_codes(self.codes[targets]), table), dim=-1)
            fake_logit = (user * fake).sum(-1, keepdim=True) / cfg.tau
            labels = torch.arange(len(targets), device=targets.device)
            loss = F.cross_entropy(torch.cat([logits, fake_logit], dim=1), labels)
            return loss, {"contrastive": loss.detach()}
        catalogue = self.item_vectors(self.codes, table)
        if targets.dim() == 2:  # sequence style: every real position of each window
            real = targets > 0
            user, targets = F.normalize(self._hidden(catalogue[items], lengths)[real], dim=-1), targets[real]
        else:
            user = F.normalize(self._encode(catalogue[items], lengths), dim=-1)
        if cfg.loss != "full" or cfg.ce_chunk_size:
            loss = item_softmax_loss(user, F.normalize(catalogue, dim=-1), targets, cfg.loss, cfg.num_negatives,
                                     cfg.ce_chunk_size, self.train_counts, scale=1 / cfg.tau)
            return loss, {"rec": loss.detach()}
        logits = user @ F.normalize(catalogue[1:], dim=-1).T / cfg.tau  # the padding item is never a class
        loss = F.cross_entropy(logits, targets - 1)
        return loss, {"rec": loss.detach()}
