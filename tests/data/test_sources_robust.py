"""Inputs from the field that must not break (issue 16, section 2): non-finite numbers in every reader and
numeric field, text encodings (UTF-8, else latin-1, reported; never mojibake), awkward raw ids warned about at
prepare time, and the skip counts every reader reports. Every input is built in the test."""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from semrec.cli import app
from semrec.config import TrainConfig, load_config
from semrec.data.build import build_dataset
from semrec.data.dataset import SourceData
from semrec.data.sources import load_source
from semrec.errors import DataFormatError, SemrecError
from semrec.io import read_json
from semrec.text.clean import clean_text, clean_title
from semrec.text.decode import TextDecodeError, decode_bytes
from tests.support import amazon_ratings, lcrec, movielens, recbole_files, write

runner = CliRunner()


def prepare(source: Path, out: Path, *args: str):
    return runner.invoke(app, ["prepare", str(source), "-o", str(out), *args])


def one_error(result) -> str:
    """The single ``error: ...`` line of a failed command (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0][len("error: "):]


# ----- case 1: non-finite numbers ----------------------------------------------------------------------

NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "+inf", "—", "1_000", "\u0661\u0662"]  # last: Arabic-Indic 12


def recbole_inter(folder: Path, stamp: str) -> Path:
    recbole_files(folder)
    write(folder / "r.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                              f"u1\t1\t5\t100\nu1\t2\t4\t{stamp}\nu1\t3\t1\t300\nu2\t1\t3\t5\n")
    return folder


@pytest.mark.parametrize("value", NON_FINITE)
def test_recbole_non_finite_timestamp_via_cli(tmp_path, value):
    source = recbole_inter(tmp_path / "src", value)
    message = one_error(prepare(source, tmp_path / "out"))
    assert message == f"{source / 'r.inter'}:3 (field 'timestamp'): not a number: {value!r}"
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_out_of_range_timestamp_is_refused_not_wrapped(tmp_path):
    source = recbole_inter(tmp_path / "src", "1e19")  # beyond int64: the cast would wrap to a negative number
    assert one_error(prepare(source, tmp_path / "out")) == (
        f"{source / 'r.inter'}:3 (field 'timestamp'): out of range: '1e19'")
    source = recbole_inter(tmp_path / "src", "1e400")  # float overflow to inf
    assert one_error(prepare(source, tmp_path / "out")).endswith("(field 'timestamp'): out of range: '1e400'")


def test_ordinary_numbers_still_read(tmp_path):
    source = recbole_inter(tmp_path / "src", " 2.5e2 ")
    ds = build_dataset(load_source(source))
    assert ds.sequences[0].tolist() == [1, 2, 3] and ds.timestamps[0].tolist() == [100, 250, 300]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_movielens_numeric_fields(tmp_path, value):
    folder = movielens(tmp_path / "ml")
    data = (folder / "u.data").read_text().splitlines()
    data[1] = f"1\t20\t3\t{value}"
    write(folder / "u.data", "\n".join(data) + "\n")
    assert one_error(prepare(folder, tmp_path / "o")) == (
        f"{folder / 'u.data'}:2 (field 'timestamp'): not a number: {value!r}")
    data[1] = f"1\t20\t{value}\t881250950"
    write(folder / "u.data", "\n".join(data) + "\n")
    assert one_error(prepare(folder, tmp_path / "o")) == (
        f"{folder / 'u.data'}:2 (field 'rating'): not a number: {value!r}")
    movielens(folder)
    write(folder / "u.genre", f"unknown|0\nAction|{value}\nComedy|2\n")
    assert one_error(prepare(folder, tmp_path / "o")) == (
        f"{folder / 'u.genre'}:2 (field 'index'): not a number: {value!r}")


def test_movielens_fraction_and_genre_index_errors(tmp_path):
    folder = movielens(tmp_path / "ml")
    write(folder / "u.data", "1\t10\t5\t881250949.5\n")
    assert one_error(prepare(folder, tmp_path / "o")) == (
        f"{folder / 'u.data'}:1 (field 'timestamp'): not an integer: '881250949.5'")
    movielens(folder)
    write(folder / "u.genre", "unknown|0\nAction|1\nComedy|5\n")  # used to be a KeyError traceback
    assert one_error(prepare(folder, tmp_path / "o")) == (
        f"{folder / 'u.genre'}: genre indices must run 0..2 (one per u.item flag column), got [0, 1, 5]")
    write(folder / "u.genre", "unknown|0\nAction|1\nComedy|1\n")
    assert one_error(prepare(folder, tmp_path / "o")) == (
        f"{folder / 'u.genre'}:3 (field 'index'): genre index 1 given twice")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "Infinity"])
def test_amazon_rating_only_numeric_fields(tmp_path, value):
    amazon_ratings(tmp_path, extra=f"U3,B1,5.0,{value}\n")
    assert one_error(prepare(tmp_path, tmp_path / "o")) == (
        f"{tmp_path / 'Toy.csv.gz'}:9 (field 'timestamp'): not a number: {value!r}")  # used to be OverflowError for inf
    amazon_ratings(tmp_path, extra=f"U3,B1,{value},500\n")
    assert one_error(prepare(tmp_path, tmp_path / "o")) == (
        f"{tmp_path / 'Toy.csv.gz'}:9 (field 'rating'): not a number: {value!r}")


def amazon_splits(folder: Path, test_row: str = "U,D,5,4,A B C") -> Path:
    header = "user_id,parent_asin,rating,timestamp,history\n"
    write(folder / "D.train.csv", header + "U,A,5,1,\nU,B,5,2,A\n")
    write(folder / "D.valid.csv", header + "U,C,5,3,A B\n")
    write(folder / "D.test.csv", header + test_row + "\n")
    write(folder / "meta_D.jsonl", "\n".join(json.dumps({"parent_asin": a, "title": a}) for a in "ABCDE") + "\n")
    return folder


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_amazon_split_numeric_fields(tmp_path, value):
    amazon_splits(tmp_path, f"U,D,5,{value},A B C")
    assert one_error(prepare(tmp_path, tmp_path / "o")) == (
        f"{tmp_path / 'D.test.csv'}:2 (field 'timestamp'): not a number: {value!r}")
    amazon_splits(tmp_path, f"U,D,{value},4,A B C")
    assert one_error(prepare(tmp_path, tmp_path / "o")) == (
        f"{tmp_path / 'D.test.csv'}:2 (field 'rating'): not a number: {value!r}")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_json_non_finite_constants(tmp_path, token):
    """JSON has no NaN/Infinity; Python's json module accepts them, so they are refused with line and field."""
    amazon_ratings(tmp_path)
    write(tmp_path / "meta_Toy.jsonl.gz", '{"parent_asin": "B1", "title": "NaN is text here"}\n'
                                          f'{{"parent_asin": "B2", "title": "x", "price": {token}}}\n', gz=True)
    assert one_error(prepare(tmp_path, tmp_path / "o")) == (
        f"{tmp_path / 'meta_Toy.jsonl.gz'}:2 (field 'price'): not a number: {token} (JSON has no NaN or Infinity)")
    lcrec(tmp_path / "lc", inter='{"0": [2, 0, 1],\n "1": [1, ' + token + ', 0]}')
    assert one_error(prepare(tmp_path / "lc", tmp_path / "o")) == (
        f"{tmp_path / 'lc' / 'S.inter.json'}:2 (field '1.1'): not a number: {token} (JSON has no NaN or Infinity)")
    lcrec(tmp_path / "lc", items='{"0": {"title": "a \\"NaN\\" b"},\n"1": {"title": "t",\n "x": {"y": ' + token + '}}}')
    assert one_error(prepare(tmp_path / "lc", tmp_path / "o")) == (
        f"{tmp_path / 'lc' / 'S.item.json'}:3 (field '1.x.y'): not a number: {token} (JSON has no NaN or Infinity)")


@pytest.mark.parametrize("stamps", [[1.0, float("nan"), 3.0], [1.0, float("inf"), 3.0], [1.0, 2e19, 3.0]])
def test_build_dataset_refuses_unusable_timestamps(stamps):
    """The last gate for sources built in Python: partial NaN used to drop every timestamp and reorder."""
    inter = pd.DataFrame({"user": ["u1"] * 3, "item": ["a", "b", "c"], "timestamp": stamps})
    items = pd.DataFrame({"raw_id": ["a", "b", "c"], "title": ["A", "B", "C"]})
    with pytest.raises(DataFormatError, match=r"^src \(field 'timestamp'\): 1 of 3 interaction\(s\) have no usable "
                                              r"timestamp \(first: user 'u1', item 'b'"):
        build_dataset(SourceData("src", "python", inter, items, ["title"], []))


@pytest.mark.parametrize("text,expected", [("lr: .nan\n", "a finite number, got '.nan'"),
                                           ("lr: .inf\n", "a finite number, got '.inf'"),
                                           ("lr: -.inf\n", "a finite number, got '-.inf'"),
                                           ("lr: true\n", "a number, got 'true'")])
def test_config_floats_must_be_finite(tmp_path, text, expected):
    """The value is shown as written in the file."""
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(SemrecError, match=rf"^config 'lr': expected {re.escape(expected)}$"):
        load_config(TrainConfig, tmp_path / "c.yaml")
    with pytest.raises(SemrecError, match=r"config 'lr': expected a finite number, got 'nan'"):
        load_config(TrainConfig, overrides=["lr=nan"])


# ----- case 2: text encodings ---------------------------------------------------------------------------

ML_ITEMS = ("10|Caf\u00e9 Noir (1995)|01-Jan-1995||http://x|0|1|0\n"
            "20|Se\u00f1or (1995)|01-Jan-1995||http://x|0|0|1\n"
            "30|Na\u00efve \u00c5ngstr\u00f6m|01-Jan-1997||http://x|1|0|0\n")


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "cp1252", "utf-8-sig"])
def test_movielens_item_in_either_encoding(tmp_path, encoding):
    folder = movielens(tmp_path / "ml")
    write(folder / "u.item", ML_ITEMS.encode(encoding))
    result = prepare(folder, tmp_path / "o")
    assert result.exit_code == 0, result.output
    ds_items = pd.read_parquet(tmp_path / "o" / "items.parquet")
    assert ds_items["title"].tolist() == ["Café Noir", "Señor", "Naïve Ångström"]  # never 'CafÃ Noir'
    reported = "latin-1" if encoding in ("latin-1", "cp1252") else "utf-8"
    assert read_json(tmp_path / "o" / "manifest.json")["source"]["encodings"] == {
        "u.data": "utf-8", "u.item": reported, "u.genre": "utf-8"}
    line = "encoding     utf-8" + ("" if reported == "utf-8" else " (u.data, u.genre); latin-1 (u.item)")
    assert line in result.output.splitlines()


def test_cp1252_punctuation_is_not_turned_into_control_characters(tmp_path):
    folder = movielens(tmp_path / "ml")
    write(folder / "u.item", "10|Don\u2019t \u201cStop\u201d \u2013 Caf\u00e9|01-Jan-1995||http://x|0|1|0\n"
                             "20|B|01-Jan-1995||http://x|0|0|1\n30|C|01-Jan-1997||http://x|1|0|0\n".encode("cp1252"))
    ds = build_dataset(load_source(folder))
    assert ds.items["title"].tolist()[0] == "Don\u2019t \u201cStop\u201d \u2013 Café"
    assert ds.manifest["source"]["encodings"]["u.item"] == "cp1252"


def test_mixed_encodings_are_refused_with_line_and_column(tmp_path):
    folder = movielens(tmp_path / "ml")
    write(folder / "u.item", ML_ITEMS.encode("utf-8") + "40|Caf\u00e9|01-Jan-1997||http://x|1|0|0\n".encode("latin-1"))
    assert one_error(prepare(folder, tmp_path / "o")) == (
        f"{folder / 'u.item'}:4: invalid utf-8 byte 0xe9 at column 7, but line 1 holds UTF-8 text ('é'): the file "
        "mixes encodings, so neither UTF-8 nor latin-1 reads all of it right; re-save it in one encoding")


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_recbole_lcrec_amazon_read_either_encoding(tmp_path, encoding):
    recbole_files(tmp_path / "rb")
    write(tmp_path / "rb" / "r.item", "item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                                      "1\tCaf\u00e9\tCom\u00e9die\n2\tSe\u00f1or\tDrama\n3\tB\tC\n".encode(encoding))
    ds = build_dataset(load_source(tmp_path / "rb"))
    assert ds.items["title"].tolist() == ["Café", "Señor", "B"] and ds.items["genre"].tolist()[0] == "Comédie."
    assert ds.manifest["source"]["encodings"]["r.item"] == encoding

    lcrec(tmp_path / "lc")
    items = {str(i): {"title": f"Caf\u00e9 {i}", "brand": "Se\u00f1or"} for i in range(11)}
    write(tmp_path / "lc" / "S.item.json", json.dumps(items, ensure_ascii=False).encode(encoding))
    ds = build_dataset(load_source(tmp_path / "lc"))
    assert ds.items["title"].tolist()[0] == "Café 0" and ds.items["brand"].tolist()[0] == "Señor."
    assert ds.manifest["source"]["encodings"] == {"S.inter.json": "utf-8", "S.item.json": encoding}

    amazon_ratings(tmp_path / "az")
    (tmp_path / "az" / "meta_Toy.jsonl.gz").unlink()
    write(tmp_path / "az" / "meta.csv", "parent_asin,title,details\nB1,Caf\u00e9,\"{'Brand': 'Se\u00f1or'}\"\n"
                                        "B2,b,\nB3,c,\nB4,d,\n".encode(encoding))
    ds = build_dataset(load_source(tmp_path / "az"))
    assert ds.items["title"].tolist()[0] == "Café" and ds.items["brand"].tolist()[0] == "Señor."
    assert ds.manifest["source"]["encodings"] == {"Toy.csv.gz": "utf-8", "meta.csv": encoding}


def test_decode_bytes_rule():
    assert decode_bytes("Café".encode()) == ("Café", "utf-8")
    assert decode_bytes(codecs.BOM_UTF8 + "Café".encode()) == ("Café", "utf-8")
    assert decode_bytes("Café".encode("latin-1")) == ("Café", "latin-1")
    assert decode_bytes(codecs.BOM_UTF16_LE + "Café\n".encode("utf-16-le")) == ("Café\n", "utf-16")
    assert decode_bytes(codecs.BOM_UTF16_BE + "Señor".encode("utf-16-be")) == ("Señor", "utf-16")
    with pytest.raises(TextDecodeError, match="NUL byte: not a UTF-8 or latin-1 text file"):
        decode_bytes("Café".encode("utf-16-le"))  # no byte-order mark
    with pytest.raises(TextDecodeError, match="invalid utf-8 byte 0xe9, but line 1 holds UTF-8 text"):
        decode_bytes("Señor\n".encode() + "Café".encode("latin-1"))


def test_utf16_without_bom_is_refused_in_a_reader(tmp_path):
    recbole_files(tmp_path)
    write(tmp_path / "r.item", "item_id:token\tmovie_title:token_seq\n1\tA\n".encode("utf-16-le"))
    assert one_error(prepare(tmp_path, tmp_path / "o")) == (
        f"{tmp_path / 'r.item'}:1: NUL byte at column 2: not a UTF-8 or latin-1 text file "
        "(UTF-16 without a byte-order mark?)")


def test_config_file_in_latin1(tmp_path):
    (tmp_path / "c.yaml").write_bytes("# r\u00e9glages\nlr: 0.01\n".encode("latin-1"))
    assert load_config(TrainConfig, tmp_path / "c.yaml").lr == 0.01


def test_cleaning_keeps_every_accented_letter():
    """Emoji stripping must not touch letters: every latin-1 letter (U+00C0-U+00FF) and other scripts survive."""
    for code in range(0xC0, 0x100):
        ch = chr(code)
        assert clean_text(f"a{ch}b {ch}") == f"a{ch}b {ch}.", hex(code)
        assert clean_title(f"{ch}x{ch}") == f"{ch}x{ch}", hex(code)
    for text in ["Señor Café", "naïve Ångström Œuvre ß", "Ελληνικά Русский 日本語 한국어", "Çà et là"]:
        assert clean_text(text) == text + "."
    # what mojibake looked like: 'é' read as latin-1 is 'Ã©', and '©' is an emoji that the cleaning removes
    assert clean_text("Café".encode().decode("latin-1")) == "CafÃ."


# ----- case 10: raw ids that break command-line use -----------------------------------------------------

def test_prepare_warns_about_awkward_ids(tmp_path):
    inter = {"u,1": ["A,1", "B,2", " C"], "u2": ["A,1", "D\tx", "B,2"], "u3": ["A,1", "E"]}
    items = {i: {"title": f"t {i.strip()}"} for i in ["A,1", "B,2", " C", "D\tx", "E"]}
    lcrec(tmp_path / "src", inter=json.dumps(inter), items=json.dumps(items))
    result = prepare(tmp_path / "src", tmp_path / "o")
    assert result.exit_code == 0, result.output
    warnings = read_json(tmp_path / "o" / "manifest.json")["id_warnings"]
    assert warnings == {
        "item": {"comma": {"count": 2, "examples": ["A,1", "B,2"]},
                 "outer_whitespace": {"count": 1, "examples": [" C"]},
                 "unprintable": {"count": 1, "examples": ["D\tx"]}},
        "user": {"comma": {"count": 1, "examples": ["u,1"]}},
    }
    lines = [line for line in result.output.splitlines() if line.startswith("warning")]
    assert lines == [
        "warning      2 item id(s) contain a comma, e.g. 'A,1', 'B,2'; pass them to 'semrec recommend' with "
        "--item ID (repeatable) or --history-file FILE",
        "warning      1 item id(s) begin or end with whitespace, e.g. ' C'; pass them to 'semrec recommend' with "
        "--item ID (repeatable) or --history-file FILE",
        "warning      1 item id(s) contain unprintable characters, e.g. 'D\\tx'; pass them to 'semrec recommend' "
        "with --item ID (repeatable) or --history-file FILE",
        "warning      1 user id(s) contain a comma, e.g. 'u,1'; 'semrec recommend --user ID' takes an id whole "
        "(quote it in the shell)",
    ]
    result = runner.invoke(app, ["info", str(tmp_path / "o")])
    assert result.exit_code == 0 and sum(line.startswith("warning") for line in result.output.splitlines()) == 4


def test_no_warning_for_ordinary_ids(tmp_path):
    result = prepare(lcrec(tmp_path / "src"), tmp_path / "o")
    assert result.exit_code == 0 and not any(line.startswith("warning") for line in result.output.splitlines())
    assert read_json(tmp_path / "o" / "manifest.json")["id_warnings"] == {"item": {}, "user": {}}


# ----- case 11: counts of what every reader leaves out ---------------------------------------------------

def test_amazon_counts_metadata_items_without_interactions(tmp_path):
    amazon_ratings(tmp_path / "jsonl")  # its meta file has B9, never bought
    result = prepare(tmp_path / "jsonl", tmp_path / "o1")
    assert result.exit_code == 0, result.output
    assert "skipped      metadata items without interactions: 1" in result.output
    assert read_json(tmp_path / "o1" / "manifest.json")["skips"]["metadata_items_without_interactions"] == 1

    amazon_ratings(tmp_path / "csv")
    (tmp_path / "csv" / "meta_Toy.jsonl.gz").unlink()
    write(tmp_path / "csv" / "meta.csv", "parent_asin,title\nB1,a\nB2,b\nB3,c\nB4,d\nB8,x\nB9,y\nB9,y again\n")
    ds = build_dataset(load_source(tmp_path / "csv"))
    assert ds.manifest["skips"]["metadata_items_without_interactions"] == 2  # B8 and B9 (twice in the file)

    amazon_splits(tmp_path / "splits")  # meta has E, which no row has
    ds = build_dataset(load_source(tmp_path / "splits"))
    assert ds.manifest["skips"]["metadata_items_without_interactions"] == 1


def test_every_reader_counts_metadata_items_without_interactions(tmp_path):
    """Same metadata-only item in each format: each reader reports exactly one."""
    lcrec(tmp_path / "lc", inter=json.dumps({"0": [1, 2], "1": [2, 1]}),
          items=json.dumps({str(i): {"title": f"t{i}"} for i in (1, 2, 7)}))
    movielens(tmp_path / "ml")
    write(tmp_path / "ml" / "u.data", "1\t10\t5\t1\n1\t20\t3\t2\n2\t10\t4\t3\n")  # item 30 never rated
    recbole_files(tmp_path / "rb")
    write(tmp_path / "rb" / "r.inter", "user_id:token\titem_id:token\n7\t1\n8\t2\n")  # item 3 never used
    for folder in ("lc", "ml", "rb"):
        ds = build_dataset(load_source(tmp_path / folder))
        assert ds.manifest["skips"]["metadata_items_without_interactions"] == 1, folder


def test_users_left_without_interactions_are_counted(tmp_path):
    lcrec(tmp_path, inter=json.dumps({"0": [1, 2], "1": [99], "2": [98, 97]}),
          items=json.dumps({str(i): {"title": f"t{i}"} for i in (1, 2)}))
    result = prepare(tmp_path, tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert ("skipped      interactions on items without metadata: 3, users without interactions left: 2"
            in result.output)


def test_empty_sequences_and_empty_meta_ids(tmp_path):
    lcrec(tmp_path / "lc", inter=json.dumps({"0": [1, 2], "1": [], "2": [2, 1]}))
    result = prepare(tmp_path / "lc", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "users with empty sequences: 1" in result.output  # used to vanish without a count
    amazon_ratings(tmp_path / "az")
    (tmp_path / "az" / "meta_Toy.jsonl.gz").unlink()
    write(tmp_path / "az" / "meta.csv", "parent_asin,title\nB1,a\n ,b\n")  # as the jsonl reader: an error
    assert one_error(prepare(tmp_path / "az", tmp_path / "o2")) == (
        f"{tmp_path / 'az' / 'meta.csv'}:3 (field 'parent_asin'): missing parent_asin")


def test_json_duplicate_keys_are_refused_not_silently_dropped(tmp_path):
    """A JSON object naming a user twice kept only the last sequence, silently; now it is an error."""
    lcrec(tmp_path, inter='{"0": [1, 2],\n "1": [2, 1],\n "0": [0]}')
    assert one_error(prepare(tmp_path, tmp_path / "o")) == (
        f"{tmp_path / 'S.inter.json'} (field '0'): the same key appears twice in one object (only the last value "
        "would be kept)")
    lcrec(tmp_path, items='{"1": {"title": "a", "title": "b"}, "2": {"title": "c"}}')
    assert "(field 'title'): the same key appears twice" in one_error(prepare(tmp_path, tmp_path / "o"))
