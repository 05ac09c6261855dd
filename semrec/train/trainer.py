"""The one trainer: AdamW, warm-up + schedule, clipping, early stopping on a validation metric, an optional
wall-time budget, atomic per-epoch checkpoints with exact resume, JSON-lines / TensorBoard / PNG logging, and
DistributedDataParallel under ``torchrun`` (gloo on CPU, nccl on GPU; rank 0 logs and checkpoints).

Run folder: ``config.yaml``, ``fingerprints.json`` (the data it was trained on, see
:mod:`semrec.train.run_folder`), ``metrics.jsonl``, ``tb/``, ``curve.png``, ``checkpoints/last.pt`` and
``best.pt``, ``results.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from semrec.artifacts import RunFolder
from semrec.config import Override, RunConfig, TrainConfig, load_config, save_config, to_dict
from semrec.errors import SemrecError
from semrec.eval.evaluator import EVALUATOR_VERSION
from semrec.models import SequentialRecommender, build_model, model_entry
from semrec.runs import load_init_weights, load_run_config, load_run_data, warn_if_nothing_to_evaluate
from semrec.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from semrec.train.distributed import init_distributed, rank_device
from semrec.train.memory import peak_rss_gb, release_free_heap
from semrec.train.process import seed_everything
from semrec.train.run_folder import check_fingerprints, write_data_record
from semrec.train.schedule import lr_lambda
from semrec.train.tasks import build_task

logger = logging.getLogger(__name__)


def check_train_settings(tc: TrainConfig) -> None:
    """Refuse settings no run can use (raises SemrecError naming the key): batch sizes and patience below 1,
    a negative epoch cap, a negative or non-finite learning rate."""
    for key in ("batch_size", "eval_batch_size", "patience", "eval_every", "malloc_trim_every"):
        if getattr(tc, key) < 1:
            raise SemrecError(f"train.{key} must be at least 1, got {getattr(tc, key)}")
    if tc.epochs < 0:
        raise SemrecError(f"train.epochs must be 0 or more, got {tc.epochs}")
    if not (tc.lr >= 0 and math.isfinite(tc.lr)):  # 0 freezes the weights (a legitimate probe)
        raise SemrecError(f"train.lr must be a finite number >= 0, got {tc.lr}")


class Trainer:
    """Train ``config.model`` on ``config.dataset``; ``resume=True`` continues from ``run_dir``'s last.pt.

    ``train.time_budget_minutes`` counts from the construction of the trainer (data loading included).
    The trainer seeds the global RNGs with its run's seed (plus its rank) and joins the ``torchrun`` process group
    when there is one; the allocator settings of ``config.train`` are the process's: call
    :func:`semrec.train.process.prepare_process` before building a trainer (the numbers do not depend on them)."""

    def __init__(self, config: RunConfig, run_dir: str | Path | None = None, resume: bool = False):
        self._started = time.perf_counter()
        self.config = config
        self.run_dir = Path(run_dir or config.out or RunFolder.default_path(config.dataset, config.model))
        self.resume = resume
        if not resume and RunFolder(self.run_dir).has_started():
            raise SemrecError(f"{self.run_dir} already holds a run; continue it with --resume or choose another --out")
        tc = config.train
        budget = tc.time_budget_minutes
        if budget is not None and not (budget > 0 and math.isfinite(budget)):
            raise SemrecError(f"train.time_budget_minutes must be a positive number of minutes, got {budget}")
        check_train_settings(tc)
        self.rank, self.world = init_distributed()
        self.device = rank_device(tc.device, self.world)
        seed_everything(tc.seed + self.rank)  # the run's own seed (see semrec.train.process)
        self.data = load_run_data(config)
        self.model: SequentialRecommender = build_model(config.model, config.model_params, self.data.items)
        self.model.to(self.device)
        self.init_report: dict[str, list[str]] = {}
        if config.init_from and not resume:
            self.init_report = load_init_weights(self.model, config.init_from, self.device)
        self.max_len = self.model.max_len
        self.task = build_task(config, self.data, self.model)  # ranking, or CTR for the SOLID family
        self.metric = tc.metric or self.task.default_metric
        if tc.select_on not in ("valid", "test"):
            raise SemrecError(f"train.select_on must be 'valid' or 'test', got {tc.select_on!r}")
        self.steps_per_epoch = self.task.n_batches(tc.batch_size, self.world)
        if tc.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, tc.max_steps_per_epoch)
        # every parameter: models freeze and unfreeze parts per epoch (begin_epoch); AdamW skips grad-less ones
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(tc.warmup_steps, tc.epochs * self.steps_per_epoch, tc.schedule))
        self.epoch, self.step, self.best_score, self.best_epoch, self.bad_evals = 0, 0, -math.inf, -1, 0
        self.history: list[dict[str, Any]] = []
        if resume:
            self._restore()
        self.is_main = self.rank == 0
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.folder.config)
            if not resume or not self.folder.fingerprints.is_file():
                write_data_record(self.run_dir, self.data.fingerprints, self.data.fingerprint_files)
            warn_if_nothing_to_evaluate(self.data, f"training runs all {tc.epochs} epochs with no model selection "
                                                   "(the last epoch's checkpoint is kept as best)"
                                        if model_entry(config.model).trainable else "")

    # ----- checkpoints ----------------------------------------------------------------------------
    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def ckpt_dir(self) -> Path:
        return self.folder.checkpoints

    def _payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "epoch": self.epoch, "step": self.step,
            "best_score": self.best_score, "best_epoch": self.best_epoch, "bad_evals": self.bad_evals,
            "history": self.history, "config": to_dict(self.config), "fingerprints": self.data.fingerprints,
        }

    def _gather_rng_states(self) -> list[dict[str, Any]] | None:
        """Every rank's RNG state (collective under DDP), so that a resumed rank r continues its own stream."""
        if self.world == 1:
            return None
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, rng_state())
        return states

    def _restore(self) -> None:
        # CPU first: RNG states must stay CPU byte tensors; load_state_dict moves the rest to the model's device
        state = load_checkpoint(self.folder.checkpoint("last"), "cpu")
        check_fingerprints(self.run_dir, self.data.fingerprints, self.data.fingerprint_files,
                           recorded=state["fingerprints"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ranks = state.get("rng_ranks")
        set_rng_state(ranks[self.rank] if ranks and len(ranks) == self.world else state["rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_score, self.best_epoch, self.bad_evals = state["best_score"], state["best_epoch"], state["bad_evals"]
        self.history = list(state["history"])

    # ----- loop -----------------------------------------------------------------------------------
    def _train_epoch(self, module: torch.nn.Module) -> dict[str, float]:
        tc = self.config.train
        self.model.train()
        sums: dict[str, Any] = {}  # on-device running sums: no host sync per step (reported per epoch)
        n, seen, start = 0, 0, time.perf_counter()
        batches = self.epoch_batches()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch}", leave=False,
                   disable=not (self.is_main and tc.progress))
        out_of_time = False
        for batch in batches:
            if n >= self.steps_per_epoch:
                break
            if self._out_of_time(sync=True):
                out_of_time = True
                break
            loss, parts = self.train_step(batch, module)
            n += 1
            seen += len(batch["lengths"]) * self.world  # approximate under DDP
            for key, value in {"loss": loss, **parts}.items():
                value = value.double() if torch.is_tensor(value) else float(value)
                sums[key] = sums[key] + value if key in sums else value
            if not bar.disable and (n % 20 == 0 or n == self.steps_per_epoch):  # the postfix costs a sync
                bar.set_postfix(loss=f"{float(sums['loss']) / n:.4f}",
                                samples_s=f"{seen / (time.perf_counter() - start):.0f}")
            bar.update()
        bar.close()
        out = {k: float(v) / max(1, n) for k, v in sums.items()}
        out["train_seconds"] = time.perf_counter() - start
        if out_of_time:
            out.update(time_budget_stop=True, steps=n)
        rss = peak_rss_gb()
        if rss is not None:
            out["peak_rss_gb"] = rss
        return out

    def epoch_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's training batches of epoch ``self.epoch``, on ``self.device`` (every batch of the epoch:
        ``fit`` stops at ``self.steps_per_epoch``)."""
        tc = self.config.train
        return self.task.batches(tc.batch_size, tc.seed, self.epoch, self.rank, self.world, self.device)

    def train_step(self, batch: dict[str, torch.Tensor], module: torch.nn.Module | None = None,
                   ) -> tuple[torch.Tensor, dict[str, Any]]:
        """One optimizer step on ``batch`` (from :func:`semrec.data.batching.train_batches`, on ``self.device``):
        forward, backward, gradient clipping (``train.grad_clip``), AdamW and learning-rate schedule steps,
        glibc heap trim on CPU (``train.malloc_trim``, every ``train.malloc_trim_every`` steps; with
        ``train.malloc_reuse`` only when that interval is above 1); ``self.step`` counts it.

        ``module``: what runs the forward pass, the model by default (``fit`` passes its DDP wrapper). The model
        must be in training mode (``model.train()``; ``fit`` sets it per epoch). Returns the loss (a detached
        0-d tensor, on the device: no host sync) and the model's named loss parts."""
        tc = self.config.train
        loss, parts = (self.model if module is None else module)(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        # malloc_reuse keeps the freed pages for the next step: a trim every step would undo it, so with it the heap
        # is trimmed only when malloc_trim_every asks for an interval
        trims = tc.malloc_trim and (not tc.malloc_reuse or tc.malloc_trim_every > 1)
        if trims and self.device.type == "cpu" and self.step % tc.malloc_trim_every == 0:
            release_free_heap()
        return loss.detach(), parts

    def _evaluate(self, split: str) -> dict[str, float]:
        return self.task.evaluate(split, self.device)

    def _out_of_time(self, sync: bool = False) -> bool:
        """Whether the time budget is spent, keeping three validation passes in reserve (the stopped epoch's, then
        valid and test of the best checkpoint; estimated by the longest so far). ``sync``: every rank calls it and
        gets rank 0's answer (under DDP)."""
        minutes = self.config.train.time_budget_minutes
        if minutes is None:
            return False
        reserve = 3 * max((r.get("eval_seconds", 0.0) for r in self.history), default=0.0)
        spent = time.perf_counter() - self._started + reserve >= 60 * minutes
        if sync and self.world > 1:
            flag = torch.tensor([float(spent)], device=self.device)
            dist.broadcast(flag, 0)
            spent = bool(flag[0])
        return spent

    def fit(self) -> dict[str, Any]:
        """Train until early stopping, the epoch cap or the time budget, then evaluate the best model on valid and
        test; write and return ``results.json``.

        Besides the metrics (None = n/a, when a split has no rows), the results say why training stopped
        (``stop_reason``: 'epochs' | 'patience' | 'time_budget' | 'not_trainable') and how the evaluated checkpoint
        was chosen (``selection``: 'best_valid', or 'last_epoch' when no validation pass could choose one: empty
        validation split, or none ran). A run stopped by the time budget has its last (possibly partial) epoch
        validated and is resumable like any other."""
        tc = self.config.train
        module: torch.nn.Module = self.model
        wrapped_for: tuple[bool, ...] | None = None
        writer = self._writer() if self.is_main else None
        trainable = model_entry(self.config.model).trainable
        can_validate = self.task.can_validate()
        on_test = tc.select_on == "test"  # the SOLID reference's selection (spec solid 6), reported as such
        stop_reason = None if trainable else "not_trainable"
        if trainable and self.epoch > 0 and self.bad_evals >= tc.patience:
            stop_reason = "patience"  # a resumed run given a patience that its evaluations have already exhausted
        while stop_reason is None:
            if self.epoch >= tc.epochs:
                stop_reason = "epochs"
                break
            self.model.begin_epoch(self.epoch)  # staged schedules may freeze / unfreeze parameters
            trainable_now = tuple(p.requires_grad for p in self.model.parameters())
            if self.world > 1 and trainable_now != wrapped_for:  # DDP fixes its gradient set when it wraps
                module = torch.nn.parallel.DistributedDataParallel(
                    self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                wrapped_for = trainable_now
            trained = self._train_epoch(module)
            if trained.get("steps") == 0:  # the budget ran out before this epoch's first step: it did not happen
                stop_reason = "time_budget"
                break
            record: dict[str, Any] = {"epoch": self.epoch, **trained}
            flag = torch.zeros(2, device=self.device)  # [patience exhausted, out of time]; nccl: device tensors only
            if self.is_main:
                out_of_time = bool(trained.get("time_budget_stop")) or self._out_of_time()
                if can_validate and ((self.epoch + 1) % tc.eval_every == 0 or out_of_time):
                    t0 = time.perf_counter()
                    valid = self._evaluate("valid")
                    record.update({f"valid_{k}": v for k, v in valid.items()})
                    if on_test:
                        record.update({f"test_{k}": v for k, v in self._evaluate("test").items()})
                    record["eval_seconds"] = time.perf_counter() - t0
                    score = record[f"{'test' if on_test else 'valid'}_{self.metric}"]
                    if score is not None and score > self.best_score:
                        self.best_score, self.best_epoch, self.bad_evals = score, self.epoch, 0
                        save_checkpoint(self.folder.best, {"model": self.model.state_dict(),
                                                                    "epoch": self.epoch, "score": score})
                    else:
                        self.bad_evals += 1
                    flag[0] = float(self.bad_evals >= tc.patience)
                flag[1] = float(out_of_time)
            if self.world > 1:
                dist.broadcast(flag, 0)
            self.epoch += 1
            rank_rngs = self._gather_rng_states()
            if self.is_main:
                self.history.append(record)
                save_checkpoint(self.folder.last, {**self._payload(), "rng_ranks": rank_rngs})
                self._log(writer, record)
            if flag[0]:
                stop_reason = "patience"
            elif flag[1]:
                stop_reason = "time_budget"
        results: dict[str, Any] = {}
        if self.is_main:
            selection = "best_test" if on_test else "best_valid"
            if trainable and self.epoch > 0 and self.best_score == -math.inf:
                selection = "last_epoch"
                self._keep_last_as_best(can_validate)
            elif trainable and self.folder.best.is_file():
                self.model.load_state_dict(load_checkpoint(self.folder.best, self.device)["model"])
            results = {
                "model": self.config.model, "dataset": self.data.dataset.name, "task": self.task.name,
                "metric": self.metric, "best_epoch": self.best_epoch,
                "epochs_run": self.epoch, "stop_reason": stop_reason, "selection": selection,
                "train_wall_seconds": sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)
                                          for r in self.history),
                "valid": self._evaluate("valid"), "test": self._evaluate("test"), "evaluator": EVALUATOR_VERSION,
            }
            self.folder.write_results(results)
            if writer is not None:
                writer.close()
        if self.world > 1:
            dist.barrier()
        return results

    def _keep_last_as_best(self, can_validate: bool) -> None:
        """No validation pass chose an epoch: the model as it is now (the last epoch's) becomes ``best.pt``."""
        self.best_epoch = self.epoch - 1
        save_checkpoint(self.folder.best, {"model": self.model.state_dict(), "epoch": self.best_epoch,
                                                    "score": None})
        if can_validate:  # (an empty validation split was reported when the trainer started)
            logger.warning("warning: no validation pass ran (eval_every %d, %d epoch(s) trained); the last "
                           "epoch's checkpoint (epoch %d) is kept as best", self.config.train.eval_every,
                           self.epoch, self.best_epoch)

    # ----- logging --------------------------------------------------------------------------------
    def _writer(self):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.folder.tensorboard), purge_step=self.epoch)

    def _log(self, writer, record: dict[str, Any]) -> None:
        from semrec.train.plots import plot_curve

        self.folder.write_metrics(self.history)
        if writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            writer.flush()
        plot_curve(self.history, self.folder.curve, self.metric)
        if self.config.train.progress:
            shown = {k: round(v, 4) for k, v in record.items()
                     if k in ("loss", f"valid_{self.metric}") and v is not None}
            tqdm.write(f"epoch {record['epoch']}: {shown}")


RESUME_KEYS = ("train.epochs", "train.patience", "train.time_budget_minutes")


def resume_config(run_dir: str | Path, overrides: list[Override] | None = None) -> RunConfig:
    """The saved config of ``run_dir`` with overrides (``key=value`` text or ``(key, value)`` pairs, see
    :func:`semrec.config.apply_overrides`) of :data:`RESUME_KEYS` only (a new epoch cap, patience or time budget);
    any other key raises SemrecError, since the run's checkpoints depend on it."""
    fixed = [(item[0] if isinstance(item, tuple) else item.split("=", 1)[0]).strip() for item in overrides or []]
    refused = [key for key in fixed if key not in RESUME_KEYS]
    if refused:
        raise SemrecError(f"--resume continues a run with its saved config: {', '.join(refused)} cannot change "
                          f"(only {', '.join(RESUME_KEYS)} can: --epochs, --patience, --time-budget)")
    return load_config(RunConfig, None, list(overrides or []), base=to_dict(load_run_config(run_dir)))


STOP_REASONS = {"epochs": "epoch cap ({epochs}) reached", "patience": "early stopping (patience {patience})",
                "time_budget": "time budget ({time_budget_minutes:g} min) spent"}


def describe_results(results: dict[str, Any], config: RunConfig) -> str:
    """One line on how a finished run ended: best epoch and how it was chosen, and why training stopped."""
    tc = config.train
    if results.get("stop_reason") == "not_trainable":
        return f"{config.model} has no parameters to train"
    if results.get("selection") == "last_epoch":
        chosen = f"last epoch {results['best_epoch']} kept as best (no validation pass chose one)"
    else:
        split = "test, the reference's selection" if results.get("selection") == "best_test" else "valid"
        chosen = f"best epoch {results['best_epoch']} ({split} {results.get('metric') or tc.metric or 'ndcg@10'})"
    reason = STOP_REASONS.get(results.get("stop_reason"), str(results.get("stop_reason")))
    return f"{chosen}; stopped: {reason.format(**dataclasses.asdict(tc))} after {results['epochs_run']} epoch(s)"
