"""The vectorised rating reader (pyarrow's CSV reader, issue 20) reads exactly what the line-by-line reader reads, and
leaves every file it does not vouch for to that reader, which accepts it or names the bad line."""

from __future__ import annotations

import gzip

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semrec.data.sources import _read, amazon2023
from semrec.errors import DataFormatError

IDS = ["U1", "U2", " U3", "B1 ", "é", "x,y", "a\nb", "a\rb", "c\x00d", "", "B\x1c", "0x1"]
NUMBERS = ["5", "5.0", "+1", "-2", ".5", "1.", "1e3", "1E+2", " 7", "nan", "inf", "1_000", "1e400", "12.7", "-0.5",
           "9223372036854775808", ""]


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def _write(folder, rows, gz: bool, crlf: bool, bom: bool, latin1: bool):
    end = "\r\n" if crlf else "\n"
    text = ("\ufeff" if bom else "") + "user_id,parent_asin,rating,timestamp" + end + "".join(
        ",".join(_csv_field(v) for v in row) + end for row in rows)
    data = text.encode("latin-1", errors="replace") if latin1 else text.encode("utf-8")
    path = folder / ("r.csv.gz" if gz else "r.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _read_both(path, fast: bool, monkeypatch):
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(amazon2023, "_read_ratings_fast", lambda p: (_ for _ in ()).throw(_read.NotFastPath()))
        with _read.recording_encodings() as encodings:
            try:
                spool = amazon2023.read_ratings(path)
            except DataFormatError as exc:
                return ("error", str(exc))
    table = pq.read_table(spool.path)
    spool.cleanup()
    return table.to_pydict(), dict(encodings)


row = st.tuples(st.sampled_from(IDS[:2] + IDS), st.sampled_from(["B1", "B2"] + IDS),
                st.sampled_from(NUMBERS[:3] + NUMBERS), st.sampled_from(NUMBERS[:4] + NUMBERS))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row, min_size=1, max_size=12), gz=st.booleans(), crlf=st.booleans(), bom=st.booleans(),
       latin1=st.booleans())
def test_fast_and_line_readers_agree(tmp_path_factory, monkeypatch, rows, gz, crlf, bom, latin1):
    folder = tmp_path_factory.mktemp("r")
    path = _write(folder, rows, gz, crlf, bom, latin1)
    assert _read_both(path, True, monkeypatch) == _read_both(path, False, monkeypatch)


def test_clean_files_take_the_fast_path(tmp_path, monkeypatch):
    rows = [(f"U{k % 7}", f"B{k % 11}", "4.0", str(1_600_000_000 + k)) for k in range(500)]
    path = _write(tmp_path, rows, gz=True, crlf=False, bom=False, latin1=False)
    calls = []
    line_reader = _read.iter_csv
    monkeypatch.setattr(amazon2023, "iter_csv", lambda *a, **k: calls.append(a) or line_reader(*a, **k))
    fast = _read_both(path, True, monkeypatch)
    assert calls == [] and fast[1] == {str(path): "utf-8"} and len(fast[0]["user"]) == 500
    assert fast == _read_both(path, False, monkeypatch)


def test_a_bad_line_is_still_named(tmp_path, monkeypatch):
    rows = [("U1", "B1", "5", "100")] * 3 + [("U2", "B2", "5", "later")]
    path = _write(tmp_path, rows, gz=False, crlf=False, bom=False, latin1=False)
    with pytest.raises(DataFormatError, match=r"r\.csv:5 \(field 'timestamp'\): not a number: 'later'"):
        amazon2023.read_ratings(path)


RB_IDS = ["7", "8", ' "q" ', "x y", "", "é", " 9", "n\x00"]
RB_STAMPS = ["10", "9.5", "1e3", "+4", "nan", "x", " 3", ""]


def _load_recbole(folder, fast: bool, monkeypatch):
    from semrec.data.sources import recbole

    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(recbole, "_read_inter_fast", lambda *a: (_ for _ in ()).throw(_read.NotFastPath()))
        with _read.recording_encodings() as encodings:
            try:
                source = recbole.load(folder)
            except DataFormatError as exc:
                return ("error", str(exc))
    table = pq.read_table(source.interactions.path).to_pydict()
    source.interactions.cleanup()
    table["timestamp"] = [repr(t) for t in table["timestamp"]]  # NaN (no timestamps) compares equal as text
    return table, dict(encodings)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(["7", "8"] * 3 + RB_IDS), st.sampled_from(["1", "2"] * 3 + RB_IDS),
                               st.sampled_from(["10", "11"] * 3 + RB_STAMPS)), min_size=1, max_size=10),
       timed=st.booleans(), crlf=st.booleans(), blank=st.booleans())
def test_recbole_fast_and_line_readers_agree(tmp_path_factory, monkeypatch, rows, timed, crlf, blank):
    folder = tmp_path_factory.mktemp("rb")
    end = "\r\n" if crlf else "\n"
    header = "user_id:token\titem_id:token" + ("\ttimestamp:float" if timed else "")
    lines = ["\t".join(row if timed else row[:2]) for row in rows] + ([""] if blank else [])
    (folder / "r.inter").write_text(end.join([header, *lines]) + end, encoding="utf-8")
    (folder / "r.item").write_text("item_id:token\ttitle:token_seq\n1\tone\n2\ttwo\n", encoding="utf-8")
    assert _load_recbole(folder, True, monkeypatch) == _load_recbole(folder, False, monkeypatch)


@pytest.mark.parametrize("junk", [b"\x00", b"\xe9", b"\xff\xfe"])
def test_bytes_that_are_not_utf8_or_nul_go_to_the_line_reader(tmp_path, monkeypatch, junk):
    rows = "".join(f"U{k},B{k % 3},5,{100 + k}\n" for k in range(2000)).encode()
    data = b"user_id,parent_asin,rating,timestamp\n" + rows + b"U9,B" + junk + b"1,5,7\n"
    (tmp_path / "r.csv").write_bytes(data)
    assert _read_both(tmp_path / "r.csv", True, monkeypatch) == _read_both(tmp_path / "r.csv", False, monkeypatch)
