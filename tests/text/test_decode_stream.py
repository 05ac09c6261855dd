"""The encoding rule over a file read in pieces (issue 20: streaming prepare): any split of the bytes gives the
answer (or the error, at the same offset) the whole file gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from semrec.text.decode import TextDecodeError, decode_bytes, detect_encoding

PIECES = [b"abc", b"\n", b"caf\xc3\xa9", b"\xe2\x80\x9c", b"\x93quote\x94", b"\xe9t\xe9", b"\x81", b"\xf0\x9f\x98\x80",
          b"\xc3", b"\xa9", b"\x00", b"\r\n", b"plain text "]


def _outcome(chunks):
    try:
        return detect_encoding(chunks)
    except TextDecodeError as exc:
        return ("error", exc.offset, str(exc))


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12), st.lists(st.integers(0, 60), max_size=6))
def test_any_split_gives_the_whole_file_answer(pieces, cuts):
    data = b"".join(pieces)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    assert _outcome(chunks) == _outcome([data])


def test_the_rule_on_known_files():
    assert detect_encoding([b"caf", b"\xc3", b"\xa9\n"]) == "utf-8"  # a character split across pieces
    try:  # a valid 3-byte character split over three 1-byte pieces is still seen (found by hypothesis)
        detect_encoding([b"\n\x81plain text \xe2", b"\x80", b"\x9c"])
    except TextDecodeError as exc:
        assert "line 2 holds UTF-8 text" in str(exc)
    else:
        raise AssertionError("the split character was missed")
    assert detect_encoding([b"\x93hi\x94"]) == "cp1252" and detect_encoding([b"\x81\x93"]) == "latin-1"
    assert decode_bytes(b"\xef\xbb\xbfhello") == ("hello", "utf-8")
    try:
        detect_encoding([b"ok\n", b"caf\xc3\xa9 \xe9"])
    except TextDecodeError as exc:
        assert exc.offset == 9 and "line 2 holds UTF-8 text ('\xe9')" in str(exc)
    else:
        raise AssertionError("a file mixing encodings was accepted")


def test_streamed_files_give_one_line_errors(tmp_path):
    import gzip

    import pytest

    from semrec.data.sources._read import iter_csv, iter_lines
    from semrec.errors import DataFormatError

    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(b"a,b\ncaf\xc3\xa9,1\nx\xe9,2\n")
    with pytest.raises(DataFormatError, match=r"mixed.csv:3.*invalid utf-8 byte 0xe9 at column 2.*line 2 holds"):
        list(iter_csv(mixed))
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"a,b\n1,2\n" * 1000)[:40])
    with pytest.raises(DataFormatError, match="not a readable gzip file"):
        list(iter_csv(broken))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok\nx\xe9\n")
    assert list(iter_lines(latin)) == [(1, "ok"), (2, "x\xe9")]
    with pytest.raises(DataFormatError, match="invalid utf-8 byte 0xe9"):
        list(iter_lines(latin, encoding="utf-8"))  # an explicit encoding that does not fit
