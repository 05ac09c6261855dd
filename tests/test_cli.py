"""The command line: help on every command, the prepare -> embed -> codes chain, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from semrec.cli import app
from tests.support import _one_line_error, amazon_ratings, lcrec

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
    assert (codes[0] == -1).all() and codes[1:, :4].min() >= 0 and codes[1:, :4].max() <= 1
    # 1-bit codes of 4 items collide: pq's default (dedup auto) appends the digit that makes each code unique
    assert "dedup auto: " in result.output and "dedup         last level" in result.output
    assert codes.shape == (5, 5) and len({tuple(r) for r in codes[1:].tolist()}) == 4


def test_train_and_evaluate_bad_inputs(tmp_path):
    from tests.support import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path / "ds")
    line = _one_line_error(runner.invoke(app, ["train", "--model", "nope", "--dataset", str(ds)]))
    assert "unknown model 'nope'" in line
    line = _one_line_error(runner.invoke(app, ["train", "--model", "ccfrec", "--dataset", str(ds)]))
    assert line.endswith(f"no codes.npy; run 'semrec codes {ds}' first")
    line = _one_line_error(runner.invoke(app, ["train", "--model", "ccfrec", "--dataset", str(ds), "--set",
                                               "codes=pq-reference"]))
    assert line.endswith(f"run 'semrec codes {ds} --name pq-reference' with the tokenizer and settings meant for it "
                         "first")
    line = _one_line_error(runner.invoke(app, ["train", "--model", "vqrec", "--dataset", str(ds), "--set",
                                               "codes=opq"]))
    assert line.endswith(f"run 'semrec codes {ds} -t opq' first")
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
    from tests.support import make_tiny_dataset

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


# ----- raw ids that contain the --history separator (issue 16, case 10) ----------------------------------------

@pytest.fixture(scope="module")
def comma_run(tmp_path_factory):
    """A small SASRec run whose item and user ids contain commas (and one a space): 'A,1', 'B,2', ..."""
    import pandas as pd

    from semrec.config import RunConfig, TrainConfig
    from semrec.data.build import build_dataset
    from semrec.data.dataset import SourceData
    from semrec.train.trainer import Trainer

    folder = tmp_path_factory.mktemp("comma")
    items = [f"{c},{n}" for c in "ABCDEF" for n in (1, 2)] + ["G 1"]
    rng = np.random.default_rng(0)
    rows = [(f"u{u},x", items[(s + t) % len(items)], float(t))
            for u, s in enumerate(rng.integers(0, len(items), 40)) for t in range(6)]
    source = SourceData("commas", "python", pd.DataFrame(rows, columns=["user", "item", "timestamp"]),
                        pd.DataFrame({"raw_id": items, "title": [f"title {i}" for i in items]}), ["title"], [])
    build_dataset(source).save(folder / "ds")
    cfg = RunConfig(model="sasrec", dataset=str(folder / "ds"), out=str(folder / "run"),
                    model_params={"hidden_size": 16, "inner_size": 32, "max_len": 10},
                    train=TrainConfig(epochs=1, batch_size=32, warmup_steps=2, progress=False))
    Trainer(cfg).fit()
    return folder / "run"


def _top(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [line.split()[1] for line in result.stdout.splitlines()[1:]]


def test_recommend_ids_with_commas(comma_run, tmp_path):
    base = ["recommend", str(comma_run), "--k", "4", "--include-seen"]
    by_item = runner.invoke(app, [*base, "--item", "A,1", "--item", "B,2", "--item", "G 1"])
    assert by_item.stderr == "" and by_item.stdout.startswith("top-4 for the history (3 items; sasrec on commas")
    top = _top(by_item)
    assert len(top) == 4 and all("," in t or t == "G" for t in top)  # 'G 1' prints as two columns
    (tmp_path / "h.txt").write_bytes(b"A,1\r\n\nB,2\nG 1\n")
    assert _top(runner.invoke(app, [*base, "--history-file", str(tmp_path / "h.txt")])) == top
    assert _top(runner.invoke(app, [*base, "--history-file", "-"], input="A,1\nB,2\nG 1\n")) == top
    as_json = runner.invoke(app, [*base, "--item", "A,1", "--item", "B,2", "--item", "G 1", "--json"])
    assert json.loads(as_json.stdout)["unknown"] == []

    split = runner.invoke(app, [*base, "--history", "A,1,B,2"])  # the comma form still splits, and says why
    assert split.exit_code == 0, split.output
    assert split.stderr.splitlines()[:2] == [
        "ignored 4 unknown id(s): A, 1, B, 2",
        "note: this catalogue has ids that contain a comma, which --history splits; pass such ids with --item ID or "
        "--history-file FILE"]
    unknown = runner.invoke(app, [*base, "--item", "A,1", "--item", "nope,1", "--item", " x"])
    assert unknown.stderr.splitlines()[0] == "ignored 2 unknown id(s): 'nope,1', ' x'"

    by_user = runner.invoke(app, [*base, "--user", "u0,x"])
    assert by_user.exit_code == 0 and by_user.stdout.startswith("top-4 for user u0,x (6 items;"), by_user.output


def test_recommend_history_options_are_exclusive(comma_run, tmp_path):
    base = ["recommend", str(comma_run)]
    for args in ([], ["--item", "A,1", "--history", "B"], ["--item", "A,1", "--user", "u0,x"],
                 ["--history-file", str(tmp_path / "h.txt"), "--history", "A"]):
        assert _one_line_error(runner.invoke(app, [*base, *args])) == (
            "error: give exactly one of --history id1,id2,... | --item ID (repeatable) | --history-file FILE "
            "| --user RAW_USER_ID")
    assert _one_line_error(runner.invoke(app, [*base, "--history-file", str(tmp_path / "none.txt")])) == (
        f"error: {tmp_path / 'none.txt'}: history file not found")
    (tmp_path / "latin1.txt").write_bytes("A,1\nCaf\xe9\n".encode("latin-1"))
    result = runner.invoke(app, [*base, "--history-file", str(tmp_path / "latin1.txt")])
    assert result.exit_code == 0 and "ignored 1 unknown id(s): Café" in result.stderr


def test_http_routes_take_ids_with_commas(comma_run):
    """The server's request models are JSON lists: an id with a comma is one id; GET /items takes it escaped."""
    import httpx

    from semrec.serve import Recommender
    from semrec.serve.app import ServerThread, create_app

    with ServerThread(create_app(Recommender.load(comma_run))) as srv, httpx.Client(base_url=srv.url) as client:
        reply = client.post("/recommend", json={"history": ["A,1", "B,2", "G 1"], "k": 4, "exclude_seen": False})
        assert reply.status_code == 200 and reply.json()["results"][0]["unknown"] == []
        assert client.get("/items/A%2C1").json()["raw_id"] == "A,1"
        assert client.get("/items/G%201").json()["texts"]["title"] == "title G 1"


# ----- the quickstart (issue 16, section 1) ---------------------------------------------------------------------
def _recbole_walks(folder: Path, n_users: int = 400, n_items: int = 160) -> Path:
    """RecBole atomic files whose users walk through the items in steps of +1: learnable, not popularity."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        lines += [f"u{u}\ti{(start + t) % n_items}\t{t}" for t in range(int(rng.integers(6, 12)))]
    (folder / "walks.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "walks.item").write_text("item_id:token\tmovie_title:token_seq\n" + "".join(
        f"i{i}\tFilm number {i}\n" for i in range(n_items)), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_quickstart_prints_ccfrec_beside_popularity_then_a_top10(tmp_path):
    source = _recbole_walks(tmp_path / "src")
    result = runner.invoke(app, ["quickstart", "--source", str(source), "--data-dir", str(tmp_path / "d"),
                                 "--runs-dir", str(tmp_path / "r"), "--epochs", "3", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "sample_style sequence, full softmax, MCM x 0.0, MSA x 0.0" in out
    table = out[out.index("model  "):].splitlines()
    assert table[1].split()[0] == "popularity" and table[1].split()[4] == "1.00x"
    assert table[2].split()[0] == "ccfrec"
    from semrec.runs import evaluate_run

    results = {m: json.loads((tmp_path / "r" / f"quickstart-src-{m}" / "results.json").read_text())
               for m in ("popularity", "ccfrec")}
    for row, model in ((table[1], "popularity"), (table[2], "ccfrec")):
        assert row.split()[2] == f"{results[model]['test']['ndcg@10']:.4f}"
        # the serving protocol's column is the run re-evaluated with history items excluded
        excluded = evaluate_run(tmp_path / "r" / f"quickstart-src-{model}", exclude_history=True)["test"]["ndcg@10"]
        assert row.split()[5] == f"{excluded:.4f}"
    # the walk is learnable: CCFRec must beat "most popular" on it clearly, as it must on ml-100k
    assert results["ccfrec"]["test"]["ndcg@10"] > 1.5 * results["popularity"]["test"]["ndcg@10"]
    top = [line for line in out.splitlines() if line.strip()[:3].strip().isdigit() and "Film number" in line]
    assert len(top) == 10
    assert "done in" in out and "--user u0" in out


def test_format_comparison_shows_ratios_and_na():
    from semrec.cli import format_comparison

    text = format_comparison({
        "popularity": {"valid": {"ndcg@10": 0.01}, "test": {"ndcg@10": 0.02, "recall@10": 0.1},
                       "test_exclude_history": {"ndcg@10": 0.03}},
        "ccfrec": {"valid": {"ndcg@10": None}, "test": {"ndcg@10": 0.05, "recall@10": 0.2}}})
    rows = text.splitlines()
    assert rows[2].split() == ["popularity", "0.0100", "0.0200", "0.1000", "1.00x", "0.0300"]
    assert rows[3].split() == ["ccfrec", "n/a", "0.0500", "0.2000", "2.50x", "n/a"]


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "error: --epochs must be at least 1, got 0"),
    (["--batch-size", "0"], "error: --batch-size must be at least 1, got 0"),
    (["--lr", "-0.1"], "error: --lr must be a positive number, got -0.1"),
    (["--lr", "nan"], "error: --lr must be a positive number, got nan"),
    (["--set", "seed=3"], "error: unknown config key(s) seed (known: codebook_from, codes, ctr, dataset, init_from, "
                          "model, model_params, out, semantic, text_model, text_view, train)"),
    (["--set", "train.batch_size=0"], "error: train.batch_size must be at least 1, got 0"),
    (["--set", "train.seeds=3"], None),
])
def test_quickstart_refuses_bad_settings_before_any_work(tmp_path, args, message):
    result = runner.invoke(app, ["quickstart", "--data-dir", str(tmp_path / "d"), "--runs-dir", str(tmp_path / "r"),
                                 *args])
    line = _one_line_error(result)
    assert line == message if message else line.startswith("error: unknown config key(s) train.seeds"), line
    assert not (tmp_path / "d").exists()  # refused before preparing anything


@pytest.mark.parametrize("override,message", [
    ("train.batch_size=0", "train.batch_size must be at least 1, got 0"),
    ("train.eval_batch_size=-4", "train.eval_batch_size must be at least 1, got -4"),
    ("train.patience=0", "train.patience must be at least 1, got 0"),
    ("train.eval_every=0", "train.eval_every must be at least 1, got 0"),
    ("train.epochs=-1", "train.epochs must be 0 or more, got -1"),
    ("train.lr=-0.001", "train.lr must be a finite number >= 0, got -0.001"),
])
def test_train_refuses_settings_no_run_can_use(tmp_path, override, message):
    from tests.support import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "ds")
    result = runner.invoke(app, ["train", "--model", "sasrec", "--dataset", str(data), "-o", str(tmp_path / "run"),
                                 "--set", override])
    assert _one_line_error(result) == f"error: {message}"
