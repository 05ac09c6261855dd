"""Source readers on tiny generated fixtures, including every kind of bad input the CLI must explain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semrec.data.build import build_dataset
from semrec.data.dataset import SCHEMA_VERSION, CanonicalDataset
from semrec.data.sources import amazon2023, detect_format, load_source
from semrec.errors import DataFormatError, SemrecError
from semrec.io import read_json, write_json
from tests.support import amazon_ratings, lcrec, movielens, recbole_files, write

# ----- happy paths ------------------------------------------------------------------------------------

def test_amazon_rating_only(tmp_path):
    ds = build_dataset(load_source(amazon_ratings(tmp_path)))
    assert ds.name == "Toy"
    assert ds.items["raw_id"].tolist() == ["B1", "B2", "B3", "B4"]  # B9 has no interaction: dropped
    assert ds.users["raw_id"].tolist() == ["U1", "U2"]
    assert [s.tolist() for s in ds.sequences] == [[3, 1, 2], [1, 2, 3, 4]]
    row = ds.items.iloc[0]
    assert row["title"] == "First & best" and row["brand"] == "Acme."
    assert row["features"] == "fast small." and row["categories"] == "Tools Hand."
    assert ds.items.iloc[1]["brand"] == "" and ds.items.iloc[3]["brand"] == ""
    assert ds.timestamps is not None and ds.timestamps[0].tolist() == [100, 101, 102]


def test_lcrec_dedups_and_counts(tmp_path):
    ds = build_dataset(load_source(lcrec(tmp_path)))
    assert ds.views == ["title", "brand", "categories", "description"]
    assert ds.items["raw_id"].tolist() == ["0", "1", "2", "10"]  # numeric natural order, not "10" < "2"
    # user 2 repeats item 1: the second occurrence is dropped and counted; list order is time order
    assert [s.tolist() for s in ds.sequences] == [[3, 1, 2], [2, 3, 4, 1], [1, 2, 3]]
    assert ds.manifest["skips"]["duplicate_interactions"] == 1
    assert ds.timestamps is None


def test_movielens_raw(tmp_path):
    ds = build_dataset(load_source(movielens(tmp_path)))
    assert ds.views == ["title", "genre", "year"]
    assert ds.items[["title", "genre", "year"]].values.tolist() == [
        ["Heat", "Action.", "1995."], ["Babe", "Comedy.", "1995."], ["Café Society", "unknown.", "1997."]]
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [1]]


def test_recbole_atomic_files(tmp_path):
    ds = build_dataset(load_source(recbole_files(tmp_path)))
    assert ds.views == ["title", "year", "genre"]
    assert [s.tolist() for s in ds.sequences] == [[2, 1, 3], [2]]  # sorted by timestamp


@pytest.mark.parametrize("maker,fmt", [(amazon_ratings, "amazon2023"), (lcrec, "lcrec"),
                                       (movielens, "movielens"), (recbole_files, "recbole")])
def test_detect_format(tmp_path, maker, fmt):
    assert detect_format(maker(tmp_path)) == fmt


def test_save_load_round_trip_and_determinism(tmp_path):
    a = build_dataset(load_source(lcrec(tmp_path / "src")))
    b = build_dataset(load_source(lcrec(tmp_path / "src")))
    a.save(tmp_path / "out")
    loaded = CanonicalDataset.load(tmp_path / "out")
    assert loaded.items.equals(a.items) and loaded.items.equals(b.items)
    assert all(np.array_equal(x, y) for x, y in zip(loaded.sequences, a.sequences))
    assert loaded.manifest["source"]["files"][0]["sha256"] == a.manifest["source"]["files"][0]["sha256"]
    assert loaded.stats() == a.stats()


def test_sequences_round_trip_through_flat_arrow_lists(tmp_path):
    """save writes the list columns from one flat buffer and its offsets, load splits them back (issue 20: no Python
    int per interaction); rows of any length, timestamps or none, and a null row is refused naming the field."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    a = build_dataset(load_source(lcrec(tmp_path / "src")))
    a.sequences[0] = a.sequences[0][:1]  # rows of different lengths
    for timestamps in ([np.arange(len(s), dtype=np.int64) * 10**12 for s in a.sequences], None):
        a.timestamps = timestamps
        a.save(tmp_path / "out")
        loaded = CanonicalDataset.load(tmp_path / "out")
        assert [s.tolist() for s in loaded.sequences] == [s.tolist() for s in a.sequences]
        assert all(s.dtype == np.int64 for s in loaded.sequences)
        if timestamps is None:
            assert loaded.timestamps is None
        else:
            assert [t.tolist() for t in loaded.timestamps] == [t.tolist() for t in timestamps]
    path = tmp_path / "out" / "sequences.parquet"
    table = pq.read_table(path)
    items = table.column("item_ids").to_pylist()
    items[1] = None
    pq.write_table(table.set_column(2, "item_ids", pa.array(items, pa.list_(pa.int32()))), path)
    with pytest.raises(SemrecError, match=r"sequences.parquet: 1 row\(s\) of 'item_ids' are empty \(null\); re-run"):
        CanonicalDataset.load(tmp_path / "out")


def test_other_schema_version_is_refused(tmp_path):
    build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / "out")
    manifest = read_json(tmp_path / "out" / "manifest.json")
    manifest["schema_version"] = SCHEMA_VERSION + 1
    write_json(tmp_path / "out" / "manifest.json", manifest)
    with pytest.raises(SemrecError, match="schema version"):
        CanonicalDataset.load(tmp_path / "out")


# ----- bad input --------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(SemrecError, match="not found"):
        load_source(tmp_path / "nope")
    movielens(tmp_path / "ml")
    (tmp_path / "ml" / "u.genre").unlink()
    with pytest.raises(DataFormatError, match=r"u\.genre: file not found"):
        load_source(tmp_path / "ml", "movielens")


def test_malformed_csv_line_names_file_and_line(tmp_path):
    amazon_ratings(tmp_path, extra="U3,B1,5.0\n")
    with pytest.raises(DataFormatError, match=r"Toy\.csv\.gz:9: expected 4 fields, got 3"):
        load_source(tmp_path)


def test_bad_timestamp_names_field(tmp_path):
    amazon_ratings(tmp_path, extra="U3,B1,5.0,yesterday\n")
    with pytest.raises(DataFormatError, match=r":9 \(field 'timestamp'\)"):
        load_source(tmp_path)


def test_malformed_json(tmp_path):
    lcrec(tmp_path, inter='{"0": [1, 2,\n  "1": [2]}')
    with pytest.raises(DataFormatError, match=r"S\.inter\.json:2: malformed JSON"):
        load_source(tmp_path)


def test_malformed_jsonl_meta_line(tmp_path):
    amazon_ratings(tmp_path)
    write(tmp_path / "meta_Toy.jsonl.gz", '{"parent_asin": "B1", "title": "ok"}\n{"parent_asin": "B2", \n', gz=True)
    with pytest.raises(DataFormatError, match=r"meta_Toy\.jsonl\.gz:2: malformed JSON line"):
        load_source(tmp_path)


def test_non_utf8_bytes(tmp_path):
    lcrec(tmp_path)
    write(tmp_path / "S.item.json", b'{"0": {"title": "caf\xe9"},\n "1": {"title": "\xff"}}')
    source = load_source(tmp_path)  # not UTF-8, no UTF-8 text in it: latin-1
    assert source.items["title"].tolist() == ["café", "ÿ"] and source.encodings["S.item.json"] == "latin-1"
    write(tmp_path / "S.item.json", b'{"0": {"title": "caf\xe9"},\n "1": {"title": "\xc3\xbf"}}')
    with pytest.raises(DataFormatError, match=r"S\.item\.json:1: invalid utf-8 byte 0xe9 at column 21, but line 2 "
                                              r"holds UTF-8 text \('ÿ'\): the file mixes encodings"):
        load_source(tmp_path)


def test_unknown_item_in_a_history(tmp_path):
    header = "user_id,parent_asin,rating,timestamp,history\n"
    write(tmp_path / "D.train.csv", header + "U,A,5,1,\nU,B,5,2,A\n")
    write(tmp_path / "D.valid.csv", header + "U,C,5,3,A B\n")
    write(tmp_path / "D.test.csv", header + "U,D,5,4,A X C\n")
    write(tmp_path / "meta_D.jsonl", "\n".join(json.dumps({"parent_asin": a, "title": a}) for a in "ABCD"))
    with pytest.raises(DataFormatError, match=r"D\.test\.csv:2 \(field 'history'\): user U: unknown item 'X'"):
        load_source(tmp_path)
    write(tmp_path / "D.test.csv", header + "U,D,5,4,A C B\n")
    with pytest.raises(DataFormatError, match=r"D\.train\.csv:3 \(field 'history'\): user U: history and target"):
        load_source(tmp_path)


@pytest.mark.parametrize("keys_per_check", [1, 3, 2**20])
def test_split_files_checked_in_pieces_find_the_same_first_unknown_item(tmp_path, monkeypatch, keys_per_check):
    # the unknown-item check looks keys up a batch at a time: whatever the batch, the first bad user in file order
    # and its first unknown item are named, and a clean set is read whole
    monkeypatch.setattr(amazon2023, "KEYS_PER_CHECK", keys_per_check)
    header = "user_id,parent_asin,rating,timestamp,history\n"
    write(tmp_path / "D.train.csv", header + "U,A,5,1,\nU,B,5,2,A\nV,C,5,1,\nW,A,5,1,\nW,C,5,2,A\n")
    write(tmp_path / "D.valid.csv", header + "U,C,5,3,A B\nV,D,5,2,C\nW,D,5,3,A C\n")
    write(tmp_path / "D.test.csv", header + "U,D,5,4,A B C\nV,A,5,3,C D\nW,B,5,4,A C D\n")
    write(tmp_path / "meta_D.jsonl", "\n".join(json.dumps({"parent_asin": a, "title": a}) for a in "ABCD"))
    ds = build_dataset(load_source(tmp_path))
    assert [[ds.items["raw_id"][i - 1] for i in s] for s in ds.sequences] == [list("ABCD"), list("CDA"), list("ACDB")]
    write(tmp_path / "D.test.csv", header + "U,D,5,4,A B C\nV,A,5,3,C X\nW,B,5,4,A Y D\n")
    with pytest.raises(DataFormatError, match=r"D\.test\.csv:3 \(field 'history'\): user V: unknown item 'X'"):
        load_source(tmp_path)


def test_split_files_read_by_pyarrow_and_line_by_line_give_the_same_interactions(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    header = "user_id,parent_asin,rating,timestamp,history\n"
    write(tmp_path / "D.train.csv", header + "U,A,5,1,\nU,B,5,2,A\nV,C,4,1.5,\n\nW,A,3,1,\nW,C,5,2,A\n")
    write(tmp_path / "D.valid.csv", header + "U,C,5,3,A B\nV,D,5,2,C\nW,D,5,3,A C\n")
    write(tmp_path / "D.test.csv", header + "U,D,5,4,A B C\nV,A,5,3,C D\nW,B,5,4,A C D\n")
    files = {s: tmp_path / f"D.{s}.csv" for s in ("train", "valid", "test")}
    def read(reader, *args):
        spool = reader(files, *args)  # the spool's folder lives as long as the spool
        return pq.read_table(spool.path).to_pylist()

    tables = [read(amazon2023._read_splits, rows) for rows in (amazon2023._split_rows_fast, amazon2023._split_rows)]
    assert tables[0] == tables[1] and len(tables[0]) == 11 and tables[0][4]["timestamp"] == 1.0
    used = []
    monkeypatch.setattr(amazon2023, "_split_rows", lambda f: used.append(1) or amazon2023._split_rows_fast(f))
    read(amazon2023.read_splits)
    assert not used  # clean files never reach the line reader
    write(tmp_path / "D.valid.csv", header + "U,C,5,3,A B\n V,D,5,2,C\nW,D,5,3,A C\n")  # a user id to strip
    monkeypatch.undo()
    assert read(amazon2023.read_splits) == tables[0]


def test_items_without_metadata_are_dropped_and_counted(tmp_path):
    lcrec(tmp_path, items=json.dumps({str(i): {"title": f"t{i}"} for i in (0, 1, 2)}))
    ds = build_dataset(load_source(tmp_path))
    assert ds.manifest["skips"]["interactions_on_items_without_metadata"] == 1
    assert "10" not in ds.item_index
    kept = build_dataset(load_source(tmp_path), missing_meta="keep")
    assert kept.item_index["10"] == 4 and kept.items.iloc[3]["title"] == ""


def test_empty_text_everywhere(tmp_path):
    lcrec(tmp_path, items=json.dumps({str(i): {"title": "", "brand": "."} for i in range(11)}))
    with pytest.raises(DataFormatError, match="every text field of every item is empty"):
        build_dataset(load_source(tmp_path))


def test_duplicate_interactions_are_counted(tmp_path):
    amazon_ratings(tmp_path, extra="U1,B3,4.0,500\nU1,B3,4.0,500\n")
    ds = build_dataset(load_source(tmp_path))
    assert ds.manifest["skips"]["duplicate_interactions"] == 2
    assert ds.sequences[0].tolist() == [3, 1, 2]


def test_recbole_bad_header_and_row(tmp_path):
    recbole_files(tmp_path)
    write(tmp_path / "r.inter", "user_id\titem_id:token\n7\t1\n")
    with pytest.raises(DataFormatError, match=r"r\.inter:1: bad header column 'user_id'"):
        load_source(tmp_path)
    write(tmp_path / "r.inter", "user_id:token\titem_id:token\n7\t1\n7\n")
    with pytest.raises(DataFormatError, match=r"r\.inter:3: expected 2 tab-separated fields, got 1"):
        load_source(tmp_path)


def test_unknown_format(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(SemrecError, match="cannot tell the input format"):
        load_source(tmp_path)
    with pytest.raises(SemrecError, match="unknown format 'parquet'"):
        load_source(tmp_path, "parquet")


LCREC_ODD = [  # (inter, items): each is read whole (its streamed reading cannot decide), with the same result
    ('\ufeff{"0": [2, 0, 1], "1": [1, 2]}', None),                       # a BOM
    ('{"0": [2, 0, 1], "1": [1, 2]}', '{"0": {"title": "caf\u00e9"}, "1": {"title": "b"}}'.encode("latin-1")),
]


def test_lcrec_files_are_streamed_not_read_whole(tmp_path, monkeypatch):
    import semrec.data.sources.lcrec as lcrec_module

    inter = {f"u{u}": [(u * 7 + k) % 40 for k in range(u % 9)] for u in range(300)}  # some empty
    inter["u5"] = ["10", 11, "x-1"]  # strings and integers mixed
    items = {str(i): {"title": f"Item {i}", "brand": ["B", "C"], "categories": [["A", "B"]], "price": 1.5,
                      "description": {"en": f"about {i}"}} for i in range(41)}
    items["x-1"] = {"title": "odd"}
    lcrec(tmp_path / "a", inter=json.dumps(inter), items=json.dumps(items))
    whole = build_dataset(load_source(tmp_path / "a"))

    def no_whole_reading(path):
        raise AssertionError(f"{path} was read whole")

    monkeypatch.setattr(lcrec_module, "read_json", no_whole_reading)
    source = load_source(tmp_path / "a")
    assert source.skips == {"users_with_empty_sequences": sum(not s for s in inter.values())}
    assert source.encodings == {"S.inter.json": "utf-8", "S.item.json": "utf-8"}
    streamed = build_dataset(source)
    for table in ("items", "users"):
        assert getattr(streamed, table).equals(getattr(whole, table))
    assert [s.tolist() for s in streamed.sequences] == [s.tolist() for s in whole.sequences]


@pytest.mark.parametrize("inter,items", LCREC_ODD)
def test_lcrec_files_the_stream_cannot_decide_are_read_whole(tmp_path, inter, items):
    lcrec(tmp_path, inter=inter, items=items)
    source = load_source(tmp_path)
    assert source.interactions.n_rows == 5
    if items is not None:
        assert source.items["title"].tolist() == ["café", "b"] and source.encodings["S.item.json"] == "latin-1"


@pytest.mark.parametrize("inter,items,message", [
    ('{"0": [1, 2],\n "0": [2]}', None, r"S\.inter\.json \(field '0'\): the same key appears twice"),
    ('[[1, 2]]', None, r"S\.inter\.json:1: expected a JSON object \{user: \[items\]\}"),
    ('{"0": [1, 2],\n "1": [2, NaN]}', None, r"S\.inter\.json:2"),
    ('{"0": [1, true]}', None, r"user '0': expected a list of item ids"),
    ('{"0": [1, 2.5]}', None, r"user '0': expected a list of item ids"),
    ('{"0": [1, 2]}', '{"1": {"title": "a",\n "title": "b"}}',
     r"S\.item\.json \(field 'title'\): the same key appears twice"),
    ('{"0": [1, 2]}', '{"1": ["a"]}', r"item '1': expected an object of text fields"),
    ('{"0": [1, 2]}', '{"1": {"title": "a"}', r"S\.item\.json:1: malformed JSON"),
])
def test_lcrec_bad_files_are_named_after_streaming(tmp_path, inter, items, message):
    lcrec(tmp_path, inter=inter, items=items)
    with pytest.raises(DataFormatError, match=message):
        load_source(tmp_path)
