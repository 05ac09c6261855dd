"""UniSRec (Hou et al., KDD 2022, "Towards Universal Sequence Representation Learning for Recommender
Systems"): frozen PLM text vectors -> MoE of parametric whitening layers -> SASRec-style causal Transformer.

Spec ``vqrec.md`` section 8 (backbone shared with VQ-Rec, section 3). Item vector = MoE(plm) in the
``inductive`` stage, MoE(plm) + ID embedding in the ``transductive`` stage (the reference's fine-tuning
default); each expert is a PWLayer ``W (dropout(x) - b)`` (b = 0 at init, W ~ N(0, 0.02) without bias);
the gates are a dense softmax of ``x W_gate`` (zeros at init, so uniform 1/n_exps) plus, in training only,
Gaussian noise scaled by ``softplus(x W_noise) + 0.01``. Sequence: LayerNorm(item vectors + positions) ->
dropout -> post-LN causal Transformer -> last position. Scores are cosines; the loss is cross-entropy
over cos / tau.

Implemented: the fine-tuning / from-scratch path only. Not implemented from section 8: pre-training
(seq-item and seq-seq contrastive losses, the item-drop / word-drop augmentation with feat2CLS vectors,
same-target masking) and hence no pre-trained checkpoint. ``fix_enc`` freezes the position embedding and
the Transformer as the reference does when fine-tuning a pre-trained model (``init_from``); it defaults to
False here because from scratch everything trains (the reference's default True assumes a checkpoint).

Deliberate deviations from the reference:
* the adaptor runs once per training step over all N+1 items and the sequence inputs are rows of that
  table, so an item shares one dropout mask and one gate-noise draw across all its occurrences in a step
  (the reference runs the adaptor separately on the sequence items and on the catalogue);
* the padding item is never a class of the cross-entropy nor ranked (the reference's CE includes id 0);
* the PLM is whatever ``text_model`` / ``text_view`` name (default MiniLM, 384-d, not BERT [CLS] 768-d);
  ``plm_dim`` is read from the matrix; the matrix is a non-persistent buffer (not saved in checkpoints);
* attention uses the causal mask only: with right padding the key-padding mask changes no real position;
* ``sample_style`` may be "sequence" (loss at every position), equivalent for a causal model and cheaper;
  the default "prefix" (one target per row) is the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.layers import TransformerEncoder, by_length, gather_last, init_weights
from semrec.models.losses import item_softmax_loss, register_item_loss


@dataclass
class UniSRecConfig:
    train_stage: str = "transductive"  # transductive (MoE(plm) + ID embedding) | inductive (MoE(plm) only)
    hidden_size: int = 300
    inner_size: int = 256
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.5
    attn_dropout: float = 0.5
    max_len: int = 50
    tau: float = 0.07
    n_exps: int = 8
    adaptor_dropout: float = 0.2
    fix_enc: bool = False  # freeze position embedding + Transformer (fine-tuning a pre-trained model)
    sample_style: str = "prefix"  # prefix (reference) | sequence (all-position loss, same objective, cheaper)
    ce_chunk_size: int = 0  # > 0: the same exact full softmax over item chunks (bounded memory); 0: dense logits
    loss: str = "full"  # full | uniform | popularity | in_batch | mixed (sampled softmax + logQ, models.losses)
    num_negatives: int = 1024  # shared negatives per batch of the sampled losses (mixed: + the batch targets)


class PWLayer(nn.Module):
    """Parametric whitening: ``W (dropout(x) - b)``."""

    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(d_in))
        self.lin = nn.Linear(d_in, d_out, bias=False)
        nn.init.normal_(self.lin.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.dropout(x) - self.bias)


class MoEAdaptor(nn.Module):
    """Dense mixture of PWLayer experts with (training-only) noisy gates."""

    def __init__(self, n_exps: int, d_in: int, d_out: int, dropout: float, noise_eps: float = 0.01):
        super().__init__()
        self.experts = nn.ModuleList(PWLayer(d_in, d_out, dropout) for _ in range(n_exps))
        self.w_gate = nn.Parameter(torch.zeros(d_in, n_exps))
        self.w_noise = nn.Parameter(torch.zeros(d_in, n_exps))
        self.noise_eps = noise_eps

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.w_gate
        if self.training:
            std = F.softplus(x @ self.w_noise) + self.noise_eps
            logits = logits + torch.randn_like(logits) * std
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack([expert(x) for expert in self.experts], dim=-2)  # [..., E, d_out]
        return (self.gates(x).unsqueeze(-1) * out).sum(-2)


class UniSRec(SequentialRecommender):
    sample_style = "prefix"
    similarity = "cosine"

    @classmethod
    def cold_start_refusal(cls, config: UniSRecConfig) -> str | None:
        if config.train_stage == "transductive":
            return ("unisrec with train_stage 'transductive' adds a learned ID embedding to every item, which an item "
                    "added after training cannot have; train with model_params.train_stage=inductive to add items "
                    "without retraining")
        return None

    def __init__(self, config: UniSRecConfig, items: ItemInputs):
        super().__init__()
        register_item_loss(self, config.loss, config.num_negatives, config.ce_chunk_size, items.popularity)
        if items.plm is None:
            raise ValueError("UniSRec needs the frozen PLM text vectors (items.plm)")
        if items.plm.size(0) != items.n_items + 1:
            raise ValueError(f"plm matrix has {items.plm.size(0)} rows, expected n_items + 1 = {items.n_items + 1}")
        if config.train_stage not in ("transductive", "inductive"):
            raise ValueError(f"train_stage must be 'transductive' or 'inductive', got {config.train_stage!r}")
        if config.sample_style not in ("prefix", "sequence"):
            raise ValueError(f"sample_style must be 'prefix' or 'sequence', got {config.sample_style!r}")
        self.config = config
        self.sample_style = config.sample_style  # instance attribute: read by the trainer
        d = config.hidden_size
        self.register_buffer("plm", items.plm.float(), persistent=False)
        self.item_embedding = (nn.Embedding(items.n_items + 1, d, padding_idx=0)
                               if config.train_stage == "transductive" else None)
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.input_norm = nn.LayerNorm(d, eps=1e-12)
        self.input_dropout = nn.Dropout(config.dropout)
        self.encoder = TransformerEncoder(config.n_layers, d, config.n_heads, config.inner_size, config.dropout,
                                          config.attn_dropout)
        self.apply(init_weights)  # N(0, 0.02); the gate matrices are raw Parameters and stay zero
        self.adaptor = MoEAdaptor(config.n_exps, self.plm.size(1), d, config.adaptor_dropout)
        if config.fix_enc:
            for module in (self.position_embedding, self.encoder):
                module.requires_grad_(False)

    # ----- item side ------------------------------------------------------------------------------
    def encode_items(self, plm: torch.Tensor) -> torch.Tensor:
        """MoE(plm) for arbitrary text vectors (e.g. items outside the catalogue): [n, plm_dim] -> [n, d]."""
        return self.adaptor(plm)

    def item_table(self) -> torch.Tensor:
        """[N+1, d] item vectors, one adaptor pass over the whole catalogue."""
        table = self.adaptor(self.plm)
        if self.item_embedding is not None:
            table = table + self.item_embedding.weight
        return table

    @torch.no_grad()
    def eval_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.item_table()
        return table, table

    def item_embeddings(self) -> torch.Tensor:
        return self.eval_tables()[0]

    # ----- sequence side --------------------------------------------------------------------------
    def _transformer(self, vectors: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(vectors.size(1), device=vectors.device)
        x = self.input_dropout(self.input_norm(vectors + self.position_embedding(positions)))
        return self.encoder(x, is_causal=True)

    def _hidden(self, items: torch.Tensor, table: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return by_length(self._transformer, table[items], lengths)

    def encode_sequence(self, items, lengths, history_table=None) -> torch.Tensor:
        table = self.item_table() if history_table is None else history_table
        return gather_last(self._hidden(items, table, lengths), lengths)

    # ----- training -------------------------------------------------------------------------------
    def loss(self, batch):
        items, lengths, targets = batch["items"], batch["lengths"], batch["targets"]
        table = self.item_table()  # once per step, shared by the inputs and the candidates
        hidden = self._hidden(items, table, lengths)
        if targets.dim() == 2:  # "sequence" samples: a target at every real position
            mask = targets > 0
            user, targets = hidden[mask], targets[mask]
        else:
            user = gather_last(hidden, lengths)
        cfg = self.config
        if cfg.loss != "full" or cfg.ce_chunk_size:
            loss = item_softmax_loss(F.normalize(user, dim=-1), F.normalize(table, dim=-1), targets, cfg.loss,
                                     cfg.num_negatives, cfg.ce_chunk_size, self.train_counts, scale=1 / cfg.tau)
            return loss, {"rec": loss.detach()}
        logits = F.normalize(user, dim=-1) @ F.normalize(table[1:], dim=-1).T / self.config.tau
        loss = F.cross_entropy(logits, targets - 1)  # classes are items 1..N
        return loss, {"rec": loss.detach()}
