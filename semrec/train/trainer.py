"""The one trainer: AdamW, warm-up + schedule, clipping, early stopping on a validation metric,
atomic per-epoch checkpoints with exact resume, JSON-lines / TensorBoard / PNG logging, and
DistributedDataParallel under ``torchrun`` (gloo on CPU, nccl on GPU; rank 0 logs and checkpoints).

Run folder: ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``curve.png``, ``checkpoints/last.pt`` and
``best.pt``, ``results.json``.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from semrec.config import RunConfig, from_dict, save_config, to_dict
from semrec.data.batching import build_train_samples, n_train_batches, train_batches
from semrec.data.dataset import CanonicalDataset
from semrec.data.splits import LeaveLastOutSplit
from semrec.errors import SemrecError
from semrec.io import read_json, sha256_file, write_json
from semrec.models import ItemInputs, SequentialRecommender, build_model, model_entry
from semrec.text.encode import embeddings_dir, load_view_embeddings
from semrec.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from semrec.train.evaluator import EVALUATOR_VERSION, evaluate
from semrec.train.memory import enable_huge_pages, fix_mmap_threshold, peak_rss_gb, release_free_heap
from semrec.train.metrics import head_items


@dataclass
class RunData:
    dataset: CanonicalDataset
    split: LeaveLastOutSplit
    items: ItemInputs
    head_mask: np.ndarray
    fingerprints: dict[str, str]


def load_run_data(config: RunConfig) -> RunData:
    """Dataset, split and the item tensors the model needs (codes, frozen text vectors, popularity)."""
    from semrec.tokenizers.pipeline import load_codes, pca_text

    folder = Path(config.dataset)
    dataset = CanonicalDataset.load(folder)
    split = dataset.split()
    train = np.concatenate(split.train) if split.train else np.zeros(0, dtype=np.int64)
    counts = np.bincount(train, minlength=dataset.n_items + 1)
    items = ItemInputs(n_items=dataset.n_items, popularity=torch.from_numpy(counts))
    fingerprints = {"dataset": sha256_file(folder / "manifest.json")}
    needs = model_entry(config.model).needs
    if "codes" in needs or "text" in needs:
        codes_dir = folder / "codes" / config.codes
        codes, tokenizer = load_codes(codes_dir)
        items.codes = torch.from_numpy(codes)
        items.codebook_sizes = [int(s) for s in tokenizer.codebook_sizes]
        fingerprints["codes"] = sha256_file(codes_dir / "codes.npy")
        if "text" in needs:
            if not hasattr(tokenizer, "transform"):
                raise SemrecError(f"{config.model} reads the PCA text vectors of a 'pq' tokenizer; {codes_dir} "
                                  f"holds a '{tokenizer.kind}' tokenizer")
            model_name = read_json(codes_dir / "codes.json")["embeddings"]["model"]
            matrices = load_view_embeddings(embeddings_dir(folder, model_name), list(tokenizer.input_views))
            stacked = pca_text(tokenizer, {v: m[1:] for v, m in matrices.items()})
            items.text = torch.from_numpy(np.concatenate([np.zeros_like(stacked[:1]), stacked]))
    if "plm" in needs:
        folder_emb = embeddings_dir(folder, config.text_model)
        matrix = load_view_embeddings(folder_emb, [config.text_view])[config.text_view]
        items.plm = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
        fingerprints["plm"] = sha256_file(folder_emb / f"{config.text_view}.npy")
    return RunData(dataset, split, items, head_items(split.train, dataset.n_items), fingerprints)


def load_init_weights(model: torch.nn.Module, source: str | Path, device: torch.device) -> dict[str, list[str]]:
    """Copy matching weights from a run folder (its best.pt) or a checkpoint file into ``model``.

    Parameters whose name and shape match are loaded; the rest keep their initialisation (like
    ``strict=False``). Buffers (item codes, text vectors: the target dataset's own) are never copied.
    Returns the names that were loaded and skipped, for the run log."""
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise SemrecError(f"init_from: {source} is neither a checkpoint nor a run folder with checkpoints/best.pt")
    state = load_checkpoint(path, device)["model"]
    own = dict(model.named_parameters())
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise SemrecError(f"init_from: no parameter of {path} matches this model (wrong model or sizes?)")
    model.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "skipped": sorted(set(own) - set(loaded))}


def lr_lambda(warmup: int, total: int, schedule: str):
    """Multiplier of the base lr at optimizer step s (HF-style warm-up: 0 at step 0)."""
    if schedule not in ("constant", "linear", "cosine"):
        raise SemrecError(f"unknown schedule '{schedule}' (constant | linear | cosine)")

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def default_run_dir(config: RunConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(config.dataset).name}-{config.model}-{stamp}"


class Trainer:
    """Train ``config.model`` on ``config.dataset``; ``resume=True`` continues from ``run_dir``'s last.pt."""

    def __init__(self, config: RunConfig, run_dir: str | Path | None = None, resume: bool = False):
        self.config = config
        self.run_dir = Path(run_dir or config.out or default_run_dir(config))
        self.resume = resume
        if not resume and (self.run_dir / "checkpoints" / "last.pt").is_file():
            raise SemrecError(f"{self.run_dir} already holds a run; continue it with --resume or choose another --out")
        self.rank, self.world = _distributed()
        tc = config.train
        self.device = torch.device(tc.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)  # collectives of this rank run on its own GPU
        seed_everything(tc.seed + self.rank)
        fix_mmap_threshold(tc.malloc_mmap_threshold_mb)  # both before the big allocations
        if tc.huge_pages:
            enable_huge_pages()
        self.data = load_run_data(config)
        self.model: SequentialRecommender = build_model(config.model, config.model_params, self.data.items)
        self.model.to(self.device)
        self.init_report: dict[str, list[str]] = {}
        if config.init_from and not resume:
            self.init_report = load_init_weights(self.model, config.init_from, self.device)
        self.max_len = int(getattr(getattr(self.model, "config", None), "max_len", 50))
        self.samples = build_train_samples(self.data.split.train, self.max_len, self.model.sample_style)
        self.steps_per_epoch = n_train_batches(self.samples, tc.batch_size, self.world)
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
            save_config(config, self.run_dir / "config.yaml")

    # ----- checkpoints ----------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

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
        state = load_checkpoint(self.ckpt_dir / "last.pt", "cpu")
        if state["fingerprints"] != self.data.fingerprints:
            raise SemrecError(f"{self.run_dir}: the dataset or codes changed since this run started "
                              f"(fingerprints differ); start a new run")
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
        batches = train_batches(self.samples, tc.batch_size, tc.seed, self.epoch, self.rank, self.world,
                                self.device)
        trim_heap = tc.malloc_trim and self.device.type == "cpu"
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch}", leave=False,
                   disable=not (self.is_main and tc.progress))
        for batch in batches:
            if n >= self.steps_per_epoch:
                break
            loss, parts = module(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            if trim_heap:
                release_free_heap()
            self.step += 1
            n += 1
            seen += len(batch["lengths"]) * self.world  # approximate under DDP
            for key, value in {"loss": loss.detach(), **parts}.items():
                value = value.double() if torch.is_tensor(value) else float(value)
                sums[key] = sums[key] + value if key in sums else value
            if not bar.disable and (n % 20 == 0 or n == self.steps_per_epoch):  # the postfix costs a sync
                bar.set_postfix(loss=f"{float(sums['loss']) / n:.4f}",
                                samples_s=f"{seen / (time.perf_counter() - start):.0f}")
            bar.update()
        bar.close()
        out = {k: float(v) / max(1, n) for k, v in sums.items()}
        out["train_seconds"] = time.perf_counter() - start
        rss = peak_rss_gb()
        if rss is not None:
            out["peak_rss_gb"] = rss
        return out

    def _evaluate(self, split: str) -> dict[str, float]:
        rows = self.data.split.valid if split == "valid" else self.data.split.test
        tc = self.config.train
        return evaluate(self.model, rows, self.max_len, tc.eval_batch_size, tc.exclude_history,
                        self.data.head_mask, device=self.device)

    def fit(self) -> dict[str, Any]:
        """Train to early stop (or ``epochs``), then evaluate the best model on valid and test."""
        tc = self.config.train
        module: torch.nn.Module = self.model
        wrapped_for: tuple[bool, ...] | None = None
        writer = self._writer() if self.is_main else None
        trainable = model_entry(self.config.model).trainable
        while trainable and self.epoch < tc.epochs:
            self.model.begin_epoch(self.epoch)  # staged schedules may freeze / unfreeze parameters
            trainable_now = tuple(p.requires_grad for p in self.model.parameters())
            if self.world > 1 and trainable_now != wrapped_for:  # DDP fixes its gradient set when it wraps
                module = torch.nn.parallel.DistributedDataParallel(
                    self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                wrapped_for = trainable_now
            record: dict[str, Any] = {"epoch": self.epoch, **self._train_epoch(module)}
            stop = False
            if (self.epoch + 1) % tc.eval_every == 0:
                flag = torch.zeros(2, device=self.device)  # nccl broadcasts device tensors only
                if self.is_main:
                    t0 = time.perf_counter()
                    valid = self._evaluate("valid")
                    record.update({f"valid_{k}": v for k, v in valid.items()}, eval_seconds=time.perf_counter() - t0)
                    score = valid[tc.metric]
                    if score > self.best_score:
                        self.best_score, self.best_epoch, self.bad_evals = score, self.epoch, 0
                        save_checkpoint(self.ckpt_dir / "best.pt", {"model": self.model.state_dict(),
                                                                    "epoch": self.epoch, "score": score})
                    else:
                        self.bad_evals += 1
                    flag[0] = float(self.bad_evals >= tc.patience)
                if self.world > 1:
                    dist.broadcast(flag, 0)
                stop = bool(flag[0])
            self.epoch += 1
            rank_rngs = self._gather_rng_states()
            if self.is_main:
                self.history.append(record)
                save_checkpoint(self.ckpt_dir / "last.pt", {**self._payload(), "rng_ranks": rank_rngs})
                self._log(writer, record)
            if stop:
                break
        results: dict[str, Any] = {}
        if self.is_main:
            if trainable and (self.ckpt_dir / "best.pt").is_file():
                self.model.load_state_dict(load_checkpoint(self.ckpt_dir / "best.pt", self.device)["model"])
            results = {
                "model": self.config.model, "dataset": self.data.dataset.name, "best_epoch": self.best_epoch,
                "epochs_run": self.epoch,
                "train_wall_seconds": sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)
                                          for r in self.history),
                "valid": self._evaluate("valid"), "test": self._evaluate("test"), "evaluator": EVALUATOR_VERSION,
            }
            write_json(self.run_dir / "results.json", results)
            if writer is not None:
                writer.close()
        if self.world > 1:
            dist.barrier()
        return results

    # ----- logging --------------------------------------------------------------------------------
    def _writer(self):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"), purge_step=self.epoch)

    def _log(self, writer, record: dict[str, Any]) -> None:
        from semrec.train.plots import plot_curve

        write_json_lines(self.run_dir / "metrics.jsonl", self.history)
        if writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            writer.flush()
        plot_curve(self.history, self.run_dir / "curve.png", self.config.train.metric)
        if self.config.train.progress:
            shown = {k: round(v, 4) for k, v in record.items() if k in ("loss", f"valid_{self.config.train.metric}")}
            tqdm.write(f"epoch {record['epoch']}: {shown}")


def write_json_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    import json

    from semrec.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", exclude_history: bool | None = None,
                 device: str | torch.device | None = None) -> dict[str, dict[str, float]]:
    """Valid and test metrics of a run folder's ``best`` or ``last`` checkpoint with the current evaluator
    (on ``device``; default cuda when available)."""
    if checkpoint not in ("best", "last"):
        raise SemrecError(f"checkpoint must be best or last, got {checkpoint!r}")
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    data = load_run_data(cfg)
    model = build_model(cfg.model, cfg.model_params, data.items)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if model_entry(cfg.model).trainable:
        if not path.is_file():
            raise SemrecError(f"{run_dir}: no checkpoints/{checkpoint}.pt")
        model.load_state_dict(load_checkpoint(path)["model"])
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    max_len = int(getattr(getattr(model, "config", None), "max_len", 50))
    excl = cfg.train.exclude_history if exclude_history is None else exclude_history
    return {split: evaluate(model, getattr(data.split, split), max_len, cfg.train.eval_batch_size, excl,
                            data.head_mask, device=device) for split in ("valid", "test")}


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved in a run folder."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise SemrecError(f"{run_dir}: not a run folder (no config.yaml)")
    return from_dict(RunConfig, yaml.safe_load(path.read_text()))
