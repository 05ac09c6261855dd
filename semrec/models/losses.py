"""Item-softmax losses for large catalogues (issue 20): :func:`item_softmax_loss` is the one entry the next-item
models call with their ``loss`` setting (``full`` | ``uniform`` | ``popularity`` | ``in_batch`` | ``mixed``).

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

import math

import torch
import torch.nn.functional as F

_WORKSPACE: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _chunk_logits(hidden: torch.Tensor, part: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * hidden @ part.T`` ``[P, c]``, written into a buffer kept from call to call (per device and dtype,
    grown to the largest ``P x c`` asked for): every chunk of every step reuses the same pages instead of
    allocating, faulting in and freeing a fresh ``[P, c]`` block (on CPU the kernel zero-fills each fresh page:
    20-60% of a SASRec step's CPU time, bench/results/train_kernel.md). The result is overwritten by the next call:
    use it before calling again."""
    size = hidden.size(0) * part.size(0)
    key = (hidden.device, hidden.dtype)
    buffer = _WORKSPACE.get(key)
    if buffer is None or buffer.numel() < size:
        _WORKSPACE.pop(key, None)  # the smaller one goes first
        buffer = _WORKSPACE[key] = torch.empty(size, device=hidden.device, dtype=hidden.dtype)
    logits = torch.mm(hidden, part.T, out=buffer[:size].view(hidden.size(0), part.size(0)))
    return logits.mul_(scale) if scale != 1.0 else logits


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, first: int, chunk: int,
                scale: float) -> torch.Tensor:
        n = table.size(0)
        lse = hidden.new_full((hidden.size(0),), float("-inf"))
        for start in range(first, n, chunk):
            logits = _chunk_logits(hidden, table[start:start + chunk], scale)
            top = logits.amax(dim=1)  # a row's log-sum-exp, computed in place in the workspace
            top.masked_fill_(torch.isinf(top), 0.0)
            chunk_lse = logits.sub_(top[:, None]).exp_().sum(dim=1).log_().add_(top)
            lse = torch.logaddexp(lse, chunk_lse)
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
            logits = _chunk_logits(hidden, part, scale)
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


# ------------------------------------------------------------------------------------------ sampled softmax

LOSSES = ("full", "uniform", "popularity", "in_batch", "mixed")


def negative_sample(kind: str, num_negatives: int, targets: torch.Tensor, n_items: int,
                    popularity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negatives shared by every position of a batch and the log expected counts the logQ correction subtracts:
    ``(ids [M], log E[count] of each negative [M], log E[count] of each target [P])``, items 1..``n_items``.

    * ``uniform``: ``num_negatives`` draws from items 1..N, ``q = 1/N`` (Bengio & Senecal 2008; Jean et al., ACL 2015:
      sampled softmax). A constant correction, which leaves the softmax unchanged; kept for one formula.
    * ``popularity``: ``num_negatives`` draws with ``q_j`` proportional to ``max(count_j, 1)`` (training frequency;
      the floor keeps every item drawable), corrected by ``log(M q_j)`` (as TensorFlow's
      ``sampled_softmax_loss``).
    * ``in_batch``: the batch's own targets ``[P]`` are the negatives; they were drawn from the training frequency
      ``p_j``, so the correction is ``log(P p_j)`` (Yi et al., RecSys 2019, "Sampling-bias-corrected neural modeling
      for large corpus item recommendations", eq. 3, with the exact frequencies instead of a streaming estimate).
    * ``mixed``: the batch's targets plus ``num_negatives`` uniform draws (Yang et al., WWW 2020, "Mixed negative
      sampling for learning two-tower neural networks in recommendations"); the expected count of item ``j`` over
      both parts is ``P p_j + M / N``.
    The targets get the same correction as the negatives (the positive is one of the softmax's classes).
    ``popularity`` ``[N+1]`` training counts (row 0 = padding) is needed by all but ``uniform``.
    Raises ValueError on an unknown kind, ``num_negatives < 1`` or missing popularity."""
    if kind not in LOSSES[1:]:
        raise ValueError(f"sampled loss must be one of {', '.join(LOSSES[1:])}, got {kind!r}")
    device = targets.device
    if kind != "in_batch" and num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if kind == "uniform":
        ids = torch.randint(1, n_items + 1, (num_negatives,), device=device)
        log_count = torch.full((n_items + 1,), math.log(num_negatives / n_items), device=device)
        return ids, log_count[ids], log_count[targets]
    if popularity is None or popularity.numel() != n_items + 1:
        raise ValueError(f"the {kind} loss needs the items' training counts [{n_items + 1}] (ItemInputs.popularity)")
    counts = popularity.to(device=device, dtype=torch.float64)
    if kind == "popularity":
        q = counts.clamp(min=1.0)
        q[0] = 0.0
        q = q / q.sum()
        ids = torch.multinomial(q.float(), num_negatives, replacement=True)
        log_count = torch.log(num_negatives * q).float()
        return ids, log_count[ids], log_count[targets]
    p = counts.clone()
    p[0] = 0.0
    p = p / p.sum().clamp(min=1.0)
    expected = targets.numel() * p
    ids = targets
    if kind == "mixed":
        ids = torch.cat([targets, torch.randint(1, n_items + 1, (num_negatives,), device=device)])
        expected = expected + num_negatives / n_items
    log_count = torch.log(expected.clamp(min=1e-30)).float()
    return ids, log_count[ids], log_count[targets]


def sampled_softmax(user: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                    log_count_negatives: torch.Tensor, log_count_targets: torch.Tensor,
                    scale: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of each position ``user`` ``[P, D]`` over its target and the shared ``negatives`` ``[M]``
    (rows of ``table``), logits ``scale * <user, item> - log E[count]`` (logQ correction, :func:`negative_sample`);
    a negative equal to the row's own target is masked for that row only (an accidental hit), never for others."""
    pos = (user * table[targets]).sum(-1) * scale - log_count_targets
    neg = (user @ table[negatives].T) * scale - log_count_negatives[None, :]
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos[:, None], neg], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def item_softmax_loss(user: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, loss: str = "full",
                      num_negatives: int = 1024, chunk_size: int = 0, popularity: torch.Tensor | None = None,
                      scale: float = 1.0) -> torch.Tensor:
    """The next-item loss of positions ``user`` ``[P, D]`` against the item ``table`` ``[N+1, D]`` (row 0 =
    padding, never a class), ``targets`` ``[P]`` in 1..N: ``full`` = exact softmax over all items (dense logits, or
    :func:`chunked_cross_entropy` with ``chunk_size`` > 0), otherwise the sampled softmax of :func:`negative_sample`'s
    ``loss`` with the logQ correction."""
    if loss == "full":
        if chunk_size:
            return chunked_cross_entropy(user, table, targets, chunk_size, first=1, scale=scale)
        return F.cross_entropy((user @ table[1:].T) * scale, targets - 1)
    ids, log_neg, log_tgt = negative_sample(loss, num_negatives, targets, table.size(0) - 1, popularity)
    return sampled_softmax(user, table, targets, ids, log_neg, log_tgt, scale)


def register_item_loss(module: torch.nn.Module, loss: str, num_negatives: int, chunk_size: int,
                       popularity: torch.Tensor | None) -> None:
    """Check a model's loss settings and keep the items' training counts (``[N+1]``) as the non-persistent buffer
    ``train_counts`` that :func:`item_softmax_loss` reads (checkpoints stay as they were). ValueError on an unknown
    loss, ``num_negatives`` / ``chunk_size`` out of range, or a frequency-based loss without counts."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if num_negatives < 1 or chunk_size < 0:
        raise ValueError(f"num_negatives must be >= 1 and ce_chunk_size >= 0, got {num_negatives} and {chunk_size}")
    if loss in ("popularity", "in_batch", "mixed") and popularity is None:
        raise ValueError(f"the {loss} loss needs the items' training counts (ItemInputs.popularity)")
    module.register_buffer("train_counts", None if popularity is None else popularity.clone(), persistent=False)
