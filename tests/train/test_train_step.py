"""The trainer's parts: one optimizer step (``Trainer.train_step``, the step ``fit`` runs), the learning-rate
schedule, and process-wide state (allocator settings set by ``prepare_process`` only, never by a Trainer)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from semrec.config import RunConfig, TrainConfig, save_config
from semrec.errors import SemrecError
from semrec.train import memory
from semrec.train.process import prepare_process
from semrec.train.schedule import lr_lambda
from semrec.train.trainer import Trainer
from tests.support import make_tiny_dataset

SASREC = {"hidden_size": 16, "inner_size": 32, "max_len": 10, "dropout": 0.1, "attn_dropout": 0.1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "ds")


def run_config(tiny: Path, out: Path, **train) -> RunConfig:
    settings = {"epochs": 1, "batch_size": 32, "lr": 3e-3, "warmup_steps": 4, "progress": False, "device": "cpu",
                **train}
    return RunConfig(model="sasrec", dataset=str(tiny), model_params=dict(SASREC), out=str(out),
                     train=TrainConfig(**settings))


def test_fit_is_train_step_over_the_epoch_batches(tiny, tmp_path):
    """One epoch of fit() and the same epoch as train_step calls by hand end in bit-identical weights."""
    fitted = Trainer(run_config(tiny, tmp_path / "fit", grad_clip=0.5))
    fitted.fit()  # one epoch: best.pt is that epoch, loaded back at the end
    by_hand = Trainer(run_config(tiny, tmp_path / "hand", grad_clip=0.5))
    by_hand.model.begin_epoch(0)
    by_hand.model.train()
    losses = []
    for _, batch in zip(range(by_hand.steps_per_epoch), by_hand.epoch_batches()):
        loss, parts = by_hand.train_step(batch)
        assert loss.dim() == 0 and not loss.requires_grad and isinstance(parts, dict)
        losses.append(float(loss))
    assert by_hand.step == fitted.step == by_hand.steps_per_epoch > 1
    mine, theirs = by_hand.model.state_dict(), fitted.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    history = fitted.history[0]
    assert history["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)


def test_train_step_clips_and_steps_the_schedule(tiny, tmp_path, monkeypatch):
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, norm: clipped.append(norm)
                        or real_clip(params, norm))
    trainer = Trainer(run_config(tiny, tmp_path / "run", grad_clip=0.25))
    trainer.model.train()
    batches = trainer.epoch_batches()
    assert trainer.scheduler.get_last_lr() == [0.0]  # warm-up starts at 0
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step(next(batches))
    trainer.train_step(next(batches))
    assert clipped == [0.25, 0.25] and trainer.step == 2
    assert trainer.scheduler.get_last_lr() == [pytest.approx(3e-3 * 2 / 4)]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    unclipped = Trainer(run_config(tiny, tmp_path / "none"))
    unclipped.model.train()
    clipped.clear()
    unclipped.train_step(next(unclipped.epoch_batches()))
    assert clipped == []


def test_lr_schedule():
    warm = lr_lambda(4, 14, "linear")
    assert [warm(s) for s in (0, 2, 4, 9, 14, 20)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    cosine = lr_lambda(0, 10, "cosine")
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert lr_lambda(2, 10, "constant")(1) == 0.5 and lr_lambda(2, 10, "constant")(7) == 1.0
    with pytest.raises(SemrecError, match="unknown schedule 'step'"):
        lr_lambda(0, 10, "step")


@pytest.fixture
def allocator_calls(monkeypatch):
    """Every glibc function the process asks for (mallopt, malloc_trim), none of them run, and a clean
    ``THP_MEM_ALLOC_ENABLE`` that is restored after the test."""
    calls: list[str] = []
    monkeypatch.setattr(memory, "_glibc_function", lambda name, *a: calls.append(name))
    monkeypatch.delenv(memory.ENV_OVERRIDE, raising=False)
    monkeypatch.setenv(memory.TORCH_THP, "placeholder")
    monkeypatch.delenv(memory.TORCH_THP)  # restored (removed) at teardown whatever the test set
    return calls


def test_a_trainer_leaves_the_allocator_settings_of_the_process_alone(tiny, tmp_path, allocator_calls):
    cfg = run_config(tiny, tmp_path / "run", malloc_mmap_threshold_mb=8.0, huge_pages=True, malloc_trim=False)
    Trainer(cfg).fit()
    assert "mallopt" not in allocator_calls and memory.TORCH_THP not in os.environ


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the settings are Linux (glibc) ones")
def test_prepare_process_applies_the_allocator_settings(allocator_calls):
    applied = prepare_process(TrainConfig(malloc_mmap_threshold_mb=8.0, huge_pages=True, cpu_block_cache=False))
    assert allocator_calls == ["mallopt"] and os.environ[memory.TORCH_THP] == "1"
    # no glibc function here: not applied
    assert applied == {"mmap_threshold_mb": None, "huge_pages": True, "malloc_reuse": False,
                       "cpu_block_cache_headroom": None}
    allocator_calls.clear()
    os.environ.pop(memory.TORCH_THP)
    assert prepare_process(TrainConfig(malloc_mmap_threshold_mb=0, huge_pages=False, cpu_block_cache=False)) == {
        "mmap_threshold_mb": None, "huge_pages": False, "malloc_reuse": False, "cpu_block_cache_headroom": None}
    assert allocator_calls == [] and memory.TORCH_THP not in os.environ
    # reuse replaces the fixed threshold: one mallopt lookup (M_MMAP_MAX, M_TRIM_THRESHOLD), not two
    prepare_process(TrainConfig(malloc_mmap_threshold_mb=8.0, huge_pages=False, malloc_reuse=True,
                                cpu_block_cache=False))
    assert allocator_calls == ["mallopt"]


def test_train_command_prepares_the_process_before_the_trainer(tiny, tmp_path, monkeypatch):
    import semrec.train.process as process
    import semrec.train.trainer as trainer_module
    from semrec.cli import app

    order = []
    monkeypatch.setattr(process, "prepare_process", lambda train: order.append(("prepare", train.huge_pages)))
    real_init = trainer_module.Trainer.__init__
    monkeypatch.setattr(trainer_module.Trainer, "__init__",
                        lambda self, *a, **k: order.append(("trainer",)) or real_init(self, *a, **k))
    save_config(run_config(tiny, tmp_path / "run", huge_pages=False), tmp_path / "cfg.yaml")
    result = CliRunner().invoke(app, ["train", "-c", str(tmp_path / "cfg.yaml")])
    assert result.exit_code == 0, result.output
    assert order == [("prepare", False), ("trainer",)]
    order.clear()
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run"), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert order == [("prepare", False), ("trainer",)]
