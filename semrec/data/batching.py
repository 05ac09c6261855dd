"""Torch batching: training samples as padded matrices built once, shuffled per epoch from (seed, epoch).

Two sample styles:
* ``sequence`` (SASRec, GRU4Rec...): each user's training prefix, cut into windows of ``max_len + 1``
  items from the end; input = window[:-1], targets = window[1:] (loss at every position).
* ``prefix`` (CCFRec): one sample per training interaction i >= 1 of a user, history = the previous
  at most ``max_len`` items, target = item i (loss at the last position only, as the reference).
Sequences are right-padded with 0. The epoch order depends only on (seed, epoch), so a resumed run
sees exactly the batches an uninterrupted one would; under DDP each rank takes a shard of each global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from semrec.data.splits import EvalRows


def pad_right(sequences: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the last ``width`` items of each sequence, right-pad with 0; return (matrix, lengths)."""
    matrix = np.zeros((len(sequences), width), dtype=np.int64)
    lengths = np.zeros(len(sequences), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-width:]
        matrix[row, : len(tail)] = tail
        lengths[row] = len(tail)
    return matrix, lengths


@dataclass
class TrainSamples:
    items: np.ndarray  # [S, L]
    lengths: np.ndarray  # [S]
    targets: np.ndarray  # [S] (prefix) or [S, L] (sequence)

    def __len__(self) -> int:
        return len(self.items)


def build_train_samples(train: list[np.ndarray], max_len: int, style: str) -> TrainSamples:
    """Materialise training samples of ``style`` ('sequence' or 'prefix') from per-user training prefixes."""
    if style == "sequence":
        inputs, targets = [], []
        for seq in train:
            end = len(seq)
            while end >= 2:
                window = seq[max(0, end - max_len - 1): end]
                inputs.append(window[:-1])
                targets.append(window[1:])
                end -= max_len
        items, lengths = pad_right(inputs, max_len)
        target_matrix, _ = pad_right(targets, max_len)
        return TrainSamples(items, lengths, target_matrix)
    if style == "prefix":
        histories, targets = [], []
        for seq in train:
            for i in range(1, len(seq)):
                histories.append(seq[max(0, i - max_len): i])
                targets.append(seq[i])
        items, lengths = pad_right(histories, max_len)
        return TrainSamples(items, lengths, np.asarray(targets, dtype=np.int64))
    raise ValueError(f"unknown sample style {style!r}")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of one epoch, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(samples: TrainSamples, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, device: torch.device | str = "cpu") -> Iterator[dict[str, torch.Tensor]]:
    """Batches of one epoch. ``batch_size`` is global: under DDP, rank r takes the r-th strided shard of each
    global batch (and a last global batch smaller than the world size is dropped)."""
    order = epoch_order(len(samples), seed, epoch)
    for b in range(n_train_batches(samples, batch_size, world_size)):
        idx = order[b * batch_size: (b + 1) * batch_size][rank::world_size]
        width = max(1, int(samples.lengths[idx].max()))
        yield {
            "items": torch.from_numpy(samples.items[idx, :width]).to(device),
            "lengths": torch.from_numpy(samples.lengths[idx]).to(device),
            "targets": torch.from_numpy(
                samples.targets[idx, :width] if samples.targets.ndim == 2 else samples.targets[idx]).to(device),
        }


def n_train_batches(samples: TrainSamples, batch_size: int, world_size: int = 1) -> int:
    """Global batches per epoch (the same on every rank)."""
    full, rest = divmod(len(samples), batch_size)
    return full + (1 if rest >= world_size else 0)


def eval_batches(rows: EvalRows, max_len: int, batch_size: int,
                 device: torch.device | str = "cpu") -> Iterator[dict[str, torch.Tensor]]:
    """Batches of evaluation rows: right-padded histories (last ``max_len`` items) and targets."""
    items, lengths = pad_right(rows.histories, max_len)
    for start in range(0, len(items), batch_size):
        sl = slice(start, start + batch_size)
        width = max(1, int(lengths[sl].max())) if len(lengths[sl]) else 1
        yield {
            "items": torch.from_numpy(items[sl, :width]).to(device),
            "lengths": torch.from_numpy(lengths[sl]).to(device),
            "targets": torch.from_numpy(rows.targets[sl]).to(device),
            "users": torch.from_numpy(rows.users[sl]).to(device),
        }
