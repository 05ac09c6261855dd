"""Learnable code-embedding re-assignment for VQ-Rec fine-tuning (spec vqrec §5).

A fine-tuned dataset has its own quantiser, so its code ``c`` of sub-codebook ``k`` has no relation to
the pre-trained row ``c`` of block ``k``. VQ-Rec learns a permutation ``Π_k`` per block and uses the
re-assigned table ``Π_k · E_k``. Two behaviours:

* ``"learned"`` (default): Gumbel-Sinkhorn soft permutations with a straight-through hard forward.
  The forward uses a true permutation (Hungarian assignment of the soft matrix, ``scipy``), the backward
  the gradient of the soft doubly-stochastic matrix, so the logits actually learn. The final permutation
  is the Hungarian assignment of the noise-free Sinkhorn matrix: a bijection.
* ``"reference"``: the reference code's behaviour, kept for comparison: Gumbel-Sinkhorn, then per row
  a one-hot at the argmax via ``ceil`` (zero gradient: the logits never change), so every forward and
  the final bake are a random many-to-one re-assignment.

Only the ``size`` real rows of a block are permuted; the block's reserved row 0 stays (the reference
permutes 257 x 257 including it, but those rows are never referenced except the padding row).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def sinkhorn(log_alpha: torch.Tensor, iterations: int) -> torch.Tensor:
    """Log-space Sinkhorn normalisation of ``[..., n, n]`` logits: rows, then columns, ``iterations`` times."""
    for _ in range(iterations):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-2, keepdim=True)
    return log_alpha.exp()


def gumbel_noise(shape: torch.Size, device: torch.device, eps: float = 1e-6) -> torch.Tensor:
    """Gumbel(0, 1) noise with the reference's epsilon guards."""
    u = torch.rand(shape, device=device)
    return -torch.log(-torch.log(u + eps) + eps)


def hungarian(soft: torch.Tensor) -> torch.Tensor:
    """Hard permutation matrices maximising the total weight of each ``[n, n]`` block of ``soft``."""
    from scipy.optimize import linear_sum_assignment

    blocks = soft.detach().float().cpu().numpy()
    hard = np.zeros_like(blocks)
    for k, block in enumerate(blocks):
        rows, cols = linear_sum_assignment(block, maximize=True)
        hard[k, rows, cols] = 1.0
    return torch.from_numpy(hard).to(soft.device, soft.dtype)


class CodePermutation(nn.Module):
    """Per-block permutation of ``n_blocks`` code tables of ``size`` rows each."""

    def __init__(self, n_blocks: int, size: int, mode: str = "learned", temperature: float = 0.7,
                 iterations: int = 3, logit_scale: float = 100.0):
        super().__init__()
        if mode not in ("learned", "reference"):
            raise ValueError(f"permutation mode must be 'learned' or 'reference', got {mode!r}")
        self.mode, self.temperature, self.iterations = mode, temperature, iterations
        # learned: logits = logit_scale * trans_matrix, zero init (uniform, the Gumbel noise explores); with Adam,
        # one step moves a logit by about lr * logit_scale, so a few epochs at lr 1e-3 can actually learn.
        # reference: standard-normal init, scale 1, as the reference's trans_matrix.
        self.logit_scale = logit_scale if mode == "learned" else 1.0
        init = torch.zeros if mode == "learned" else torch.randn
        self.trans_matrix = nn.Parameter(init(n_blocks, size, size))

    def soft(self, noise: bool) -> torch.Tensor:
        logits = self.trans_matrix * self.logit_scale
        if self.mode == "reference":
            logits = torch.log(logits.exp() + 1e-6)
        if noise:
            logits = logits + gumbel_noise(logits.shape, logits.device)
        return sinkhorn(logits / self.temperature, self.iterations)

    def matrices(self, noise: bool) -> torch.Tensor:
        """``[n_blocks, size, size]`` 0/1 matrices used in the forward (straight-through in learned mode)."""
        soft = self.soft(noise)
        if self.mode == "reference":
            probs = soft.softmax(-1)
            top = probs * (probs == probs.max(-1, keepdim=True).values)
            return torch.ceil(top)  # one 1 per row, zero gradient: the reference's no-op
        return hungarian(soft) + soft - soft.detach()

    def forward(self, tables: torch.Tensor, noise: bool | None = None) -> torch.Tensor:
        """Re-assign ``tables [n_blocks, size, d]``: row r of block k becomes ``Σ_c Π_k[r, c] · tables[k, c]``."""
        noise = self.training if noise is None else noise
        return torch.bmm(self.matrices(noise), tables)

    @torch.no_grad()
    def final(self) -> torch.Tensor:
        """The permutation baked in after the assignment stage: index ``[n_blocks, size]`` (row r <- row idx)."""
        matrices = self.matrices(noise=self.mode == "reference")  # reference: one fresh noisy sample
        return matrices.argmax(-1)
