"""Incomplete or damaged artifact folders (issue 16, case 8): for every folder kind (dataset, embeddings, codes,
tokenizer, run) and every command that reads it, one error line naming the missing or unreadable file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from semrec.cli import app
from tests.support import train_tiny_ccfrec

runner = CliRunner()
EMB = "embeddings/all-MiniLM-L6-v2"
DATASET_FIX = "(incomplete dataset folder); re-run 'semrec prepare' to rebuild it"


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> Path:
    """A dataset with embeddings and pq codes, and a CCFRec run on it (reads all three)."""
    base = tmp_path_factory.mktemp("complete")
    ds, _ = train_tiny_ccfrec(base)
    return base


@pytest.fixture
def copy(complete, tmp_path) -> tuple[Path, Path]:
    """A private copy (dataset folder, run folder), the run pointing at the copied dataset."""
    shutil.copytree(complete, tmp_path / "c")
    ds, run = tmp_path / "c" / "ds", tmp_path / "c" / "run"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "dataset": str(ds), "out": str(run)}))
    return ds, run


def commands(ds: Path, run: Path, tmp: Path) -> dict[str, list]:
    return {
        "info": ["info", ds],
        "embed": ["embed", ds],
        "codes": ["codes", ds, "-p", "pca_dim=16", "-p", "codes_per_view=2", "-p", "nbits=3", "--name", "new"],
        "train": ["train", "--model", "ccfrec", "--dataset", ds, "--out", tmp / "new_run"],
        "train_sasrec": ["train", "--model", "sasrec", "--dataset", ds, "--out", tmp / "new_sasrec"],
        "evaluate": ["evaluate", run],
        "recommend": ["recommend", run, "--history", "i1"],
        "export": ["export", run, "-o", tmp / "export"],
        "serve": ["serve", run, "--port", "0"],
        "finetune": ["finetune", run, "--dataset", ds, "-c", run / "config.yaml", "--out", tmp / "ft"],
        "pretrain": ["pretrain", "--datasets", ds, "--merged", tmp / "merged", "--out", tmp / "pt"],
        "resume": ["train", "--resume", run],
    }


def one_line_error(args: list) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, (args, result.output)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), (args, result.output)
    assert all(not line.startswith("error") for line in lines[:-1]), result.output
    return lines[-1]


CASES = [  # (file removed, commands that read it, expected line after 'error: <folder>/<file>: ')
    ("ds/items.parquet", ["info", "embed", "codes", "train", "train_sasrec", "evaluate", "recommend", "export",
                         "serve", "finetune", "pretrain", "resume"], f"missing {DATASET_FIX}"),
    ("ds/sequences.parquet", ["info", "embed", "codes", "train", "evaluate", "recommend", "export", "serve",
                             "finetune", "pretrain", "resume"], f"missing {DATASET_FIX}"),
    (f"ds/{EMB}/title.npy", ["codes", "train", "evaluate", "recommend", "export", "serve", "finetune", "resume"],
     "missing (incomplete embeddings folder); re-run 'semrec embed' to rebuild it"),
    ("ds/codes/pq/tokenizer/tokenizer.json", ["train", "evaluate", "recommend", "export", "serve", "finetune",
                                              "resume"],
     "missing (incomplete codes folder); re-run 'semrec codes' to rebuild it"),
    ("ds/codes/pq/tokenizer/state.npz", ["train", "evaluate", "recommend", "export", "serve", "finetune", "resume"],
     "missing (incomplete tokenizer folder); re-run 'semrec codes' to rebuild it"),
    ("ds/codes/pq/codes.json", ["train", "evaluate", "recommend", "export", "serve", "finetune", "resume"],
     "missing (incomplete codes folder); re-run 'semrec codes' to rebuild it"),
    ("run/checkpoints/best.pt", ["evaluate", "recommend", "export", "serve", "finetune"],
     "missing (incomplete run folder); the run was interrupted before its first validation (or the file was "
     "removed); finish it with 'semrec train --resume {run}', or evaluate its last epoch with 'semrec evaluate "
     "{run} --checkpoint last'"),
]


@pytest.mark.parametrize("removed,readers,expected", CASES, ids=[c[0].split("/")[-1] for c in CASES])
def test_a_missing_file_is_named_by_every_command_that_reads_it(copy, tmp_path, monkeypatch, removed, readers,
                                                                expected):
    import semrec.serve.app

    monkeypatch.setattr(semrec.serve.app, "serve", lambda *a, **k: pytest.fail("served an incomplete run"))
    ds, run = copy
    path = ds.parent / removed
    path.unlink()
    table = commands(ds, run, tmp_path)
    for name in readers:
        line = one_line_error(table[name])
        assert line == f"error: {path}: {expected.format(run=run)}", (name, line)


def test_a_dataset_folder_with_only_its_manifest(copy):
    ds, run = copy
    for child in ds.iterdir():
        if child.name != "manifest.json":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for args in (["info", ds], ["recommend", run, "--user", "u1"]):
        assert one_line_error(args) == f"error: {ds / 'items.parquet'}: missing {DATASET_FIX}"


def test_run_folder_without_checkpoints_or_config(copy, tmp_path):
    ds, run = copy
    (run / "checkpoints" / "last.pt").unlink()
    (run / "checkpoints" / "best.pt").unlink()
    hint = ("missing (incomplete run folder); the run never finished an epoch (or its checkpoints were removed), so "
            "there is nothing to resume or use; train it again without --resume")
    for args, which in ((["train", "--resume", run], "last"), (["evaluate", run, "--checkpoint", "last"], "last"),
                        (["evaluate", run], "best"), (["recommend", run, "--history", "i1"], "best")):
        assert one_line_error(args) == f"error: {run / 'checkpoints' / f'{which}.pt'}: {hint}"
    (run / "config.yaml").unlink()
    for args in (["evaluate", run], ["recommend", run, "--history", "i1"], ["export", run], ["train", "--resume", run]):
        assert one_line_error(args) == f"error: {run}: not a run folder (no config.yaml)"


def test_damaged_files_are_named(copy):
    ds, run = copy
    (ds / "sequences.parquet").write_bytes(b"PAR1 truncated")
    line = one_line_error(["info", ds])
    assert line.startswith(f"error: {ds / 'sequences.parquet'}: cannot read (") and line.endswith(
        "; re-run 'semrec prepare' to rebuild it")
    (ds / "manifest.json").write_text('{"schema_version": 1,')
    assert one_line_error(["info", ds]).startswith(f"error: {ds / 'manifest.json'}: not valid JSON (")
    (run / "config.yaml").write_text("model: [sasrec\n")
    assert one_line_error(["evaluate", run]).startswith(f"error: {run / 'config.yaml'}: not valid YAML (")
    (run / "config.yaml").write_text("- a list\n")
    assert one_line_error(["evaluate", run]) == (f"error: {run / 'config.yaml'}: not a run config (expected a "
                                                 "mapping, got list)")


def test_damaged_embeddings_and_codes_are_named(complete, copy):
    ds, run = copy
    (ds / EMB / "brand.npy").write_bytes(b"\x93NUMPY garbage")
    line = one_line_error(["recommend", run, "--history", "i1"])
    assert line.startswith(f"error: {ds / EMB / 'brand.npy'}: cannot read (") and line.endswith(
        "; re-run 'semrec embed' to rebuild it")
    shutil.copy(complete / "ds" / EMB / "brand.npy", ds / EMB / "brand.npy")
    (ds / "codes" / "pq" / "codes.npy").write_bytes(b"not numpy")
    line = one_line_error(["evaluate", run])
    assert line.startswith(f"error: {ds / 'codes' / 'pq' / 'codes.npy'}: cannot read (") and line.endswith(
        "; re-run 'semrec codes' to rebuild it")
