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

IDS = ["U1", "U2", " U3", "B1 ", "é", "x,y", "a\nb", "", "B\x1c", "0x1"]
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
