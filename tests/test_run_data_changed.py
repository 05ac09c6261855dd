"""A run used after its dataset, codes or embeddings changed (issue 16, case 5): every reader of a run folder
(train --resume, evaluate, recommend, export, serve, the Python API, the benchmark loaders) applies the same
fingerprint check and refuses with what changed; re-preparing the same source is not a change."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from semrec.cli import app
from semrec.data.dataset import CanonicalDataset
from semrec.runs import evaluate_run
from semrec.serve import Recommender
from semrec.text.encode import DEFAULT_MODEL, embeddings_dir, load_view_embeddings, write_view_matrix
from semrec.train.run_folder import FINGERPRINTS_FILE, RunDataChanged
from tests.support import make_tiny_dataset, train_tiny_ccfrec

runner = CliRunner()


def write_recbole_source(folder: Path, dataset: CanonicalDataset, rename: dict[str, str] | None = None) -> Path:
    """``dataset`` as RecBole atomic files ``t.inter`` / ``t.item``, with item ids renamed by ``rename``."""
    rid = (lambda r: rename.get(r, r)) if rename else (lambda r: r)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, seq, stamps in zip(dataset.users["raw_id"], dataset.sequences, dataset.timestamps):
        lines += [f"{user}\t{rid(item)}\t{t}" for item, t in zip(dataset.raw_item_ids(seq), stamps)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.inter").write_text("\n".join(lines) + "\n")
    items = [f"{rid(r)}\t{t}" for r, t in zip(dataset.items["raw_id"], dataset.items["title"])]
    (folder / "t.item").write_text("\n".join(["item_id:token\ttitle:token_seq", *items]) + "\n")
    return folder


def one_line_error(args: list) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, (args, result.output)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory) -> tuple[Path, Path, Path, CanonicalDataset]:
    """(source folder, dataset folder, SASRec run folder, the original dataset) built through the CLI."""
    base = tmp_path_factory.mktemp("changed")
    original = CanonicalDataset.load(make_tiny_dataset(base / "tiny"))
    source = write_recbole_source(base / "src", original)
    assert runner.invoke(app, ["prepare", str(source), "-o", str(base / "ds")]).exit_code == 0
    result = runner.invoke(app, ["train", "--model", "sasrec", "--dataset", str(base / "ds"), "--out",
                                 str(base / "run"), "--epochs", "1", "--set", "model_params.hidden_size=16",
                                 "--set", "model_params.max_len=10", "--set", "train.progress=false"])
    assert result.exit_code == 0, result.output
    return source, base / "ds", base / "run", original


def test_every_reader_refuses_a_run_whose_dataset_was_re_prepared(prepared_run, tmp_path, monkeypatch):
    import semrec.serve.app

    source, ds, run, original = prepared_run
    before = runner.invoke(app, ["evaluate", str(run)])
    assert before.exit_code == 0, before.output
    monkeypatch.setattr(semrec.serve.app, "serve", lambda *a, **k: pytest.fail("serve started on changed data"))
    # a new version of the source in which one item id changed (same counts), prepared over the old dataset
    write_recbole_source(source, original, rename={"i5": "i5-v2"})
    assert runner.invoke(app, ["prepare", str(source), "-o", str(ds)]).exit_code == 0
    start = f"error: {run}: the data this run was trained on has changed since: dataset {ds / 'manifest.json'}: "
    end = (f"Its checkpoints number and code items as the old files did, so its answers would be wrong. Retrain on "
           f"the current data ('semrec train -c {run / 'config.yaml'} --out NEW_RUN_FOLDER'), or restore the files "
           f"it was trained on")
    commands = [["evaluate", run], ["evaluate", run, "--checkpoint", "last"], ["recommend", run, "--user", "u1"],
                ["recommend", run, "--history", "i1,i2"], ["export", run, "-o", tmp_path / "export"],
                ["serve", run, "--port", "0"], ["train", "--resume", run, "--epochs", "2"]]
    for args in commands:
        line = one_line_error(args)
        assert line.startswith(start) and line.endswith(end), (args, line)
        assert "source file(s) changed: t.inter, t.item; sha256 " in line, line
    assert not (tmp_path / "export").exists()
    with pytest.raises(RunDataChanged, match="source file\\(s\\) changed: t.inter, t.item"):
        Recommender.load(run)
    with pytest.raises(RunDataChanged):
        evaluate_run(run, device="cpu")
    spec = importlib.util.spec_from_file_location("bench_anatomy", Path(__file__).parents[1] / "bench" /
                                                  "ranking_anatomy.py")
    anatomy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anatomy)
    with pytest.raises(RunDataChanged):
        anatomy.load_model(run)
    # a run from before fingerprints.json: the fingerprints in its last.pt are checked the same way
    shutil.copytree(run, tmp_path / "old_run")
    (tmp_path / "old_run" / FINGERPRINTS_FILE).unlink()
    line = one_line_error(["evaluate", tmp_path / "old_run"])
    assert f"dataset {ds / 'manifest.json'}: sha256 " in line and "Retrain on the current data" in line
    # re-preparing the original source rewrites manifest.json (a new date) but not what models read: accepted
    write_recbole_source(source, original)
    assert runner.invoke(app, ["prepare", str(source), "-o", str(ds)]).exit_code == 0
    after = runner.invoke(app, ["evaluate", str(run)])
    assert after.exit_code == 0 and after.output == before.output, after.output


@pytest.fixture(scope="module")
def ccfrec_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ccf")
    ds, _ = train_tiny_ccfrec(base)
    return ds, base / "run"


def test_changed_codes_or_text_embeddings_are_refused(ccfrec_run):
    ds, run = ccfrec_run
    Recommender.load(run)  # unchanged: loads
    emb = embeddings_dir(ds, DEFAULT_MODEL)
    title = load_view_embeddings(emb, ["title"])["title"]
    write_view_matrix(emb, "title", np.roll(title[1:], 1, axis=0))  # re-embedded differently, codes not refitted
    with pytest.raises(RunDataChanged) as caught:
        Recommender.load(run)
    message = str(caught.value)
    assert f"text embeddings (the codes' PCA inputs) {emb}: sha256 " in message and "codes.npy" not in message
    write_view_matrix(emb, "title", title[1:])  # the same vectors again: accepted
    Recommender.load(run)
    codes_path = ds / "codes" / "pq" / "codes.npy"
    codes = np.load(codes_path)
    changed = codes.copy()
    changed[1, 0] = (changed[1, 0] + 1) % 8
    np.save(codes_path, changed)
    try:
        with pytest.raises(RunDataChanged) as caught:
            evaluate_run(run, device="cpu")
        message = str(caught.value)
        assert f"codes {codes_path}: rewritten " in message and "(the run used the file of " in message
        assert " | " not in message  # the only change
        line = one_line_error(["recommend", run, "--history", "i1"])
        assert f"codes {codes_path}: rewritten" in line
    finally:
        np.save(codes_path, codes)
    Recommender.load(run)
