"""Sampled negatives for models trained with a softmax over a pool of items (CCFRec; any model that samples).

Modes (``negatives`` in a model config; issue 18):

* ``reference`` (spec ccfrec 5.4): ``neg_num`` distinct uniform items from 1..N minus **every target of the
  batch**, shared by all rows. Another row's target is never a negative; with sequence rows (a user window with a
  target at every position) a window's history items are the targets of its earlier positions, so they never are
  either (97.6% of a row's history on a Scientific batch of 200 windows and 500 negatives).
* ``per_row``: ``neg_num`` distinct uniform items shared by the batch; each row masks only the entries equal to
  its own target, so other rows' targets and the row's own history are real negatives.
* ``full``: every item 1..N (the full softmax); each row's own target is its positive.
* ``auto``: ``reference`` for prefix rows (the faithful setting), ``per_row`` for sequence rows.

:func:`history_logits` adds each row's own history items as hard negatives (the items a user already consumed,
which otherwise outrank the target: ``bench/results/ranking_anatomy.md``).
"""

from __future__ import annotations

import torch

from semrec.models.layers import gather_last

NEGATIVE_MODES = ("auto", "reference", "per_row", "full")


def resolve_mode(negatives: str, neg_num: int, sample_style: str) -> str:
    """The mode a model trains with: ``full`` when ``neg_num <= 0``, ``auto`` resolved by ``sample_style``.
    Raises ValueError for an unknown mode."""
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"negatives must be one of {', '.join(NEGATIVE_MODES)}, got {negatives!r}")
    if neg_num <= 0 or negatives == "full":
        return "full"
    if negatives == "auto":
        return "reference" if sample_style == "prefix" else "per_row"
    return negatives


def negative_pool(n_items: int, targets: torch.Tensor, mode: str, neg_num: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The shared negatives of a batch and which of them each row must not use.

    ``targets [R]`` (one per training row or position, ids in 1..``n_items``). Returns ``pool [K]`` item ids and
    ``mask [R, K]`` (True = not a negative of that row; ``per_row`` and ``full``) or None (``reference``, whose pool
    holds no target of the batch). Uniform draws come from torch's global generator (``randperm``)."""
    if mode == "reference":
        perm = torch.randperm(n_items, device=targets.device) + 1
        return perm[~torch.isin(perm, targets)][:neg_num], None
    if mode == "per_row":
        pool = torch.randperm(n_items, device=targets.device)[:neg_num] + 1
    elif mode == "full":
        pool = torch.arange(1, n_items + 1, device=targets.device)
    else:
        raise ValueError(f"unknown negative mode {mode!r}")
    return pool, pool.unsqueeze(0) == targets.unsqueeze(1)


def history_logits(users: torch.Tensor, history_vectors: torch.Tensor, items: torch.Tensor, targets: torch.Tensor,
                   lengths: torch.Tensor) -> torch.Tensor:
    """Scores of each training row's user vector against its own history items (hard negatives): ``[R, L]``,
    ``-inf`` where the slot is padding, holds the row's target, or (sequence rows) comes after the row's position.

    ``users [B, L, d]``: the backbone's states at every position (the user vector of a prefix row is the state at
    ``lengths - 1``; of a sequence row, the state at its position); ``history_vectors [n_real, d]``: the candidate
    vectors of ``items[items > 0]`` in order; ``items [B, L]`` right-padded; ``targets [B]`` (prefix rows) or
    ``[B, L]`` (sequence rows, 0 = no target). Rows are ordered as ``targets[targets > 0]`` (sequence) or the batch."""
    real = items > 0
    table = users.new_zeros(*items.shape, users.size(-1))
    table[real] = history_vectors
    positions = torch.arange(items.size(1), device=items.device)
    if targets.dim() == 2:  # position t of a window reads items 0..t
        rows = targets > 0
        scores = (users @ table.transpose(1, 2))[rows]  # [R, L]
        b_idx, t_idx = rows.nonzero(as_tuple=True)
        hidden_slots = (~real[b_idx]) | (positions.unsqueeze(0) > t_idx.unsqueeze(1))
        hidden_slots |= items[b_idx] == targets[rows].unsqueeze(1)
    else:
        user = gather_last(users, lengths)  # [B, d]
        scores = torch.einsum("bd,bld->bl", user, table)
        hidden_slots = (~real) | (items == targets.unsqueeze(1))
    return scores.masked_fill(hidden_slots, float("-inf"))
