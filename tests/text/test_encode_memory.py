"""Embedding without whole-catalogue copies (issue 20): TextEncoder puts each distinct text's vector straight into
its rows, and the view files are written header, padding row, then blocks (byte-identical to np.save of the stacked
matrix)."""

from __future__ import annotations

import numpy as np
import pytest

from semrec.errors import SemrecError
from semrec.io import NpyRows, NpyRowWriter, write_padded_npy
from semrec.text.encode import TextEncoder


class _StubModel:
    """Stands in for a SentenceTransformer: a vector from each text's characters; records the batches."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def get_sentence_embedding_dimension(self) -> int:
        return 3

    def encode(self, texts, **_kwargs):
        self.calls.append(list(texts))
        return np.array([[len(t), sum(map(ord, t)) % 97, t.count("a")] for t in texts], dtype=np.float64)


def test_each_distinct_text_is_encoded_once_and_lands_in_all_its_rows():
    rng = np.random.default_rng(0)
    vocabulary = [f"text {i} " + "a" * (i % 7) for i in range(300)]
    texts = [vocabulary[i] for i in rng.integers(0, 300, size=2000)] + ["", ""]
    encoder = TextEncoder(batch_size=4)  # chunks of 64 distinct texts: many chunks
    stub = encoder._model = _StubModel()
    out = encoder.encode(texts, progress=False)
    expected = np.array([[len(t), sum(map(ord, t)) % 97, t.count("a")] for t in texts], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32 and out.shape == (2002, 3)
    encoded = [t for call in stub.calls for t in call]
    assert sorted(encoded) == sorted(set(texts))  # each distinct text once
    assert len(stub.calls) > 1
    assert encoder.encode([], progress=False).shape == (0, 3)


@pytest.mark.parametrize("rows, dim, pad, block", [(0, 4, 1, 3), (1, 4, 1, 3), (10, 5, 1, 3), (10, 5, 2, 64)])
def test_write_padded_npy_equals_np_save_of_the_stacked_matrix(tmp_path, rows, dim, pad, block):
    matrix = np.random.default_rng(rows).standard_normal((rows, dim)).astype(np.float32)
    write_padded_npy(tmp_path / "streamed.npy", matrix, pad_rows=pad, block=block)
    np.save(tmp_path / "stacked.npy", np.vstack([np.zeros((pad, dim), np.float32), matrix]))
    assert (tmp_path / "streamed.npy").read_bytes() == (tmp_path / "stacked.npy").read_bytes()
    with pytest.raises(SemrecError, match="a 2-d matrix"):
        write_padded_npy(tmp_path / "bad.npy", np.zeros(3))
    assert not (tmp_path / "bad.npy").exists()
    codes = np.arange(6, dtype=np.int64).reshape(3, 2)
    write_padded_npy(tmp_path / "codes.npy", codes, pad_value=-1)
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), np.vstack([[-1, -1], codes]))


def test_encode_to_file_writes_the_rows_encode_returns(tmp_path):
    """The file path (what `semrec embed` uses) holds exactly encode()'s matrix, byte for byte as np.save writes it."""
    rng = np.random.default_rng(1)
    texts = [f"t{i % 37} " + "a" * (i % 5) for i in rng.integers(0, 500, size=700)]
    encoder = TextEncoder(batch_size=2)
    encoder._model = _StubModel()
    encoder.encode_to_file(texts, tmp_path / "rows.npy", progress=False)
    np.save(tmp_path / "saved.npy", encoder.encode(texts, progress=False))
    assert (tmp_path / "rows.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()


def test_npy_row_writer_takes_rows_in_any_order(tmp_path):
    matrix = np.random.default_rng(2).standard_normal((9, 3)).astype(np.float32)
    with NpyRowWriter(tmp_path / "w.npy", 9, 3) as writer:
        writer.put(np.array([8, 2, 3, 4]), matrix[[8, 2, 3, 4]])  # a run 2..4 and a lone row
        writer.put(np.array([0, 1, 5, 6, 7]), matrix[[0, 1, 5, 6, 7]].astype(np.float64))  # cast to the file's dtype
        writer.put(np.array([], dtype=np.int64), np.zeros((0, 3)))
    np.save(tmp_path / "saved.npy", matrix)
    assert (tmp_path / "w.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()
    with pytest.raises(IndexError, match="out of range for 4 rows"):
        with NpyRowWriter(tmp_path / "bad.npy", 4, 3) as writer:
            writer.put(np.array([4]), np.zeros((1, 3)))
    assert not (tmp_path / "bad.npy").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["saved.npy", "w.npy"]


def test_encode_cached_returns_rows_on_disk_and_recomputes_a_damaged_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMREC_CACHE", str(tmp_path / "cache"))
    encoder = TextEncoder(batch_size=2)
    stub = encoder._model = _StubModel()
    texts = ["a", "bb", "a", "ccc"]
    rows, key, hit = encoder.encode_cached(texts, progress=False)
    assert isinstance(rows, NpyRows) and not hit and rows.shape == (4, 3)
    np.testing.assert_array_equal(np.asarray(rows), encoder.encode(texts, progress=False))
    calls = len(stub.calls)
    again, key2, hit = encoder.encode_cached(texts, progress=False)
    assert hit and key2 == key and len(stub.calls) == calls
    rows.path.write_bytes(rows.path.read_bytes()[:-5])  # truncated entry
    fixed, _, hit = encoder.encode_cached(texts, progress=False)
    assert not hit and np.array_equal(np.asarray(fixed), np.asarray(again))
