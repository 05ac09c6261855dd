"""Shared building blocks: post-LN multi-head attention (SDPA), feed-forward, Transformer stacks.

The blocks follow the RecBole / CCFRec reference layout: separate Q, K, V projections with bias,
dropout on attention probabilities, output projection, dropout, then a residual LayerNorm
(post-LN); FFN is Linear -> GELU (erf) -> Linear -> dropout -> LayerNorm(out + x).
Attention uses ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a post-LN residual: ``LN(dropout(W_o attn(q, kv)) + q)``."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float, hidden_dropout: float, eps: float = 1e-12):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attn_dropout = attn_dropout
        self.dropout = nn.Dropout(hidden_dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, kv: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        if kv is None:  # self-attention: one fused GEMM for Q, K and V
            weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
            bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
            q, k, v = (self._heads(t) for t in F.linear(query, weight, bias).chunk(3, dim=-1))
        else:
            weight = torch.cat([self.key.weight, self.value.weight])
            bias = torch.cat([self.key.bias, self.value.bias])
            q = self._heads(self.query(query))
            k, v = (self._heads(t) for t in F.linear(kv, weight, bias).chunk(2, dim=-1))
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0, is_causal=is_causal
        )
        b, _, t, _ = attended.shape
        attended = attended.transpose(1, 2).reshape(b, t, -1)
        return self.norm(self.dropout(self.out(attended)) + query)


class GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), W, b)`` that keeps only ``h`` for backward and recomputes ``gelu(h)`` there.

    Autograd would store both ``h`` and ``gelu(h)`` (two [tokens, inner] tensors per FFN); recomputing the
    cheap elementwise GELU saves one of them, which is most of CCFRec's activation memory at batch 400.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, weight)
        return F.linear(F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, weight = ctx.saved_tensors
        activated = F.gelu(h)
        flat_grad = grad_out.reshape(-1, grad_out.size(-1))
        grad_weight = flat_grad.T @ activated.reshape(-1, activated.size(-1))
        grad_bias = flat_grad.sum(0)
        grad_h = torch.ops.aten.gelu_backward(grad_out @ weight, h)
        return grad_h, grad_weight, grad_bias


class FeedForward(nn.Module):
    """``LN(dropout(W_2 gelu(W_1 x)) + x)``."""

    def __init__(self, d_model: int, inner: int, dropout: float, eps: float = 1e-12):
        super().__init__()
        self.fc1 = nn.Linear(d_model, inner)
        self.fc2 = nn.Linear(inner, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if torch.is_grad_enabled() and h.requires_grad:
            out = GeluLinear.apply(h, self.fc2.weight, self.fc2.bias)
        else:
            out = self.fc2(F.gelu(h))
        return self.norm(self.dropout(out) + x)


class TransformerLayer(nn.Module):
    """Self-attention then feed-forward."""

    def __init__(self, d_model: int, n_heads: int, inner: int, dropout: float, attn_dropout: float,
                 eps: float = 1e-12):
        super().__init__()
        self.attention = MultiHeadAttention(d_model, n_heads, attn_dropout, dropout, eps)
        self.ffn = FeedForward(d_model, inner, dropout, eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        return self.ffn(self.attention(x, attn_mask=attn_mask, is_causal=is_causal))


class CrossTransformerLayer(nn.Module):
    """Q-Former style: self-attention over queries, cross-attention to a fixed context, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, inner: int, dropout: float, attn_dropout: float,
                 eps: float = 1e-12):
        super().__init__()
        self.self_attention = MultiHeadAttention(d_model, n_heads, attn_dropout, dropout, eps)
        self.cross_attention = MultiHeadAttention(d_model, n_heads, attn_dropout, dropout, eps)
        self.ffn = FeedForward(d_model, inner, dropout, eps)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.cross_attention(self.self_attention(queries), context))


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerLayer`; returns the last layer's output."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, inner: int, dropout: float, attn_dropout: float,
                 eps: float = 1e-12):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, n_heads, inner, dropout, attn_dropout, eps) for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        for layer in self.layers:
            x = layer(x, attn_mask=attn_mask, is_causal=is_causal)
        return x


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Reference initialisation: N(0, std) for Linear and Embedding weights, zero biases, LayerNorm (1, 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(0.0, std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


def gather_last(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Hidden state at position ``lengths - 1`` of each right-padded sequence: [B, L, d] -> [B, d]."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
    return hidden.gather(1, index).squeeze(1)


def by_length(fn, x: torch.Tensor, lengths: torch.Tensor, groups: int = 4) -> torch.Tensor:
    """``fn`` over ``[B, L, ...]`` right-padded rows, run on ``groups`` groups of rows of similar length, each
    trimmed to its longest row; returns ``[B, L, d]`` with zeros at the trimmed positions.

    Exact for any ``fn`` whose outputs at real positions do not depend on trailing padding (causal or
    key-masked attention, RNNs): a batch with a few long rows then no longer pays full width for every row
    (on Scientific, where most histories are short, this removes most of the padded positions).
    """
    if groups <= 1 or x.size(0) < 2 * groups:
        return fn(x)
    out = None
    parts = torch.argsort(lengths).tensor_split(groups)
    widths = torch.stack([lengths[idx].max() for idx in parts]).tolist()  # one host sync for all groups
    for idx, width in zip(parts, widths):
        width = max(1, int(width))
        part = fn(x[idx, :width])
        if out is None:
            out = part.new_zeros(x.size(0), x.size(1), part.size(-1))
        out[idx, :width] = part
    return out


# ------------------------------------------------------------------------ dynamic parameter generation (SOLID family)


def folded_normal(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard-normal values folded into (-2, 2) by ``fmod`` (the DUET / SOLID references' projection init)."""
    return torch.fmod(torch.randn(*shape, generator=generator), 2.0)


class ParameterGenerator(nn.Module):
    """A hypernetwork's condition and projections (spec solid 5.3, 7.1, 7.2, 7.4).

    ``condition(h, lengths)`` = ``MLP(GRU(h)[last])`` ``[B, dim]`` (GRU 1 layer, MLP Linear-Tanh-Linear, xavier, zero
    biases). ``generate(g)`` gives for layer ``j`` of ``shapes`` (``(rows, cols)`` each) the weight
    ``reshape(g A_j + a_j, shape_j)`` ``[B, rows, cols]`` and, with ``bias``, ``g P_j + p_j`` ``[B, cols]``. The
    projections start as folded standard normals from ``seed``; ``frozen`` keeps them fixed (buffers, saved in
    checkpoints but never trained: the references keep them in Python lists, spec solid 10.2), else they are
    parameters. Names: ``w_proj_j``, ``w_bias_j``, ``b_proj_j``, ``b_bias_j``."""

    def __init__(self, dim: int, shapes: list[tuple[int, int]], bias: bool = True, frozen: bool = True,
                 seed: int = 0):
        super().__init__()
        self.shapes, self.has_bias = [tuple(s) for s in shapes], bias
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))
        for name, weight in self.gru.named_parameters():
            (nn.init.xavier_uniform_ if name.startswith("weight") else nn.init.zeros_)(weight)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        gen = torch.Generator().manual_seed(seed)
        for j, (rows, cols) in enumerate(self.shapes):
            tensors = {f"w_proj_{j}": folded_normal(gen, dim, rows * cols),
                       f"w_bias_{j}": folded_normal(gen, rows * cols)}
            if bias:
                tensors[f"b_proj_{j}"] = folded_normal(gen, dim, cols)
                tensors[f"b_bias_{j}"] = folded_normal(gen, cols)
            for name, value in tensors.items():
                if frozen:
                    self.register_buffer(name, value)
                else:
                    setattr(self, name, nn.Parameter(value))

    def condition(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[B, L, dim]`` right-padded sequence -> ``g`` ``[B, dim]`` (state at the last real position)."""
        return self.mlp(gather_last(self.gru(h)[0], lengths))

    def generate(self, g: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per layer: (weight ``[B, rows, cols]``, bias ``[B, cols]`` or None)."""
        out = []
        for j, shape in enumerate(self.shapes):
            weight = (g @ getattr(self, f"w_proj_{j}") + getattr(self, f"w_bias_{j}")).view(-1, *shape)
            bias = g @ getattr(self, f"b_proj_{j}") + getattr(self, f"b_bias_{j}") if self.has_bias else None
            out.append((weight, bias))
        return out


def clip_fuse(item: torch.Tensor | None, semantic: torch.Tensor | None, bound: float) -> torch.Tensor | None:
    """SOLID's fusion (spec solid 5.3): ``clip(item, -t, t) + semantic``; None when both are None."""
    if item is None:
        return semantic
    return item.clamp(-bound, bound) + semantic if semantic is not None else item.clamp(-bound, bound)


class LearnedVQ(nn.Module):
    """DUET_VQVAE's item-only, learned quantiser (spec solid 7.3): ``enc`` (D->64->D, ReLU), a learned codebook of
    ``size`` codewords, ``dec`` (D->64->D, LeakyReLU 0.1). ``forward(h, real)`` -> (reconstruction ``[B, L, D]``, loss):
    each position's encoding is replaced by its nearest codeword (looked up by index, so the codebook learns only
    through the decoder), decoded; loss ``MSE(recon, h) + 0.25 MSE(enc, sg(q)) + 0.25 MSE(h, sg(q))`` over the real
    positions ``real`` ``[B, L]``."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, dim))
        self.codebook = nn.Embedding(size, dim)
        self.dec = nn.Sequential(nn.Linear(dim, 64), nn.LeakyReLU(0.1), nn.Linear(64, dim))

    def forward(self, h: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.enc(h)
        flat = enc.detach().reshape(-1, enc.size(-1))
        table = self.codebook.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ table.detach().T + table.detach().pow(2).sum(1)[None]
        q = self.codebook(dist.argmin(1).view(enc.shape[:-1]))
        recon = self.dec(q)
        weight = real.unsqueeze(-1).to(h.dtype)
        norm = (weight.sum() * h.size(-1)).clamp(min=1)

        def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return ((a - b).pow(2) * weight).sum() / norm

        return recon, mse(recon, h) + 0.25 * mse(enc, q.detach()) + 0.25 * mse(h, q.detach())
