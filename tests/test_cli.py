"""The command line: help on every command, the prepare -> embed -> codes chain, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from semrec.cli import app
from tests.test_sources import amazon_ratings, lcrec

runner = CliRunner()
COMMANDS = ["prepare", "info", "embed", "codes", "train", "pretrain", "finetune", "evaluate", "recommend", "export",
            "serve", "quickstart"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_train_help_names_every_registered_model():
    from semrec.models import REGISTRY

    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert all(name in result.output for name in REGISTRY), result.output


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "semrec.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert all(c in result.stdout for c in COMMANDS)


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_prepare_bad_inputs(tmp_path):
    assert "not found" in _one_line_error(runner.invoke(app, ["prepare", str(tmp_path / "missing")]))
    amazon_ratings(tmp_path / "a", extra="U9,B1\n")
    line = _one_line_error(runner.invoke(app, ["prepare", str(tmp_path / "a"), "-o", str(tmp_path / "o")]))
    assert "Toy.csv.gz:9" in line
    assert "unknown format" in _one_line_error(runner.invoke(app, ["prepare", str(tmp_path / "a"), "-f", "xml"]))
    line = _one_line_error(runner.invoke(app, ["prepare", str(tmp_path / "a"), "--set", "nonsense=1"]))
    assert "unknown config key" in line
    line = _one_line_error(runner.invoke(app, ["prepare", str(tmp_path / "a"), "-c", str(tmp_path / "no.yaml")]))
    assert "config file not found" in line


def test_commands_on_missing_or_unprepared_folders(tmp_path):
    assert "run 'semrec prepare' first" in _one_line_error(runner.invoke(app, ["info", str(tmp_path)]))
    assert "run 'semrec prepare' first" in _one_line_error(runner.invoke(app, ["embed", str(tmp_path)]))
    lcrec(tmp_path / "src")
    assert runner.invoke(app, ["prepare", str(tmp_path / "src"), "-o", str(tmp_path / "ds")]).exit_code == 0
    assert "run 'semrec embed' first" in _one_line_error(runner.invoke(app, ["codes", str(tmp_path / "ds")]))
    line = _one_line_error(runner.invoke(app, ["codes", str(tmp_path / "ds"), "-t", "zzz"]))
    assert "zzz" in line


@pytest.mark.slow
def test_prepare_embed_codes_chain(tmp_path):
    lcrec(tmp_path / "src", items=None)
    result = runner.invoke(app, ["prepare", str(tmp_path / "src"), "-o", str(tmp_path / "ds"), "--name", "tiny"])
    assert result.exit_code == 0, result.output
    assert "users        3" in result.output and "items        4" in result.output
    assert "duplicate interactions: 1" in result.output
    assert (tmp_path / "ds" / "prepare_config.yaml").is_file()
    result = runner.invoke(app, ["embed", str(tmp_path / "ds"), "--views", "title,description"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["embed", str(tmp_path / "ds"), "--views", "title,description"])
    assert "(cached)" in result.output
    # 4 items cannot feed 2^8 centroids: the error says so and suggests a fix
    line = _one_line_error(runner.invoke(app, ["codes", str(tmp_path / "ds"), "-p", "views=title,description"]))
    assert "nbits" in line
    result = runner.invoke(app, ["codes", str(tmp_path / "ds"), "-p", "views=title,description", "-p", "nbits=1",
                                 "-p", "pca_dim=2", "-p", "codes_per_view=2", "--name", "pq_small"])
    assert result.exit_code == 0, result.output
    assert "collisions" in result.output
    codes = np.load(tmp_path / "ds" / "codes" / "pq_small" / "codes.npy")
    assert codes.shape == (5, 4) and (codes[0] == -1).all() and codes[1:].min() >= 0 and codes[1:].max() <= 1


def test_train_and_evaluate_bad_inputs(tmp_path):
    from tests.tiny import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path / "ds")
    line = _one_line_error(runner.invoke(app, ["train", "--model", "nope", "--dataset", str(ds)]))
    assert "unknown model 'nope'" in line
    line = _one_line_error(runner.invoke(app, ["train", "--model", "ccfrec", "--dataset", str(ds)]))
    assert "run 'semrec codes' first" in line
    line = _one_line_error(runner.invoke(app, ["train", "--dataset", str(tmp_path / "none")]))
    assert "run 'semrec prepare' first" in line
    line = _one_line_error(runner.invoke(app, ["train", "--resume", str(tmp_path), "--lr", "0.1"]))
    assert "--resume continues a run with its saved config; drop --lr" in line
    line = _one_line_error(runner.invoke(app, ["train", "--resume", str(tmp_path), "--epochs", "3"]))
    assert "not a run folder (no config.yaml)" in line
    line = _one_line_error(runner.invoke(app, ["train", "--dataset", str(ds), "--set", "train.lr=fast"]))
    assert "train.lr" in line
    assert "not a run folder" in _one_line_error(runner.invoke(app, ["evaluate", str(tmp_path)]))


def test_train_then_evaluate(tmp_path):
    from tests.tiny import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path / "ds")
    args = ["train", "--model", "sasrec", "--dataset", str(ds), "--out", str(tmp_path / "run"), "--epochs", "2",
            "--set", "model_params.hidden_size=16", "--set", "train.progress=false"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.output and "test" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    trained = json.loads((tmp_path / "run" / "results.json").read_text())
    test_line = next(line for line in result.output.splitlines() if line.startswith("test"))
    assert f"{trained['test']['ndcg@10']:.4f}" in test_line


def test_evaluate_bad_checkpoint_name_and_quickstart_bad_source(tmp_path):
    line = _one_line_error(runner.invoke(app, ["evaluate", str(tmp_path), "--checkpoint", "newest"]))
    assert "--checkpoint must be best or last" in line
    result = runner.invoke(app, ["quickstart", "--source", str(tmp_path / "nowhere"),
                                 "--data-dir", str(tmp_path / "d"), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]  # after the step header, one error line
    assert last.startswith("error: ") and "nowhere: not found" in last
