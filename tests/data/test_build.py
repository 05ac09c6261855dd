"""The out-of-core build (semrec.data.build, semrec.data.spool): same rules as a plain Python reference, whatever the
chunk, batch and memory sizes; natural order in SQL equals natural_order; the CLI's prepare and info on it."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from semrec.cli import app
from semrec.data import build
from semrec.data.dataset import CanonicalDataset, SourceData, natural_order
from semrec.data.spool import InteractionSpool
from semrec.errors import SemrecError
from tests.support import amazon_ratings, movielens, recbole_files

runner = CliRunner()


def reference(users, items, stamps, known):
    """The documented rules in plain Python: drop unknown items, users and items in natural order, per user a stable
    sort by timestamp (input order breaks ties) with repeats dropped (first kept)."""
    rows = [(u, i, t, k) for k, (u, i, t) in enumerate(zip(users, items, stamps)) if i in known]
    timed = not any(math.isnan(t) for _, _, t, _ in rows)
    per_user: dict[str, list] = {}
    for row in rows:
        per_user.setdefault(row[0], []).append(row)
    sequences = {}
    for user, user_rows in per_user.items():
        seen, seq = set(), []
        for _, item, t, _ in sorted(user_rows, key=lambda r: ((r[2] if timed else 0), r[3])):
            if item not in seen:
                seen.add(item)
                seq.append((item, t))
        sequences[user] = seq
    item_order = natural_order([i for seq in sequences.values() for i, _ in seq])
    item_id = {raw: k + 1 for k, raw in enumerate(item_order)}
    user_order = natural_order(list(sequences))
    return (item_order, user_order, [[item_id[i] for i, _ in sequences[u]] for u in user_order],
            [[int(t) for _, t in sequences[u]] for u in user_order] if timed else None)


ids = st.sampled_from(["1", "2", "10", "007", "7", "-3", "0", "-0", "b", "a", "é", "Z"])
rows = st.lists(st.tuples(ids, ids, st.sampled_from([1.0, 2.0, 2.0, 5.0, -4.0])), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None)
@given(rows=rows, timed=st.booleans(), chunk=st.integers(1, 9), batch=st.integers(1, 9))
def test_build_matches_the_reference_at_any_chunk_and_batch_size(rows, timed, chunk, batch):
    users, items, stamps = (list(c) for c in zip(*rows))
    if not timed:
        stamps = [math.nan] * len(stamps)
    known = {i for i in items if i != "Z"} or {items[0]}
    meta = pd.DataFrame({"raw_id": sorted(known), "title": [f"t {k}" for k in sorted(known)]})
    frame = pd.DataFrame({"user": users, "item": items, "timestamp": stamps})
    with pytest.MonkeyPatch.context() as patch:  # rows cross spool chunks and output batches (a user's carry)
        patch.setattr(InteractionSpool, "CHUNK", chunk)
        patch.setattr(build, "BATCH_ROWS", batch)
        ds = build.build_dataset(SourceData("s", "t", frame, meta, ["title"], []), memory_limit="64MB")
    item_order, user_order, sequences, timestamps = reference(users, items, stamps, known)
    assert ds.items["raw_id"].tolist() == item_order
    assert ds.users["raw_id"].tolist() == user_order
    assert [s.tolist() for s in ds.sequences] == sequences
    assert (ds.timestamps is None) == (timestamps is None)
    if timestamps is not None:
        assert [t.tolist() for t in ds.timestamps] == timestamps
    assert ds.manifest["stats"] == ds.stats()
    n_known = sum(i in known for i in items)
    assert ds.manifest["skips"]["interactions_on_items_without_metadata"] == len(items) - n_known
    assert ds.manifest["skips"]["duplicate_interactions"] == n_known - sum(map(len, sequences))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.from_regex(r"-?0{0,2}[0-9]{1,45}", fullmatch=True), min_size=1, max_size=30, unique=True))
def test_natural_key_sorts_integers_like_natural_order(values):
    con = duckdb.connect()
    con.execute("CREATE TABLE t(raw VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[v] for v in values])
    got = [r[0] for r in con.execute(f"SELECT raw FROM t ORDER BY {build.natural_key('raw')}").fetchall()]
    assert got == natural_order(values)


def test_non_ascii_digits_and_mixed_ids_sort_as_strings():
    assert natural_order(["\u0661\u0662", "3"]) == ["3", "\u0661\u0662"]  # Arabic-Indic 12 is not an integer id
    assert natural_order(["10", "9", "x"]) == ["10", "9", "x"]
    assert natural_order(["10", "9", "-1", "09"]) == ["-1", "09", "9", "10"]


def test_source_readers_stream_and_leave_no_temporary_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "it's tmp"))  # a quote in the path (SQL literals)
    (tmp_path / "it's tmp").mkdir()
    for maker, name in [(amazon_ratings, "a"), (movielens, "m"), (recbole_files, "r")]:
        result = runner.invoke(app, ["prepare", str(maker(tmp_path / name)), "--out", str(tmp_path / f"{name}-ds")])
        assert result.exit_code == 0, result.output
        manifest_stats = CanonicalDataset.load(tmp_path / f"{name}-ds").stats()
        assert f"users        {manifest_stats['users']:,}" in result.output
    assert list((tmp_path / "it's tmp").iterdir()) == []


def test_prepare_memory_limit_is_checked_and_config_values_are_not_overridden(tmp_path):
    src = amazon_ratings(tmp_path / "src")
    result = runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "ds"), "--memory-limit", "lots"])
    assert result.exit_code == 2
    assert result.output.startswith("error: memory_limit 'lots' is not a size DuckDB understands")
    for bad in ("-5GB", "0MB", "10", "150%"):  # DuckDB reads -5GB as no limit
        result = runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "ds"), "--memory-limit", bad])
        assert result.exit_code == 2 and f"memory_limit '{bad}' is not a size" in result.output, result.output
    assert build.check_memory_limit(" 2GiB ") == "2GiB" and build.check_memory_limit("50%") == "50%"
    assert not (tmp_path / "ds" / "manifest.json").exists()
    config = tmp_path / "prepare.yaml"
    config.write_text("missing_meta: keep\nmemory_limit: 300MB\n")
    result = runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "ds"), "-c", str(config)])
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "ds" / "prepare_config.yaml").read_text()
    assert "missing_meta: keep" in saved and "memory_limit: 300MB" in saved


def test_info_reads_the_manifest_only(tmp_path, monkeypatch):
    src = amazon_ratings(tmp_path / "src")
    assert runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "ds")]).exit_code == 0
    expected = runner.invoke(app, ["info", str(tmp_path / "ds")]).output

    def no_load(*args, **kwargs):
        raise AssertionError("info loaded the dataset")

    monkeypatch.setattr(CanonicalDataset, "load", no_load)
    assert runner.invoke(app, ["info", str(tmp_path / "ds")]).output == expected
    assert "interactions 7" in expected


def test_spool_counts_and_missing_timestamps(tmp_path):
    spool = InteractionSpool(tmp_path / "f.csv")
    spool.add("u", "a", 1.0)
    spool.add("u", "b", 2.0)
    spool.finish()
    assert spool.n_rows == 2 and spool.items == {"a", "b"} and spool.has_time
    folder = spool.folder
    spool.cleanup()
    assert not folder.exists()
    empty = InteractionSpool("x").finish()
    assert empty.n_rows == 0 and not empty.has_time


def test_bad_memory_limit_from_the_api(tmp_path):
    frame = pd.DataFrame({"user": ["u"], "item": ["a"], "timestamp": [np.nan]})
    meta = pd.DataFrame({"raw_id": ["a"], "title": ["A"]})
    with pytest.raises(SemrecError, match="memory_limit '12 parsecs'"):
        build.write_dataset(SourceData("s", "t", frame, meta, ["title"], []), tmp_path / "ds",
                            memory_limit="12 parsecs")
    assert not Path(tmp_path / "ds" / "manifest.json").exists()


def test_info_refuses_a_file_that_disagrees_with_the_manifest(tmp_path):
    from semrec.io import read_json, write_json

    src = amazon_ratings(tmp_path / "src")
    assert runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "ds")]).exit_code == 0
    manifest = read_json(tmp_path / "ds" / "manifest.json")
    manifest["stats"]["users"] += 1
    write_json(tmp_path / "ds" / "manifest.json", manifest)
    result = runner.invoke(app, ["info", str(tmp_path / "ds")])
    assert result.exit_code == 2
    assert result.output == (f"error: {tmp_path / 'ds' / 'sequences.parquet'}: 2 rows, its manifest says 3 users; "
                             "re-run 'semrec prepare' to rebuild it\n")


def test_no_temporary_folder_and_too_little_memory_are_one_line_errors(tmp_path, monkeypatch):
    src = amazon_ratings(tmp_path / "src")
    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
        result = runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 2 and result.output.startswith(
        f"error: cannot make a temporary folder for the interactions read under {tmp_path / 'missing'}")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user": rng.integers(0, 5000, 40000).astype(str),
                          "item": rng.integers(0, 900, 40000).astype(str),
                          "timestamp": rng.integers(0, 10**9, 40000).astype(float)})
    meta = pd.DataFrame({"raw_id": [str(i) for i in range(900)], "title": ["t"] * 900})
    with pytest.raises(SemrecError, match=r"building the dataset failed \(OutOfMemoryException: .*memory_limit 1MB"):
        build.write_dataset(SourceData("s", "t", frame, meta, ["title"], []), tmp_path / "ds", memory_limit="1MB")
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_save_refreshes_the_statistics_info_prints(tmp_path):
    src = amazon_ratings(tmp_path / "src")
    assert runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "ds")]).exit_code == 0
    ds = CanonicalDataset.load(tmp_path / "ds")
    ds.sequences, ds.timestamps = ds.sequences[:1], ds.timestamps[:1]  # a changed dataset saved again
    ds.users = ds.users.iloc[:1]
    ds.save(tmp_path / "ds2")
    output = runner.invoke(app, ["info", str(tmp_path / "ds2")]).output
    assert "users        1\n" in output and f"interactions {len(ds.sequences[0])}\n" in output


def test_user_id_warnings_add_up_over_output_batches(monkeypatch):
    from semrec.data.dataset import id_warnings

    users = ["a,1", " b", "c", "d,2", "e,3", "f,4", "g "]
    frame = pd.DataFrame({"user": users, "item": ["x"] * len(users), "timestamp": np.nan})
    meta = pd.DataFrame({"raw_id": ["x"], "title": ["X"]})
    monkeypatch.setattr(build, "BATCH_ROWS", 2)
    ds = build.build_dataset(SourceData("s", "t", frame, meta, ["title"], []))
    assert ds.manifest["id_warnings"]["user"] == id_warnings(natural_order(users))
    assert ds.manifest["id_warnings"]["user"]["comma"]["count"] == 4


def test_re_preparing_unchanged_data_keeps_the_manifest_and_what_was_built_on_it(tmp_path, monkeypatch):
    """quickstart and bench scripts call prepare every time: unchanged sources must leave manifest.json
    byte-identical (its earlier created_at kept), so CTR samples, codes and runs keyed on its sha256 stay current;
    a changed source gives a new manifest; a dataset saved twice (merge's path) behaves the same."""
    import datetime as dt
    from types import SimpleNamespace

    from semrec.artifacts import DatasetFolder
    from semrec.config import CtrConfig
    from semrec.data.ctr import write_ctr_samples

    class Later(dt.datetime):  # every write is "later": only a kept date can make the manifests equal
        calls = 0

        @classmethod
        def now(cls, tz=None):
            cls.calls += 1
            return dt.datetime(2030, 1, 1, tzinfo=tz) + dt.timedelta(seconds=cls.calls)

    monkeypatch.setattr(build, "_dt", SimpleNamespace(datetime=Later, timezone=dt.timezone))
    for maker, name in [(amazon_ratings, "a"), (movielens, "m"), (recbole_files, "r")]:
        src, ds = maker(tmp_path / name), tmp_path / f"{name}-ds"
        assert runner.invoke(app, ["prepare", str(src), "--out", str(ds)]).exit_code == 0
        folder = DatasetFolder(ds)
        first = folder.manifest.read_bytes()
        manifest = CanonicalDataset.load(ds).manifest
        assert set(manifest["files_sha256"]) == {"items.parquet", "sequences.parquet"}
        write_ctr_samples(ds, CtrConfig(train_negatives=0, eval_negatives=0))
        assert runner.invoke(app, ["prepare", str(src), "--out", str(ds)]).exit_code == 0
        assert folder.manifest.read_bytes() == first, name
        assert folder.ctr("ctr").is_current(folder)
    # a changed source: new content, new date, the CTR samples are stale
    src = amazon_ratings(tmp_path / "a", extra="U3,B1,5.0,200\nU3,B4,5.0,201\n")
    assert runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "a-ds")]).exit_code == 0
    folder = DatasetFolder(tmp_path / "a-ds")
    changed = CanonicalDataset.load(folder.root).manifest
    assert changed["created_at"] != manifest["created_at"] and not folder.ctr("ctr").is_current(folder)
    # CanonicalDataset.save (merge, tests): the same rule
    dataset = CanonicalDataset.load(folder.root)
    dataset.save(tmp_path / "saved")
    first = (tmp_path / "saved" / "manifest.json").read_bytes()
    dataset.manifest["created_at"] = "2031-01-01T00:00:00+00:00"
    dataset.save(tmp_path / "saved")
    assert (tmp_path / "saved" / "manifest.json").read_bytes() == first
