"""What the one trainer trains for: the training batches of an epoch and the evaluation of a split.

* :class:`RankingTask` (every next-item model): samples from the leave-last-out training prefixes
  (:mod:`semrec.data.batching`), full-ranking evaluation over all items (:mod:`semrec.eval.evaluator`);
  model selection on NDCG@10 by default.
* :class:`CtrTask` (models whose registry entry says ``task="ctr"``: the SOLID family, issue 19): pointwise rows of
  a ``semrec ctr-data`` folder (:mod:`semrec.data.ctr`), evaluation by AUC / UAUC / log-loss / NDCG@K / HR@K on each
  user's sampled candidates (:mod:`semrec.eval.ctr_metrics`); model selection on UAUC by default.

Both shuffle an epoch's samples from (seed, epoch) only, so a resumed run sees the batches an uninterrupted one
would; under DDP rank r takes the r-th strided shard of each global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from semrec.config import RunConfig
from semrec.data.batching import build_train_samples, epoch_order, n_train_batches, train_batches
from semrec.errors import SemrecError


class RankingTask:
    """Next-item prediction with full ranking (the default task)."""

    name = "ranking"
    default_metric = "ndcg@10"

    def __init__(self, config: RunConfig, data: Any, model: Any):
        self.config, self.data, self.model = config, data, model
        self.samples = build_train_samples(data.split.train, model.max_len, model.sample_style)

    def n_samples(self) -> int:
        return len(self.samples)

    def n_batches(self, batch_size: int, world: int) -> int:
        return n_train_batches(self.samples, batch_size, world)

    def batches(self, batch_size: int, seed: int, epoch: int, rank: int, world: int,
                device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        return train_batches(self.samples, batch_size, seed, epoch, rank, world, device)

    def can_validate(self) -> bool:
        return len(self.data.split.valid.targets) > 0

    def evaluate(self, split: str, device: torch.device) -> dict[str, Any]:
        from semrec.eval.evaluator import evaluate

        rows = self.data.split.valid if split == "valid" else self.data.split.test
        tc = self.config.train
        return evaluate(self.model, rows, self.model.max_len, tc.eval_batch_size, tc.exclude_history,
                        self.data.head_mask, device=device)


class CtrTask:
    """Pointwise CTR (spec solid 2): BCE on (history, candidate, label) rows, metrics per user over candidates."""

    name = "ctr"
    default_metric = "uauc"

    def __init__(self, config: RunConfig, data: Any, model: Any):
        from semrec.data.ctr import CtrRows

        if data.ctr is None:
            raise SemrecError(f"{config.model} trains on CTR samples; run 'semrec ctr-data {config.dataset}' first")
        self.config, self.data, self.model = config, data, model
        length = model.max_len
        if length > data.ctr_history:
            raise SemrecError(f"model_params.max_len={length} is longer than the {data.ctr_history}-item histories "
                              f"the CTR samples were built with; lower it or rebuild them with --history {length}")
        sequences = data.dataset.sequences
        self.rows = {split: CtrRows.of(data.ctr, split, sequences, length) for split in ("train", "valid", "test")}
        if config.train.exclude_history:
            raise SemrecError("train.exclude_history applies to full ranking; CTR candidates are never history items")

    def n_samples(self) -> int:
        return len(self.rows["train"])

    def n_batches(self, batch_size: int, world: int) -> int:
        full, rest = divmod(self.n_samples(), batch_size)
        return full + (1 if rest >= world else 0)

    def batches(self, batch_size: int, seed: int, epoch: int, rank: int, world: int,
                device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        rows = self.rows["train"]
        order = epoch_order(len(rows), seed, epoch)
        for b in range(self.n_batches(batch_size, world)):
            yield rows.batch(order[b * batch_size: (b + 1) * batch_size][rank::world], device)

    def can_validate(self) -> bool:
        return len(self.rows["valid"]) > 0

    @torch.no_grad()
    def logits(self, split: str, device: torch.device) -> np.ndarray:
        """The model's logits of every row of ``split`` (``float64 [rows]``), in table order. Models that score by a
        user vector (:attr:`DSR.scores_by_user_vector`) encode each run of consecutive rows with the same history
        once (a valid/test user's 100 candidates share it); DIN scores row by row."""
        rows = self.rows[split]
        was_training = self.model.training
        self.model.eval()
        out = []
        size = self.config.train.eval_batch_size
        if getattr(self.model, "scores_by_user_vector", False):
            starts, group = rows.history_groups()
            for first in range(0, len(starts), size):
                last = min(first + size, len(starts))
                lo, hi = starts[first], (starts[last] if last < len(starts) else len(rows))
                heads = rows.batch(starts[first:last], device)
                out.append(self.model.grouped_ctr_logits(
                    heads["items"], heads["lengths"], torch.tensor(rows.candidates[lo:hi], device=device),
                    torch.from_numpy(group[lo:hi] - first).to(device)).double().cpu())
        else:
            for start in range(0, len(rows), size):
                out.append(self.model.ctr_logits(rows.batch(np.arange(start, min(start + size, len(rows))), device))
                           .double().cpu())
        self.model.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0)

    def evaluate(self, split: str, device: torch.device) -> dict[str, Any]:
        from semrec.eval.ctr_metrics import ctr_metrics

        rows = self.rows[split]
        return ctr_metrics(rows.users, rows.labels, self.logits(split, device), rows.candidates)


def build_task(config: RunConfig, data: Any, model: Any) -> RankingTask | CtrTask:
    """The task of ``config.model`` (its registry entry's ``task``)."""
    from semrec.models import model_entry

    return CtrTask(config, data, model) if model_entry(config.model).task == "ctr" else RankingTask(config, data, model)
