"""Item-softmax losses for large catalogues (issue 20).

:func:`chunked_cross_entropy` is the exact cross-entropy over every item (the full softmax the next-item models
train with), computed over item chunks so that no ``[positions x items]`` logit matrix ever exists: the forward
pass streams a log-sum-exp over the chunks, the backward pass recomputes each chunk's logits and accumulates the
gradients of the positions and of the item table chunk by chunk. Peak extra memory is ``O(positions x chunk)``
(plus the table's own gradient, ``[items, D]``, as with the dense loss). Same value and gradients as
``F.cross_entropy(scale * hidden @ table[first:].T, targets - first)`` up to float summation order (tested).

Why our own autograd function: the fused "linear + cross-entropy" kernels of well-kept libraries (Liger-Kernel's
``LigerFusedLinearCrossEntropyLoss``, Apple's ``cut-cross-entropy``) are Triton kernels for CUDA only; this module
must run on CPU as well. The method is the standard online softmax (Milakov & Gimelshein, "Online normalizer
calculation for softmax", 2018) applied to the loss, as in Wijmans et al., "Cut Your Losses in Large-Vocabulary
Language Models" (2024), section 3.
"""

from __future__ import annotations

import torch


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, first: int, chunk: int,
                scale: float) -> torch.Tensor:
        n = table.size(0)
        lse = hidden.new_full((hidden.size(0),), float("-inf"))
        for start in range(first, n, chunk):
            logits = hidden @ table[start:start + chunk].T
            if scale != 1.0:
                logits.mul_(scale)
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
        target_logit = (hidden * table[targets]).sum(1) * scale
        ctx.save_for_backward(hidden, table, targets, lse)
        ctx.first, ctx.chunk, ctx.scale = first, chunk, scale
        return (lse - target_logit).mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        hidden, table, targets, lse = ctx.saved_tensors
        first, chunk, scale = ctx.first, ctx.chunk, ctx.scale
        g = grad_out / hidden.size(0)  # the mean over positions
        need_h, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_t = torch.zeros_like(table) if need_t else None
        for start in range(first, table.size(0), chunk):
            part = table[start:start + chunk]
            logits = hidden @ part.T
            if scale != 1.0:
                logits.mul_(scale)
            prob = logits.sub_(lse[:, None]).exp_().mul_(g * scale)  # d loss / d (hidden . item), [P, c]
            if need_h:
                grad_h.addmm_(prob, part)
            if need_t:
                grad_t[start:start + chunk].addmm_(prob.T, hidden)
        if need_h:
            grad_h.sub_(table[targets] * (g * scale))
        if need_t:
            grad_t.index_add_(0, targets, hidden * -(g * scale))
        return grad_h, grad_t, None, None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk_size: int = 8192,
                          first: int = 1, scale: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of positions ``hidden`` ``[P, D]`` over the classes ``table[first:]`` (``[N, D]`` rows;
    ``first`` = 1 leaves out the padding row 0, as the models' ``logits[:, 0] = -inf`` does), logits
    ``scale * hidden @ table.T``; ``targets`` ``[P]`` are row indices of ``table`` (>= ``first``). Memory
    ``O(P x chunk_size)`` instead of ``O(P x N)``; gradients reach ``hidden`` and ``table``. Raises ValueError on
    bad shapes, an empty class set or a target outside it."""
    if hidden.dim() != 2 or table.dim() != 2 or hidden.size(1) != table.size(1):
        raise ValueError(f"hidden [P, D] and table [N, D] must share D, got {tuple(hidden.shape)} and "
                         f"{tuple(table.shape)}")
    if targets.shape != (hidden.size(0),):
        raise ValueError(f"targets must be [P] = [{hidden.size(0)}], got {tuple(targets.shape)}")
    if chunk_size < 1 or not 0 <= first < table.size(0):
        raise ValueError(f"chunk_size must be >= 1 and first in 0..{table.size(0) - 1}, got {chunk_size}, {first}")
    if targets.numel() and (int(targets.min()) < first or int(targets.max()) >= table.size(0)):
        raise ValueError(f"targets must lie in {first}..{table.size(0) - 1}")
    if hidden.size(0) == 0:
        return (hidden.sum() + table.sum()) * 0.0
    return _ChunkedCrossEntropy.apply(hidden, table, targets.long(), first, chunk_size, float(scale))
