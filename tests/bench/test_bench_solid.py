"""bench/solid.py on a tiny dataset: every backbone x method row is trained or marked not built, the table has the
CTR metrics and full-ranking NDCG@10 (n/a for DIN), and a second call reuses the runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import embed_vectors, make_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_solid_bench_smoke(tmp_path):
    from semrec.data.dataset import CanonicalDataset

    ds = make_tiny_dataset(tmp_path / "data" / "tiny")
    n = CanonicalDataset.load(ds).n_items
    embed_vectors(ds, {"all": np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)}, "tests.bench")
    out = tmp_path / "solid.md"
    args = [sys.executable, str(ROOT / "bench" / "solid.py"), "--datasets", "tiny", "--data", str(tmp_path / "data"),
            "--backbones", "din,sasrec", "--methods", "base,duet_vqvae,duet+fusion,duet+solid", "--seeds", "1",
            "--runs", str(tmp_path / "runs"), "--out", str(out), "--set", "train.epochs=1", "--set",
            "model_params.max_len=8", "--set", "train.batch_size=256", "--eval-negatives", "19", "--history", "8",
            "--solid-set", "model_params.clip=0.1"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in table.splitlines()
            if line.startswith("| tiny")}
    fusion_row, solid_row = "duet+fusion (model_params.clip=0.1)", "duet+solid (model_params.clip=0.1)"  # settings
    assert set(rows) == {("tiny", b, m) for b in ("din", "sasrec")
                         for m in ("base", "duet_vqvae", fusion_row, solid_row)} | {("tiny", "(none)", "popularity")}
    pop = [c.strip() for c in rows[("tiny", "(none)", "popularity")].split("|")[5:10]]
    assert all(0 <= float(c) <= 1 for i, c in enumerate(pop) if i != 2) and pop[2] == "n/a"  # no log-loss
    assert "Full-ranking anchors" not in table  # quality.md has no row of this dataset
    assert "not built" not in table
    for method in ("base", solid_row, fusion_row):  # DIN: no full ranking
        assert "| n/a |" in rows[("tiny", "din", method)]
    assert "| n/a |" not in rows[("tiny", "sasrec", solid_row)]
    chain = "solid-tiny-sasrec-duet-id+text"
    tag = "@train.epochs=1@model_params.max_len=8@train.batch_size=256"  # --set values name the folders too
    solid = tmp_path / "runs" / f"tiny-sasrec-duet+solid{tag}-s2020" / chain  # one chain: its stages are shared
    assert sorted(p.name for p in solid.iterdir()) == ["3-semantic", "4-solid@model_params.clip=0.1",
                                                       "4-solid@model_params.vq=false@model_params.clip=0.1"]
    assert "clip: 0.1" in (solid / "4-solid@model_params.clip=0.1" / "config.yaml").read_text()
    fusion = solid / "4-solid@model_params.vq=false@model_params.clip=0.1"
    assert "vq: false" in (fusion / "config.yaml").read_text() and "clip: 0.1" in (fusion / "config.yaml").read_text()
    item = tmp_path / "runs" / f"tiny-sasrec-duet{tag}-s2020"  # stage 1 is the DUET row of the seed, trained once
    assert (item / "results.json").is_file()
    cells = [c.strip() for c in rows[("tiny", "sasrec", solid_row)].split("|")[1:-1]]
    assert cells[3] == "1" and cells[-2] == "1"  # one seed finished, one epoch (s/epoch may round to 0 here)
    assert "vqvae_size: 450" in (tmp_path / "runs" / f"tiny-sasrec-duet_vqvae{tag}-s2020" / "config.yaml").read_text()
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and out.read_text() == table  # reused, not retrained
    report = [*args[:args.index("--seeds")], "--seeds", "2", *args[args.index("--seeds") + 2:], "--report-only",
              "--methods", "base,apg,duet-semantic"]
    done = subprocess.run(report, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {tuple(c.strip() for c in line.split("|")[1:5]) for line in out.read_text().splitlines()
            if line.startswith("| tiny") and "popularity" not in line}
    assert rows == {("tiny", "din", "base", "1"), ("tiny", "sasrec", "base", "1"), ("tiny", "din", "apg", "0"),
                    ("tiny", "sasrec", "apg", "0"), ("tiny", "din", "duet-semantic", "1"),
                    ("tiny", "sasrec", "duet-semantic", "1")}  # the finished seed only; apg never ran: "not run"
    semantic = [line for line in out.read_text().splitlines() if "| sasrec | duet-semantic |" in line][0]
    chain = tmp_path / "runs" / f"tiny-sasrec-duet+solid{tag}-s2020" / "solid-tiny-sasrec-duet-id+text"
    test_auc = json.loads((chain / "3-semantic" / "results.json").read_text())["test"]["auc"]
    assert f"| {test_auc:.4f} |" in semantic  # stage 3's own results
    assert "not run" in out.read_text() and not list((tmp_path / "runs").glob("*-s2021"))  # nothing trained
    # --merge: a call with other SOLID settings adds its rows and keeps the others (an ablation table built by
    # several calls); a row it tabulates again is replaced in place
    before = out.read_text()
    merge = [*args[:args.index("--solid-set")], "--report-only", "--merge", "--methods", "duet+solid,base",
             "--semantics", "text", "--backbones", "sasrec"]
    done = subprocess.run(merge, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = out.read_text()
    keys = [tuple(c.strip() for c in line.split("|")[1:5]) for line in merged.splitlines() if line.startswith("| tiny")]
    assert keys[:len(keys) - 1] == [tuple(c.strip() for c in line.split("|")[1:5]) for line in before.splitlines()
                                    if line.startswith("| tiny")]  # every earlier row kept, in its place
    assert keys[-1] == ("tiny", "sasrec", "duet+solid (semantics text)", "0")  # never trained: "not run"
    assert merged.count("Command:") == 1 and merged.count("Then:") == 1 and "--merge" in merged


@pytest.mark.parametrize(("args", "message"), [
    (["--methods", "duet,dual"], "--methods: unknown dual"),
    (["--backbones", "lstm"], "--backbones: unknown lstm"),
    (["--semantics", "image"], "--semantics: unknown image"),
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
])
def test_bad_bench_arguments_are_refused_before_any_run(tmp_path, args, message):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "solid.py"), "--runs", str(tmp_path / "runs"),
                           "--out", str(tmp_path / "out.md"), *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_the_full_ranking_anchors_come_from_quality_md():
    sys.path.insert(0, str(ROOT / "bench"))
    import solid

    lines = solid.anchors(["ml-100k"])
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ") and "config" not in line]
    assert "sasrec/ml-100k" in rows and "ccfrec/ml-100k-fast" in rows
    assert not [r for r in rows if "Scientific" in r or r.startswith(("gru4rec", "popularity"))]


def test_merge_keeps_the_anchors_of_every_dataset_in_the_table(tmp_path):
    """A --merge call on one dataset keeps the full-ranking anchors of the datasets whose rows it keeps (here a
    Scientific row from an earlier call: bench/results/quality.md has Scientific anchors, not tiny ones)."""
    make_tiny_dataset(tmp_path / "data" / "tiny")
    out = tmp_path / "solid.md"
    earlier = ("# SOLID\n\nCommand: `python bench/solid.py --datasets Scientific`.\n\n"
               "| dataset | backbone | method | seeds | auc | uauc | logloss | ndcg@10 | hr@10 | full NDCG@10 | epochs "
               "| s/epoch |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
               "| Scientific | sasrec | base | 1 | 0.7 | 0.7 | 0.2 | 0.2 | 0.3 | 0.01 | 10 | 9 |\n")
    out.write_text(earlier)
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "solid.py"), "--datasets", "tiny", "--data",
                           str(tmp_path / "data"), "--backbones", "sasrec", "--methods", "base", "--seeds", "1",
                           "--runs", str(tmp_path / "runs"), "--eval-negatives", "19", "--history", "8",
                           "--report-only", "--merge", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = out.read_text()
    assert "| Scientific | sasrec | base | 1 | 0.7 |" in merged and "| tiny | sasrec | base | 0 | not run" in merged
    assert "Full-ranking anchors" in merged and "| sasrec/Scientific |" in merged  # the kept row's dataset
