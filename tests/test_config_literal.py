"""Option values are not YAML: names and paths are taken as written, only typed fields are converted
(issue 16, case 9), on the command line, in --set and in YAML config files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import semrec.config
from semrec.cli import app
from semrec.config import CodesConfig, EmbedConfig, PrepareConfig, RunConfig, load_config
from semrec.errors import SemrecError
from tests.support import lcrec, make_tiny_dataset

runner = CliRunner()


def test_set_values_are_converted_by_the_field_type():
    cfg = load_config(PrepareConfig, None, ["name=0123", "out=out #1", "format=yes", "source=010", "meta="])
    assert (cfg.name, cfg.out, cfg.format, cfg.source, cfg.meta) == ("0123", "out #1", "yes", "010", None)
    embed = load_config(EmbedConfig, None, ["batch_size=0123", "views=0123,yes", "max_seq_length=null",
                                            "model=my model #2"])
    assert (embed.batch_size, embed.views, embed.max_seq_length, embed.model) == (123, ["0123", "yes"], None,
                                                                                  "my model #2")
    assert load_config(EmbedConfig, None, ["views=[010, title]"]).views == ["010", "title"]
    for word, value in (("yes", True), ("no", False), ("on", True), ("OFF", False), ("true", True), ("0", False)):
        assert load_config(CodesConfig, None, [f"dedup={word}"]).dedup is value
    run = load_config(RunConfig, None, ["dataset=data/0123", "codes=010", "out=runs/a #1", "init_from=~",
                                        "train.lr=1e-3", "train.epochs=007", "train.grad_clip=null",
                                        "train.device=", "train.exclude_history=yes"])
    assert (run.dataset, run.codes, run.out, run.init_from) == ("data/0123", "010", "runs/a #1", None)
    assert (run.train.lr, run.train.epochs, run.train.grad_clip, run.train.device) == (0.001, 7, None, None)
    assert run.train.exclude_history is True


def test_free_form_parameters_are_typed_by_their_consumer():
    # tokenizer parameters: the constructor's types (k is an int: 010 is ten, not YAML's octal 8)
    codes = load_config(CodesConfig, None, ["tokenizer=kmeans", "params.k=010", "params.views=title,brand",
                                            "params.normalize=yes"])
    assert codes.params == {"k": 10, "views": ["title", "brand"], "normalize": True}
    # model parameters: the model's config class (str stays str, ints are decimal)
    run = load_config(RunConfig, None, ["model=ccfrec", "model_params.neg_num=0123",
                                        "model_params.sample_style=yes", "model_params={max_len: 010}"])
    assert run.model_params == {"max_len": 10}
    run = load_config(RunConfig, None, ["model=ccfrec", "model_params.neg_num=0123", "model_params.dropout=.5",
                                        "model_params.sample_style=010"])
    assert run.model_params == {"neg_num": 123, "dropout": 0.5, "sample_style": "010"}
    # unknown names or an unknown model: YAML's reading, refused later by the model / tokenizer with the name
    assert load_config(RunConfig, None, ["model_params.nope=[1, yes]"]).model_params == {"nope": [1, True]}
    assert load_config(CodesConfig, None, ["tokenizer=zz", "params.k=2"]).params == {"k": 2}
    with pytest.raises(SemrecError, match=r"config 'model_params.max_len': expected an integer, got 'ten'"):
        load_config(RunConfig, None, ["model=sasrec", "model_params.max_len=ten"])
    with pytest.raises(SemrecError, match=r"config 'params.k': expected an integer, got '1.5'"):
        load_config(CodesConfig, None, ["tokenizer=kmeans", "params.k=1.5"])


def test_bad_values_name_the_key_and_the_text():
    with pytest.raises(SemrecError, match=r"config 'train.epochs': expected an integer, got '0x'"):
        load_config(RunConfig, None, ["train.epochs=0x"])
    with pytest.raises(SemrecError, match=r"config 'dedup': expected true/false or 'auto', got 'maybe'$"):
        load_config(CodesConfig, None, ["dedup=maybe"])
    assert load_config(CodesConfig, None, ["dedup=auto"]).dedup == "auto"
    assert load_config(CodesConfig, None, ["dedup="]).dedup is None
    with pytest.raises(SemrecError, match=r"config 'train.lr': expected a number, got 'fast'"):
        load_config(RunConfig, None, ["train.lr=fast"])
    with pytest.raises(SemrecError, match="not of the form key=value"):
        load_config(RunConfig, None, ["train.lr"])
    with pytest.raises(SemrecError, match="has no key"):
        load_config(RunConfig, None, ["=3"])


def test_yaml_config_files_keep_the_text_of_str_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: 0123\nout: out #1\nformat: yes\nsource: '010'\nmeta: 2024-01-02\n")
    cfg = load_config(PrepareConfig, path)
    # a YAML comment stays a comment in a file ("out #1" is "out" there): only the other values are kept as text
    assert (cfg.name, cfg.out, cfg.format, cfg.source, cfg.meta) == ("0123", "out", "yes", "010", "2024-01-02")
    path.write_text("model: ccfrec\ndataset: 0123\ntrain: {epochs: 0010, lr: 1.0e-3, exclude_history: on}\n"
                    "model_params: {neg_num: 0123, sample_style: prefix, extra: [1, yes]}\n")
    run = load_config(RunConfig, path)
    assert (run.dataset, run.train.epochs, run.train.lr, run.train.exclude_history) == ("0123", 10, 0.001, True)
    assert run.model_params == {"neg_num": 123, "sample_style": "prefix", "extra": [1, True]}
    # the resolved config is plain YAML again (no wrapper types leak into what is saved)
    semrec.config.save_config(run, tmp_path / "saved.yaml")
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["dataset"] == "0123"


class _Captured(Exception):
    pass


@pytest.fixture
def resolved(monkeypatch):
    """Replace load_config by one that records the resolved config and stops the command there."""
    seen: list = []
    real = semrec.config.load_config

    def capture(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        raise _Captured

    # semrec.api binds load_config when first imported: import it before the patch (else it would keep the capture
    # for good and break later tests in this process), then capture its calls too
    api = importlib.import_module("semrec.api")
    monkeypatch.setattr(semrec.config, "load_config", capture)
    monkeypatch.setattr(api, "load_config", capture)
    return seen


@pytest.mark.parametrize("args, expected", [
    (["prepare", "0123", "--name", "0123", "--out", "out #1", "--meta", "010.jsonl", "--format", "yes",
      "--missing-meta", "no"],
     {"source": "0123", "name": "0123", "out": "out #1", "meta": "010.jsonl", "format": "yes", "missing_meta": "no"}),
    (["prepare", "x", "--set", "name=0123", "--set", "out=out #1"], {"name": "0123", "out": "out #1"}),
    (["embed", "d", "--model", "0123", "--views", "010,yes", "--device", "no", "--batch-size", "08"],
     {"model": "0123", "views": ["010", "yes"], "device": "no", "batch_size": 8}),
    (["codes", "d", "--name", "010", "--model", "0123", "-t", "kmeans", "-p", "k=010", "--fit-on", "yes"],
     {"name": "010", "model": "0123", "tokenizer": "kmeans", "params": {"k": 10}, "fit_on": "yes"}),
    (["codes", "d", "--set", "name=010", "--set", "model=0123"], {"name": "010", "model": "0123"}),
    (["train", "--model", "sasrec", "--dataset", "0123", "--codes", "010", "--out", "run #1", "--device", "no",
      "--epochs", "010"],
     {"dataset": "0123", "codes": "010", "out": "run #1", "train.device": "no", "train.epochs": 10}),
    (["train", "--set", "dataset=0123", "--set", "out=run #1", "--set", "codes=yes"],
     {"dataset": "0123", "out": "run #1", "codes": "yes"}),
    (["pretrain", "--datasets", "a,b", "-c", "configs/vqrec/pretrain.yaml", "--out", "pre #1", "--device", "no",
      "--set", "codes=010"],
     {"out": "pre #1", "train.device": "no", "codes": "010"}),
    (["finetune", "run #0123", "--dataset", "0123", "--out", "ft #1", "--set", "text_model=yes"],
     {"init_from": "run #0123", "dataset": "0123", "out": "ft #1", "text_model": "yes"}),
])
def test_every_command_passes_names_and_paths_literally(resolved, args, expected):
    result = runner.invoke(app, args)
    assert isinstance(result.exception, _Captured), result.output
    cfg = resolved[0]
    for key, value in expected.items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value, (key, node)


def test_prepare_codes_train_write_where_they_are_told(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lcrec(Path("0123"))
    result = runner.invoke(app, ["prepare", "0123", "--name", "0123", "--out", "out #1"])
    assert result.exit_code == 0, result.output
    assert json.loads(Path("out #1", "manifest.json").read_text())["name"] == "0123"
    assert "written to  out #1" in result.output
    result = runner.invoke(app, ["prepare", "0123", "--name", "yes", "--set", "out=ds #2"])
    assert result.exit_code == 0, result.output
    assert json.loads(Path("ds #2", "manifest.json").read_text())["name"] == "yes"

    make_tiny_dataset(Path("010"))  # prepared, with fake embeddings
    result = runner.invoke(app, ["codes", "010", "-t", "kmeans", "--name", "010", "-p", "k=010"])
    assert result.exit_code == 0, result.output
    assert json.loads(Path("010", "codes", "010", "codes.json").read_text())["codebook_sizes"] == [10]
    result = runner.invoke(app, ["train", "--model", "sasrec", "--dataset", "010", "--codes", "010", "--out",
                                 "run #1", "--epochs", "1", "--set", "model_params.hidden_size=016",
                                 "--set", "train.progress=no"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load(Path("run #1", "config.yaml").read_text())
    assert (saved["dataset"], saved["codes"], saved["out"]) == ("010", "010", "run #1")
    assert saved["model_params"]["hidden_size"] == 16 and saved["train"]["progress"] is False
