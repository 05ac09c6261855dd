"""SOLID end to end on a tiny dataset (issue 19): ctr-data, then `semrec solid` runs the four stages as normal run
folders, reuses finished ones, and the SOLID run's semantic ids and codebook come from the earlier stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from semrec.cli import app
from tests.support import _one_line_error, embed_vectors, make_tiny_dataset

runner = CliRunner()
QUICK = ["--set", "train.epochs=1", "--set", "train.batch_size=128", "--set", "model_params.max_len=8",
         "--set", "train.progress=false"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from semrec.data.dataset import CanonicalDataset

    ds = make_tiny_dataset(tmp_path_factory.mktemp("solid") / "ds")
    n = CanonicalDataset.load(ds).n_items
    embed_vectors(ds, {"all": np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)}, "tests.solid")
    assert runner.invoke(app, ["ctr-data", str(ds), "--history", "8", "--eval-negatives", "19"]).exit_code == 0
    return ds


def test_the_chain_runs_four_stages_and_reuses_them(ds, tmp_path):
    from semrec.runs import load_run

    args = ["solid", str(ds), "--k", "6", "--runs-dir", str(tmp_path), *QUICK]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    root = tmp_path / "solid-ds-sasrec-duet-id+text"
    for stage in ("1-item", "3-semantic", "4-solid"):
        assert (root / stage / "results.json").is_file(), stage
    assert "solid     test auc" in result.output
    (codes_dir,) = (ds / "codes").glob("solid-sasrec-id+text-*")  # one folder per chain
    semantic = np.load(codes_dir / "codes.npy")
    assert semantic.shape[1] == 1 and semantic[1:].min() >= 0 and semantic[1:].max() < 6
    run = load_run(root / "4-solid", device="cpu")
    assert torch.equal(run.model.semantic[1:], torch.from_numpy(semantic[1:, 0] + 1))
    codebook = load_run(root / "3-semantic", device="cpu").model.encoder.item.weight
    assert torch.equal(run.model.codebook, codebook.detach())  # the semantic run's table, frozen
    assert run.model.encoder.item.num_embeddings == 1 + run.data.dataset.n_items
    from semrec.data.semantics import semantic_ids_current

    assert semantic_ids_current(ds, codes_dir.name, root / "1-item")
    best = root / "1-item" / "checkpoints" / "best.pt"
    kept = best.read_bytes()
    best.write_bytes(kept + b"\0")  # a retrained item run makes its semantic ids stale
    assert not semantic_ids_current(ds, codes_dir.name, root / "1-item")
    best.write_bytes(kept)
    stamp = (codes_dir / "codes.npy").stat().st_mtime_ns
    again = runner.invoke(app, args)  # finished stages are reused: nothing retrains, the semantic ids are kept
    assert again.exit_code == 0 and again.output.count("epoch") == result.output.count("epoch")
    assert (codes_dir / "codes.npy").stat().st_mtime_ns == stamp
    other = runner.invoke(app, [*args[:-len(QUICK) - 2], "--runs-dir", str(tmp_path / "other"), *QUICK])
    assert other.exit_code == 0, other.output  # another chain (e.g. another seed) clusters its own item run
    assert len(list((ds / "codes").glob("solid-sasrec-id+text-*"))) == 2


def test_a_given_duet_run_is_the_item_stage_of_both_heads(ds, tmp_path):
    from semrec.data.semantics import semantic_ids_current

    first = runner.invoke(app, ["solid", str(ds), "--k", "6", "--runs-dir", str(tmp_path), *QUICK])
    assert first.exit_code == 0, first.output
    item = tmp_path / "solid-ds-sasrec-duet-id+text" / "1-item"
    result = runner.invoke(app, ["solid", str(ds), "--head", "apg", "--k", "6", "--runs-dir", str(tmp_path / "apg"),
                                 "--item-run", str(item), *QUICK])
    assert result.exit_code == 0, result.output
    root = tmp_path / "apg" / "solid-ds-sasrec-apg-id+text"
    assert not (root / "1-item").exists() and (root / "4-solid" / "results.json").is_file()
    assert f"the given run {item}" in result.output
    shared = [c.name for c in (ds / "codes").glob("solid-sasrec-id+text-*") if semantic_ids_current(ds, c.name, item)]
    assert len(shared) == 1  # the apg chain reused the duet chain's semantic ids (same item run)
    from semrec.runs import load_run_config

    assert load_run_config(item).model_params["head"] == "duet"  # stage 1 is DUET whatever the head (spec 4)
    assert load_run_config(root / "3-semantic").model_params["head"] == "apg"
    wrong = runner.invoke(app, ["solid", str(ds), "--runs-dir", str(tmp_path / "x"), "--item-run",
                                str(root / "3-semantic"), *QUICK])
    assert wrong.exit_code != 0 and "SOLID's item stage must be a dsr DUET run on item rows" in wrong.output
    assert "rows semantic" in wrong.output and "Traceback" not in wrong.output
    from semrec import api
    from semrec.errors import SemrecError

    for bad in ("", "../x", "3-semantic"):  # refused before any stage runs
        with pytest.raises(SemrecError, match="the SOLID run's folder name must be a plain name"):
            api.solid(ds, head="apg", k=6, runs_dir=tmp_path / "bad", solid_name=bad)
    assert not (tmp_path / "bad").exists()


def test_solid_set_trains_a_solid_run_beside_the_chain_and_bad_keys_stop_before_training(ds, tmp_path):
    args = ["solid", str(ds), "--semantics", "text", "--k", "5", "--runs-dir", str(tmp_path), *QUICK]
    assert runner.invoke(app, args).exit_code == 0
    root = tmp_path / "solid-ds-sasrec-duet-text"
    stamp = (root / "3-semantic" / "results.json").stat().st_mtime_ns
    result = runner.invoke(app, [*args, "--solid-set", "model_params.clip=0.5"])
    assert result.exit_code == 0, result.output
    assert "clip: 0.5" in (root / "4-solid@model_params.clip=0.5" / "config.yaml").read_text()
    assert (root / "3-semantic" / "results.json").stat().st_mtime_ns == stamp  # the earlier stages reused
    line = _one_line_error(runner.invoke(app, ["solid", str(ds), "--runs-dir", str(tmp_path / "bad"), *QUICK,
                                               "--solid-set", "model_params.nope=1"]))
    assert line.startswith("error: unknown config key(s) model_params.nope") and not (tmp_path / "bad").exists()


def test_text_semantics_need_no_item_run_and_apg_works(ds, tmp_path):
    result = runner.invoke(app, ["solid", str(ds), "--semantics", "text", "--head", "apg", "--backbone", "gru4rec",
                                 "--k", "5", "--runs-dir", str(tmp_path), *QUICK])
    assert result.exit_code == 0, result.output
    root = tmp_path / "solid-ds-gru4rec-apg-text"
    assert not (root / "1-item").exists() and (root / "4-solid" / "results.json").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--semantics", "image"], "semantic sources must be one of id, text, id+text, got 'image'"),
    (["--head", "base"], "SOLID generates the parameters of a duet or apg head, got head 'base'"),
    (["--backbone", "lstm"], "SOLID's backbone must be one of sasrec, gru4rec, bert4rec, din, got 'lstm'"),
])
def test_bad_chain_settings_are_one_line(ds, tmp_path, args, message):
    line = _one_line_error(runner.invoke(app, ["solid", str(ds), "--runs-dir", str(tmp_path), "--k", "4", *QUICK,
                                               *args]))
    assert line.startswith(f"error: {message}") and not any(tmp_path.iterdir())  # refused before any stage ran
